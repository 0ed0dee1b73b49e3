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
# --target (hash-checked, no dependencies); its runtime dependencies come from
# requirements/detectron2-runtime.txt (installed first by scripts/setup_env.sh, or here).
#
# The wheel's metadata (written in 2024) also asks for numpy<2 and black. Detectron2's Python
# code runs on numpy 2 (the whole test suite runs on the pinned numpy 2.4.6) and black is only
# its formatter, so neither is installed: `pip check` lists exactly these two, and
# tests/test_package.py::test_pip_check_lists_only_known_detectron2_metadata fails if anything
# else appears. The wheel is placed last, with --no-deps, so pip prints no resolver error.
#
# Already have Detectron2 (e.g. built from source)? Nothing to do: this script sees that
# `import detectron2` works and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: install_detectron2.sh PYTHON}
source scripts/pip_quiet.sh
# fvcore (imported by Detectron2) calls the deprecated torch.jit.script at import time
quiet_import=(-W "ignore:\`torch.jit.script\` is deprecated:FutureWarning")

if "$py" "${quiet_import[@]}" -c "import detectron2" 2>/dev/null; then
  echo "[setup] detectron2 $("$py" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)') already installed; skipping"
  exit 0
fi

if ! "$py" -c "import fvcore, pycocotools, omegaconf" 2>/dev/null; then
  pip_quiet "$py" "installing detectron2's runtime dependencies" -- -r requirements/detectron2-runtime.txt
fi
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pip_quiet "$py" "installing detectron2 (sal-detectron2 wheel) into $site" -- \
  --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
  --platform linux_x86_64 --target "$site" --upgrade -r requirements/detectron2-wheel.txt
"$py" "${quiet_import[@]}" -c "import detectron2.modeling, detectron2.engine; print('[setup] detectron2', __import__('detectron2').__version__, 'imports (numpy', __import__('numpy').__version__ + '; the wheel metadata asks for numpy<2, see scripts/install_detectron2.sh)')"
