"""Loading and checking a LazyConfig for ``tools/lazy_train_net.py``, with one-line user errors.

Detectron2's ``LazyConfig.apply_overrides`` silently *adds* a misspelt key
(``train.max_itr=10`` trains for ``train.max_iter`` iterations) and its fallback parser (without
hydra) fails on plain string values. :func:`apply_overrides` takes the same ``key=value``
strings but checks each key first: it must exist in the config, or be a parameter of the
``_target_`` of the node it is added to (``model.backbone.bottom_up.se_gate=tanh`` is a
``make_se_resnet`` argument the config leaves at its default). Values are Python literals, or
strings otherwise.
"""

import ast
import difflib
import inspect
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import config_value, get_config_file, get_se_cfg, list_configs
from ..errors import SEDetectronError
from ..modeling import SE_TRUNK_CFG_KEYS, make_se_resnet
from ..modeling.archs import BASIC_DEPTHS

__all__ = [
    "LazyConfigError",
    "adapt_to_device",
    "apply_overrides",
    "check_required_keys",
    "converted_config_view",
    "dataset_names",
    "load_lazy_config",
    "resolve_lazy_config_file",
]

logger = logging.getLogger("se_detectron")


class LazyConfigError(SEDetectronError, ValueError):
    """An unknown LazyConfig file or key, or a config the lazy training tool cannot run."""


def resolve_lazy_config_file(config_file: str) -> str:
    """The path of a python config: a file, or the name of one shipped with se_detectron.

    Args:
        config_file: a path, or a path relative to the config root (e.g.
            ``"COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.py"``).

    Raises:
        LazyConfigError: for a yacs (``.yaml``) config or an unknown name, listing the shipped
            python configs.
    """
    shipped = ", ".join(list_configs(".py"))
    if config_file.endswith((".yaml", ".yml")):
        raise LazyConfigError(
            f"--config-file {config_file!r} is a yacs config: train it with se-train-net "
            f"(tools/train_net.py); se-lazy-train-net takes python configs (shipped: {shipped})"
        )
    if os.path.isfile(config_file):
        return config_file
    try:
        return get_config_file(config_file)
    except FileNotFoundError:
        raise LazyConfigError(
            f"--config-file {config_file!r}: no such file, and no python config of that name "
            f"ships with se_detectron (shipped: {shipped})"
        ) from None


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string, e.g. dataloader.train.dataset.names=my_train


