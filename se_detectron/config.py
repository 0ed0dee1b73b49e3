"""Every config key se_detectron adds to Detectron2's, in one place.

Every other ``MODEL.RESNETS.*`` / ``MODEL.BACKBONE.*`` / ``MODEL.FPN.*`` key keeps its Detectron2
meaning. :func:`add_se_config` adds the ``MODEL.SE`` namespace (Squeeze-and-Excitation) and the
few keys of the training tools (``SOLVER.OPTIMIZER``/``BETAS``/``AMP.PRECISION``,
``DATASETS.REGISTER_COCO``/``REGISTER_VOC``, ``TEST.COCO_EVAL_BACKEND``), so that Detectron2's
documented path ``cfg = get_cfg(); add_se_config(cfg); cfg.merge_from_file(...)`` loads every
shipped config.
:func:`get_se_cfg` is ``get_cfg()`` + :func:`add_se_config` + merge, and the shipped configs are
found here (:func:`get_config_file`); :func:`merge_config_file` / :func:`merge_config_opts` merge
with errors that name the file or the override at fault. This module imports only
:mod:`se_detectron.errors` from the package: it is the bottom of the layering.
"""

import math
import os
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .errors import SEDetectronError

__all__ = [
    "CONFIG_ROOT",
    "ConfigError",
    "RENAMED_KEYS",
    "DEFAULT_COCO_EVAL_BACKEND",
    "add_se_config",
    "config_mismatches",
    "config_opts",
    "config_value",
    "get_config_file",
    "get_se_cfg",
    "list_configs",
    "merge_config_file",
    "merge_config_opts",
    "rename_deprecated_keys",
    "rename_deprecated_opts",
    "same_value",
]

#: Config keys that were renamed, old dotted key -> new one. The old key is still accepted (with a
#: FutureWarning naming the new key) in config files, command-line overrides and checkpoints'
#: configs merged through :func:`merge_config_file`, :func:`merge_config_opts`,
#: :func:`get_se_cfg` and :func:`rename_deprecated_keys`.
RENAMED_KEYS = {"MODEL.SE.CPU_ROI_ALIGN": "MODEL.CPU_ROI_ALIGN"}

#: The shipped configs, inside the package (as Detectron2's model_zoo configs) so that an installed
#: wheel has them; the checkout's top-level ``configs/`` is a symlink to this folder.
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"

# Not bit-identical to pycocotools (see se_detectron.evaluation.coco), so not the default.
DEFAULT_COCO_EVAL_BACKEND = "pycocotools"


def add_se_config(cfg):
    """Add se_detectron's commented config keys to a Detectron2 config.

    Call it on ``get_cfg()`` before merging an se_detectron config file, exactly as Detectron2
    projects call ``add_pointrend_config`` / ``add_tridentnet_config``. Idempotent: keys already
    present (e.g. merged values) are kept.

    Args:
        cfg (CfgNode): a Detectron2 config, modified in place.

    Returns:
        CfgNode: ``cfg``.
    """
    _add_model_se(cfg)
    _add_model(cfg)
    _add_solver(cfg)
    _add_datasets(cfg)
    _add_test(cfg)
    return cfg


