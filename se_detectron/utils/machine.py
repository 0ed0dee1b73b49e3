"""Facts about the machine a run happened on, for reports that state where they were measured."""

import os
import platform
from typing import Dict, FrozenSet, Optional

__all__ = ["cpu_flags", "cpu_mhz", "cpu_name", "peak_fp32_flops", "vector_extensions"]

#: the vector-extension flags of /proc/cpuinfo that decide which kernels a runtime uses
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def cpu_name() -> str:
    """The CPU model (``model name`` of ``/proc/cpuinfo``), or what ``platform`` knows elsewhere.

    Timings on 2-core machines differ 2-3.4x between an Intel Xeon (AVX-512) and an AMD EPYC
    (AVX2), so every reported time names the CPU it was measured on.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> FrozenSet[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def vector_extensions() -> str:
    """The CPU's vector extensions relevant to inference speed, e.g. ``"avx2 fma"`` or
    ``"avx2 fma avx512f avx512_vnni avx512_bf16"``; names VNNI's absence explicitly."""
    flags = cpu_flags()
    found = [f for f in VECTOR_FLAGS if f in flags]
    if not ({"avx512_vnni", "avx_vnni"} & flags):
        found.append("(no VNNI)")
    return " ".join(found)


def cpu_mhz() -> Optional[float]:
    """The current clock of the first CPU (``cpu MHz`` of ``/proc/cpuinfo``), None if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def peak_fp32_flops(cores: Optional[int] = None) -> Dict[str, object]:
    """The fp32 peak of the cores' vector units, from the detected ISA and clock.

    Assumption (stated in every report): 2 FMA units per core, each doing one fused
    multiply-add (2 flops) per lane per cycle; 8 fp32 lanes with AVX2+FMA, 16 with AVX-512;
    at the ``cpu MHz`` of ``/proc/cpuinfo`` (the clock the kernel reports, not a turbo peak).

    Args:
        cores: cores used (default: ``os.sched_getaffinity`` / ``os.cpu_count``).

    Returns:
        ``{"flops": peak flop/s or None, "lanes", "fma_units", "ghz", "cores", "assumption"}``.
    """
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mhz = cpu_mhz()
    fma_units = 2
    flops = None if mhz is None else cores * fma_units * lanes * 2 * mhz * 1e6
    return {
        "flops": flops,
        "lanes": lanes,
        "fma_units": fma_units,
        "ghz": None if mhz is None else round(mhz / 1000, 3),
        "cores": cores,
        "assumption": f"{cores} cores x {fma_units} FMA units x {lanes} fp32 lanes x 2 flops x "
        f"{'?' if mhz is None else f'{mhz / 1000:.2f}'} GHz (cpu MHz of /proc/cpuinfo)",
    }
