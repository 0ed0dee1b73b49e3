"""Detectron2-style ``model_zoo`` accessors for the configs shipped with se_detectron.

As ``detectron2.model_zoo``: :func:`list_configs` names the shipped configs (yacs ``.yaml`` and
LazyConfig ``.py``), :func:`get_config_file` resolves one, :func:`get_config` loads it (a
``CfgNode`` for ``.yaml``, an omegaconf ``DictConfig`` via ``LazyConfig.load`` for ``.py``) and
:func:`get` builds its model (and loads its ``MODEL.WEIGHTS`` / ``train.init_checkpoint``). The
configs live in ``se_detectron/configs/`` (see :data:`~se_detectron.config.CONFIG_ROOT`), so an
installed wheel has them too.
"""

from typing import Optional

import torch
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.modeling import build_model

from .checkpoint import SEDetectionCheckpointer
from .config import CONFIG_ROOT, get_config_file, get_se_cfg, list_configs

__all__ = ["CONFIG_ROOT", "get", "get_config", "get_config_file", "get_se_cfg", "list_configs"]


def get_config(config_path: str, trained: bool = False):
    """A shipped config, loaded (as ``detectron2.model_zoo.get_config``).

    Args:
        config_path: path relative to the config root; ``.yaml`` (yacs) or ``.py`` (LazyConfig).
        trained: must be False: se_detectron publishes no trained detector weights.

    Returns:
        CfgNode (for ``.yaml``, with :func:`~se_detectron.add_se_config` applied) or
        omegaconf.DictConfig (for ``.py``, from ``LazyConfig.load``).

    Raises:
        ValueError: with ``trained=True``.
        FileNotFoundError: listing the shipped configs if ``config_path`` is not one.
    """
    if trained:
        raise ValueError(
            f"trained=True: se_detectron publishes no trained weights for {config_path!r} (no "
            "download is possible here). Train one with tools/train_net.py (or "
            "tools/lazy_train_net.py) and load it, or use trained=False."
        )
    path = get_config_file(config_path)
    if path.endswith(".py"):
        return LazyConfig.load(path)
    return get_se_cfg(path)


def get(config_path: str, trained: bool = False, device: Optional[str] = None):
    """Build the model of a shipped config (as ``detectron2.model_zoo.get``), in eval mode.

    As Detectron2's, ``trained=False`` loads the config's ``MODEL.WEIGHTS`` (LazyConfig:
    ``train.init_checkpoint``; for the COCO configs: the converted ImageNet trunk,
    ``pretrained/*.pkl``, see docs/tutorials/weights.md) and leaves the rest randomly
    initialized; a config whose weights are empty gives a random model. A missing weights file is
    an error naming it (for a random model from any config: ``build_model(get_config(path))`` or
    ``instantiate(get_config(path).model)``). Nothing is downloaded.

    Args:
        config_path: path relative to the config root.
        trained: must be False (see :func:`get_config`).
        device: ``"cpu"``/``"cuda"``; default: CUDA when available.

    Returns:
        torch.nn.Module: the Detectron2 model.
    """
    cfg = get_config(config_path, trained=trained)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
        weights = cfg.MODEL.WEIGHTS
    else:
        model = instantiate(cfg.model).to(device)
        weights = cfg.train.init_checkpoint if "train" in cfg else ""
        cfg = None  # the converted-weights config check reads yacs keys
    if weights:
        SEDetectionCheckpointer(model, cfg=cfg).load(weights)
    return model.eval()
