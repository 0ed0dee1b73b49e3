"""A ``DetectionCheckpointer`` with atomic saves and strict checks on the pretrained trunk.

:class:`SEDetectionCheckpointer` keeps all of Detectron2's behaviour (``.pkl`` name matching,
``resume_or_load``, heads whose shapes change with ``NUM_CLASSES`` are skipped with a warning)
and adds:

1. atomic saves: the checkpoint and the ``last_checkpoint`` marker are written to temporary
   files that are ``os.replace``-d, so an interrupted save never leaves a truncated checkpoint
   or a marker naming one;
2. a missing weights file is a ``FileNotFoundError`` naming ``MODEL.WEIGHTS`` and the path
   (``""`` still means "no weights");
3. a shape mismatch in the backbone (the SE trunk and, if present, the FPN) is an error naming
   the key and both shapes, instead of a warning and a randomly initialized layer;
4. the frozen-random guard: a parameter or buffer of a frozen module (``requires_grad=False``,
   i.e. the stem and res2 with ``MODEL.BACKBONE.FREEZE_AT: 2``) that the checkpoint did not
   provide would stay random for the whole training: it is an error.
   :func:`check_no_frozen_random_init` does the same check when no weights are loaded at all;
5. given the config (``cfg=``), weights converted by ``tools/convert_pretrained.py`` whose stored
   ``se_detectron_config`` contradicts it (e.g. timm weights under ``STRIDE_IN_1X1 True``: shapes
   fit, features do not) are an error naming each key, its value and the required one.
"""

import logging
import os
import tempfile
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import urlparse

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone.resnet import ResNet
from torch import nn

from ..config import config_mismatches
from ..errors import SEDetectronError
from ..utils.atomic import disk_full_error
from .weights_file import load_weights_file

__all__ = [
    "BackboneShapeMismatchError",
    "ConvertedConfigMismatchError",
    "FrozenRandomInitError",
    "SEDetectionCheckpointer",
    "check_no_frozen_random_init",
    "frozen_state_keys",
]

logger = logging.getLogger(__name__)

_FIX = (
    "Fix: load SE-pretrained weights (convert them with tools/convert_pretrained.py, see "
    "docs/tutorials/weights.md) with MODEL.WEIGHTS, or set MODEL.BACKBONE.FREEZE_AT 0 to train "
    "every layer from its random initialization."
)


class FrozenRandomInitError(SEDetectronError, RuntimeError):
    """Frozen parameters/buffers would keep their random initialization."""


class BackboneShapeMismatchError(SEDetectronError, ValueError):
    """Checkpoint and model disagree on the shape of a backbone (trunk/FPN) tensor."""


class ConvertedConfigMismatchError(SEDetectronError, ValueError):
    """Converted weights were loaded under a config that contradicts the one they need."""


def _unwrap(model: nn.Module) -> nn.Module:
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def frozen_state_keys(model: nn.Module) -> List[str]:
    """State-dict keys of frozen modules: what an optimizer will never update.

    A parameter is frozen if ``requires_grad`` is False. A (persistent) buffer is frozen if the
    closest enclosing module that has parameters has only frozen ones: the
    ``FrozenBatchNorm2d`` statistics of a frozen ``Conv2d`` (``res2.0.conv1.norm.*``) are, those
    of a trainable stage are not.

    Args:
        model: the model (DataParallel / DDP wrappers are unwrapped).

    Returns:
        list[str]: the frozen keys, in ``state_dict`` order.
    """
    model = _unwrap(model)
    state_keys = list(model.state_dict().keys())
    frozen: Set[str] = {n for n, p in model.named_parameters() if not p.requires_grad}
    modules = dict(model.named_modules())
    owner_frozen: Dict[str, Optional[bool]] = {}

    def params_frozen(module_name: str) -> Optional[bool]:
        if module_name not in owner_frozen:
            params = list(modules[module_name].parameters())
            owner_frozen[module_name] = all(not p.requires_grad for p in params) if params else None
        return owner_frozen[module_name]

    for module_name, module in modules.items():
        for buffer_name, _ in module.named_buffers(recurse=False):
            parts = module_name.split(".") if module_name else []
            while True:
                verdict = params_frozen(".".join(parts))
                if verdict is not None or not parts:
                    break
                parts.pop()
            if verdict:
                frozen.add(f"{module_name}.{buffer_name}" if module_name else buffer_name)
    return [k for k in state_keys if k in frozen]


