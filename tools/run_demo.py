#!/usr/bin/env python
"""`make demo`: pretrain an SE-ResNet-18 on object crops, convert it, fine-tune Faster R-CNN.

    python tools/run_demo.py                      # everything under output/demo
    python tools/run_demo.py --rerun finetune     # redo fine-tuning and what follows

Stages (pretrain -> convert -> finetune -> predict), reuse and outputs: se_detectron/demo.py.
"""

import argparse
import os
import shlex
import sys

try:
    import se_detectron  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from se_detectron.demo import DEMO_CONFIG, STAGES, DemoError, DemoPlan, run_demo  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="output/demo", help="where everything lands")
    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when a GPU is visible)"
    )
    parser.add_argument(
        "--rerun",
        choices=("all",) + STAGES,
        default=None,
        help="redo this stage and the later ones even if their outputs are complete",
    )
    parser.add_argument(
        "--pretrain-args",
        default=None,
        help="replace the pretraining recipe (tools/pretrain_imagenet.py arguments, one string)",
    )
    parser.add_argument("--config-file", default=DEMO_CONFIG, help="the detection config")
    parser.add_argument("--num-pictures", type=int, default=12, help="val pictures to draw")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for train_net"
    )
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    plan = DemoPlan(
        output_dir=args.output_dir,
        device=args.device,
        config_file=args.config_file,
        finetune_opts=list(args.opts),
        num_pictures=args.num_pictures,
    )
    if args.pretrain_args is not None:
        plan.pretrain_args = shlex.split(args.pretrain_args)
    try:
        run_demo(plan, rerun=args.rerun)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