def _target_parameters(node):
    """Parameter names of a node's ``_target_``, or None if any keyword is accepted."""
    target = node.get("_target_")
    if isinstance(target, str):
        target = locate(target)
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # no signature to read: accept the key
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def _unknown_key(key: str, where: str, part: str, candidates: Sequence[str]) -> LazyConfigError:
    close = difflib.get_close_matches(part, list(candidates), n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return LazyConfigError(
        f"unknown config key {key!r}: {where} has no key {part!r}{hint} "
        f"(keys there: {', '.join(sorted(map(str, candidates)))})"
    )


def check_override_key(cfg, key: str) -> None:
    """Raise :class:`LazyConfigError` unless ``key`` names a key of ``cfg`` (or may be added).

    A missing last part is accepted if it is a parameter of its node's ``_target_`` (the config
    left it at its default).

    Args:
        cfg: a LazyConfig (omegaconf ``DictConfig``).
        key: a dotted key, e.g. ``"train.max_iter"`` or ``"model.roi_heads.num_classes"``.
    """
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        where = repr(".".join(parts[:i])) if i else "the config"
        if OmegaConf.is_list(node):
            if not (part.isdigit() and int(part) < len(node)):
                raise LazyConfigError(
                    f"unknown config key {key!r}: {where} is a list of {len(node)} items, "
                    f"{part!r} is not an index of it"
                )
            node = node[int(part)]
            continue
        if not OmegaConf.is_dict(node):
            raise LazyConfigError(
                f"unknown config key {key!r}: {where} is a value ({type(node).__name__}), "
                "not a config with keys"
            )
        if part in node:
            try:
                node = node[part]
            except Exception:  # e.g. an interpolation that does not resolve yet: a value
                node = None
            continue
        is_last = i == len(parts) - 1
        if "_target_" in node and is_last:
            parameters = _target_parameters(node)
            if parameters is None or part in parameters:
                return
            target = node["_target_"]
            name = getattr(target, "__qualname__", target)
            raise _unknown_key(key, f"{where} (a call of {name})", part, parameters)
        raise _unknown_key(key, where, part, [k for k in node if k != "_target_"])


def apply_overrides(cfg, overrides: Sequence[str]):
    """Apply ``key=value`` overrides to a LazyConfig in place, checking every key first.

    Args:
        cfg: a LazyConfig.
        overrides: strings such as ``"train.max_iter=100"``, ``"optimizer.lr=0.01"``,
            ``"dataloader.train.dataset.names=my_train"`` (values: Python literals, else strings).

    Returns:
        the config.

    Raises:
        LazyConfigError: for a string without ``=`` or an unknown key.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise LazyConfigError(
                f"override {item!r} is not key=value: python configs take overrides such as "
                "train.max_iter=100 (yacs 'KEY VALUE' pairs are for se-train-net)"
            )
        check_override_key(cfg, key.strip())
        OmegaConf.update(cfg, key.strip(), _parse_value(text.strip()), merge=True)
    return cfg


def load_lazy_config(config_file: str, overrides: Sequence[str] = ()):
    """``LazyConfig.load`` of a file or shipped name, then checked :func:`apply_overrides`.

    Args:
        config_file: see :func:`resolve_lazy_config_file`.
        overrides: ``key=value`` strings.

    Returns:
        omegaconf.DictConfig: the config.
    """
    cfg = LazyConfig.load(resolve_lazy_config_file(config_file))
    return apply_overrides(cfg, overrides)


def check_required_keys(cfg, eval_only: bool = False) -> None:
    """Raise :class:`LazyConfigError` naming the first key the training tool needs and misses.

    Training needs ``model``, ``train`` (Detectron2's ``common/train.py`` keys),
    ``dataloader.train``, ``optimizer`` and ``lr_multiplier``; evaluation ``model``, ``train``,
    ``dataloader.test`` and ``dataloader.evaluator``.
    """
    needed = ["model", "train.output_dir", "train.init_checkpoint", "train.device"]
    if eval_only:
        needed += ["dataloader.test", "dataloader.evaluator"]
    else:
        needed += [
            "train.max_iter",
            "train.amp.enabled",
            "train.ddp",
            "train.checkpointer",
            "train.eval_period",
            "train.log_period",
            "dataloader.train",
            "optimizer",
            "lr_multiplier",
        ]
    for key in needed:
        if OmegaConf.select(cfg, key, default=None) is None:
            raise LazyConfigError(
                f"the config has no {key!r}, which se-lazy-train-net needs (see Detectron2's "
                "configs/common/train.py and the shipped python configs)"
            )


def adapt_to_device(cfg) -> None:
    """Without CUDA: ``train.device=cpu``, no AMP, no fp16 gradient compression (with warnings)."""
    if torch.cuda.is_available():
        return
    changes = []
    if str(cfg.train.device).startswith("cuda"):
        changes.append(("train.device", cfg.train.device, "cpu"))
        cfg.train.device = "cpu"
    if OmegaConf.select(cfg, "train.amp.enabled", default=False):
        changes.append(("train.amp.enabled", True, False))
        cfg.train.amp.enabled = False
    if OmegaConf.select(cfg, "train.ddp.fp16_compression", default=False):
        changes.append(("train.ddp.fp16_compression", True, False))
        cfg.train.ddp.fp16_compression = False
    for key, old, new in changes:
        logger.warning(f"{key}={old} but CUDA is not available: using {key}={new}")


def dataset_names(cfg, split: str) -> List[str]:
    """The dataset names of ``dataloader.{split}.dataset.names`` (a string or a list), if any."""
    names = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None)
    if names is None:
        return []
    return [names] if isinstance(names, str) else [str(n) for n in names]


# LazyConfig model attributes of Detectron2's GeneralizedRCNN / RetinaNet -> the yacs key.
_MODEL_KEYS = {
    "pixel_mean": "MODEL.PIXEL_MEAN",
    "pixel_std": "MODEL.PIXEL_STD",
    "input_format": "INPUT.FORMAT",
}


def converted_config_view(cfg) -> Optional[Tuple[Any, Dict[str, str]]]:
    """A python config's trunk and input settings as the yacs keys converted weights record.

    ``tools/convert_pretrained.py`` stores the config its weights need under yacs names
    (``MODEL.RESNETS.STRIDE_IN_1X1``, ``MODEL.SE.AVG_DOWN``, ``MODEL.PIXEL_MEAN``,
    ``INPUT.FORMAT``, ...). For a model whose trunk is ``L(make_se_resnet)(...)`` (at
    ``model.backbone.bottom_up``, or ``model.backbone`` for C4-style models) this is
    ``get_se_cfg()`` with those keys set from the python config (a trunk argument it leaves out
    counts with ``make_se_resnet``'s default), so that ``SEDetectionCheckpointer`` can compare.

    Args:
        cfg: a loaded LazyConfig.

    Returns:
        (view, names): the yacs config and, for messages, the python-config name of each key
        (``"MODEL.RESNETS.STRIDE_IN_1X1"`` -> ``"model.backbone.bottom_up.stride_in_1x1"``);
        None for a model without a ``make_se_resnet`` trunk.
    """
    for path in ("model.backbone.bottom_up", "model.backbone"):
        trunk = OmegaConf.select(cfg, path, default=None)
        target = trunk.get("_target_") if isinstance(trunk, DictConfig) else None
        if isinstance(target, str):
            target = locate(target)
        if target is make_se_resnet:
            break
    else:
        return None
    defaults = {n: p.default for n, p in inspect.signature(make_se_resnet).parameters.items()}
    values: Dict[str, Any] = {}
    names: Dict[str, str] = {}
    for arg, key in SE_TRUNK_CFG_KEYS.items():
        if arg != "norm":  # may be a callable; converted weights do not record it
            values[key] = _plain(trunk[arg] if arg in trunk else defaults[arg])
            names[key] = f"{path}.{arg}"
    if values["MODEL.RESNETS.RES2_OUT_CHANNELS"] is None:
        basic = values["MODEL.RESNETS.DEPTH"] in BASIC_DEPTHS
        values["MODEL.RESNETS.RES2_OUT_CHANNELS"] = 64 if basic else 256
    for attr, key in _MODEL_KEYS.items():
        if attr in cfg.model:
            values[key] = _plain(cfg.model[attr])
            names[key] = f"model.{attr}"
    view = get_se_cfg()
    for key, value in values.items():
        parent, leaf = key.rsplit(".", 1)
        config_value(view, parent)[leaf] = value
    return view, names


def _plain(value: Any) -> Any:
    """OmegaConf lists/dicts and tuples as plain lists/dicts."""
    if isinstance(value, (ListConfig, DictConfig)):
        return OmegaConf.to_container(value)
    return list(value) if isinstance(value, tuple) else value
