"""Environment description, ratios, the printed table and the JSON of a benchmark run."""

import os
import statistics
import sys
from importlib import metadata
from typing import Dict, List, Optional

import torch

from se_detectron.utils.machine import cpu_name
from se_detectron.version import __version__

from .timing import Stats

__all__ = ["add_ratios", "case_result", "environment", "format_table", "paired_ratio"]


_RELEVANT_ENV = (
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "KMP_BLOCKTIME",
)


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> Dict[str, object]:
    """Device, threads and versions of the run."""
    import detectron2

    env = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
        ),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "detectron2": detectron2.__version__,
        "timm": _version("timm"),
        "se_detectron": __version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "dtype": "float32",
        # Allocator and threading settings change CPU timings (see docs/notes/benchmarks.md).
        "env": {
            k: v for k, v in os.environ.items() if k in _RELEVANT_ENV or k.startswith("MALLOC_")
        },
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def paired_ratio(times: List[float], base_times: List[float]) -> float:
    """Median over rounds of ``times[i] / base_times[i]``.

    The two runs of a round are adjacent in time, so a slow drift of the machine cancels in each
    quotient; with few rounds this is steadier than the ratio of the two medians.
    """
    return statistics.median(t / b for t, b in zip(times, base_times))


def case_result(case, stats: Dict[str, Stats]) -> Dict[str, object]:
    """The JSON record of one case: per-variant statistics and ratios."""
    result = {
        "description": case.description,
        "baseline": case.baseline,
        "se_variant": case.se_variant,
        "target": case.target,
        "compare": [list(pair) for pair in case.compare],
        "variants": {name: s.as_dict() for name, s in stats.items()},
    }
    return add_ratios(result)


def add_ratios(result: Dict[str, object]) -> Dict[str, object]:
    """(Re)compute the ratios of a case record from its per-round times.

    ``ratios`` holds ratios of medians, ``paired_ratios`` medians of per-round quotients (see
    :func:`paired_ratio`); the target verdict uses the paired ratio.
    """
    variants = result["variants"]
    base = result["baseline"]
    pairs = [(name, base) for name in variants]
    pairs += [tuple(p) for p in result.get("compare", []) if p[0] in variants and p[1] in variants]
    result["ratios"] = {
        f"{a} / {b}": variants[a]["median_ms"] / variants[b]["median_ms"] for a, b in pairs
    }
    result["paired_ratios"] = {
        f"{a} / {b}": paired_ratio(variants[a]["times_ms"], variants[b]["times_ms"])
        for a, b in pairs
    }
    key = f"{result['se_variant']} / {base}"
    result["se_ratio"] = result["ratios"][key]
    result["se_paired_ratio"] = result["paired_ratios"][key]
    target = result["target"]
    result["meets_target"] = None if target is None else bool(result["se_paired_ratio"] <= target)
    return result


def format_table(name: str, result: Dict[str, object]) -> str:
    """A text table of one case: median, min-max, ratios to the baseline, peak memory."""
    lines: List[str] = [f"== {name}: {result['description']}"]
    header = (
        f"{'variant':<30} {'median ms':>10} {'min-max ms':>19} {'ratio':>7} {'paired':>7} "
        f"{'peak MiB':>9}"
    )
    lines.append(header)
    base = result["baseline"]
    for variant, s in result["variants"].items():
        key = f"{variant} / {base}"
        mem = "-" if s["peak_memory_mb"] is None else f"{s['peak_memory_mb']:.0f}"
        span = f"{s['min_ms']:.1f}-{s['max_ms']:.1f}"
        lines.append(
            f"{variant:<30} {s['median_ms']:>10.1f} {span:>19} {result['ratios'][key]:>6.3f}x "
            f"{result['paired_ratios'][key]:>6.3f}x {mem:>9}"
        )
    for key, value in result["ratios"].items():
        if not key.endswith(f"/ {base}"):
            lines.append(f"  {key}: {value:.3f}x (paired {result['paired_ratios'][key]:.3f}x)")
    runs = next(iter(result["variants"].values()))["runs"]
    lines.append(f"  {runs} rounds; ratio = ratio of medians, paired = median of per-round ratios")
    if result["target"] is not None:
        verdict = "met" if result["meets_target"] else "NOT met"
        lines.append(
            f"  {result['se_variant']} / {base} = {result['se_paired_ratio']:.3f}x paired, "
            f"{result['se_ratio']:.3f}x of medians (target <= {result['target']:.2f}x: {verdict})"
        )
    return "\n".join(lines)
