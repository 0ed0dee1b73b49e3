"""Command line of ``tools/analyze_excitation.py``."""

import argparse
import os
from typing import List, Optional

import numpy as np

from ..config import get_se_cfg
from ..data.synthetic import register_synthetic_datasets
from ..export.core import build_eval_model
from ..pretrain.data import build_eval_transform
from ..pretrain.digits import write_digits_dataset
from ..utils import atomic_write, atomic_write_json
from .metrics import block_summary, channel_importance
from .plots import default_plot_blocks, plot_class_profiles, plot_specificity, plot_spread
from .run import (
    iter_detection_batches,
    iter_folder_batches,
    load_classifier,
    record_classifier,
    record_detector,
)

__all__ = ["cli", "get_parser", "main", "write_outputs"]


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tools/analyze_excitation.py``."""
    p = argparse.ArgumentParser(
        description="Record the excitations of every SE block over a data set (per channel, "
        "overall and per class), plot them as the SE paper's Figs. 6/7, summarize how "
        "class-specific each block is and list near-zero channels."
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="classifier checkpoint of tools/pretrain_imagenet.py")
    src.add_argument("--config-file", help="detection config (with MODEL.WEIGHTS in opts)")
    p.add_argument(
        "--data-path",
        default="digits",
        help="classifier: ImageNet-layout folder, or 'digits' for the bundled digits set",
    )
    p.add_argument("--split", default="val", help="classifier: sub-folder of --data-path")
    p.add_argument(
        "--val-resize-size", type=int, default=None, help="classifier: default 32 (digits), 256"
    )
    p.add_argument(
        "--val-crop-size", type=int, default=None, help="classifier: default 32 (digits), 224"
    )
    p.add_argument("--dataset", default="se_synthetic_val", help="detector: registered data set")
    p.add_argument("--max-images", type=int, default=None, help="analyze at most N images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--mean-threshold", type=float, default=0.05, help="near-zero: mean below")
    p.add_argument("--max-threshold", type=float, default=0.1, help="near-zero: max below")
    p.add_argument("--blocks", nargs="+", default=None, help="blocks to plot (default: per stage)")
    p.add_argument("--max-channels", type=int, default=64, help="channels drawn per panel")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="detector config overrides")
    return p


def _classifier_recorder(args):

    model, classes, meta = load_classifier(args.checkpoint)
    root = args.data_path
    if root == "digits":
        root = write_digits_dataset()
    digits = args.data_path == "digits"
    transform = build_eval_transform(
        resize_size=args.val_resize_size or (32 if digits else 256),
        crop_size=args.val_crop_size or (32 if digits else 224),
    )
    folder_classes, batches = iter_folder_batches(
        os.path.join(root, args.split), transform, args.batch_size, args.max_images
    )
    if list(folder_classes) != classes:
        raise ValueError(
            f"the checkpoint's classes {classes} differ from the folder's {folder_classes}"
        )
    rec, acc = record_classifier(model, classes, batches)
    info = {"model": "classifier", "checkpoint": args.checkpoint, "data": root, "top1": acc}
    info.update(meta)
    return rec, classes, info


def _detector_recorder(args):

    register_synthetic_datasets()
    cfg = get_se_cfg(args.config_file, ["MODEL.DEVICE", "cpu"] + list(args.opts))
    model = build_eval_model(cfg)
    classes, items = iter_detection_batches(cfg, args.dataset, args.max_images)
    rec = record_detector(model, classes, items)
    info = {"model": "detector", "config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS}
    info["dataset"] = args.dataset
    return rec, classes, info


def write_outputs(rec, classes, info: dict, args) -> dict:
    """Write ``summary.json``, ``channel_importance.json``, ``class_profiles.npz`` and figures."""
    out = args.output
    summary = block_summary(rec.stats, classes)
    stats0 = next(iter(rec.stats.values()))
    info = {**info, "classes": list(classes), "images_per_class": stats0.count[:-1].tolist()}
    info["unlabelled_images"] = int(stats0.count[-1])
    atomic_write_json(os.path.join(out, "summary.json"), {**info, "blocks": summary}, indent=2)
    importance = channel_importance(rec.stats, args.mean_threshold, args.max_threshold)
    atomic_write_json(
        os.path.join(out, "channel_importance.json"),
        {"mean_threshold": args.mean_threshold, "max_threshold": args.max_threshold, **importance},
        indent=1,
    )
    arrays = {}
    for block, st in rec.stats.items():
        for key in ("sum", "sumsq", "count", "min", "max"):
            arrays[f"{block}/{key}"] = getattr(st, key)

    atomic_write(os.path.join(out, "excitation_stats.npz"), lambda f: np.savez(f, **arrays))
    blocks = args.blocks or default_plot_blocks(rec.blocks)
    unknown = [b for b in blocks if b not in rec.stats]
    if unknown:
        raise ValueError(f"unknown blocks {unknown}; SE blocks are {rec.blocks}")
    name = info.get("checkpoint") or info.get("weights") or ""
    plot_class_profiles(
        rec.stats,
        blocks,
        classes,
        os.path.join(out, "class_profiles.png"),
        args.max_channels,
        title=f"Mean excitation per channel and class (cf. SE paper Fig. 6) - {name}",
    )
    plot_spread(
        rec.stats, blocks, classes, os.path.join(out, "spread.png"), max_channels=args.max_channels
    )
    plot_specificity(summary, os.path.join(out, "class_specificity.png"))
    return {"summary": summary, "importance": importance}


def main(args: argparse.Namespace) -> dict:
    """Record and write the outputs; returns the summary and the importance report."""
    rec, classes, info = (_classifier_recorder if args.checkpoint else _detector_recorder)(args)
    return write_outputs(rec, classes, info, args)


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    args = get_parser().parse_args(argv)
    result = main(args)
    print(f"{'block':>10} {'C':>5} {'mean':>6} {'spec':>7} {'spec/std':>8} {'near-0':>6}")
    for row in result["summary"]:
        imp = result["importance"][row["block"]]
        print(
            f"{row['block']:>10} {row['channels']:>5} {row['mean_excitation']:6.3f} "
            f"{row['class_specificity']:7.4f} {row['class_specificity_normalized']:8.3f} "
            f"{imp['num_near_zero']:>6}"
        )
    print(f"outputs in {args.output}")
    return 0