def _add_model_se(_C):
    if "SE" in _C.MODEL:
        return
    _C.MODEL.SE = CN()
    # Reduction ratio r of the excitation bottleneck FC(C -> C/r) - ReLU - FC(C/r -> C)
    # (paper Sec. 3.2, ablated in Table 10; 16 is the paper's default).
    _C.MODEL.SE.REDUCTION = 16
    # Squeeze operator: global "avg" pooling (paper default) or "max" pooling (Table 11).
    _C.MODEL.SE.SQUEEZE = "avg"
    # Excitation gate: "sigmoid" (paper default), "tanh" or "relu" (Table 12).
    _C.MODEL.SE.GATE = "sigmoid"
    # Where the SE unit sits in the bottleneck (paper Fig. 5, Tables 14-15):
    #   "standard": on the residual branch, after the last 1x1 conv, before the addition;
    #   "pre":      on the block input, before the residual branch (the shortcut sees the input);
    #   "post":     after the addition with the identity branch (after the final ReLU);
    #   "identity": on the shortcut branch, in parallel to the residual branch;
    #   "3x3":      right after the 3x3 conv of the residual branch.
    _C.MODEL.SE.POSITION = "standard"
    # Which stages get SE bottlenecks; the others use Detectron2's plain BottleneckBlock.
    _C.MODEL.SE.STAGES = ["res2", "res3", "res4", "res5"]
    # Biases in the two excitation FC layers (the released SENet models have them).
    _C.MODEL.SE.BIAS = True
    # Stem: "basic" is Detectron2's BasicStem (7x7/2 conv + 3x3/2 max-pool); "deep" is SENet-154's
    # three 3x3 convs (STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS; paper appendix)
    # followed by the 3x3/2 max-pool.
    _C.MODEL.SE.STEM = "basic"
    # Max-pool of the stem with ceil_mode=True and no padding, as in the released Caffe models
    # (and Cadene's / timm's legacy ports); False keeps Detectron2's padding=1 pooling.
    _C.MODEL.SE.STEM_CEIL_POOL = False
    # Width of each bottleneck's first 1x1 conv relative to its 3x3 conv. SENet-154 halves it
    # (0.5, paper appendix); 1.0 is the standard bottleneck.
    _C.MODEL.SE.CONV1_WIDTH_RATIO = 1.0
    # Kernel size of the strided projection shortcuts of res3-res5: 1 (ResNet), or 3 as in
    # SENet-154 (paper appendix: "3x3 stride-2 convolution" replaces the 1x1 projection).
    _C.MODEL.SE.SHORTCUT_KERNEL = 1
    # Widths of the first two convs of the "deep" stem; [] means STEM_OUT_CHANNELS/2 for both
    # (SENet-154's 64-64-128, ResNet-D's 32-32-64). timm's tiered stem ("...t" models) is [24, 32].
    _C.MODEL.SE.STEM_WIDTHS = []
    # ResNet-D projection shortcuts (He et al., "Bag of Tricks", arXiv 1812.01187, Fig. 2c; timm's
    # avg_down): a 2x2 stride-2 average pool, then a stride-1 1x1 conv (no pool at stride 1).
    _C.MODEL.SE.AVG_DOWN = False
    # Anti-aliased downsampling (timm's aa_layer=nn.AvgPool2d, "seresnextaa" models): each strided
    # 3x3 conv runs at stride 1 and is followed by a 2x2 average pool; the stem average-pools
    # instead of max-pooling. Needs MODEL.RESNETS.STRIDE_IN_1X1 False.
    _C.MODEL.SE.ANTI_ALIAS = False


def _add_model(_C):
    # RoIAlign of the box/mask poolers on CPU tensors: "torchvision" (Detectron2's, a
    # single-threaded CPU kernel) or "separable" (the same values as two matrix products,
    # se_detectron/layers/roi_align.py: faster on small feature maps such as the synthetic
    # configs' 128x128 images, dense in H x W so not for COCO-sized ones). CUDA always uses
    # torchvision's kernel. Formerly MODEL.SE.CPU_ROI_ALIGN (see RENAMED_KEYS).
    if "CPU_ROI_ALIGN" not in _C.MODEL:
        _C.MODEL.CPU_ROI_ALIGN = "torchvision"
    for old, new in RENAMED_KEYS.items():
        # a plain Detectron2 merge (cfg.merge_from_file) of an old key: yacs's error naming the new
        # key; merge_config_file / merge_config_opts / get_se_cfg accept it with a warning
        if not _C.key_is_renamed(old):
            _C.register_renamed_key(old, new, "se_detectron's merge_config_file accepts it")


def _add_solver(_C):
    # "SGD" (Detectron2's: SOLVER.MOMENTUM, SOLVER.NESTEROV) or "AdamW" (decoupled weight decay
    # SOLVER.WEIGHT_DECAY, betas SOLVER.BETAS). BASE_LR and the schedule apply to both.
    if "OPTIMIZER" not in _C.SOLVER:
        _C.SOLVER.OPTIMIZER = "SGD"
    # AdamW's (beta1, beta2).
    if "BETAS" not in _C.SOLVER:
        _C.SOLVER.BETAS = (0.9, 0.999)
    # Autocast dtype of SOLVER.AMP.ENABLED (CUDA only, as Detectron2's AMPTrainer): "float16"
    # (Detectron2's default, with a GradScaler) or "bfloat16" (no loss scaling needed).
    if "PRECISION" not in _C.SOLVER.AMP:
        _C.SOLVER.AMP.PRECISION = "float16"


def _add_datasets(_C):
    # COCO-format datasets to register, one "NAME:ANNOTATION_JSON:IMAGE_ROOT" string each;
    # "file_name" entries of the json are relative to IMAGE_ROOT.
    if "REGISTER_COCO" not in _C.DATASETS:
        _C.DATASETS.REGISTER_COCO = []
    # Pascal-VOC-layout datasets, one "NAME:VOC_ROOT:SPLIT" string each: ROOT/Annotations/*.xml,
    # ROOT/JPEGImages/*, ROOT/ImageSets/Main/SPLIT.txt. Class names are the sorted set of
    # <object><name> over all ImageSets/Main/*.txt splits of ROOT (so every split of one root
    # shares one id map), or an optional 4th field "CLASS1,CLASS2,...".
    if "REGISTER_VOC" not in _C.DATASETS:
        _C.DATASETS.REGISTER_VOC = []


