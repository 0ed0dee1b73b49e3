"""Record the excitations of every SE block of a model, overall and per class, on the fly.

:class:`ExcitationRecorder` is a context manager that wraps, per instance, the ``excite``
method of each :class:`~se_detectron.layers.SqueezeExcitation` of a model (the only place the
excitation weights are computed: ``forward``, ``scale_add`` and its fused training path all call
it). A forward hook
cannot see a method's result, so the wrapper is an instance attribute shadowing the class
method; it is deleted on exit, which restores the model exactly.

For each block the recorder accumulates, per class and channel, the sum, sum of squares, count,
minimum and maximum of the excitation values (one value per image and channel), in float64.
Nothing else is kept, so memory does not grow with the data set.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from se_detectron.layers import SqueezeExcitation

__all__ = ["BlockStats", "ExcitationRecorder", "se_layers"]


def se_layers(model: nn.Module) -> Dict[str, SqueezeExcitation]:
    """The model's SE layers by block name (the layer's name without its trailing ``.se``)."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):
            block = name[: -len(".se")] if name.endswith(".se") else name
            layers[block] = module
    return layers


@dataclass
class BlockStats:
    """Running statistics of one block's excitations.

    Row ``k < num_classes`` holds class ``k``; the last row holds images without a label.

    Attributes:
        sum: (K+1, C) sum of excitation values.
        sumsq: (K+1, C) sum of squared values.
        count: (K+1,) number of images.
        min: (K+1, C) minimum (``inf`` where ``count`` is 0).
        max: (K+1, C) maximum (``-inf`` where ``count`` is 0).
    """

    sum: np.ndarray
    sumsq: np.ndarray
    count: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def empty(cls, num_classes: int, channels: int) -> "BlockStats":
        """Statistics of no image."""
        shape = (num_classes + 1, channels)
        return cls(
            np.zeros(shape),
            np.zeros(shape),
            np.zeros(num_classes + 1, dtype=np.int64),
            np.full(shape, np.inf),
            np.full(shape, -np.inf),
        )

    @property
    def num_classes(self) -> int:
        return self.count.shape[0] - 1

    def update(self, values: np.ndarray, rows: np.ndarray) -> None:
        """Add (N, C) excitation values of images in the given rows (class, or ``num_classes``)."""
        np.add.at(self.sum, rows, values)
        np.add.at(self.sumsq, rows, values * values)
        np.add.at(self.count, rows, 1)
        np.minimum.at(self.min, rows, values)
        np.maximum.at(self.max, rows, values)

    def _rows(self, cls: Optional[int]) -> slice:
        return slice(None) if cls is None else slice(cls, cls + 1)

    def mean(self, cls: Optional[int] = None) -> np.ndarray:
        """(C,) mean excitation per channel over class ``cls`` (None: all images)."""
        rows = self._rows(cls)
        n = self.count[rows].sum()
        return self.sum[rows].sum(0) / max(n, 1)

    def std(self, cls: Optional[int] = None) -> np.ndarray:
        """(C,) standard deviation per channel across images of class ``cls`` (None: all)."""
        rows = self._rows(cls)
        n = max(self.count[rows].sum(), 1)
        var = self.sumsq[rows].sum(0) / n - self.mean(cls) ** 2
        return np.sqrt(np.clip(var, 0, None))

    def maximum(self, cls: Optional[int] = None) -> np.ndarray:
        """(C,) maximum per channel over class ``cls`` (None: all images)."""
        return self.max[self._rows(cls)].max(0)

    def class_means(self, classes: Optional[Sequence[int]] = None) -> np.ndarray:
        """(K', C) mean profiles of the given classes (default: classes with images)."""
        if classes is None:
            classes = [k for k in range(self.num_classes) if self.count[k] > 0]
        return np.stack([self.mean(k) for k in classes]) if classes else np.zeros((0, 0))


class ExcitationRecorder:
    """Context manager recording the excitations of every SE block of ``model``.

    Example::

        with ExcitationRecorder(model, num_classes=10) as rec:
            for images, labels in loader:
                rec.set_labels(labels)
                model(images)
        rec.stats["res5.2"].mean(cls=3)

    Args:
        model: any module containing :class:`SqueezeExcitation` layers.
        num_classes: number of classes; labels outside ``[0, num_classes)`` (e.g. -1) count as
            unlabelled (they enter the overall statistics only).

    Attributes:
        stats: block name -> :class:`BlockStats`, in the model's order (stem to head).
    """

    def __init__(self, model: nn.Module, num_classes: int):
        self.layers = se_layers(model)
        if not self.layers:
            raise ValueError("the model has no SqueezeExcitation layer to record")
        self.num_classes = num_classes
        self.stats: Dict[str, BlockStats] = {}
        self._labels: Optional[np.ndarray] = None
        self._active = False

    @property
    def blocks(self) -> List[str]:
        """Block names in the model's order."""
        return list(self.layers)

    def set_labels(self, labels) -> None:
        """Labels (one per image) of the next forward pass; None: unlabelled."""
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)

    def _record(self, block: str, s: torch.Tensor) -> None:
        values = s.detach().flatten(1).double().cpu().numpy()
        n, channels = values.shape
        if block not in self.stats:
            self.stats[block] = BlockStats.empty(self.num_classes, channels)
        labels = self._labels if self._labels is not None else np.full(n, -1)
        if labels.shape[0] != n:
            raise ValueError(f"set_labels got {labels.shape[0]} labels for a batch of {n} images")
        rows = np.where((labels >= 0) & (labels < self.num_classes), labels, self.num_classes)
        self.stats[block].update(values, rows)

    def _wrap(self, block: str, layer: SqueezeExcitation):
        original = layer.excite  # the bound class method

        def excite(z: torch.Tensor) -> torch.Tensor:
            s = original(z)
            self._record(block, s)
            return s

        return excite

    def __enter__(self) -> "ExcitationRecorder":
        if self._active:
            raise RuntimeError("ExcitationRecorder is not re-entrant")
        for block, layer in self.layers.items():
            if "excite" in vars(layer):
                raise RuntimeError(f"the excitation of {block} is already wrapped")
            layer.excite = self._wrap(block, layer)
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers.values():
            vars(layer).pop("excite", None)
        self._active = False
