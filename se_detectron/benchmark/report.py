"""Environment description, ratios, the printed table and the JSON of a benchmark run."""

import platform
import sys
from importlib import metadata
from typing import Dict, List, Optional

import torch

from .timing import Stats

__all__ = ["case_result", "environment", "format_table"]


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> Dict[str, object]:
    """Device, threads and versions of the run."""
    import detectron2

    import se_detectron

    env = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": __import__("os").cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "detectron2": detectron2.__version__,
        "timm": _version("timm"),
        "se_detectron": se_detectron.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "dtype": "float32",
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def case_result(case, stats: Dict[str, Stats]) -> Dict[str, object]:
    """The JSON record of one case: per-variant statistics and the ratios of medians."""
    base = stats[case.baseline].median
    ratios = {f"{name} / {case.baseline}": s.median / base for name, s in stats.items()}
    for num, den in case.compare:
        if num in stats and den in stats:
            ratios[f"{num} / {den}"] = stats[num].median / stats[den].median
    se_ratio = stats[case.se_variant].median / base
    return {
        "description": case.description,
        "baseline": case.baseline,
        "se_variant": case.se_variant,
        "se_ratio": se_ratio,
        "target": case.target,
        "meets_target": None if case.target is None else bool(se_ratio <= case.target),
        "variants": {name: s.as_dict() for name, s in stats.items()},
        "ratios": ratios,
    }


def format_table(name: str, result: Dict[str, object]) -> str:
    """A text table of one case: median, min-max, ratio to the baseline, peak memory."""
    lines: List[str] = [f"== {name}: {result['description']}"]
    header = f"{'variant':<30} {'median ms':>10} {'min-max ms':>19} {'ratio':>7} {'peak MiB':>9}"
    lines.append(header)
    base = result["baseline"]
    for variant, s in result["variants"].items():
        ratio = result["ratios"][f"{variant} / {base}"]
        mem = "-" if s["peak_memory_mb"] is None else f"{s['peak_memory_mb']:.0f}"
        span = f"{s['min_ms']:.1f}-{s['max_ms']:.1f}"
        lines.append(f"{variant:<30} {s['median_ms']:>10.1f} {span:>19} {ratio:>6.3f}x {mem:>9}")
    for key, value in result["ratios"].items():
        if not key.endswith(f"/ {base}"):
            lines.append(f"  {key}: {value:.3f}x")
    if result["target"] is not None:
        verdict = "met" if result["meets_target"] else "NOT met"
        lines.append(
            f"  {result['se_variant']} / {base} = {result['se_ratio']:.3f}x "
            f"(target <= {result['target']:.2f}x: {verdict})"
        )
    return "\n".join(lines)
