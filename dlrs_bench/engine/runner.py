"""Run a suite: every (scenario, seed), isolated failures, results written as they finish."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from dlrs_bench.config.expand import ResolvedScenario, Suite
from dlrs_bench.config.schema import Scenario
from dlrs_bench.data.loading import DatasetCache
from dlrs_bench.engine import distributed
from dlrs_bench.engine.device import DeviceOverride, scenario_device
from dlrs_bench.engine.memory_plan import check_memory
from dlrs_bench.engine.sharding import check_sharded_optimizer
from dlrs_bench.engine.train import ProgressFn, train
from dlrs_bench.engine.worker import RankJob, RankOutcome, run_rank, spawned_rank
from dlrs_bench.errors import UserInputError
from dlrs_bench.files import cannot_write
from dlrs_bench.lifecycle import Interrupted
from dlrs_bench.measure import env
from dlrs_bench.measure.mllog import EventLog, MLPerfContext, NullEventLog
from dlrs_bench.results.collect import cache_identity
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
    threads: int | None = None  # torch CPU threads of each rank of a distributed run (None: the default)


def plan(suite: Suite, name_filter: str | None, device_override: DeviceOverride, threads: int | None = None
         ) -> list[Job]:
    """The (scenario, seed) runs to do, with devices (and, under ``torchrun``, rank counts) checked
    before anything runs."""
    jobs = []
    launched = distributed.launched_world()
    for scenario in suite.scenarios:
        if name_filter and name_filter not in scenario.label and name_filter not in scenario.scenario_id:
            continue
        spec = scenario.spec
        if launched is not None and spec.world_size != launched:
            raise UserInputError(
                f"{suite.path}: scenario {scenario.label!r} trains on {spec.world_size} rank(s) but torchrun "
                f"started {launched}; under torchrun run only scenarios with gpus (or processes) = {launched} "
                "(use --filter), and single-process scenarios without torchrun")
        device = scenario_device(spec.gpus, device_override)
        if device.type == "cuda" and launched is None and torch.cuda.device_count() < spec.world_size:
            raise UserInputError(
                f"{suite.path}: scenario {scenario.label!r} needs {spec.world_size} GPUs (one per rank) but this "
                f"machine has {torch.cuda.device_count()}; run across machines with torchrun (README, 'GPU use') "
                "or with --device cpu (gloo ranks)")
        check_sharded_optimizer(spec, device, f"{suite.path}: scenario {scenario.label!r}")
        jobs.extend(Job(scenario, seed, device, threads) for seed in spec.seeds)
    return jobs


class SuiteInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped ``suite`` (its name; None: no jobs): ``job`` was in flight (None:
    between runs) and is not recorded; ``done`` runs ended before it (their results are kept)."""

    def __init__(self, signum: int, suite: str | None, job: Job | None, done: int) -> None:
        super().__init__(signum)
        self.suite, self.job, self.done = suite, job, done


