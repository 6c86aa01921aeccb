"""Per-iteration latency of training steps.

On CUDA each step is bracketed by CUDA events on the current stream (no host sync per step;
elapsed times are read once at the end); on CPU by ``time.perf_counter``.
"""

from __future__ import annotations

import time

import numpy as np
import torch


class StepTimer:
    """Records one duration per training step; the first ``warmup_iters`` are excluded from stats."""

    def __init__(self, device: torch.device, warmup_iters: int) -> None:
        self.cuda = device.type == "cuda"
        self.warmup_iters = warmup_iters
        self._cpu_ms: list[float] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._t0 = 0.0
        self._start: torch.cuda.Event | None = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start, end))
        else:
            self._cpu_ms.append((time.perf_counter() - self._t0) * 1e3)

    def durations_ms(self) -> list[float]:
        """All recorded step durations in milliseconds (synchronizes the device once)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in self._events]
        return list(self._cpu_ms)

    def summary(self) -> dict[str, float | int | None]:
        """``{mean, p50, p90, p99}`` in ms over the steps after warm-up, and the warm-up used.

        When a run has no more steps than ``warmup_iters``, only the first step is excluded.
        """
        ms = self.durations_ms()
        warmup = self.warmup_iters if len(ms) > self.warmup_iters else min(1, len(ms) - 1)
        kept = np.array(ms[max(warmup, 0):])
        if kept.size == 0:
            return {"mean": None, "p50": None, "p90": None, "p99": None, "warmup_iters": max(warmup, 0), "count": 0}
        p50, p90, p99 = np.percentile(kept, [50, 90, 99])
        return {"mean": float(kept.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
                "warmup_iters": warmup, "count": int(kept.size)}
