"""The Squeeze-and-Excitation layer (Hu et al., "Squeeze-and-Excitation Networks", 1709.01507).

This module is the only implementation of the SE math in the project: the SE bottleneck block,
the classifier, the converters and the analysis tools all use :class:`SqueezeExcitation`.

The layer computes, for an input ``x`` of shape (N, C, H, W):

* squeeze (Sec. 3.1): ``z = GlobalPool(x)`` of shape (N, C), average pooling by default, max
  pooling as ablated in Table 11 (:meth:`SqueezeExcitation.squeeze`);
* excitation (Sec. 3.2): ``s = gate(W2 relu(W1 z))`` with ``W1: C -> C/r`` and ``W2: C/r -> C``,
  the reduction ratio ``r`` being ablated in Table 10 and the gate (sigmoid, tanh, relu) in
  Table 12 (:meth:`SqueezeExcitation.excite`). ``W1``/``W2`` are stored as 1x1 convolutions with
  biases, as in the released models, so that public weights map one-to-one; they are applied as
  matrix products on the pooled vector (the same numbers, without a convolution's set-up cost);
* scale (Sec. 3.3): ``y = s * x``, a channel-wise multiply.

Performance. SE adds ~0.1% multiply-adds to a ResNet-50 but, done naively, 8-18% of its time on
a 2-core CPU (``tools/benchmark.py``, docs/notes/benchmarks.md): the pool and the multiply are
memory-bound passes over the feature map, and each fresh full-size result costs page faults on
CPU. So the residual block's scale is fused with its residual addition (``shortcut + s * x`` in
one ``addcmul``, as the original Caffe release fused the two):

* without autograd (inference, frozen stages) :meth:`SqueezeExcitation.scale_add` can write the
  result over ``x`` (``inplace=True``), which costs about what the plain block's ``x += shortcut``
  costs, so the only extra pass left is the pool;
* with autograd and average squeeze, an ``autograd.Function`` (``_SqueezeScaleAdd``) computes
  the backward of pool, scale and addition in two passes over the feature map (one per-channel
  dot product for the excitation's gradient, one ``addcmul`` for the input's) instead of the five
  to six full-size temporaries that autograd builds from the separate operations.

Both give the same numbers as the straightforward operations (``x * s + shortcut``); the
straightforward path is kept, selectable with :func:`se_fast_path`, and it is what TorchScript
scripting/tracing, ONNX export and ``torch.compile`` use.
"""

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = [
    "SE_GATES",
    "SE_SQUEEZES",
    "SqueezeExcitation",
    "se_fast_path",
    "se_fast_path_enabled",
    "se_reduced_channels",
]

SE_SQUEEZES = ("avg", "max")
SE_GATES = ("sigmoid", "tanh", "relu")

_FAST_PATH = True


@contextlib.contextmanager
def se_fast_path(enabled: bool) -> Iterator[None]:
    """Context manager selecting the fused SE computation (default) or the straightforward one.

    The straightforward path computes ``x * s`` and ``+ shortcut`` as separate operations and lets
    autograd differentiate them; it exists as the reference the fast path is tested and
    benchmarked against (``tools/benchmark.py``). The setting is process-wide.

    Args:
        enabled: True for the fused path, False for the straightforward one.
    """
    global _FAST_PATH
    previous, _FAST_PATH = _FAST_PATH, bool(enabled)
    try:
        yield
    finally:
        _FAST_PATH = previous


