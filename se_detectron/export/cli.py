"""Command line of ``tools/export_model.py``: export an SE detector, then verify the file."""

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

import torch

from ..config import get_se_cfg
from ..errors import user_error_status
from ..utils import atomic_write_json
from .core import (
    EXPORT_FORMATS,
    EXPORT_METHODS,
    ONNX_OPSET_VERSION,
    build_eval_model,
    export_detector,
    reference_outputs,
    verification_images,
)
from .graph import check_exportable
from .verify import ExportVerificationError, verify_on_images

__all__ = ["cli", "get_parser", "main"]

logger = logging.getLogger("se_detectron.export")


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tools/export_model.py``."""
    parser = argparse.ArgumentParser(
        description="Export an SE Faster / Mask R-CNN or RetinaNet to TorchScript or ONNX (any "
        "image size) and check that the exported model's boxes, scores, classes (and masks) "
        "equal the PyTorch model's on sample images of several sizes."
    )
    parser.add_argument("--config-file", required=True, help="detection config (configs/...)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript")
    parser.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing")
    parser.add_argument(
        "--sample-image",
        action="append",
        default=None,
        help="image used to trace (the first) and verify; repeat for more images (default: "
        "the first se_synthetic_val image)",
    )
    parser.add_argument(
        "--verify-scales",
        type=float,
        nargs="+",
        default=[1.0, 0.75, 0.5],
        help="verify every sample image resized to INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST times "
        "each scale, every second one transposed (default: %(default)s); an ONNX file must "
        "match PyTorch at every size",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--atol", type=float, default=1e-3, help="absolute tolerance")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance")
    parser.add_argument(
        "--opset", type=int, default=ONNX_OPSET_VERSION, help="ONNX opset (default: %(default)s)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ..."
    )
    return parser


def main(args: argparse.Namespace) -> dict:
    """Export and verify; writes ``model.ts``/``model.onnx`` and ``verification.json``.

    Returns:
        The verification report (also written as ``verification.json``).

    Raises:
        ExportVerificationError: if the exported outputs differ from the PyTorch model's.
    """

    cfg = get_se_cfg(args.config_file, ["MODEL.DEVICE", "cpu"] + list(args.opts))
    samples = args.sample_image or [None]
    if cfg.MODEL.WEIGHTS and os.path.isfile(cfg.MODEL.WEIGHTS):
        # the file records its weights: the deploy torch backend reloads them from anywhere
        cfg.MODEL.WEIGHTS = os.path.abspath(cfg.MODEL.WEIGHTS)
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)  # reproducible if MODEL.WEIGHTS is ""
    model = build_eval_model(cfg)
    if args.format == "onnx":
        check_exportable(model, args.opset)  # before anything is written
        images = verification_images(cfg, samples, args.verify_scales)
    else:  # a traced TorchScript file is fixed to the sample image's size
        images = verification_images(cfg, samples[:1], args.verify_scales[:1])
    image = images[0]
    expected = reference_outputs(model, image)
    result = export_detector(
        model, image, args.format, args.export_method, args.output, opset=args.opset, cfg=cfg
    )
    report = {
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "format": args.format,
        "export_method": args.export_method,
        "file": result.path,
        "input_shape": list(image.shape),
        "num_detections": int(len(expected["scores"])),
        "verified_shapes": [list(i.shape) for i in images],
        "atol": args.atol,
        "rtol": args.rtol,
        "notes": result.notes,
    }
    if args.format == "onnx":
        report["opset"] = args.opset
    try:
        report["per_input"] = verify_on_images(
            lambda img: reference_outputs(model, img), result.run, images, args.atol, args.rtol
        )
        report["max_abs_diff"] = {
            name: max(r["max_abs_diff"][name] for r in report["per_input"])
            for name in report["per_input"][0]["max_abs_diff"]
        }
        report["verified"] = True
    except ExportVerificationError as e:
        report.update(verified=False, error=str(e))
        raise
    finally:
        atomic_write_json(f"{args.output}/verification.json", report, indent=2)
    return report


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point: 0 if the export verified, 1 if it did not, 2 after a user error's one
    ``error:`` line (missing weights or sample image, bad config, ...)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_parser().parse_args(argv)
    return user_error_status(_export_and_report, args)


def _export_and_report(args: argparse.Namespace) -> int:
    try:
        report = main(args)
    except ExportVerificationError as e:
        print(f"verification FAILED: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if report["num_detections"] == 0:
        print(
            "warning: the model made no detection on the sample image, so only the export ran; "
            "lower the score threshold (MODEL.ROI_HEADS.SCORE_THRESH_TEST or "
            "MODEL.RETINANET.SCORE_THRESH_TEST) to compare outputs",
            file=sys.stderr,
        )
    print(f"exported and verified: {report['file']}")
    return 0
