"""The environment a result was measured in (the ``env`` section of a result file)."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import dlrs_bench

REPO = Path(dlrs_bench.__file__).resolve().parent.parent


def capture() -> dict[str, Any]:
    """Versions, git state, hardware, torch's CPU threads, the 1-minute load average and the start
    time, measured now."""
    return {**_static(), "threads": torch.get_num_threads(), "load_avg": round(os.getloadavg()[0], 2),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds")}


@functools.cache
def _static() -> dict[str, Any]:
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    sha = _git("rev-parse", "HEAD")
    return {
        "dlrs_bench": dlrs_bench.__version__,
        "git_sha": sha,
        "git_dirty": None if sha is None else bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrec": _version("torchrec"),
        "fbgemm_gpu": _version("fbgemm-gpu") or _version("fbgemm-gpu-cpu"),
        "cuda": torch.version.cuda,
        "gpu_name": torch.cuda.get_device_name(0) if gpu_count else None,
        "gpu_count": gpu_count,
        "driver": _driver() if gpu_count else None,
        "cpu": _cpu_name(),
        "cpu_count": len(_affinity()),
        "hostname": socket.gethostname(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML: unknown, not guessed
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _affinity() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
