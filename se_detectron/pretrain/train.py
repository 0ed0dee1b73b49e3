"""ImageNet classification pretraining of the SE trunks: the training loop and its builders.

The defaults are the SE paper's recipe (Sec. 6.1, the standard ResNet ImageNet schedule): SGD with
momentum 0.9 and weight decay 1e-4, learning rate 0.1 x (global batch / 256), divided by 10 every
30 epochs, 100 epochs, 224 px random-resized crops with horizontal flips, 256 -> 224 center-crop
evaluation. The options of torchvision's classification recipe (cosine schedule, warmup, label
smoothing, MixUp/CutMix, EMA, AMP, channels-last, gradient accumulation, SyncBN) are available.

Run it with ``tools/pretrain_imagenet.py`` (one process) or ``torchrun --nproc_per_node N
tools/pretrain_imagenet.py`` (one process per GPU, or CPU processes with Gloo).
"""

import json
import os
import random
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
from detectron2.utils import comm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from ..config import get_se_cfg, rename_deprecated_opts
from ..data.synthetic_crops import (
    SYNTHETIC_CROPS_NAME,
    default_synthetic_crops_root,
    write_synthetic_crops,
)
from ..errors import PretrainError, user_error_status
from ..modeling import build_se_resnet_classifier
from ..modeling.archs import apply_arch, find_arch
from ..utils.optim import fused_kernel_args
from ..utils.rng import get_rng_state, set_rng_state
from ..utils.run_dir import prepare_run_dir
from .args import get_args_parser
from .data import load_data, make_loaders
from .digits import DIGITS_NAME, default_digits_root, write_digits_dataset
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .epoch_metrics import append_metrics, plot_curves, truncate_metrics
from .loop import autocast_dtype, evaluate, train_one_epoch
from .train_state import check_state_dict_matches, load_checkpoint, save_atomic

__all__ = ["build_lr_scheduler", "build_model", "build_trunk_cfg", "cli", "main"]


def build_trunk_cfg(args):
    """The trunk config: ``--config-file``, then ``--arch``, then NORM ``BN``, then ``opts``.

    Args:
        args: parsed arguments (``config_file``, ``arch``, ``opts``).

    Returns:
        CfgNode: the config ``build_se_resnet_classifier`` reads.
    """
    cfg = get_se_cfg(args.config_file or None)
    arch = args.arch or (None if args.config_file else "se_resnet50")
    if arch:
        apply_arch(cfg, arch)
    cfg.MODEL.RESNETS.NORM = "BN"
    if args.opts:
        if len(args.opts) % 2:
            raise PretrainError(f"config overrides come in KEY VALUE pairs, got {args.opts}")
        cfg.merge_from_list(rename_deprecated_opts(args.opts))
    return cfg


