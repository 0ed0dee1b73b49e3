"""Facts about the machine a run happened on, for reports that state where they were measured."""

import platform

__all__ = ["cpu_name"]


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
