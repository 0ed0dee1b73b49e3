"""``SOLVER.OPTIMIZER``: SGD (Detectron2's) or AdamW for ``tools/train_net.py``.

Detectron2's yacs trainer only builds SGD. Training from scratch on a small budget (the bundled
demo: a few hundred iterations on a CPU) converges much faster with AdamW, as is common for
detectors trained without ImageNet weights; mmdetection and Detectron2's LazyConfig projects
(ViTDet) select it the same way. Both optimizers use Detectron2's parameter groups
(``SOLVER.WEIGHT_DECAY_NORM``, ``SOLVER.BIAS_LR_FACTOR``, ``SOLVER.WEIGHT_DECAY_BIAS``) and its
gradient clipping (``SOLVER.CLIP_GRADIENTS``).

Both use PyTorch's fused kernels (``fused=True``: one kernel for all parameters) when every
parameter is a floating-point tensor on the CPU or a CUDA device. The update is the same
(tests compare it with the per-parameter implementation); only the step's time changes (about
3x faster on CPU; measurements in docs/notes/benchmarks.md, "Fused optimizer steps"). Under
float16 AMP a fused kernel unscales the gradients itself, which would be after Detectron2's
clipping has run; with clipping on, the optimizer therefore leaves the unscaling to
``GradScaler``, before its ``step`` (:func:`~se_detectron.utils.optim.unscale_before_step`), so
any ``GradScaler`` loop clips the true gradients.
"""

import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

from ..errors import SEDetectronError
from ..utils.optim import fused_kernel_args, unscale_before_step

__all__ = [
    "OPTIMIZERS",
    "SolverConfigError",
    "build_optimizer",
]

#: The values of ``SOLVER.OPTIMIZER``.
OPTIMIZERS = ("SGD", "AdamW")


class SolverConfigError(SEDetectronError, ValueError):
    """A ``SOLVER.*`` optimizer option is invalid; the message names the key."""


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.SOLVER.OPTIMIZER`` for ``model``.

    Args:
        cfg (CfgNode): a config with :func:`se_detectron.add_se_config` applied.
        model: the model whose trainable parameters are optimized.

    Returns:
        torch.optim.Optimizer: SGD as Detectron2 builds it (its parameter groups, momentum,
        Nesterov, weight decay), or AdamW with the same groups; optionally wrapped with
        Detectron2's gradient clipping (which a ``GradScaler`` lets see unscaled gradients:
        :func:`se_detectron.utils.optim.unscale_before_step`); fused kernels when
        :func:`se_detectron.utils.optim.fused_kernel_args` allows.

    Raises:
        SolverConfigError: if ``SOLVER.OPTIMIZER`` is not one of :data:`OPTIMIZERS`, or
            ``SOLVER.BETAS`` is not two numbers in [0, 1).
    """
    name = cfg.SOLVER.get("OPTIMIZER", "SGD")
    if name not in OPTIMIZERS:
        raise SolverConfigError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {name!r}")
    if name == "AdamW":
        try:
            betas = tuple(float(b) for b in cfg.SOLVER.BETAS)
        except (TypeError, ValueError):
            betas = ()  # not numbers: reported below
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise SolverConfigError(
                f"SOLVER.BETAS must be two numbers in [0, 1), got {cfg.SOLVER.BETAS!r}"
            )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    kernel = fused_kernel_args(p for group in params for p in group["params"])
    if name == "SGD":
        # Detectron2's build_optimizer, with the fused kernel instead of foreach when possible.
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            **(kernel or {"foreach": True}),
        )
    else:
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=betas,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            **kernel,
        )
    return unscale_before_step(maybe_add_gradient_clipping(cfg, optimizer))
