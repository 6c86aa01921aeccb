"""Run a suite: every (scenario, seed), isolated failures, results written as they finish."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dlrs_bench.config.expand import ResolvedScenario, Suite
from dlrs_bench.data.base import SUBSET_FIELDS, CTRDataset, take_subset
from dlrs_bench.engine.device import DeviceOverride, scenario_device
from dlrs_bench.engine.memory_plan import check_fits, estimate
from dlrs_bench.engine.train import ProgressFn, train
from dlrs_bench.measure import env
from dlrs_bench.measure.mllog import EventLog
from dlrs_bench.registry import DATASETS
from dlrs_bench.results.schema import SCHEMA_VERSION, ResultFile
from dlrs_bench.results.store import ResultStore


class RunDisplay(Protocol):
    """What the runner tells the user while it works (see :mod:`dlrs_bench.ui`)."""

    def run_started(self, scenario: ResolvedScenario, seed: int) -> ProgressFn: ...

    def run_finished(self, scenario: ResolvedScenario, seed: int, result: ResultFile, skipped: bool) -> None: ...


@dataclass(frozen=True)
class Job:
    scenario: ResolvedScenario
    seed: int
    device: torch.device


def plan(suite: Suite, name_filter: str | None, device_override: DeviceOverride) -> list[Job]:
    """The (scenario, seed) runs to do, with devices checked before anything runs."""
    jobs = []
    for scenario in suite.scenarios:
        if name_filter and name_filter not in scenario.label and name_filter not in scenario.scenario_id:
            continue
        device = scenario_device(scenario.spec.gpus, device_override)
        jobs.extend(Job(scenario, seed, device) for seed in scenario.spec.seeds)
    return jobs


class DatasetCache:
    """Datasets built once per suite run, keyed by their resolved options."""

    def __init__(self) -> None:
        self._built: dict[str, CTRDataset] = {}

    def get(self, options: Any) -> tuple[CTRDataset, float]:
        """The dataset (with its train subset) and the seconds spent building it now; the full
        dataset is built once for all subsets of it."""
        t0 = time.perf_counter()
        key = json.dumps(options.model_dump(mode="json", exclude=SUBSET_FIELDS), sort_keys=True)
        if key not in self._built:
            self._built[key] = DATASETS.get(options.name).build(options)
        return take_subset(self._built[key], options), time.perf_counter() - t0


def run_jobs(jobs: list[Job], store: ResultStore, display: RunDisplay, resume: bool) -> list[ResultFile]:
    """Run ``jobs`` in order; each result is written as soon as its run ends."""
    cache = DatasetCache()
    results = []
    for job in jobs:
        scenario, seed = job.scenario, job.seed
        done = store.finished(scenario.suite, scenario.scenario_id, seed) if resume else None
        if done is not None:
            display.run_finished(scenario, seed, done, skipped=True)
            results.append(done)
            continue
        result = run_one(job, store, cache, display.run_started(scenario, seed))
        store.write(result)
        parsed = ResultFile.model_validate(result)
        display.run_finished(scenario, seed, parsed, skipped=False)
        results.append(parsed)
    return results


def run_one(job: Job, store: ResultStore, cache: DatasetCache, progress: ProgressFn | None) -> dict[str, Any]:
    """One (scenario, seed): a complete result dict, ``failed`` with its error if anything raised."""
    scenario, seed = job.scenario, job.seed
    started = time.perf_counter()
    environment = env.capture()
    store.archive_event_log(scenario.suite, scenario.scenario_id, seed)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": scenario.suite,
        "scenario_id": scenario.scenario_id,
        "label": scenario.label,
        "scenario": scenario.spec.model_dump(mode="json"),
        "seed": seed,
        "device": str(job.device),
        "status": "failed",
        "error": None,
        "metrics": None,
        "best_metrics": None,
        "target": None,
        "timing": None,
        "memory": None,
        "embedding": None,
        "model": None,
        "eval_curve": [],
        "dataset": None,
        "env": environment,
    }
    with _event_log(store, scenario, seed) as log:
        log.event("submission_benchmark", scenario.label, suite=scenario.suite, scenario_id=scenario.scenario_id)
        try:
            dataset, data_time = cache.get(scenario.spec.dataset)
            result["dataset"] = dataset.summary()
            if job.device.type == "cuda":  # refuse what cannot fit before allocating anything
                check_fits(estimate(scenario.spec, dataset), torch.cuda.get_device_properties(job.device).total_memory)
            outcome = train(scenario.spec, dataset, seed, job.device, log, progress)
        except Exception as e:  # noqa: BLE001 - a failing scenario is recorded and the suite goes on
            result["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
            log.event("run_error", f"{type(e).__name__}: {e}")
            return result
    timing = {**outcome.timing, "data_time_s": data_time, "wall_time_s": time.perf_counter() - started}
    result.update(
        status="reached" if outcome.target["reached"] else "not_reached",
        metrics=outcome.metrics,
        best_metrics=outcome.best_metrics,
        target=outcome.target,
        timing=timing,
        memory=outcome.memory,
        embedding=outcome.embedding,
        model=outcome.model,
        eval_curve=outcome.eval_curve,
    )
    return result


@contextmanager
def _event_log(store: ResultStore, scenario: ResolvedScenario, seed: int) -> Iterator[EventLog]:
    log = EventLog(store.event_log_path(scenario.suite, scenario.scenario_id, seed))
    try:
        yield log
    finally:
        log.close()
