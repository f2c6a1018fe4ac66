"""What machine and software a result came from: versions, CPU model and instruction-set features,
GPU, and the source commit. Every run log, summary and benchmark records this."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ._version import __version__

# The CPU features that decide how fast training is (and whether bf16 is native or emulated).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve",
                "bf16")


# Describe the CPU as having only these features (comma-separated), e.g. "avx2,fma": how the tests
# make `precision = "auto"` decide as it would on another kind of machine. Runs record that it was set.
FAKE_FEATURES_ENV = "MNISTLAB_CPU_FEATURES"


def cpu_description() -> dict:
    """The CPU's model name, the features in CPU_FEATURES it has and its clock (from /proc/cpuinfo on Linux)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key.strip() == "cpu MHz" and mhz is None:
                mhz = float(value)
    except (OSError, ValueError):
        pass
    described = {"cpu": model, "cpu_features": [f for f in CPU_FEATURES if f in flags], "cpu_mhz": mhz}
    faked = os.environ.get(FAKE_FEATURES_ENV)
    if faked is not None:  # a test's stand-in for another kind of CPU; recorded as such, never silent
        described["cpu_features_read"] = described["cpu_features"]
        described["cpu_features"] = [f.strip() for f in faked.split(",") if f.strip()]
        described["cpu_features_faked_by"] = FAKE_FEATURES_ENV
    return described


@functools.lru_cache(maxsize=1)
def describe() -> dict:
    """Versions and hardware (read once per process)."""
    info = {"mnistlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), **cpu_description(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def one_line(info: dict | None = None) -> str:
    """'AMD EPYC (avx2, fma), 2 cores, 2 torch threads, torch 2.13.0+cpu, cuda: None'."""
    info = info or describe()
    features = ", ".join(info["cpu_features"]) or "no listed features"
    return (f"{info['cpu']} ({features}), {info['cpu_count']} cores, {info['torch_threads']} torch threads, "
            f"torch {info['torch']}, cuda: {info['cuda']}")
