"""Which device a scenario runs on."""

from __future__ import annotations

from typing import Literal

import torch

from dlrs_bench.errors import UserInputError

DeviceOverride = Literal["cpu", "cuda"] | None


def scenario_device(gpus: int, override: DeviceOverride = None) -> torch.device:
    """``cuda:0`` for ``gpus >= 1`` (or ``--device cuda``), else ``cpu`` (or ``--device cpu``)."""
    kind = override or ("cuda" if gpus >= 1 else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "a scenario asks for a GPU but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
            "run with --device cpu, or install the CUDA set (README, 'GPU use')"
        )
    return torch.device("cuda", 0) if kind == "cuda" else torch.device("cpu")
