#!/usr/bin/env bash
# Idempotent environment set-up used by `make setup`.
#
# Usage: scripts/setup_env.sh VENV_DIR
#
# - creates VENV_DIR with python3 if it has no interpreter yet;
# - installs torch/torchvision (requirements/torch.txt) unless torch already imports there;
# - installs this package in editable mode with its dev and docs extras, pinned by
#   requirements/constraints.txt (this also brings Detectron2's runtime dependencies);
# - installs Detectron2 (scripts/install_detectron2.sh) unless detectron2 already imports there,
#   so an environment with a Detectron2 built from source is left alone.
#
# pip's own output goes to VENV_DIR/setup-pip.log (printed in full if a step fails): a
# successful set-up prints only the [setup] lines.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
py="$venv/bin/python"
source scripts/pip_quiet.sh

if [ ! -x "$py" ]; then
  echo "[setup] creating virtual environment $venv"
  python3 -m venv "$venv"
  pip_quiet "$py" "upgrading pip" -- --upgrade pip
fi
export SE_SETUP_LOG="$venv/setup-pip.log"

if "$py" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
else
  pip_quiet "$py" "installing torch/torchvision (requirements/torch.txt, about a minute)" -- \
    -r requirements/torch.txt
fi

# Before Detectron2's wheel: pip checks the whole environment after an install, and the wheel's
# 2024 metadata asks for numpy<2 (see scripts/install_detectron2.sh).
pip_quiet "$py" "installing se_detectron (editable, dev and docs extras) and Detectron2's runtime dependencies" -- \
  -c requirements/constraints.txt -r requirements/detectron2-runtime.txt -e ".[dev,docs]"

bash scripts/install_detectron2.sh "$py"

"$py" -c "import se_detectron, detectron2, torch; print('[setup] ok: se_detectron', se_detectron.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__)"
