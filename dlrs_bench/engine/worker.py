"""What each rank of a distributed run executes: join the group, load the data, train."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.loading import DatasetCache
from dlrs_bench.engine.distributed import init
from dlrs_bench.engine.memory_plan import check_memory
from dlrs_bench.engine.train import ProgressFn, TrainOutcome, train
from dlrs_bench.lifecycle import child_setup
from dlrs_bench.measure.mllog import EventLog, MLPerfContext, NullEventLog


@dataclass(frozen=True)
class RankJob:
    """One (scenario, seed) for every rank; picklable (it crosses process boundaries)."""

    scenario: dict[str, Any]  # Scenario.model_dump(mode="json")
    seed: int
    device_kind: str  # "cuda" or "cpu"
    event_log: Path  # written by rank 0
    threads: int | None = None  # torch CPU threads per rank (None: see distributed.init)
    progress: Any = None  # a pipe's sending end that rank 0 feeds with (step, max_steps, metrics), or None
    mlperf: MLPerfContext | None = None  # what rank 0's part of the event log says of the submission


class PipeProgress:
    """A progress callback that sends ``(step, max_steps, metrics)`` to the launching process."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender

    def __call__(self, step: int, max_steps: int, metrics: dict[str, float] | None) -> None:
        self.sender.send((step, max_steps, metrics))


@dataclass(frozen=True)
class RankOutcome:
    outcome: TrainOutcome
    dataset: dict[str, Any]
    data_time_s: float
    threads: int  # torch CPU threads of rank 0


def run_rank(job: RankJob, cache: DatasetCache | None = None, progress: ProgressFn | None = None
             ) -> RankOutcome | None:
    """Train ``job`` as this rank; rank 0 returns the outcome, the others None."""
    spec, errors = validate_scenario(job.scenario)
    if spec is None:  # validated before launch; reaching this is a bug
        raise RuntimeError(f"scenario does not validate in the worker: {errors}")
    ranks, device = init(job.device_kind, spec.distributed.timeout_s, job.threads)
    dataset, data_time = (cache or DatasetCache()).get(spec.dataset)
    check_memory(spec, dataset, device)  # before anything is allocated; every rank plans the same
    if job.progress is not None:
        progress = PipeProgress(job.progress)
    log = EventLog(job.event_log, job.mlperf) if ranks.is_main else NullEventLog()
    try:
        outcome = train(spec, dataset, job.seed, device, log, progress if ranks.is_main else None, ranks)
    finally:
        log.close()
    return RankOutcome(outcome, dataset.summary(), data_time, torch.get_num_threads()) if ranks.is_main else None


@record
def spawned_rank(job: RankJob) -> RankOutcome | None:
    """Entry point of a rank started by :func:`dlrs_bench.engine.distributed.launch` (its exception
    is recorded for the launcher). It dies with the launching process, even one killed with SIGKILL,
    leaves Ctrl-C to it and ends quietly when it stops the ranks (SIGTERM)."""
    child_setup()
    return run_rank(job)