def run_jobs(jobs: list[Job], store: ResultStore, display: RunDisplay, resume: bool,
             note: Callable[[str], None] = print) -> list[ResultFile]:
    """Run ``jobs`` in order; each result is written as soon as its run ends. A signal
    (:class:`~dlrs_bench.lifecycle.Interrupted`) stops the suite as :class:`SuiteInterrupted`: the
    run in flight leaves no result and no event log behind. A result folder the disk refuses to
    write stops it as a :class:`~dlrs_bench.errors.UserInputError` (older results stay in place).
    ``note`` tells the user why ``--resume`` runs a stored result again."""
    cache = DatasetCache()
    results: list[ResultFile] = []
    main = distributed.is_main_process()  # under torchrun only rank 0 writes and displays
    current: Job | None = None
    try:
        if jobs and distributed.launched_world() is not None:
            distributed.init(jobs[0].device.type, jobs[0].scenario.spec.distributed.timeout_s, jobs[0].threads)
        for job in jobs:
            current = job
            scenario, seed = job.scenario, job.seed
            done = _kept(store, cache, job, note) if resume else None
            if distributed.launched_world() is not None:  # every rank must skip the same runs
                done = distributed.gather_objects(done)[0]
            if done is not None:
                display.run_finished(scenario, seed, done, skipped=True)
                results.append(done)
                continue
            result = _run_and_record(job, store, cache, display.run_started(scenario, seed), main)
            parsed = ResultFile.model_validate(result)
            results.append(parsed)
            current = None  # recorded: an interruption from here on stops between runs
            if main:
                display.run_finished(scenario, seed, parsed, skipped=False)
            if parsed.status == "failed" and distributed.launched_world() is not None:
                raise distributed.DistributedRunError(  # the process group may be broken: stop every rank
                    f"{scenario.label} seed {seed} failed under torchrun: {result['error']['message']}")
    except Interrupted as e:
        raise SuiteInterrupted(e.signum, jobs[0].scenario.suite if jobs else None, current, len(results)) from None
    return results


def _kept(store: ResultStore, cache: DatasetCache, job: Job, note: Callable[[str], None]) -> ResultFile | None:
    """The stored result ``--resume`` keeps for ``job``: a finished one trained on the data the job would
    train on now (when both record a cache identity and they differ, the run is done again: None)."""
    scenario = job.scenario
    done = store.finished(scenario.suite, scenario.scenario_id, job.seed)
    if done is None:
        return None
    recorded = cache_identity((done.model_extra or {}).get("dataset"))
    if recorded is None:
        return done
    try:
        summary = cache.get(scenario.spec.dataset)[0].summary()
    except Exception:  # noqa: BLE001 - data that cannot be read now has no identity to compare: keep the result
        return done
    now = cache_identity(summary)
    if now is None or now == recorded:
        return done
    note(f"re-run {scenario.label} seed {job.seed}: the dataset at {summary['cache'].get('path')} changed since "
         f"this result (identity {recorded} → {now})")
    return None


def _run_and_record(job: Job, store: ResultStore, cache: DatasetCache, progress: ProgressFn | None, main: bool
                    ) -> dict[str, Any]:
    """Run ``job`` and (``main``: this process records) write its result with its event log; a run that
    ends otherwise (interrupted, its result refused by the disk) leaves neither."""
    scenario = job.scenario
    partial = store.start_event_log(scenario.suite, scenario.scenario_id, job.seed) if main else None
    try:
        result = run_one(job, store, cache, progress, partial)
        if main:
            store.write(result, event_log=partial)
    except BaseException:
        store.drop_event_log(partial)
        raise
    return result


