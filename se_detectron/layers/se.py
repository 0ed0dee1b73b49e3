"""The Squeeze-and-Excitation layer (Hu et al., "Squeeze-and-Excitation Networks", 1709.01507).

This module is the only implementation of the SE math in the project: the SE bottleneck block,
the classifier, the converters and the analysis tools all use :class:`SqueezeExcitation`.

The layer computes, for an input ``x`` of shape (N, C, H, W):

* squeeze (Sec. 3.1): ``z = GlobalPool(x)`` of shape (N, C, 1, 1), average pooling by default,
  max pooling as ablated in Table 11;
* excitation (Sec. 3.2): ``s = gate(W2 relu(W1 z))`` with ``W1: C -> C/r`` and ``W2: C/r -> C``,
  the reduction ratio ``r`` being ablated in Table 10 and the gate (sigmoid, tanh, relu) in
  Table 12. ``W1``/``W2`` are 1x1 convolutions (equivalent to fully connected layers on the pooled
  vector) with biases, as in the released models, so that public weights map one-to-one;
* scale (Sec. 3.3): ``y = s * x``, a channel-wise multiply.

:meth:`SqueezeExcitation.scale_add` fuses the scale with the residual addition of the standard SE
block (``shortcut + s * x`` in one ``addcmul``), as the original Caffe release fused the two.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SE_GATES", "SE_SQUEEZES", "SqueezeExcitation", "se_reduced_channels"]

SE_SQUEEZES = ("avg", "max")
SE_GATES = ("sigmoid", "tanh", "relu")


def se_reduced_channels(channels: int, reduction: int) -> int:
    """Width of the bottleneck of the excitation MLP: ``channels // reduction`` (Sec. 3.2).

    Args:
        channels: number of channels C of the feature map the layer recalibrates.
        reduction: the reduction ratio r.

    Returns:
        C // r.

    Raises:
        ValueError: if ``reduction`` is not a positive integer or leaves no hidden unit.
    """
    if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction <= 0:
        raise ValueError(f"SE reduction ratio must be a positive integer, got {reduction!r}")
    if channels // reduction < 1:
        raise ValueError(
            f"SE reduction ratio {reduction} is larger than the {channels} channels it reduces "
            f"(C/r must be >= 1); use a reduction <= {channels}"
        )
    return channels // reduction


class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation channel recalibration.

    Args:
        channels: number of input (and output) channels C.
        reduction: reduction ratio r of the excitation bottleneck (paper default 16, Table 10).
        squeeze: global pooling used to squeeze spatial information, ``"avg"`` (paper default)
            or ``"max"`` (Table 11).
        gate: excitation non-linearity, ``"sigmoid"`` (paper default), ``"tanh"`` or ``"relu"``
            (Table 12).
        bias: whether the two fully connected layers have biases (True in the released models).

    Attributes:
        fc1: the C -> C/r layer (a 1x1 convolution).
        fc2: the C/r -> C layer (a 1x1 convolution).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        bias: bool = True,
    ):
        super().__init__()
        if squeeze not in SE_SQUEEZES:
            raise ValueError(f"SE squeeze must be one of {SE_SQUEEZES}, got {squeeze!r}")
        if gate not in SE_GATES:
            raise ValueError(f"SE gate must be one of {SE_GATES}, got {gate!r}")
        hidden = se_reduced_channels(channels, reduction)
        self.channels = channels
        self.reduction = reduction
        self.squeeze = squeeze
        self.gate = gate
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=bias)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel excitation weights ``s`` of shape (N, C, 1, 1) for input ``x``."""
        if self.squeeze == "avg":
            z = x.mean((2, 3), keepdim=True)
        else:
            z = x.amax((2, 3), keepdim=True)
        s = self.fc2(F.relu(self.fc1(z)))
        if self.gate == "sigmoid":
            return torch.sigmoid(s)
        if self.gate == "tanh":
            return torch.tanh(s)
        return F.relu(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recalibrate ``x``: ``x * excitation(x)``."""
        return x * self.excitation(x)

    def scale_add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Fused scale and residual addition: ``residual + x * excitation(x)``.

        Args:
            x: the feature map to recalibrate (the residual branch output).
            residual: the tensor to add (the shortcut), same shape as ``x``.
        """
        return torch.addcmul(residual, x, self.excitation(x))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}, squeeze={self.squeeze}, gate={self.gate}"