def _add_test(_C):
    # COCOeval engine of the box evaluator: "pycocotools" (official COCOeval) or
    # "faster_coco_eval" (C++ COCOeval_faster, ~9x faster; AP equal to pycocotools to within
    # ~1e-15, not bit for bit: it drops the eps pycocotools adds to precision's denominator).
    if "COCO_EVAL_BACKEND" not in _C.TEST:
        _C.TEST.COCO_EVAL_BACKEND = DEFAULT_COCO_EVAL_BACKEND


def list_configs(suffix: Optional[str] = None) -> List[str]:
    """The shipped configs, as paths relative to :data:`CONFIG_ROOT` (sorted); also
    :func:`se_detectron.model_zoo.list_configs`.

    Args:
        suffix: ``".yaml"`` (the yacs configs), ``".py"`` (the LazyConfigs) or None (both, the
            default, as ``detectron2.model_zoo``). The LazyConfig fragments under ``common/``
            (imported by the python configs, not complete configs) are not listed.
    """
    suffixes = (".yaml", ".py") if suffix is None else (suffix,)
    found = (
        p.relative_to(CONFIG_ROOT)
        for p in CONFIG_ROOT.rglob("*")
        if p.suffix in suffixes and p.is_file() and "__pycache__" not in p.parts
    )
    return sorted(str(p) for p in found if p.suffix == ".yaml" or p.parts[0] != "common")


def get_config_file(config_path: str) -> str:
    """Absolute path of a config shipped with se_detectron.

    Args:
        config_path: path relative to :data:`CONFIG_ROOT`, e.g.
            ``"COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml"`` or (a LazyConfig)
            ``"COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.py"``.

    Raises:
        FileNotFoundError: naming the path and listing the shipped configs.
    """
    path = CONFIG_ROOT / config_path
    if not path.is_file():
        raise FileNotFoundError(
            f"no se_detectron config {config_path!r} under {CONFIG_ROOT}; "
            f"available: {list_configs(None)}"
        )
    return str(path)


def get_se_cfg(config_file: Optional[str] = None, opts: Sequence[str] = ()):
    """``get_cfg()`` + :func:`add_se_config` + merge: Detectron2's documented path in one call.

    Args:
        config_file: a YAML file to merge (a path, or a path relative to :data:`CONFIG_ROOT`).
        opts: ``["KEY", "VALUE", ...]`` overrides merged after the file.

    Returns:
        CfgNode: the (unfrozen) config.
    """
    cfg = get_cfg()
    add_se_config(cfg)
    if config_file:
        if not Path(config_file).is_file():
            config_file = get_config_file(config_file)
        merge_config_file(cfg, config_file)
    if opts:
        merge_config_opts(cfg, opts)
    return cfg


class ConfigError(SEDetectronError, ValueError):
    """A config file or override cannot be merged; the message names the file or the key."""


_KEY_HINT = "SE options live under MODEL.SE, see se_detectron/config.py"


def _base_path(base: str, referring_file: str) -> str:
    # where Detectron2's CfgNode.load_yaml_with_base looks for a _BASE_
    base = os.path.expanduser(base)
    if base.startswith(("/", "https://", "http://")):
        return base
    return os.path.join(os.path.dirname(referring_file), base)


class _BaseOnlyLoader(yaml.SafeLoader):
    """Reads a config for its ``_BASE_`` only: Python tags (``!!python/object/apply:eval``,
    which Detectron2 evaluates when it merges) are read as None, not run."""


_BaseOnlyLoader.add_multi_constructor("", lambda loader, suffix, node: None)


def check_config_bases(config_file: str) -> None:
    """Check that ``config_file`` and every ``_BASE_`` it inherits from exist and are YAML.

    Raises:
        ConfigError: naming the missing base and the file that refers to it, or the file that
            is not valid YAML.
    """
    seen = set()
    path = config_file
    while path and path not in seen and not path.startswith(("https://", "http://")):
        seen.add(path)
        try:
            with open(path) as f:
                content = yaml.load(f, Loader=_BaseOnlyLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path!r} is not a text (YAML) file: {e}") from None
        base = content.get("_BASE_") if isinstance(content, dict) else None
        if not base:
            return
        resolved = _base_path(str(base), path)
        if not os.path.isfile(resolved) and not resolved.startswith(("https://", "http://")):
            raise ConfigError(
                f"config file {path!r} inherits from _BASE_: {base!r}, but {resolved!r} does "
                "not exist (a relative _BASE_ is resolved from the folder of the file that "
                "names it)"
            )
        path = resolved