def run_one(job: Job, store: ResultStore, cache: DatasetCache, progress: ProgressFn | None,
            event_log: Path | None = None) -> dict[str, Any]:
    """One (scenario, seed): a complete result dict, ``failed`` with its error if anything raised (a
    disk refusing a line of its ``event_log`` too; None: it writes no log)."""
    scenario, seed = job.scenario, job.seed
    started = time.perf_counter()
    environment = env.capture()
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
    mlperf = MLPerfContext.resolve(scenario.mlperf, scenario.label, scenario.suite, scenario.scenario_id,
                                   scenario.spec.world_size, job.device.type, environment)
    with _event_log(event_log, mlperf) as log:
        try:
            log.submission()
            dataset, data_time = cache.get(scenario.spec.dataset)
            result["dataset"] = dataset.summary()
            log.cache_clear(Path(result["dataset"]["cache"]["path"]))
            if scenario.spec.world_size > 1:  # each rank checks its memory plan (this process keeps off the GPUs)
                ranked = run_ranks(job, store, cache, progress, mlperf, event_log)
                outcome, data_time, result["dataset"] = ranked.outcome, ranked.data_time_s, ranked.dataset
                result["env"]["threads"] = ranked.threads
            else:
                check_memory(scenario.spec, dataset, job.device)
                with one_rank(scenario.spec, job.device) as ranks:
                    outcome = train(scenario.spec, dataset, seed, job.device, log, progress, ranks)
        except Exception as e:  # noqa: BLE001 - a failing scenario is recorded and the suite goes on
            result["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
            log.event("run_error", f"{type(e).__name__}: {e}")
            return result
    timing = {**outcome.timing, "data_time_s": data_time, "wall_time_s": time.perf_counter() - started}
    result.update(
        status="diverged" if outcome.diverged else "reached" if outcome.target["reached"] else "not_reached",
        metrics=outcome.metrics,
        best_metrics=outcome.best_metrics,
        target=outcome.target,
        timing=timing,
        memory=outcome.memory,
        embedding=outcome.embedding,
        model=outcome.model,
        eval_curve=outcome.eval_curve,
    )
    if outcome.distributed is not None:
        result["distributed"] = outcome.distributed
    if outcome.diverged is not None:
        result["diverged"] = outcome.diverged
    if outcome.optimization is not None:
        result["optimization"] = outcome.optimization
    return result


def one_rank(spec: Scenario, device: torch.device) -> AbstractContextManager[distributed.Ranks]:
    """This process as the only rank: in a process group of its own with ``distributed.one_rank_dmp``
    (full tables under DMP), else plain."""
    if spec.in_process_group(device.type):
        return distributed.one_rank_group(device, spec.distributed.timeout_s)
    return nullcontext(distributed.SINGLE)


def run_ranks(job: Job, store: ResultStore, cache: DatasetCache, progress: ProgressFn | None,
              mlperf: MLPerfContext | None = None, event_log: Path | None = None) -> RankOutcome:
    """Train ``job`` on its ranks: in this process when ``torchrun`` started it, else on ranks
    launched here (their logs beside the result file). Rank 0 appends to ``event_log`` (None: the
    scenario's own log path, which a rank other than 0 never opens)."""
    scenario = job.scenario
    log_path = event_log or store.event_log_path(scenario.suite, scenario.scenario_id, job.seed)
    rank_job = RankJob(scenario.spec.model_dump(mode="json"), job.seed, job.device.type, log_path, job.threads,
                       mlperf=mlperf)
    if distributed.launched_world() is not None:
        outcome = run_rank(rank_job, cache, progress)
        return distributed.gather_objects(outcome)[0]
    log_dir = store.path(scenario.suite, scenario.scenario_id, job.seed).with_suffix(".ranks")
    with _relay(progress) as queue:
        return distributed.launch(spawned_rank, replace(rank_job, progress=queue), scenario.spec.world_size,
                                  log_dir)


@contextmanager
def _relay(progress: ProgressFn | None) -> Iterator[Any]:
    """The sending end of a pipe that launched ranks feed with progress, forwarded to ``progress`` by
    a thread of this process. A plain pipe: no server process to stop, or to outlive a killed run."""
    if progress is None:
        yield None
        return
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)

    def forward() -> None:
        while True:
            try:
                item = receiver.recv()
            except (EOFError, OSError):  # every sender gone
                return
            except (pickle.UnpicklingError, ValueError):  # a message cut short by a killed rank: skip it
                continue
            if item is None:
                return
            progress(*item)

    thread = threading.Thread(target=forward, daemon=True, name="dlrs-bench-progress")
    thread.start()
    try:
        yield sender
    finally:
        sender.send(None)
        thread.join()
        sender.close()
        receiver.close()


@contextmanager
def _event_log(path: Path | None, mlperf: MLPerfContext | None = None) -> Iterator[EventLog]:
    """The run's event log at ``path`` (None: a process that writes none, such as ranks other than 0
    of a torchrun launch); a user error naming it when it cannot be created."""
    if path is None:
        yield NullEventLog()
        return
    try:
        log = EventLog(path, mlperf)
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        yield log
    finally:
        log.close()
