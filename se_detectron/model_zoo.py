"""Config files shipped with se_detectron, and a one-call config constructor."""

from pathlib import Path
from typing import Optional, Sequence

from detectron2.config import get_cfg

from .config import add_se_config
from .data.register import add_dataset_config
from .engine.optimizer import add_solver_config
from .evaluation import add_evaluation_config

__all__ = ["CONFIG_ROOT", "get_config_file", "get_se_cfg"]

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


def get_config_file(config_path: str) -> str:
    """Absolute path of a config shipped in ``configs/``.

    Args:
        config_path: path relative to ``configs/``, e.g.
            ``"COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml"``.
    """
    path = CONFIG_ROOT / config_path
    if not path.is_file():
        available = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
        raise FileNotFoundError(
            f"no se_detectron config {config_path!r} under {CONFIG_ROOT}; available: {available}"
        )
    return str(path)


def get_se_cfg(config_file: Optional[str] = None, opts: Sequence[str] = ()):
    """A Detectron2 config with every se_detectron namespace added, optionally merged.

    Args:
        config_file: a YAML file to merge (a path, or a path relative to ``configs/``).
        opts: ``["KEY", "VALUE", ...]`` overrides merged after the file.

    Returns:
        CfgNode: the (unfrozen) config.
    """
    cfg = get_cfg()
    add_se_config(cfg)
    add_dataset_config(cfg)  # DATASETS.REGISTER_COCO / REGISTER_VOC
    add_evaluation_config(cfg)  # TEST.COCO_EVAL_BACKEND
    add_solver_config(cfg)  # SOLVER.OPTIMIZER / SOLVER.BETAS
    if config_file:
        if not Path(config_file).is_file():
            config_file = get_config_file(config_file)
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg
