#!/usr/bin/env bash
# Idempotent environment set-up used by `make setup`.
#
# Usage: scripts/setup_env.sh VENV_DIR
#
# - creates VENV_DIR with python3 if it has no interpreter yet;
# - installs torch/torchvision (requirements/torch.txt) unless torch already imports there;
# - installs Detectron2 (scripts/install_detectron2.sh) unless detectron2 already imports there,
#   so an environment with a Detectron2 built from source is left alone;
# - installs this package in editable mode with its dev extras, pinned by
#   requirements/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  echo "[setup] creating virtual environment $venv"
  python3 -m venv "$venv"
  "$py" -m pip install -q --upgrade pip
fi

if "$py" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
else
  echo "[setup] installing torch/torchvision (requirements/torch.txt)"
  "$py" -m pip install -q -r requirements/torch.txt
fi

bash scripts/install_detectron2.sh "$py"

echo "[setup] installing se_detectron (editable, dev extras)"
"$py" -m pip install -q -c requirements/constraints.txt -e ".[dev]"
"$py" -c "import se_detectron, detectron2, torch; print('[setup] ok: se_detectron', se_detectron.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__)"
