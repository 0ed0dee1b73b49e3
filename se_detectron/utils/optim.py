"""Optimizer plumbing shared by detection training and pretraining."""

from typing import Dict, Iterable

import torch

__all__ = ["fused_kernel_args", "step_reads_gradients", "unscale_before_step"]


def fused_kernel_args(params: Iterable[torch.Tensor]) -> Dict[str, bool]:
    """``{"fused": True}`` if PyTorch's fused SGD/AdamW kernels can update all ``params``
    (floating-point tensors on the CPU or a CUDA device), else ``{}`` (PyTorch's default).

    Args:
        params: the tensors the optimizer will update.
    """
    params = list(params)
    supported = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if params and supported else {}


def step_reads_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` is not PyTorch's own, e.g. Detectron2's gradient clipping.

    Such a step may read the gradients (clip them) before PyTorch's update runs.

    Args:
        optimizer: an optimizer, possibly with its class replaced by Detectron2's
            ``maybe_add_gradient_clipping``.
    """
    owner = next(c for c in type(optimizer).__mro__ if "step" in vars(c))
    return not owner.__module__.startswith("torch.optim")


def unscale_before_step(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make every ``GradScaler`` unscale the gradients before ``optimizer.step`` reads them.

    A fused optimizer (``fused=True``) declares ``_step_supports_amp_scaling``: ``GradScaler.step``
    then skips its own unscaling and hands the scale to the fused kernel, which divides the
    gradients inside the update. A ``step`` that runs code of its own before PyTorch's update
    (:func:`step_reads_gradients`, e.g. Detectron2's ``SOLVER.CLIP_GRADIENTS`` wrapper) would see
    the scaled gradients: clipped at ``CLIP_VALUE`` while 65536x too large and unscaled only
    afterwards, the update is thousands of times too small for SGD and wrong for AdamW. For
    such an optimizer this withdraws the declaration, so that ``GradScaler.step`` unscales the
    gradients (and checks them for inf/NaN) before calling ``step``, as it does for every
    unfused optimizer. Every loop that uses a ``GradScaler`` is then right: PyTorch's recipe
    (``scaler.scale(loss).backward(); scaler.step(opt)``), with or without an explicit
    ``scaler.unscale_(opt)``, and Detectron2's ``AMPTrainer``.

    The update itself stays one fused kernel; the unscaling moves to ``GradScaler``'s single
    pass over the gradients, and ``GradScaler.step`` reads its inf/NaN flag on the host (one
    device synchronization per step, as for any unfused optimizer). An optimizer whose ``step``
    is PyTorch's own is left as it is (the kernel keeps unscaling).

    Args:
        optimizer: the training optimizer; changed in place.

    Returns:
        torch.optim.Optimizer: ``optimizer``.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False) and step_reads_gradients(optimizer):
        optimizer._step_supports_amp_scaling = False
    return optimizer
