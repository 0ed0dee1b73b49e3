#!/usr/bin/env bash
# Install Detectron2 into the environment of the given Python, unless it already imports there.
#
# Usage: scripts/install_detectron2.sh PYTHON
#
# Detectron2's authors do not publish it on PyPI. sal-detectron2==0.7.2 is a rebuild of
# Detectron2 main (2024) whose Python code is Detectron2's; it ships one wheel tagged for CPython
# 3.10. Its compiled detectron2._C cannot load on other Pythons, but Detectron2 imports _C lazily
# and the paths se_detectron uses (ResNet/FPN backbones, Faster R-CNN, RetinaNet, COCO
# evaluation) never touch it. The wheel is pure files, so we place it in site-packages with
# --target (hash-checked, no dependencies) and install its runtime dependencies from
# requirements/detectron2-runtime.txt.
#
# Already have Detectron2 (e.g. built from source)? Nothing to do: this script sees that
# `import detectron2` works and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: install_detectron2.sh PYTHON}

if "$py" -c "import detectron2" 2>/dev/null; then
  echo "[setup] detectron2 $("$py" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)') already installed; skipping"
  exit 0
fi

site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "[setup] installing detectron2 (sal-detectron2 wheel) into $site"
"$py" -m pip install -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
  --platform linux_x86_64 --target "$site" --upgrade -r requirements/detectron2-wheel.txt
echo "[setup] installing detectron2 runtime dependencies"
"$py" -m pip install -q -r requirements/detectron2-runtime.txt
"$py" -c "import detectron2.modeling, detectron2.engine; print('[setup] detectron2', __import__('detectron2').__version__, 'imports')"