def se_fast_path_enabled() -> bool:
    """Whether SE layers currently use the fused computation (see :func:`se_fast_path`)."""
    return _FAST_PATH


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
        fc1: the C -> C/r layer (stored as a 1x1 convolution).
        fc2: the C/r -> C layer (stored as a 1x1 convolution).
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
        self.squeeze_type = squeeze
        self.gate = gate
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=bias)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """Squeeze (Sec. 3.1): global pooling of ``x`` (N, C, H, W) to ``z`` (N, C)."""
        if self.squeeze_type == "avg":
            return x.mean((2, 3))
        return x.amax((2, 3))

    def excite(self, z: torch.Tensor) -> torch.Tensor:
        """Excitation (Sec. 3.2): ``gate(W2 relu(W1 z))`` for pooled ``z`` (N, C); returns (N, C).

        Every path of the layer computes its channel weights here, so wrapping this method (as
        ``se_detectron.analysis`` does) sees every excitation the model computes.
        """
        h = F.relu(F.linear(z, self.fc1.weight.flatten(1), self.fc1.bias))
        s = F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias)
        if self.gate == "sigmoid":
            return torch.sigmoid(s)
        if self.gate == "tanh":
            return torch.tanh(s)
        return F.relu(s)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel excitation weights ``s`` of shape (N, C, 1, 1) for input ``x``."""
        return self.excite(self.squeeze(x))[:, :, None, None]

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Recalibrate ``x``: ``x * excitation(x)``.

        Args:
            x: (N, C, H, W) feature map.
            inplace: allow writing the result over ``x`` when autograd does not need ``x`` (the
                caller must own ``x``). Ignored otherwise.
        """
        if torch.jit.is_scripting():
            return x * self.excitation(x)
        return self._scale_eager(x, inplace)

    def scale_add(
        self, x: torch.Tensor, residual: torch.Tensor, inplace: bool = False
    ) -> torch.Tensor:
        """Fused scale and residual addition: ``residual + x * excitation(x)``.

        Args:
            x: the feature map to recalibrate (the residual branch output).
            residual: the tensor to add (the shortcut), same shape as ``x``.
            inplace: allow writing the result over ``x`` when autograd does not need ``x`` (the
                caller must own ``x``, as a block owns its last convolution's output). Ignored
                otherwise.
        """
        if torch.jit.is_scripting():
            return torch.addcmul(residual, x, self.excitation(x))
        return self._scale_add_eager(x, residual, inplace)

    # The eager paths below read the process-wide fast-path flag and use an autograd.Function,
    # which TorchScript cannot compile; scripted models take the plain operations above.

    @torch.jit.unused
    def _scale_eager(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        s = self.excitation(x)
        if inplace and self._may_overwrite(x, s):
            return x.mul_(s)
        return x * s

    @torch.jit.unused
    def _scale_add_eager(self, x: torch.Tensor, residual: torch.Tensor, inplace: bool):
        if not _FAST_PATH or _exporting_or_compiling():
            return x * self.excitation(x) + residual
        if self.squeeze_type == "avg" and self._records_autograd(x, residual):
            return _SqueezeScaleAdd.apply(x, residual, self, *self.parameters())
        s = self.excitation(x)
        if inplace and self._may_overwrite(x, s, residual):
            return torch.addcmul(residual, x, s, out=x)
        return torch.addcmul(residual, x, s)

    @torch.jit.unused
    def _records_autograd(self, x: torch.Tensor, residual: torch.Tensor) -> bool:
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad or residual.requires_grad:
            return True
        return any(p.requires_grad for p in self.parameters())

    @torch.jit.unused
    def _may_overwrite(self, *operands: torch.Tensor) -> bool:
        """Whether the result may be written over the first operand: fast path, not exporting
        or compiling, and autograd records nothing for any operand (an ``out=`` write cannot)."""
        if not _FAST_PATH or _exporting_or_compiling():
            return False
        return not (torch.is_grad_enabled() and any(t.requires_grad for t in operands))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}, squeeze={self.squeeze_type}, gate={self.gate}"


def _exporting_or_compiling() -> bool:
    """Tracing (TorchScript/ONNX export) or ``torch.compile``: use the plain operations, which
    exporters understand and which Inductor fuses itself better than the fast path (see
    docs/notes/benchmarks.md, "Fused optimizer steps and torch.compile")."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class _SqueezeScaleAdd(torch.autograd.Function):
    """``residual + x * excite(mean(x))`` for average squeeze, with a two-pass backward.

    With ``g`` the output gradient, ``s`` the excitation and ``HW`` the spatial size:
    ``d residual = g``; ``d s = sum_hw(g * x)`` (a per-channel dot product, no temporary);
    ``d z`` follows from ``d s`` through the small excitation MLP (autograd, on (N, C) tensors);
    ``d x = g * s + d z / HW`` (one ``addcmul``, which also adds the pooling's gradient).
    It is differentiable once; for higher-order gradients (e.g. gradient penalties) run the model
    under ``se_fast_path(False)``.
    """

    @staticmethod
    def forward(ctx, x, residual, layer, *params):
        with torch.enable_grad():
            z = layer.squeeze(x).detach().requires_grad_()
            s = layer.excite(z)
        ctx.save_for_backward(x)
        ctx.excitation = (z, s, params)
        return torch.addcmul(residual, x, s.detach()[:, :, None, None])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        z, s, params = ctx.excitation
        needs_x, needs_residual = ctx.needs_input_grad[:2]
        trained = [i for i, p in enumerate(params) if ctx.needs_input_grad[3 + i]]
        param_grads: list = [None] * len(params)
        grad_x: Optional[torch.Tensor] = None
        if needs_x or trained:
            grad_s = _channel_dot(grad, x)
            inputs = ([z] if needs_x else []) + [params[i] for i in trained]
            # retain_graph: the outer graph may be run again (retain_graph=True, gradcheck); the
            # small graph is freed with this node anyway.
            grads = torch.autograd.grad(s, inputs, grad_s.to(s.dtype), retain_graph=True)
            if needs_x:
                grad_z, grads = grads[0], grads[1:]
                pooled = (grad_z / (x.shape[2] * x.shape[3]))[:, :, None, None]
                grad_x = torch.addcmul(pooled, grad, s.detach()[:, :, None, None]).to(x.dtype)
            for i, g in zip(trained, grads):
                param_grads[i] = g
        return (grad_x, grad if needs_residual else None, None, *param_grads)


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum((2, 3))`` of (N, C, H, W) tensors, without a full-size product if possible."""
    n, c, h, w = a.shape
    if a.dtype == b.dtype and a.is_contiguous() and b.is_contiguous():
        return torch.bmm(a.reshape(n * c, 1, h * w), b.reshape(n * c, h * w, 1)).view(n, c)
    return (a * b).sum((2, 3))
