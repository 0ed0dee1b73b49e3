"""Convert pretrained SE-ResNet / SE-ResNeXt / SENet-154 weights for se_detectron's detectors.

Reads our own pretraining checkpoints (tools/pretrain_imagenet.py), timm ``seresnet*`` /
``seresnext*`` / ``senet154`` weights (ResNet-D ``...d`` / ``...t`` / ``...aa...`` included) and
Cadene ``pretrainedmodels`` / timm ``legacy_*`` SENets (.pth/.pt or .safetensors), writes a
Detectron2-loadable .pkl with the trunk's parameter names, and prints the config the weights
require (it is also stored in the .pkl). See docs/tutorials/weights.md.

Run it as ``se-convert-pretrained``, ``python -m se_detectron convert_pretrained`` or
``python tools/convert_pretrained.py``. Examples::

    se-convert-pretrained se_resnet50-ce0d4300.pth pretrained/SE-R-50.pkl \\
        --write-config output/my_faster_rcnn.yaml \\
        --base-config configs/COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml
    se-convert-pretrained output/pretrain/checkpoint.pth pretrained/mine.pkl --ema
"""

import argparse
from typing import List, Optional

from ..errors import user_error_status
from .convert import convert_checkpoint, format_summary
from .formats import SOURCE_FORMATS

__all__ = ["build_parser", "cli"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    formats = "; ".join(f"{k}: {v}" for k, v in SOURCE_FORMATS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="checkpoint to convert (.pth, .pt or .safetensors)")
    parser.add_argument("output", help="Detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--source",
        default="auto",
        choices=["auto", *SOURCE_FORMATS],
        help=f"layout of the input (default: detected from the key names). {formats}. "
        "timm's legacy_* models have the cadene layout.",
    )
    parser.add_argument(
        "--arch",
        metavar="NAME",
        help="the network the weights are: an se_detectron arch (se_resnextaa101d_32x8d) or its "
        "timm name (seresnextaa101d_32x8d). Checked against the weights; needed for "
        "anti-aliased models, whose pooling has no weights. Default: a timm config.json next "
        "to the input, else inferred",
    )
    parser.add_argument(
        "--ema", action="store_true", help="convert the EMA weights (model_ema / state_dict_ema)"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load the input with torch.load(weights_only=False): runs code stored in the "
        "file, only for files you trust",
    )
    parser.add_argument(
        "--write-config",
        metavar="OUT.yaml",
        help="also write a config inheriting from --base-config, with MODEL.WEIGHTS set to "
        "OUTPUT and the values the weights require",
    )
    parser.add_argument(
        "--base-config",
        metavar="BASE.yaml",
        help="config for --write-config's _BASE_ (e.g. configs/Base-SE-RCNN-FPN.yaml); the "
        "summary lists the values that differ from it",
    )
    return parser


def cli(argv: Optional[List[str]] = None) -> int:
    """Run the converter; returns the exit status (0 success, 2 after one ``error:`` line)."""
    args = build_parser().parse_args(argv)
    return user_error_status(_convert, args)


def _convert(args: argparse.Namespace) -> None:
    result = convert_checkpoint(
        args.input,
        args.output,
        source=args.source,
        ema=args.ema,
        trust_pickle=args.trust_pickle,
        write_config=args.write_config,
        base_config=args.base_config,
        arch=args.arch,
    )
    print(format_summary(result))