def _preview(keys: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > n else f" ({len(keys)})")


def check_no_frozen_random_init(model: nn.Module, cfg) -> None:
    """Refuse to train frozen layers that no checkpoint will initialize.

    Call it after building the model when training starts without weights: it does nothing if
    ``cfg.MODEL.WEIGHTS`` is set (:class:`SEDetectionCheckpointer` checks what the file
    provides) and must not be called when resuming from a checkpoint of the same run.

    Args:
        model: the detector.
        cfg: its config (``MODEL.WEIGHTS``, ``MODEL.BACKBONE.FREEZE_AT``).

    Raises:
        FrozenRandomInitError: naming the frozen keys and the fixes, if ``MODEL.WEIGHTS`` is
            empty and the model has frozen parameters or buffers.
    """
    if cfg.MODEL.WEIGHTS:
        return
    frozen = frozen_state_keys(model)
    if frozen:
        raise FrozenRandomInitError(
            f'MODEL.WEIGHTS is "" (no pretrained weights) but MODEL.BACKBONE.FREEZE_AT='
            f"{cfg.MODEL.BACKBONE.FREEZE_AT} freezes {len(frozen)} parameters/buffers, which "
            f"would stay at their random initialization: {_preview(frozen)}. {_FIX}"
        )


class SEDetectionCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` with atomic saves and strict trunk loading.

    Use it exactly as ``DetectionCheckpointer`` (e.g. in a ``DefaultTrainer``'s
    ``build_checkpointer``/``__init__``).

    Args:
        model: the model.
        save_dir: the directory of saved checkpoints and ``last_checkpoint``.
        save_to_disk: as ``DetectionCheckpointer`` (default: main process only).
        strict_shape_prefixes: state-dict key prefixes where a shape mismatch is an error. The
            default is ``"backbone."`` (if the model has a ``backbone``) plus the prefix of every
            Detectron2 ``ResNet`` in the model (the SE trunk). Everything else (heads) keeps
            Detectron2's warn-and-skip behaviour.
        cfg: the config the model was built from; with it, loading converted weights checks
            their stored ``se_detectron_config`` against it (None: no check).
        config_names: how to name the config keys in that check's error (e.g. the python-config
            names of a LazyConfig, see ``se_detectron.engine.lazy_config.converted_config_view``;
            its fix is then written as ``name=value`` overrides). None: the yacs keys.
        weights_name: how to name the weights setting in errors.
        **checkpointables: other objects to save/load (optimizer, scheduler, ...).

    Attributes:
        last_incompatible_keys: the ``IncompatibleKeys`` (missing, unexpected, incorrect shapes)
            of the last model load, for inspection.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        strict_shape_prefixes: Optional[Sequence[str]] = None,
        cfg: Any = None,
        config_names: Optional[Mapping[str, str]] = None,
        weights_name: str = "MODEL.WEIGHTS",
        **checkpointables: Any,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.cfg = cfg
        self.config_names = dict(config_names or {})
        self.weights_name = weights_name
        if strict_shape_prefixes is None:
            strict_shape_prefixes = _default_strict_prefixes(self.model)
        self.strict_shape_prefixes = tuple(strict_shape_prefixes)
        self.last_incompatible_keys = None
        self._atomic_pending: Optional[Tuple[str, str]] = None

    # ---------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Save like ``Checkpointer.save``, to a temporary file renamed over ``{name}.pth``.

        The parent writes the data to ``.{name}.pth.<random>.tmp.pth`` and calls
        :meth:`tag_last_checkpoint`, which renames it to ``{name}.pth`` before writing the
        marker; on failure the temporary file is removed and nothing else changes.

        Raises:
            DiskFullError: no space left, naming the checkpoint that was kept.
        """
        if not self.save_dir or not self.save_to_disk:
            return super().save(name, **kwargs)
        temp_name = f".{name}.pth.{uuid.uuid4().hex[:12]}.tmp"
        self._atomic_pending = (f"{temp_name}.pth", f"{name}.pth")
        previous = self.get_checkpoint_file() if self.has_checkpoint() else None
        try:
            super().save(temp_name, **kwargs)
        except Exception as e:
            full = disk_full_error(e, os.path.join(self.save_dir, f"{name}.pth"), previous)
            if full is not None:
                raise full from e
            raise
        finally:
            self._atomic_pending = None
            leftover = os.path.join(self.save_dir, f"{temp_name}.pth")
            if os.path.exists(leftover):  # the save failed before being tagged
                os.remove(leftover)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically point ``last_checkpoint`` at a file (first publishing a pending save)."""
        pending = self._atomic_pending
        if pending is not None and last_filename_basename == pending[0]:
            temp = os.path.join(self.save_dir, pending[0])
            final = os.path.join(self.save_dir, pending[1])
            _fsync_file(temp)
            os.replace(temp, final)
            self.logger.info(f"Checkpoint saved to {final}")
            last_filename_basename = pending[1]
        marker = os.path.join(self.save_dir, "last_checkpoint")
        fd, temp = tempfile.mkstemp(dir=self.save_dir, prefix=".last_checkpoint.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(last_filename_basename)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, marker)
        except BaseException:
            if os.path.exists(temp):
                os.remove(temp)
            raise
        _fsync_dir(self.save_dir)

    # ---------------------------------------------------------------- loading
    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """Load like ``DetectionCheckpointer.load``; a missing local file is FileNotFoundError.

        Args:
            path: a local path or URL; ``""`` loads nothing (training from scratch).
            *args: as ``DetectionCheckpointer.load``.
            **kwargs: as ``DetectionCheckpointer.load`` (``checkpointables``).

        Raises:
            FileNotFoundError: naming ``MODEL.WEIGHTS`` and the path.
            BackboneShapeMismatchError: a backbone tensor of another shape (the key, both shapes).
            FrozenRandomInitError: a frozen parameter or buffer the checkpoint does not provide.
        """
        if path:
            parsed = urlparse(path)
            if not parsed.scheme:  # a local path (URLs are resolved by Detectron2's PathManager)
                local = parsed._replace(query="").geturl()
                if not os.path.isfile(local):
                    raise FileNotFoundError(
                        f"weights file {local!r} does not exist (MODEL.WEIGHTS, or the "
                        f"checkpoint named by last_checkpoint when resuming; working directory "
                        f"{os.getcwd()!r}). Convert pretrained weights with "
                        'tools/convert_pretrained.py, fix the path, or set MODEL.WEIGHTS "" '
                        "(with MODEL.BACKBONE.FREEZE_AT 0) to train from scratch."
                    )
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """Detectron2's reader, with an empty, truncated or foreign file as one
        :class:`~se_detectron.checkpoint.weights_file.WeightsFileError` naming it."""
        resuming = self.has_checkpoint() and filename == self.get_checkpoint_file()
        what = "checkpoint" if resuming else self.weights_name
        return load_weights_file(filename, super()._load_file, what)

    def _load_model(self, checkpoint: Any):
        """Load as Detectron2 does, then enforce backbone shapes and the frozen-random guard.

        Raises:
            BackboneShapeMismatchError: if a checkpoint tensor meant for a key under
                :attr:`strict_shape_prefixes` has another shape (Detectron2 would skip it).
            FrozenRandomInitError: if frozen parameters/buffers were not in the checkpoint.
            ConvertedConfigMismatchError: see :meth:`_check_converted_config`.
        """
        self._check_converted_config(checkpoint)
        shapes = {k: tuple(v.shape) for k, v in checkpoint.get("model", {}).items()}
        heuristics = bool(checkpoint.get("matching_heuristics", False))
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible_keys = incompatible
        self._check_backbone_shapes(incompatible, shapes, heuristics)
        self._check_frozen_loaded(incompatible)
        return incompatible

    def _check_converted_config(self, checkpoint: Any) -> None:
        required = checkpoint.get("se_detectron_config") if isinstance(checkpoint, dict) else None
        if self.cfg is None or not isinstance(required, dict):
            return
        mismatches = config_mismatches(self.cfg, required)
        if mismatches:
            names = self.config_names
            details = "; ".join(
                f"{names.get(key, key)} is {have!r} but the weights need {want!r}"
                for key, have, want in mismatches
            )
            # as one would type them after train_net: KEY VALUE pairs (lists without spaces), or
            # name=value overrides of a python config
            sep = "=" if names else " "
            fix = " ".join(
                f"{names.get(key, key)}{sep}{repr(want).replace(', ', ',')}"
                for key, _, want in mismatches
            )
            raise ConvertedConfigMismatchError(
                f"the converted weights in {self.weights_name} were made for another config: "
                f"{details}. "
                "The shapes may fit, the features would not. Use the values the converter printed "
                f"(stored in the .pkl under 'se_detectron_config'), e.g. add: {fix}"
            )

    def _check_backbone_shapes(self, incompatible, ckpt_shapes, heuristics: bool) -> None:
        model_sd = self.model.state_dict()
        # (checkpoint key, model key, checkpoint shape, model shape)
        found: List[Tuple[str, str, Tuple[int, ...], Tuple[int, ...]]] = [
            (k, k, tuple(s_ckpt), tuple(s_model))
            for k, s_ckpt, s_model in incompatible.incorrect_shapes
        ]
        if heuristics:
            # align_and_update_state_dicts gives each model key the longest checkpoint key that
            # is a dotted suffix of it, and skips it with a warning if the shapes differ: the
            # model key is then missing. Find those pairs again.
            for model_key in incompatible.missing_keys:
                if not model_key.startswith(self.strict_shape_prefixes):
                    continue
                candidates = [
                    k for k in ckpt_shapes if model_key == k or model_key.endswith("." + k)
                ]
                if not candidates:
                    continue
                key = max(candidates, key=len)
                model_shape = tuple(model_sd[model_key].shape)
                if ckpt_shapes[key] != model_shape:
                    found.append((key, model_key, ckpt_shapes[key], model_shape))
        strict = [f for f in found if f[1].startswith(self.strict_shape_prefixes)]
        if strict:
            details = "; ".join(
                f"{ck}{'' if ck == mk else f' (model key {mk})'}: {sc} in the checkpoint vs {sm} "
                "in the model"
                for ck, mk, sc, sm in strict[:6]
            )
            more = f" ... and {len(strict) - 6} more" if len(strict) > 6 else ""
            raise BackboneShapeMismatchError(
                f"{len(strict)} backbone tensors of the checkpoint do not fit the model: "
                f"{details}{more}. The checkpoint was made for another architecture: use the "
                "MODEL.RESNETS.* / MODEL.SE.* values it was made with (for weights converted by "
                "tools/convert_pretrained.py: the values it printed, also stored in the .pkl "
                "under 'se_detectron_config')."
            )

    def _check_frozen_loaded(self, incompatible) -> None:
        missing = set(incompatible.missing_keys)
        if not missing:
            return
        not_loaded = [k for k in frozen_state_keys(self.model) if k in missing]
        if not_loaded:
            raise FrozenRandomInitError(
                f"{len(not_loaded)} parameters/buffers of frozen modules (requires_grad=False, "
                "from MODEL.BACKBONE.FREEZE_AT > 0) are not in the checkpoint and would stay at "
                f"their random initialization: {_preview(not_loaded)}. {_FIX}"
            )


def _default_strict_prefixes(model: nn.Module) -> List[str]:
    prefixes = ["backbone."] if isinstance(getattr(model, "backbone", None), nn.Module) else []
    for name, module in model.named_modules():
        if isinstance(module, ResNet):
            prefixes.append(f"{name}." if name else "")
    return prefixes


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