def build_model(cfg, num_classes: int, dist: DistInfo, args) -> torch.nn.Module:
    """The classifier on ``dist.device``, with SyncBN and channels-last applied (not DDP-wrapped).

    Args:
        cfg: the trunk config.
        num_classes: classes of the data set.
        dist: this process's place in the job.
        args: parsed arguments (``sync_bn``, ``channels_last``).
    """
    model = build_se_resnet_classifier(cfg, num_classes)
    if args.sync_bn and dist.distributed:
        if dist.device.type == "cpu":
            raise PretrainError(
                "--sync-bn uses torch.nn.SyncBatchNorm, which needs GPUs; on CPU drop it or use "
                "Detectron2's all-reduce BN with the override MODEL.RESNETS.NORM naiveSyncBN"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dist.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_lr_scheduler(optimizer: torch.optim.Optimizer, args):
    """Per-epoch schedule: optional warmup, then step decay or cosine annealing.

    Args:
        optimizer: the optimizer.
        args: parsed arguments (``lr_scheduler``, ``lr_step_size``, ``lr_gamma``, ``lr_min``,
            ``lr_warmup_*``, ``epochs``).
    """
    sched = torch.optim.lr_scheduler
    warmup = args.lr_warmup_epochs
    if args.lr_scheduler == "step":
        main_sched = sched.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
    else:
        main_sched = sched.CosineAnnealingLR(
            optimizer, T_max=max(1, args.epochs - warmup), eta_min=args.lr_min
        )
    if warmup <= 0:
        return main_sched
    if args.lr_warmup_method == "linear":
        warm = sched.LinearLR(optimizer, start_factor=args.lr_warmup_decay, total_iters=warmup)
    else:
        warm = sched.ConstantLR(optimizer, factor=args.lr_warmup_decay, total_iters=warmup)
    return sched.SequentialLR(optimizer, schedulers=[warm, main_sched], milestones=[warmup])


def _seed_all(seed: int) -> None:
    seed %= 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(dist: DistInfo, *msg) -> None:
    if dist.is_main:
        print(*msg, flush=True)


def _resolve_data(args, dist: DistInfo) -> Dict[str, Any]:
    """Data root and the dataset-dependent defaults of the size/flip/scale arguments."""
    if args.data_path == DIGITS_NAME:
        root = os.path.abspath(args.digits_root or default_digits_root())
        if dist.local_rank == 0:  # atomic and idempotent: safe on shared file systems too
            write_digits_dataset(root, image_size=args.digits_size, seed=0)
        comm.synchronize()
        size = args.digits_size
        defaults = {"train_crop": size, "val_resize": size, "val_crop": size}
        defaults.update(hflip=False, min_scale=0.5)
    elif args.data_path == SYNTHETIC_CROPS_NAME:
        root = os.path.abspath(args.crops_root or default_synthetic_crops_root())
        if dist.local_rank == 0:
            write_synthetic_crops(root, crop_size=args.crops_size)
        comm.synchronize()
        size = args.crops_size
        defaults = {"train_crop": size, "val_resize": size, "val_crop": size}
        defaults.update(hflip=True, min_scale=0.35)
    else:
        root = args.data_path
        defaults = {"train_crop": 224, "val_resize": 256, "val_crop": 224}
        defaults.update(hflip=True, min_scale=0.08)

    def pick(value, key):
        return defaults[key] if value is None else value

    return {
        "root": root,
        "train_crop_size": pick(args.train_crop_size, "train_crop"),
        "val_resize_size": pick(args.val_resize_size, "val_resize"),
        "val_crop_size": pick(args.val_crop_size, "val_crop"),
        "hflip": pick(args.hflip, "hflip"),
        "min_scale": pick(args.random_resize_min_scale, "min_scale"),
    }


def _resume_path(args) -> Optional[str]:
    if not args.resume:
        return None
    if args.resume == "auto":
        path = os.path.join(args.output_dir, "checkpoint.pth")
        return path if os.path.isfile(path) else None
    return args.resume


def main(args) -> Dict[str, Any]:
    """Pretrain (or, with ``--test-only``, evaluate) a classifier.

    See :func:`se_detectron.pretrain.args.get_args_parser` for the arguments.

    Rank 0 writes ``OUTPUT_DIR/checkpoint.pth`` every epoch, ``best.pth`` (best val top-1),
    ``metrics.jsonl``, ``curves.png``, ``args.json`` and ``config.yaml`` (the trunk config).

    Args:
        args: the parsed arguments.

    Returns:
        dict: ``best_top1``, ``last`` (the last epoch's metrics record, or the evaluation with
        ``--test-only``), ``epochs_run`` and ``output_dir``.
    """
    dist = init_distributed(args.device, args.dist_backend)
    try:
        return _main(args, dist)
    finally:
        cleanup_distributed()


def _main(args, dist: DistInfo) -> Dict[str, Any]:
    device = dist.device
    if args.amp:
        autocast_dtype(args.amp_dtype, device)  # fail early on fp16 + CPU
    if args.grad_accum_steps < 1 or args.model_ema_steps < 1:
        raise PretrainError("--grad-accum-steps and --model-ema-steps must be >= 1")
    if args.batch_size < 1:
        raise PretrainError(f"--batch-size {args.batch_size}: give at least 1 image per process")
    if not args.test_only and args.epochs < 1:
        raise PretrainError(
            f"--epochs {args.epochs}: train at least 1 epoch (--test-only with --resume "
            "evaluates a checkpoint without training)"
        )
    if not args.test_only:
        # a folder with another run's checkpoints needs --resume auto or --overwrite
        prepare_run_dir(
            args.output_dir,
            checkpoint_patterns=("checkpoint.pth", "best.pth"),
            resume_file="checkpoint.pth",
            resume_if_possible=bool(args.resume),
            overwrite=args.overwrite,
            key="--output-dir",
            resume_flag="--resume auto",
            if_possible_flag="--resume auto",
            main_process=dist.is_main,
        )
    if not args.test_only and args.lr_warmup_epochs >= args.epochs:
        raise PretrainError(
            f"--lr-warmup-epochs {args.lr_warmup_epochs} must be smaller than --epochs "
            f"{args.epochs}: the run would end before the warmup does and never train at --lr"
        )
    _seed_all(args.seed)

    data = _resolve_data(args, dist)
    dataset_train, dataset_val = load_data(
        data["root"],
        train_crop_size=data["train_crop_size"],
        val_resize_size=data["val_resize_size"],
        val_crop_size=data["val_crop_size"],
        hflip=data["hflip"],
        min_scale=data["min_scale"],
    )
    classes = list(dataset_train.classes)
    num_classes = len(classes)
    mix = []
    if args.mixup_alpha > 0:
        mix.append(v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes))
    if args.cutmix_alpha > 0:
        mix.append(v2.CutMix(alpha=args.cutmix_alpha, num_classes=num_classes))
    train_loader, val_loader, train_sampler = make_loaders(
        dataset_train,
        dataset_val,
        batch_size=args.batch_size,
        workers=args.workers,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=args.seed,
        pin_memory=device.type == "cuda",
        batch_transform=v2.RandomChoice(mix) if mix else None,
    )

    cfg = build_trunk_cfg(args)
    arch = find_arch(cfg) or "custom"  # "custom" when opts change the trunk
    model = build_model(cfg, num_classes, dist, args)
    model_without_ddp = model
    if dist.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    global_batch = args.batch_size * dist.world_size * args.grad_accum_steps
    lr = args.lr if args.lr is not None else 0.1 * global_batch / 256
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = torch.optim.SGD(
        model_without_ddp.parameters(),
        lr=lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
        **fused_kernel_args(model_without_ddp.parameters()),  # one kernel for all parameters
    )
    use_fp16 = args.amp and autocast_dtype(args.amp_dtype, device) == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_fp16)
    lr_scheduler = build_lr_scheduler(optimizer, args)
    model_ema = None
    if args.model_ema:
        model_ema = AveragedModel(
            model_without_ddp,
            device=device,
            multi_avg_fn=get_ema_multi_avg_fn(args.model_ema_decay),
            use_buffers=True,
        )

    if dist.is_main:
        os.makedirs(args.output_dir, exist_ok=True)
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    # -1: the first evaluated epoch always writes best.pth, even at 0% top-1.
    start_epoch, best_top1 = 0, -1.0
    resume = _resume_path(args)
    if resume:
        ckpt = load_checkpoint(resume)
        check_state_dict_matches(model_without_ddp.state_dict(), ckpt["model"], resume)
        model_without_ddp.load_state_dict(ckpt["model"])
        if model_ema is not None:
            has_ema = ckpt.get("model_ema") is not None
            model_ema.module.load_state_dict(ckpt["model_ema"] if has_ema else ckpt["model"])
            model_ema.n_averaged.fill_(int(ckpt.get("model_ema_n_averaged", 0)) if has_ema else 0)
        if not args.test_only:
            optimizer.load_state_dict(ckpt["optimizer"])
            lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
            if ckpt.get("scaler") is not None and scaler.is_enabled():
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt.get("rng"))
        start_epoch = int(ckpt["epoch"])
        best_top1 = float(ckpt.get("best_top1", -1.0))
        _log(dist, f"resumed from {resume}: {start_epoch} epochs done, best top-1 {best_top1:.2f}")

    _log(
        dist,
        f"arch {arch} | {num_classes} classes | train {len(dataset_train)} / val "
        f"{len(dataset_val)} images from {data['root']} | {dist.world_size} process(es) on "
        f"{device} | global batch {global_batch} | lr {lr:g} | epochs {start_epoch}->{args.epochs}",
    )
    if args.test_only:
        result = evaluate(model, val_loader, device, args)
        _log(
            dist,
            f"test: loss {result['loss']:.4f} top-1 {result['top1']:.2f} "
            f"top-5 {result['top5']:.2f} ({result['count']} images)",
        )
        if model_ema is not None:
            ema = evaluate(model_ema, val_loader, device, args, desc="Val EMA")
            result.update({f"ema_{k}": v for k, v in ema.items()})
        return {
            "best_top1": best_top1,
            "last": result,
            "epochs_run": 0,
            "output_dir": args.output_dir,
        }

    resolved = dict(data, lr=lr, global_batch=global_batch, arch=arch, world_size=dist.world_size)
    if dist.is_main:
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump({"args": vars(args), "resolved": resolved}, f, indent=2)
        with open(os.path.join(args.output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        records = truncate_metrics(metrics_path, start_epoch)

    last: Dict[str, Any] = {}
    for epoch in range(start_epoch, args.epochs):
        epoch_start = time.perf_counter()
        # Every epoch's randomness depends only on (seed, epoch, rank): resuming is exact.
        _seed_all(args.seed * 1_000_003 + epoch * 1_009 + dist.rank)
        train_sampler.set_epoch(epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        train = train_one_epoch(
            model, criterion, optimizer, train_loader, device, epoch, args, model_ema, scaler
        )
        lr_scheduler.step()
        val = evaluate(model, val_loader, device, args)
        record = {
            "epoch": epoch + 1,
            "lr": epoch_lr,
            "train_loss": train["train_loss"],
            "train_top1": train["train_top1"],
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
        }
        if model_ema is not None:
            ema = evaluate(model_ema, val_loader, device, args, desc="Val EMA")
            record.update(ema_loss=ema["loss"], ema_top1=ema["top1"], ema_top5=ema["top5"])
        record["epoch_time"] = time.perf_counter() - epoch_start
        record["images_per_sec"] = train["images_per_sec"]
        is_best = val["top1"] > best_top1
        best_top1 = max(best_top1, val["top1"])
        last = record

        if dist.is_main:
            ckpt = {
                "model": model_without_ddp.state_dict(),
                "model_ema": model_ema.module.state_dict() if model_ema is not None else None,
                "model_ema_n_averaged": int(model_ema.n_averaged) if model_ema is not None else 0,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "epoch": epoch + 1,
                "best_top1": best_top1,
                "args": vars(args),
                "cfg": cfg.dump(),
                "arch": arch,
                "classes": classes,
                "rng": get_rng_state(),
            }
            save_atomic(ckpt, os.path.join(args.output_dir, "checkpoint.pth"))
            if is_best:
                best = {
                    k: ckpt[k]
                    for k in (
                        "model",
                        "model_ema",
                        "epoch",
                        "best_top1",
                        "args",
                        "cfg",
                        "arch",
                        "classes",
                    )
                }
                save_atomic(best, os.path.join(args.output_dir, "best.pth"))
            append_metrics(metrics_path, record)
            records.append(record)
            plot_curves(records, os.path.join(args.output_dir, "curves.png"), title=arch)
            ema_msg = f" | EMA top-1 {record['ema_top1']:.2f}" if model_ema is not None else ""
            print(
                f"Epoch {epoch + 1}/{args.epochs}: lr {epoch_lr:.4g} | train loss "
                f"{record['train_loss']:.4f} top-1 {record['train_top1']:.2f} | val loss "
                f"{record['val_loss']:.4f} top-1 {record['val_top1']:.2f} top-5 "
                f"{record['val_top5']:.2f}{ema_msg} | best {best_top1:.2f} | "
                f"{record['epoch_time']:.1f} s, {record['images_per_sec']:.1f} img/s",
                flush=True,
            )
    return {
        "best_top1": best_top1,
        "last": last,
        "epochs_run": max(0, args.epochs - start_epoch),
        "output_dir": args.output_dir,
    }


def cli(argv=None) -> int:
    """``tools/pretrain_imagenet.py`` / ``se-pretrain-imagenet``: parse ``argv`` and pretrain.

    Returns:
        int: 0, or 2 after one ``error:`` line for a user error (bad option, data folder,
        checkpoint, full disk), as ``tools/train_net.py`` does
        (:func:`~se_detectron.errors.user_error_status`).
    """
    args = get_args_parser().parse_args(argv)
    return user_error_status(main, args)
