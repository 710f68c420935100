"""Facts about the machine a figure was measured on, recorded next to timings."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def load_average() -> str:
    """The contents of /proc/loadavg (1, 5, 15-minute loads, ...), or the best available."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        pass
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
