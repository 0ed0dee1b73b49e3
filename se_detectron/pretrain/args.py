"""Command-line arguments of ``tools/pretrain_imagenet.py`` and the documented demo recipe."""

import argparse
import os

from ..modeling.archs import ARCH_NAMES
from .digits import DIGITS_NAME
from .distributed import default_device

__all__ = ["DEMO_ARGS", "DEMO_COMMAND", "get_args_parser"]

#: The documented digits run, SE-ResNet-50 from scratch to >= 90 % val top-1 in minutes on CPU
#: (96.4 % in 3 min with one thread on a shared 2-core machine).
DEMO_ARGS = (
    "--data-path digits --arch se_resnet50",
    "--train-crop-size 32 --val-resize-size 32 --val-crop-size 32",
    "--no-hflip --random-resize-min-scale 0.5",
    "--batch-size 64 --lr 0.025 --lr-scheduler cosine",
    "--lr-warmup-epochs 2 --lr-warmup-decay 0.1",
    "--label-smoothing 0.1 --epochs 8 --workers 0",
    "--output-dir output/pretrain_digits",
)
DEMO_COMMAND = " ".join(("python tools/pretrain_imagenet.py",) + DEMO_ARGS)
_DEMO_LINES = "".join(" \\\n      " + line for line in DEMO_ARGS)

_EPILOG = f"""\
defaults follow the SE paper (SGD 0.9, wd 1e-4, lr 0.1 x global batch / 256, x0.1 every 30
epochs, 100 epochs, 224 crops, 256 -> 224 eval). Without --data-path the embedded digits data
set (scikit-learn's 8x8 digits written as $DETECTRON2_DATASETS/se_digits) is used.

demo (SE-ResNet-50 on digits from scratch, ~96 % val top-1 in ~3 minutes on a CPU):
  python tools/pretrain_imagenet.py{_DEMO_LINES}

ImageNet on 8 GPUs (global batch 256, lr 0.1):
  torchrun --nproc_per_node 8 tools/pretrain_imagenet.py --data-path /data/imagenet \\
      --arch se_resnet50 --batch-size 32 --output-dir output/se_resnet50

trunk from a config file plus overrides (trailing KEY VALUE pairs):
  python tools/pretrain_imagenet.py --config-file COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml \\
      --data-path /data/imagenet MODEL.RESNETS.DEPTH 101
"""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The command-line arguments of ``tools/pretrain_imagenet.py``.

    Args:
        add_help: add ``-h/--help``.
    """
    p = argparse.ArgumentParser(
        description="ImageNet classification pretraining of SE-ResNet/SE-ResNeXt/SENet trunks",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-path",
        default=DIGITS_NAME,
        help="ImageNet-layout root with train/<class>/* and val/<class>/*, 'digits' for the "
        "embedded scikit-learn digits, or 'synthetic-crops' for object crops of the synthetic "
        "detection set's train split (pass ./digits for a folder of that name)",
    )
    g.add_argument(
        "--digits-root",
        default=None,
        help="where 'digits' is written (default $DETECTRON2_DATASETS/se_digits)",
    )
    g.add_argument("--digits-size", type=int, default=32, help="side of the digits images")
    g.add_argument(
        "--crops-root",
        default=None,
        help="where 'synthetic-crops' is written (default $DETECTRON2_DATASETS/se_synthetic_crops)",
    )
    g.add_argument(
        "--crops-size", type=int, default=64, help="side of the 'synthetic-crops' images"
    )
    g.add_argument(
        "--train-crop-size",
        type=int,
        default=None,
        help="RandomResizedCrop size (default 224; digits/crops: --digits-size/--crops-size)",
    )
    g.add_argument(
        "--val-resize-size",
        type=int,
        default=None,
        help="eval resize of the shorter side (default 256; digits: --digits-size)",
    )
    g.add_argument(
        "--val-crop-size",
        type=int,
        default=None,
        help="eval center-crop size (default 224; digits: --digits-size)",
    )
    g.add_argument(
        "--random-resize-min-scale",
        type=float,
        default=None,
        help="smallest RandomResizedCrop area fraction (default 0.08; digits: 0.5, crops: 0.35)",
    )
    g.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default on; off for digits)",
    )
    g.add_argument(
        "-j",
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="data-loading worker processes per process (0: main process)",
    )
    g.add_argument("-b", "--batch-size", type=int, default=32, help="images per process per step")

    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        choices=ARCH_NAMES,
        default=None,
        help="named trunk (default se_resnet50 unless --config-file is given)",
    )
    g.add_argument(
        "--config-file",
        default="",
        help="config whose MODEL.RESNETS / MODEL.SE describe the trunk (a path or "
        "a path relative to configs/); --arch, if given, is applied on top",
    )
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm when distributed (GPU)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides as KEY VALUE pairs, e.g. MODEL.RESNETS.DEPTH 101",
    )

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=100)
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default 0.1 x global batch / 256, the global batch "
        "being batch-size x processes x grad-accum-steps)",
    )
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--mixup-alpha", type=float, default=0.0)
    g.add_argument("--cutmix-alpha", type=float, default=0.0)
    g.add_argument("--lr-scheduler", choices=("step", "cosine"), default="step")
    g.add_argument("--lr-step-size", type=int, default=30, help="step: epochs between decays")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step: decay factor")
    g.add_argument("--lr-min", type=float, default=0.0, help="cosine: final learning rate")
    g.add_argument("--lr-warmup-epochs", type=int, default=0)
    g.add_argument("--lr-warmup-method", choices=("linear", "constant"), default="linear")
    g.add_argument("--lr-warmup-decay", type=float, default=0.01, help="warmup starts at lr x this")
    g.add_argument("--clip-grad-norm", type=float, default=None)
    g.add_argument(
        "--grad-accum-steps", type=int, default=1, help="batches accumulated per optimizer step"
    )
    g.add_argument(
        "--model-ema",
        action="store_true",
        help="keep (and evaluate) an exponential moving average of the weights",
    )
    g.add_argument(
        "--model-ema-steps", type=int, default=1, help="optimizer steps between EMA updates"
    )
    g.add_argument("--model-ema-decay", type=float, default=0.9999, help="EMA decay per update")
    g.add_argument("--amp", action="store_true", help="autocast mixed precision")
    g.add_argument(
        "--amp-dtype",
        choices=("auto", "bf16", "fp16"),
        default="auto",
        help="auto: bf16 on CPU, fp16 (with GradScaler) on CUDA",
    )

    g = p.add_argument_group("run")
    g.add_argument("--device", default=default_device(), help="cuda, cpu, ...")
    g.add_argument("--dist-backend", default=None, help="default nccl on CUDA, gloo otherwise")
    g.add_argument("--output-dir", default="output/pretrain")
    g.add_argument(
        "--resume",
        default="",
        help="checkpoint to continue from, or 'auto' for OUTPUT_DIR/checkpoint.pth "
        "(starts afresh if it does not exist yet)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --output-dir that holds checkpoint.pth / best.pth of an "
        "earlier run (they are replaced); without it, or --resume, such a folder is refused",
    )
    g.add_argument("--test-only", action="store_true", help="only evaluate (e.g. with --resume)")
    g.add_argument("--seed", type=int, default=0)
    return p
