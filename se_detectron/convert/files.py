"""Reading source checkpoints and writing Detectron2-loadable weights and configs."""

import argparse
import os
import pickle
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import yaml

from ..checkpoint.weights_file import load_weights_file
from ..utils import atomic_write
from .formats import ConversionError

__all__ = [
    "CONVERTED_AUTHOR",
    "extract_state_dict",
    "load_checkpoint_file",
    "read_converted",
    "save_converted",
    "write_config_yaml",
]

# "__author__" of the converted files. Detectron2's DetectionCheckpointer._load_file returns a
# .pkl holding both "model" and "__author__" as is; "matching_heuristics": True then makes
# _load_model map "res2.0.conv1.weight" onto "backbone.bottom_up.res2.0.conv1.weight" (FPN) or
# "backbone.res2.0.conv1.weight" (plain backbone) by name suffix.
CONVERTED_AUTHOR = "se_detectron"

_STATE_KEYS = ("model", "state_dict", "model_state", "model_state_dict", "net")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema", "model_ema_state_dict", "ema_state_dict")


def load_checkpoint_file(path: str, *, trust_pickle: bool = False) -> Mapping[str, Any]:
    """Load a ``.pth``/``.pt``/``.pkl`` (``torch.load``) or ``.safetensors`` file.

    ``torch.load`` runs with ``weights_only=True`` (argparse ``Namespace`` objects, as in the
    ``"args"`` of training checkpoints, are allowed) unless ``trust_pickle``.

    Args:
        path: the file.
        trust_pickle: unpickle arbitrary objects (runs code from the file: only for files you
            trust).

    Returns:
        dict: the loaded object.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ConversionError: if the file cannot be read safely, or is not a dict.
    """
    obj = load_weights_file(path, lambda p: _load(p, trust_pickle), "input checkpoint")
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a dict / state dict")
    return obj


def _load(path: str, trust_pickle: bool) -> Any:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # the line of PyTorch's long text that names the refused object
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        cause = next((line for line in lines if "Unsupported global" in line), lines[0])
        raise ConversionError(
            f"{path} holds Python objects that torch.load(weights_only=True) refuses "
            f"({cause[:160]}). If you trust the file, pass --trust-pickle (trust_pickle=True)."
        ) from e


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values())
    )


def extract_state_dict(container: Mapping[str, Any], *, ema: bool = False) -> Tuple[Dict, str]:
    """Find the weights in a loaded checkpoint.

    Accepts a bare state dict, or a dict with the weights under ``"model"`` / ``"state_dict"``
    (``"model_ema"`` / ``"state_dict_ema"`` with ``ema=True``), possibly nested once more (e.g.
    an EMA wrapper's ``{"module": ...}`` or ``{"state_dict": ...}``).

    Args:
        container: the loaded object.
        ema: take the exponential-moving-average weights.

    Returns:
        (state_dict, where): the weights and the key they were found under (``""`` for a bare
        state dict).

    Raises:
        ConversionError: if there are no (EMA) weights, listing the checkpoint's top-level keys.
    """
    if _is_state_dict(container):
        if ema:
            raise ConversionError("--ema: the input is a bare state dict without EMA weights")
        return dict(container), ""
    for key in _EMA_KEYS if ema else _STATE_KEYS:
        value = container.get(key)
        if _is_state_dict(value):
            return dict(value), key
        if isinstance(value, Mapping):
            for inner in ("state_dict", "module", "model"):
                if _is_state_dict(value.get(inner)):
                    return dict(value[inner]), f"{key}.{inner}"
    what = "EMA weights (" + ", ".join(_EMA_KEYS) + ")" if ema else "weights"
    raise ConversionError(
        f"no {what} found in the checkpoint; its top-level keys are {sorted(map(str, container))}"
    )


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    else:
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float64:
            tensor = tensor.float()  # fp16 / bf16 -> float32 (numpy has no bfloat16)
        array = tensor.numpy()
    return np.ascontiguousarray(array)


def save_converted(
    path: str,
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Write trunk weights as a Detectron2-loadable ``.pkl`` (atomically).

    The file holds ``{"model": {name: np.ndarray}, "__author__": "se_detectron",
    "matching_heuristics": True, "se_detectron_config": config, "se_detectron_conversion":
    metadata}``; the last two are returned (unused) by ``DetectionCheckpointer.load``.

    Args:
        path: output file, must end with ``.pkl`` (Detectron2 reads other extensions with
            ``torch.load`` and would not apply the name matching).
        state_dict: trunk name -> tensor/array.
        config: the required config (dotted keys).
        metadata: free-form information about the conversion.

    Returns:
        dict: what was written.
    """
    if not path.endswith(".pkl"):
        raise ConversionError(
            f"output {path!r} must end with .pkl: Detectron2's DetectionCheckpointer applies "
            "its name-matching heuristics only to .pkl files holding '__author__'"
        )
    data = {
        "model": {k: _to_numpy(v) for k, v in state_dict.items()},
        "__author__": CONVERTED_AUTHOR,
        "matching_heuristics": True,
        "se_detectron_config": dict(config),
        "se_detectron_conversion": dict(metadata or {}),
    }
    atomic_write(path, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))
    return data


def read_converted(path: str) -> Dict[str, Any]:
    """Load a file written by :func:`save_converted` (its weights as numpy arrays)."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    if not isinstance(data, dict) or data.get("__author__") != CONVERTED_AUTHOR:
        raise ConversionError(f"{path} was not written by se_detectron's converter")
    return data


def write_config_yaml(
    path: str,
    base_config: str,
    weights: str,
    config: Mapping[str, Any],
    *,
    header: str = "",
) -> str:
    """Write a leaf config: ``_BASE_`` = ``base_config``, ``MODEL.WEIGHTS`` and ``config``.

    Args:
        path: the YAML file to write.
        base_config: the config it inherits from; written relative to the YAML's directory (as
            Detectron2 resolves relative ``_BASE_`` paths).
        weights: the value of ``MODEL.WEIGHTS`` (written as given: a relative path is resolved
            from the working directory of the training run).
        config: dotted keys to values.
        header: comment lines put at the top.

    Returns:
        str: the YAML text written.
    """
    if not os.path.isfile(base_config):
        raise FileNotFoundError(f"base config {base_config!r} does not exist")
    out_dir = os.path.dirname(os.path.abspath(path))
    base_abs = os.path.abspath(base_config)
    shared = os.path.commonpath([out_dir, base_abs])
    # Relative when both live in one tree (e.g. the repository), absolute otherwise.
    base_ref = os.path.relpath(base_abs, out_dir) if shared != os.path.dirname(shared) else base_abs
    tree: Dict[str, Any] = {"MODEL": {"WEIGHTS": weights}}
    for key, value in config.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    body = yaml.dump(tree, Dumper=_ConfigDumper, sort_keys=False, width=100)
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    base_line = yaml.safe_dump({"_BASE_": base_ref}, width=1000)
    text = f"{comments}{base_line}{body}"
    atomic_write(path, lambda f: f.write(text.encode()))
    return text


class _ConfigDumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists (``PIXEL_MEAN: [123.675, ...]``)."""


_ConfigDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
