"""One training epoch and one evaluation pass, with metrics reduced over all processes.

The training step does not wait for the device: the loss, its finiteness and the running metrics
stay on the device and are read every :data:`HOST_SYNC_PERIOD` steps (a ``.item()`` per step
serialises CPU and GPU, leaving the GPU idle while Python prepares the next batch). On CUDA,
``torch.backends.cudnn.benchmark`` is on while a pass runs: pretraining batches have one size,
so cuDNN picks its fastest convolution algorithms once.
"""

import contextlib
import math
import sys
import time
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from tqdm import tqdm

from ..errors import PretrainError
from .distributed import all_reduce_sum

__all__ = ["HOST_SYNC_PERIOD", "accuracy_counts", "autocast_dtype", "evaluate", "train_one_epoch"]

#: Training steps between two host reads of the losses (finiteness check, progress bar).
HOST_SYNC_PERIOD = 20


def autocast_dtype(amp_dtype: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``--amp-dtype`` on ``device``.

    Args:
        amp_dtype: ``"auto"`` (bf16 on CPU, fp16 on CUDA), ``"bf16"`` or ``"fp16"``.
        device: the training device.

    Raises:
        ValueError: for fp16 on a CPU (use bf16 there).
    """
    if amp_dtype == "auto":
        amp_dtype = "fp16" if device.type == "cuda" else "bf16"
    if amp_dtype == "fp16" and device.type == "cpu":
        raise PretrainError("--amp-dtype fp16 needs a CUDA device; on CPU use --amp-dtype bf16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_dtype]


def accuracy_counts(
    logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)
) -> Dict[int, torch.Tensor]:
    """Number of samples whose target is among the ``k`` highest logits, for each ``k``.

    Args:
        logits: (N, C) scores.
        target: (N,) class indices, or (N, C) soft targets (MixUp/CutMix: their argmax counts).
        topk: the ``k`` values (clipped to C).

    Returns:
        dict: ``{k: 0-d tensor count}``.
    """
    if target.ndim == 2:
        target = target.argmax(dim=1)
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return {k: hit[:, : min(k, maxk)].any(dim=1).sum() for k in topk}


def _progress(iterable, total: int, desc: str, leave: bool = True):
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        leave=leave,
        disable=not comm.is_main_process(),
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
        file=sys.stderr,
    )


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device):
    """``torch.backends.cudnn.benchmark`` on CUDA (unless deterministic), restored afterwards."""
    saved = torch.backends.cudnn.benchmark
    if device.type == "cuda" and not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _check_losses(losses: Sequence[float], first_batch: int, epoch: int) -> None:
    """Raise FloatingPointError naming the first non-finite loss of a window of batches."""
    for j, value in enumerate(losses):
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the training loss is {value} at epoch {epoch + 1}, batch {first_batch + j}: "
                "lower --lr, add --lr-warmup-epochs or --clip-grad-norm"
            )


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader,
    device: torch.device,
    epoch: int,
    args,
    model_ema: Optional[torch.optim.swa_utils.AveragedModel] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    sync_period: int = HOST_SYNC_PERIOD,
) -> Dict[str, float]:
    """Train for one pass over ``data_loader``.

    Args:
        model: the (possibly DDP-wrapped) classifier; its output is ``{"linear": logits}``.
        criterion: loss on (logits, targets); targets may be soft (MixUp/CutMix).
        optimizer: stepped every ``args.grad_accum_steps`` batches.
        data_loader: training batches of this process.
        device: compute device.
        epoch: 0-based epoch index.
        args: the parsed arguments (``amp``, ``amp_dtype``, ``channels_last``,
            ``grad_accum_steps``, ``clip_grad_norm``, ``model_ema_steps``, ``lr_warmup_epochs``,
            ``epochs``).
        model_ema: EMA of the unwrapped model, updated every ``args.model_ema_steps`` steps.
        scaler: gradient scaler for fp16 autocast (None or disabled otherwise). With
            ``args.clip_grad_norm`` the gradients are unscaled before clipping, also for a fused
            optimizer (whose kernel would otherwise unscale them after the clip).
        sync_period: batches between host reads of the losses: a non-finite loss is reported
            at most this many batches late, and the progress bar's loss is updated as often.

    Returns:
        dict: ``train_loss`` and ``train_top1`` (over all processes), ``images`` (global count),
        ``time`` (seconds) and ``images_per_sec`` (global).

    Raises:
        FloatingPointError: when the loss stops being finite (naming the epoch and batch).
    """
    with _cudnn_autotune(device):
        return _train_one_epoch(
            model, criterion, optimizer, data_loader, device, epoch, args, model_ema, scaler,
            max(1, int(sync_period)),
        )  # fmt: skip


def _train_one_epoch(
    model, criterion, optimizer, data_loader, device, epoch, args, model_ema, scaler, sync_period
) -> Dict[str, float]:
    """:func:`train_one_epoch`'s loop (under :func:`_cudnn_autotune`)."""
    model.train()
    amp_dtype = autocast_dtype(args.amp_dtype, device) if args.amp else None
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    accum = max(1, int(args.grad_accum_steps))
    world = comm.get_world_size()
    num_batches = len(data_loader)
    lr = optimizer.param_groups[0]["lr"]
    scaling = scaler is not None and scaler.is_enabled()

    # On the device: the last sync_period losses (read together) and the running sums.
    window = torch.zeros(sync_period, dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    seen = 0
    opt_steps = 0
    bar = _progress(data_loader, num_batches, f"Epoch {epoch + 1}/{args.epochs}")
    for i, (images, target) in enumerate(bar):
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        target = target.to(device, non_blocking=True)
        group_start = (i // accum) * accum
        group_size = min(accum, num_batches - group_start)
        is_step = i == group_start + group_size - 1
        sync_ctx = (
            model.no_sync()
            if not is_step and hasattr(model, "no_sync")
            else contextlib.nullcontext()
        )
        with sync_ctx:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)["linear"]
                loss = criterion(logits, target)
            scaled = loss / group_size
            if scaling:
                scaler.scale(scaled).backward()
            else:
                scaled.backward()

        if is_step:
            if args.clip_grad_norm:
                if scaling:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
            if scaling:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            opt_steps += 1
            if model_ema is not None and opt_steps % args.model_ema_steps == 0:
                model_ema.update_parameters(model.module if hasattr(model, "module") else model)
                if epoch < args.lr_warmup_epochs:
                    # As torchvision's recipe: the EMA starts from the warmed-up weights.
                    model_ema.n_averaged.fill_(0)

        n = images.shape[0]
        with torch.no_grad():
            window[i % sync_period] = loss.detach()
            loss_sum += loss.detach().double() * n
            correct += accuracy_counts(logits.detach().float(), target, (1,))[1].double()
        seen += n
        filled = i % sync_period + 1
        if filled == sync_period or i == num_batches - 1:
            # the one host read of these steps
            *losses, total = torch.cat([window[:filled], loss_sum.view(1)]).tolist()
            _check_losses(losses, i + 1 - filled, epoch)
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{total / seen:.4f}",
                lr=f"{lr:.4g}",
                img_s=f"{seen * world / max(elapsed, 1e-9):.1f}",
                refresh=False,
            )
    bar.close()
    elapsed = time.perf_counter() - start

    count = torch.tensor(float(seen), dtype=torch.float64, device=device)
    totals = all_reduce_sum(torch.stack([loss_sum, correct, count]))
    loss_total, correct_total, count_total = (float(v) for v in totals.tolist())
    count_total = max(count_total, 1.0)
    return {
        "train_loss": loss_total / count_total,
        "train_top1": 100.0 * correct_total / count_total,
        "images": int(count_total),
        "time": elapsed,
        "images_per_sec": count_total / max(elapsed, 1e-9),
    }


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, data_loader, device: torch.device, args, desc: str = "Val"
) -> Dict[str, float]:
    """Loss and top-1/top-5 accuracy of ``model`` on the (sharded) ``data_loader``.

    Args:
        model: the classifier (plain, DDP-wrapped or an EMA ``AveragedModel``).
        data_loader: evaluation batches of this process; the shards of all processes together
            cover the data set exactly once.
        device: compute device.
        args: the parsed arguments (``amp``, ``amp_dtype``, ``channels_last``).
        desc: progress-bar label.

    Returns:
        dict: ``loss`` (plain cross-entropy), ``top1``, ``top5`` (percent) and ``count``, over all
        processes.
    """
    model.eval()
    amp_dtype = autocast_dtype(args.amp_dtype, device) if args.amp else None
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    with _cudnn_autotune(device):
        for images, target in _progress(data_loader, len(data_loader), desc, leave=False):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            target = target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)["linear"]
            logits = logits.float()
            hits = accuracy_counts(logits, target, (1, 5))
            sums[0] += F.cross_entropy(logits, target, reduction="sum").double()
            sums[1] += hits[1].double()
            sums[2] += hits[5].double()
            sums[3] += target.shape[0]
    loss, top1, top5, count = all_reduce_sum(sums).tolist()
    count = max(count, 1.0)
    return {
        "loss": loss / count,
        "top1": 100 * top1 / count,
        "top5": 100 * top5 / count,
        "count": int(count),
    }
