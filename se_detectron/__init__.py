"""se_detectron: Squeeze-and-Excitation backbones for Detectron2.

Importing the package registers the SE backbones in Detectron2's ``BACKBONE_REGISTRY``:
``build_se_resnet_backbone``, ``build_se_resnet_fpn_backbone`` and
``build_retinanet_se_resnet_fpn_backbone``, and the bundled datasets ``se_synthetic_train`` /
``se_synthetic_val`` in its ``DatasetCatalog`` (generated on first use under
``$DETECTRON2_DATASETS/se_synthetic``). Use :func:`add_se_config` on a Detectron2 config
before merging one of the files under ``configs/``.
"""

import warnings

from .version import __version__

# fvcore (imported by Detectron2) calls the deprecated torch.jit.script at import time; the
# FutureWarning it prints twice is about fvcore's code, not the user's.
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
)

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without Detectron2
    raise ImportError(
        "se_detectron needs Detectron2, which is not installed in this environment "
        f"({e}). Detectron2 is not published on PyPI by its authors: run `make setup` in the "
        "se_detectron checkout (it installs the sal-detectron2 wheel, see "
        "scripts/install_detectron2.sh), or build Detectron2 from source "
        "(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)."
    ) from e

from . import modeling  # noqa: E402,F401  (registers the backbones)
from .data import register_synthetic_datasets  # noqa: E402

# The bundled datasets (se_synthetic_train / se_synthetic_val) are registered at import, lazily,
# as `import detectron2` registers its builtin ones: the files are generated on first
# DatasetCatalog.get, so Detectron2's own tools can train on the shipped configs.
register_synthetic_datasets(builtin=True)
from .config import add_se_config, get_config_file, get_se_cfg  # noqa: E402
from .errors import SEDetectronError  # noqa: E402

__all__ = ["SEDetectronError", "__version__", "add_se_config", "get_config_file", "get_se_cfg"]