def merge_config_file(cfg, config_file: str) -> None:
    """``cfg.merge_from_file(config_file)`` with errors naming the file.

    Raises:
        ConfigError: a missing ``_BASE_`` (naming the file that refers to it), invalid YAML, an
            unknown key or a value of the wrong type, naming ``config_file``.
    """
    check_config_bases(config_file)
    try:
        loaded = cfg.load_yaml_with_base(config_file, allow_unsafe=True)
        if any(_has_key(loaded, old) for old in RENAMED_KEYS):
            loaded = type(cfg)(loaded)
            rename_deprecated_keys(loaded, config_file)
            cfg.merge_from_other_cfg(loaded)
        else:  # Detectron2's own merge (and its upgrade of VERSION 1 configs)
            cfg.merge_from_file(config_file)
    except (KeyError, AssertionError, ValueError) as e:
        # yacs: unknown key -> KeyError, wrong type -> ValueError
        message = str(e.args[0] if e.args else e)
        raise ConfigError(f"config error in {config_file}: {message} ({_KEY_HINT})") from None


def merge_config_opts(cfg, opts: Sequence[str]) -> None:
    """``cfg.merge_from_list(opts)`` with errors naming the command-line override.

    Args:
        cfg: the config.
        opts: ``["KEY", "VALUE", ...]``.

    Raises:
        ConfigError: an odd number of items, an unknown key or a value of the wrong type.
    """
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides on the command line come in KEY VALUE pairs, but {opts[-1]!r} "
            f"has no value ({len(opts)} items: {' '.join(map(str, opts))})"
        )
    try:
        cfg.merge_from_list(rename_deprecated_opts(opts))
    except (KeyError, AssertionError, ValueError) as e:
        # yacs: unknown key -> AssertionError, wrong type -> ValueError
        message = str(e.args[0] if e.args else e)
        raise ConfigError(
            f"config error in the command-line overrides: {message} ({_KEY_HINT})"
        ) from None


def _has_key(tree: Mapping, dotted_key: str) -> bool:
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree, Mapping) else None
    return isinstance(tree, Mapping) and leaf in tree


def _warn_renamed(old: str, new: str, where: str) -> None:
    warnings.warn(
        f"{where}: config key {old} is now {new}; {old} is accepted for now, rename it",
        FutureWarning,
        stacklevel=3,
    )


def rename_deprecated_keys(tree, where: str):
    """Move the :data:`RENAMED_KEYS` found in a loaded config to their new names, warning once
    per key.

    Args:
        tree: a loaded config (``CfgNode`` or nested dicts), changed in place.
        where: what it is, for the warning (e.g. the file name).

    Returns:
        ``tree``.

    Raises:
        ConfigError: if it sets both an old key and its new name, to different values.
    """
    for old, new in RENAMED_KEYS.items():
        if not _has_key(tree, old):
            continue
        *old_parents, old_leaf = old.split(".")
        node = tree
        for part in old_parents:
            node = node[part]
        value = node.pop(old_leaf)
        _warn_renamed(old, new, where)
        *new_parents, new_leaf = new.split(".")
        node = tree
        for part in new_parents:
            node = node.setdefault(part, type(node)())
        if new_leaf in node and not same_value(node[new_leaf], value):
            raise ConfigError(
                f"{where}: {old}={value!r} (the former name of {new}) and {new}="
                f"{node[new_leaf]!r} disagree; keep {new} only"
            )
        node[new_leaf] = value
    return tree


def rename_deprecated_opts(opts: Sequence[Any]) -> List[Any]:
    """``["KEY", "VALUE", ...]`` overrides with the :data:`RENAMED_KEYS` replaced by their new
    names (a FutureWarning for each)."""
    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        if out[i] in RENAMED_KEYS:
            _warn_renamed(out[i], RENAMED_KEYS[out[i]], "the command-line overrides")
            out[i] = RENAMED_KEYS[out[i]]
    return out


def config_value(cfg, dotted_key: str) -> Any:
    """``cfg["A"]["B"]`` for ``"A.B"``.

    Raises:
        KeyError: if a part of the key is missing.
    """
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def same_value(a, b) -> bool:
    """Config value equality: floats to 1e-6 relative, lists and tuples alike, bools as bools."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def config_mismatches(cfg, config: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """The keys where ``cfg`` differs from the required ``config``.

    Args:
        cfg: a Detectron2 config with the SE namespace.
        config: dotted keys to required values.

    Returns:
        list of (key, value in cfg, required value); floats are compared with a 1e-6 relative
        tolerance and lists/tuples element-wise.
    """
    out = []
    for key, want in config.items():
        try:
            have = config_value(cfg, key)
        except KeyError:
            out.append((key, None, want))
            continue
        if not same_value(have, want):
            out.append((key, have, want))
    return out


def config_opts(config: Mapping[str, Any]) -> List[Any]:
    """``{"A.B": v}`` as the flat ``["A.B", v, ...]`` list ``CfgNode.merge_from_list`` takes."""
    return [item for key_value in config.items() for item in key_value]
