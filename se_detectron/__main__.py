"""``python -m se_detectron TOOL [ARGS]``: every command-line tool, from a checkout or a wheel.

The same tools are installed as console scripts (``se-train-net``, ...) and exist as
``tools/TOOL.py`` in a checkout; all three call the functions listed in :data:`TOOLS`.
"""

import importlib
import sys

__all__ = ["MOVED", "RENAMED", "TOOLS", "main"]

#: tool name -> (``module:function``, console script, one-line description)
TOOLS = {
    "train_net": (
        "se_detectron.engine.train_net:cli",
        "se-train-net",
        "train / evaluate a detector",
    ),
    "lazy_train_net": (
        "se_detectron.engine.lazy_train_net:cli",
        "se-lazy-train-net",
        "train / evaluate a LazyConfig (python config) detector",
    ),
    "submit_train": (
        "se_detectron.engine.submit:cli",
        "se-submit-train",
        "submit train_net / lazy_train_net to SLURM (submitit, requeue on preemption)",
    ),
    "pretrain_imagenet": (
        "se_detectron.pretrain.train:cli",
        "se-pretrain-imagenet",
        "pretrain the SE trunk as a classifier (ImageNet layout)",
    ),
    "convert_pretrained": (
        "se_detectron.convert.cli:cli",
        "se-convert-pretrained",
        "convert pretrained SE weights into a Detectron2 .pkl",
    ),
    "predict": ("se_detectron.engine.predict:cli", "se-predict", "draw a detector's detections"),
    "run_demo": ("se_detectron.demo:cli", "se-run-demo", "make demo: pretrain, convert, fine-tune"),
    "export_model": ("se_detectron.export.cli:cli", "se-export-model", "TorchScript / ONNX export"),
    "deploy": (
        "se_detectron.deploy.cli:cli",
        "se-deploy",
        "evaluate / int8-quantize / compare exported detectors (ONNX Runtime, OpenVINO)",
    ),
    "analyze_excitation": (
        "se_detectron.analysis.cli:cli",
        "se-analyze-excitation",
        "excitation analysis (paper Sec. 7)",
    ),
}


#: old tool name -> its new name (runs it after a one-line deprecation warning on stderr)
RENAMED = {"demo": "predict"}
#: tools that are no longer part of the installed package -> where they are now
MOVED = {
    "benchmark": "python tools/benchmark.py in a checkout (make benchmark)",
    "gpu_check": "python tools/gpu_check.py in a checkout (make gpu-check)",
}


def _usage() -> str:
    lines = ["usage: python -m se_detectron TOOL [ARGS ...]", "", "tools:"]
    lines += [f"  {name:<20} {desc} ({script})" for name, (_, script, desc) in TOOLS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run ``argv[0]``'s tool with the rest of ``argv``; returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in MOVED:
        print(
            f"error: {name} is not part of the installed package any more: run {MOVED[name]}",
            file=sys.stderr,
        )
        return 2
    if name in RENAMED:
        print(
            f"warning: `python -m se_detectron {name}` is now "
            f"`python -m se_detectron {RENAMED[name]}`",
            file=sys.stderr,
        )
        name = RENAMED[name]
    if name not in TOOLS:
        print(f"error: unknown tool {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function = TOOLS[name][0].split(":")
    sys.argv = [f"python -m se_detectron {name}", *rest]  # argparse's prog and Detectron2's argv
    result = getattr(importlib.import_module(module), function)(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
