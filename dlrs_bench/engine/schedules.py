"""Learning-rate schedules: one class per ``train.lr_schedule.kind``, each answering the rate of a
training step and hearing every evaluation; :class:`LrControl` sets the rate on every optimizer.

Steps count from 1 (the first training step), as the step counter of MLPerf's reference scheduler
does after its constructor's first ``step()``. The rate of step s is set on every parameter group
before the step runs: torch optimizers read it in ``step()``, TorchRec's fused fbgemm optimizers push
``param_groups[0]["lr"]`` to their kernel in ``zero_grad()`` (before the backward that updates the
tables) and ``step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from dlrs_bench.config.schema import (
    ConstantSchedule,
    MLPerfDLRMSchedule,
    PlateauSchedule,
    TrainSpec,
    WarmupSchedule,
)

#: The floor of the decay in MLPerf's reference scheduler (``min_lr`` in LRPolicyScheduler.get_lr).
MLPERF_MIN_LR = 1e-7
#: The power of that decay.
MLPERF_DECAY_POWER = 2


class Schedule(Protocol):
    def lr_at(self, step: int) -> float:
        """Learning rate of training step ``step`` (1 = the first)."""

    def after_eval(self, metrics: dict[str, float]) -> None:
        """Hear an evaluation's metrics (``auc``, ``logloss``, ``ne``)."""


class Constant:
    """``lr`` at every step."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def lr_at(self, step: int) -> float:
        return self.lr

    def after_eval(self, metrics: dict[str, float]) -> None:
        pass


class Warmup(Constant):
    """``lr * min(step, warmup_steps) / warmup_steps``: lr / N at the first step, lr from step N on."""

    def __init__(self, lr: float, warmup_steps: int) -> None:
        super().__init__(lr)
        self.warmup_steps = warmup_steps

    def lr_at(self, step: int) -> float:
        return self.lr * min(step, self.warmup_steps) / self.warmup_steps


class MLPerfDLRM(Constant):
    """MLPerf DLRM-DCNv2's LRPolicyScheduler, rate by rate: warm-up ``lr * s / W`` while s < W;
    decay ``max(1e-7, lr * ((D - (s - S)) / D) ** 2)`` while S <= s < S + D; elsewhere the last rate
    of those branches is kept (between warm-up and decay: ``lr * (W - 1) / W``; after the decay:
    its last value), or ``lr`` when D is 0. Where the reference has no last rate to keep (no warm-up
    step before a later decay start, where it fails), ``lr``."""

    def __init__(self, lr: float, warmup_steps: int, decay_start_step: int, decay_steps: int) -> None:
        super().__init__(lr)
        self.warmup, self.start, self.decay = warmup_steps, decay_start_step, decay_steps

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * step / self.warmup
        if self.start <= step < self.start + self.decay:
            return self._decayed(step)
        if self.decay == 0:
            return self.lr
        if step >= self.start + self.decay:
            return self._decayed(self.start + self.decay - 1)
        return self.lr_at(self.warmup - 1) if self.warmup > 1 else self.lr

    def _decayed(self, step: int) -> float:
        remaining = (self.decay - (step - self.start)) / self.decay
        return max(MLPERF_MIN_LR, self.lr * remaining**MLPERF_DECAY_POWER)


class Plateau(Constant):
    """FuxiCTR's reduce on plateau: an evaluation whose ``metric`` is not better than the best by at
    least ``min_delta`` counts as a miss; the ``patience + 1``-th miss in a row sets lr =
    max(lr * factor, min_lr) and restarts the count (patience 0: every miss reduces, as FuxiCTR)."""

    def __init__(self, lr: float, options: PlateauSchedule, metric: str) -> None:
        super().__init__(lr)
        self.options, self.metric = options, metric
        self.sign = 1.0 if metric == "auc" else -1.0  # AUC rises, LogLoss and NE fall
        self.best = float("-inf")  # sign * metric of the best evaluation
        self.misses = 0

    def after_eval(self, metrics: dict[str, float]) -> None:
        value = self.sign * metrics[self.metric]
        if value >= self.best + self.options.min_delta:
            self.best, self.misses = value, 0
            return
        self.misses += 1
        if self.misses > self.options.patience:
            self.lr = max(self.lr * self.options.factor, self.options.min_lr)
            self.misses = 0


#: kind -> the schedule of a run: (train options, target metric) -> Schedule.
SCHEDULES: dict[type, Callable[[TrainSpec, str], Schedule]] = {
    ConstantSchedule: lambda t, metric: Constant(t.lr),
    WarmupSchedule: lambda t, metric: Warmup(t.lr, t.lr_schedule.warmup_steps),
    PlateauSchedule: lambda t, metric: Plateau(t.lr, t.lr_schedule, t.lr_schedule.metric or metric),
    MLPerfDLRMSchedule: lambda t, metric: MLPerfDLRM(t.lr, t.lr_schedule.warmup_steps,
                                                     t.lr_schedule.decay_start_step, t.lr_schedule.decay_steps),
}


def build_schedule(train: TrainSpec, target_metric: str) -> Schedule:
    """The schedule ``train.lr_schedule`` of a run whose target is ``target_metric``."""
    return SCHEDULES[type(train.lr_schedule)](train, target_metric)


class LrControl:
    """Sets a schedule's rate on parameter groups before each step (only when it changes)."""

    def __init__(self, schedule: Schedule, param_groups: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.schedule = schedule
        self.param_groups = param_groups
        self.lr: float | None = None  # the rate last set (of the latest step)

    def before_step(self, step: int) -> None:
        """Set the rate of training step ``step`` (1 = the first) on every group."""
        lr = self.schedule.lr_at(step)
        if lr != self.lr:
            for group in self.param_groups():
                group["lr"] = lr
            self.lr = lr

    def after_eval(self, metrics: dict[str, float]) -> None:
        self.schedule.after_eval(metrics)
