"""Command line of ``tools/benchmark.py``: SE-ResNet-50 vs ResNet-50 speed and memory."""

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import torch
from tqdm import tqdm

from se_detectron.utils.atomic import atomic_write_json

from .cases import CASE_NAMES, PRECISIONS, build_cases, with_precision
from .report import add_ratios, case_result, environment, format_table
from .timing import measure_peak_memory, run_interleaved

__all__ = ["build_parser", "cli"]


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choice_list(choices):
    def parse(text: str) -> List[str]:
        values = [v for v in text.split(",") if v]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"unknown value(s) {bad or text!r}; choose from {', '.join(choices)}"
            )
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time SE-ResNet-50 against Detectron2's ResNet-50 (trunk, Faster R-CNN "
        "inference and training, classifier, SE cost breakdown, the SE backward's channel dot "
        "product), interleaved, and report "
        "medians, min-max, ratios and peak memory as a table and JSON.",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default: cpu)")
    parser.add_argument(
        "--cases",
        type=_choice_list(CASE_NAMES),
        default=list(CASE_NAMES),
        help=f"comma-separated subset of {','.join(CASE_NAMES)} (default: all)",
    )
    parser.add_argument("--height", type=int, default=800, help="detection image height")
    parser.add_argument("--width", type=int, default=1333, help="detection image width")
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[1, 32],
        help="classifier, se_breakdown and channel_dot batch sizes",
    )
    parser.add_argument(
        "--layouts",
        type=_choice_list(("nchw", "channels_last")),
        default=["nchw", "channels_last"],
        help="classifier and se_breakdown memory formats",
    )
    parser.add_argument(
        "--precisions",
        type=_choice_list(tuple(PRECISIONS)),
        default=["fp32"],
        help="fp32, bf16 and/or fp16 (torch.autocast mixed precision; training steps: forward and "
        "loss under autocast, fp16 with a GradScaler); each case is timed in each",
    )
    parser.add_argument(
        "--classifier-size", type=int, default=224, help="classifier and se_breakdown input side"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds per case (each runs every variant once); default: from --seconds",
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="target timed seconds per case (default 60)"
    )
    parser.add_argument("--min-rounds", type=int, default=7, help="at least this many rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the classifiers through torch.compile (Inductor, freezing); compiling "
        "takes ~10-60 s per model and case",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="print the tables of a saved run (recomputing its ratios) instead of measuring",
    )
    parser.add_argument(
        "--output",
        default="output/benchmark/benchmark.json",
        help="JSON file written (atomically, after every case)",
    )
    return parser


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise SystemExit(f"error: --device {text!r} is not a device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {text} requested but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda, got {text!r}")
    return device


def render(path: str) -> int:
    """Print the tables of a JSON written by an earlier run."""
    try:
        with open(path) as f:
            report = json.load(f)
        cases = report["cases"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: --render {path}: not a benchmark JSON ({e})") from None
    env = report.get("environment", {})
    print(f"{report.get('command', '')}\n{json.dumps(env)}")
    for name, result in cases.items():
        print(format_table(name, add_ratios(result)))
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        return render(args.render)
    device = _device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit(f"error: --rounds must be >= 1, got {args.rounds}")

    report = {
        "command": " ".join(["python", "tools/benchmark.py", *sys.argv[1:]])
        if argv is None
        else " ".join(["python", "tools/benchmark.py", *argv]),
        "environment": environment(device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cases": {},
    }
    env = report["environment"]
    print(
        f"device {env['device']} ({env['device_name']}), {env['torch_threads']} threads, "
        f"torch {env['torch']}, detectron2 {env['detectron2']}, timm {env['timm']}",
        flush=True,
    )
    cases = build_cases(
        args.cases,
        device,
        height=args.height,
        width=args.width,
        batch_sizes=args.batch_sizes,
        layouts=args.layouts,
        classifier_size=args.classifier_size,
        compile_models=args.compile,
    )
    timed = (with_precision(case, p, device) for case in cases for p in args.precisions)
    for case in timed:
        bar = tqdm(desc=case.name, unit="round", leave=False, file=sys.stderr)
        stats = run_interleaved(
            case.variants,
            device,
            rounds=args.rounds,
            seconds=args.seconds,
            min_rounds=args.min_rounds,
            warmup=args.warmup,
            progress=lambda _msg, bar=bar: bar.update(1),
        )
        bar.close()
        if not args.no_memory:
            for name, fn in case.variants.items():
                stats[name].peak_memory_mb = measure_peak_memory(fn, device)
        result = case_result(case, stats)
        report["cases"][case.name] = result
        print(format_table(case.name, result), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0
