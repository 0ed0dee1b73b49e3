"""Optimizer plumbing shared by detection training and pretraining."""

from typing import Dict, Iterable

import torch

__all__ = ["fused_kernel_args"]


def fused_kernel_args(params: Iterable[torch.Tensor]) -> Dict[str, bool]:
    """``{"fused": True}`` if PyTorch's fused SGD/AdamW kernels can update all ``params``
    (floating-point tensors on the CPU or a CUDA device), else ``{}`` (PyTorch's default).

    Args:
        params: the tensors the optimizer will update.
    """
    params = list(params)
    supported = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if params and supported else {}
