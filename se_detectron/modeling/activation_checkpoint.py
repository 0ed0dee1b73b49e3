"""Activation checkpointing of a trunk's stages (``MODEL.SE.ACTIVATION_CHECKPOINTING``).

Each block of a checkpointed stage runs under ``torch.utils.checkpoint`` (non-reentrant): only
its input is kept for the backward pass, and its forward is recomputed there, as mmdetection's
``with_cp`` ResNet blocks. Loss and gradients are those of the plain stage. A stage module stays
an ``nn.Sequential`` of the same blocks (same ``state_dict`` names, ``freeze()`` unchanged).

The recomputation must not count a batch twice in BatchNorm's running statistics: the running
mean, variance and batch counter of the block's BatchNorm layers in training mode (Detectron2's
``NaiveSyncBatchNorm`` and ``SyncBatchNorm`` included) are put back after it, so they are those
of one forward, as without checkpointing. (The recomputation normalises with the batch
statistics, as the first forward did.)
"""

import contextlib
from typing import List

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointedStage", "checkpoint_stages"]


class _KeepRunningStats:
    """Puts the BatchNorm running statistics of a block back as they were when it is entered.

    Re-enterable: autograd may recompute a checkpointed block more than once (a nested
    ``torch.autograd.grad`` reaching the block's saved tensors is another graph task).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.saved: List[List[torch.Tensor]] = []

    def _buffers(self) -> List[torch.Tensor]:
        return [
            b
            for m in self.module.modules()
            if isinstance(m, _BatchNorm) and m.training
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)
            if b is not None
        ]

    def __enter__(self):
        self.saved.append([b.clone() for b in self._buffers()])

    def __exit__(self, *exc):
        with torch.no_grad():
            for b, value in zip(self._buffers(), self.saved.pop()):
                b.copy_(value)


class CheckpointedStage(nn.Sequential):
    """A ResNet stage whose blocks run under activation checkpointing while autograd records.

    Without autograd (inference, ``torch.no_grad``, frozen stages with inputs that need no
    gradient), under TorchScript, tracing or export, it runs as the plain ``nn.Sequential``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or not self._records(x):
            for block in self:
                x = block(x)
            return x
        return self._checkpointed(x)

    @torch.jit.unused
    def _records(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = checkpoint(
                block,
                x,
                use_reentrant=False,
                context_fn=lambda block=block: (contextlib.nullcontext(), _KeepRunningStats(block)),
            )
        return x


def checkpoint_stages(resnet: nn.Module, stage_names) -> None:
    """Make the named stages of a Detectron2 ``ResNet`` :class:`CheckpointedStage` s, in place.

    Args:
        resnet: a ``detectron2.modeling.backbone.ResNet`` (its ``stage_names`` / ``stages``).
        stage_names: e.g. ``["res4", "res5"]``; names the trunk does not have (a stage dropped
            because no output needs it) are skipped.
    """
    for idx, name in enumerate(resnet.stage_names):
        if name in stage_names:
            stage = CheckpointedStage(*resnet.stages[idx])
            resnet.stages[idx] = stage
            resnet.add_module(name, stage)
