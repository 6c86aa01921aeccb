"""Train one scenario with one seed to its target, with MLPerf time-to-target semantics.

The clock starts after the model is built and before the first training batch is read; it
includes training and evaluations and stops at the end of the first evaluation whose metric
reaches the target. Evaluations run every ``eval_every`` epochs (rounded to whole steps)
and once more at the end if the last step was not evaluated.

On N ranks (:mod:`dlrs_bench.engine.distributed`) every rank trains on its share of each global
batch of ``train.batch_size`` rows, full tables are sharded (:mod:`dlrs_bench.engine.sharding`)
and TorchRec's ``TrainPipelineSparseDist`` overlaps the next batch's input distribution with the
current step; evaluations gather every rank's logits, so metrics are exact over the whole split.
Rank 0's clock, step times and curve are the result; memory is the maximum over ranks.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.datasets.utils import Batch

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.full import FullEmbedding, full_for_sharding
from dlrs_bench.compression.rows import RowScaledEmbedding, scaled_features
from dlrs_bench.config.schema import Scenario, TargetSpec
from dlrs_bench.data.base import CTRDataset, CTRSplit
from dlrs_bench.data.batching import global_batch_rows, iter_batches, merge_rank_rows, prefetch
from dlrs_bench.engine.distributed import (
    SINGLE,
    Ranks,
    all_ranks_agree,
    average_sparse_gradients,
    gather_objects,
    gather_rows,
)
from dlrs_bench.engine.optim import OptimizerGroup, build_optimizer
from dlrs_bench.engine.schedules import LrControl, build_schedule
from dlrs_bench.engine.task import TASKS, Task
from dlrs_bench.errors import UserInputError
from dlrs_bench.measure.memory import MemorySampler
from dlrs_bench.measure.metrics import all_metrics
from dlrs_bench.measure.mllog import EventLog
from dlrs_bench.measure.timer import StepTimer
from dlrs_bench.models.base import build_model, count
from dlrs_bench.models.init import start_sharded_tables, start_tables

#: Called after every step with (step, max_steps, latest evaluation or None).
ProgressFn = Callable[[int, int, dict[str, float] | None], None]


@dataclass
class TrainOutcome:
    """What one training run measured; the runner turns it into a result file."""

    metrics: dict[str, float]
    best_metrics: dict[str, float]
    target: dict[str, Any]
    timing: dict[str, Any]
    memory: dict[str, Any]
    embedding: dict[str, Any]
    model: dict[str, Any]
    eval_curve: list[dict[str, Any]] = field(default_factory=list)
    distributed: dict[str, Any] | None = None
    diverged: dict[str, Any] | None = None  # {"step", "cause"}: stopped at a non-finite loss or prediction
    optimization: dict[str, Any] | None = None  # {"clip_grad_norm": what was clipped}, where clipping is on


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(spec: Scenario, dataset: CTRDataset, device: torch.device, for_sharding: bool = False) -> nn.Module:
    """The scenario's model with its (compressed) embeddings, on ``device``. ``for_sharding``: full
    tables for DMP, on the meta device (DMP allocates only each rank's shards) with rows of a multiple
    of 4 floats (fbgemm's kernels; :func:`~dlrs_bench.compression.full.full_for_sharding`)."""
    rows = spec.model.scale.rows
    tables = scaled_features(dataset.features, rows) if rows else dataset.features
    width = spec.model.table_width()
    if for_sharding:
        embeddings: nn.Module = full_for_sharding(tables, width, spec.compressor, torch.device("meta"))
    else:
        embeddings = build_embeddings(tables, width, spec.compressor, device)
    if rows:
        embeddings = RowScaledEmbedding(embeddings, tables, device)
    if for_sharding:
        with device:  # dense layers straight on the device; the meta tables stay for DMP to allocate
            return build_model(spec.model, dataset.num_dense, dataset.features, embeddings)
    start_tables(embeddings, spec.model, dataset.info)
    return build_model(spec.model, dataset.num_dense, dataset.features, embeddings).to(device)


def autocast(device_type: str, precision: str) -> torch.autocast:
    """The forward's precision context on ``device_type`` ("cpu" or "cuda"): bfloat16 autocast for
    ``"bf16"``, a no-op for ``"fp32"``."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


class TrainStep(nn.Module):
    """The model and its loss as one module of a batch: ``forward(batch) -> (loss, loss.detach())``
    (the form TorchRec's train pipelines drive). Loss: mean binary cross-entropy of the fp32 logits;
    the model's forward runs in ``precision`` (``fp32`` or ``bf16`` autocast)."""

    def __init__(self, model: nn.Module, precision: str = "fp32", device_type: str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.device_type = device_type  # a constant, so TorchRec's pipelines can fx-trace the forward
        self.loss_fn = nn.BCEWithLogitsLoss()

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device_type, self.precision):
            logits = self.model(batch.dense_features, batch.sparse_features)
        loss = self.loss_fn(logits.float(), batch.labels)
        return loss, loss.detach()


class LocalPipeline:
    """One batch at a time: forward, backward, optimizer step (of a :class:`TrainStep`, or of one
    under DMP whose embeddings are all replicated; then ``sparse`` lists the sparse-gradient
    parameters DDP leaves out, averaged over ranks here)."""

    def __init__(self, step: nn.Module, optimizer: OptimizerGroup, sparse: list[nn.Parameter] | None = None,
                 device: torch.device | None = None) -> None:
        self.step = step
        self.optimizer = optimizer
        self.sparse = sparse or []
        self.device = device

    def progress(self, batches: Iterator[Batch]) -> torch.Tensor:
        """Train on the next batch and return its loss; ``StopIteration`` when ``batches`` is done."""
        loss, detached = self.step(next(batches))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.sparse:
            average_sparse_gradients(self.sparse, self.device)
        self.optimizer.step()
        return detached

    def eval_model(self) -> nn.Module:
        return getattr(self.step, "module", self.step).model


class ShardedPipeline:
    """TorchRec's ``TrainPipelineSparseDist`` over a DMP-wrapped :class:`TrainStep`."""

    def __init__(self, dmp: nn.Module, optimizer: OptimizerGroup, device: torch.device) -> None:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        self.dmp = dmp
        self.pipeline = TrainPipelineSparseDist(dmp, optimizer, device, execute_all_batches=True)

    def progress(self, batches: Iterator[Batch]) -> torch.Tensor:
        return self.pipeline.progress(batches)

    def eval_model(self) -> nn.Module:
        """The model with its original forwards (the pipeline re-attaches on the next step)."""
        self.pipeline.detach()
        return self.dmp.module.model


@dataclass
class Prepared:
    """A model ready to train on this rank."""

    pipeline: LocalPipeline | ShardedPipeline
    optimizer: OptimizerGroup  # what the pipeline steps
    embedding: dict[str, Any]
    counts: dict[str, Any]
    placement: dict[str, Any] | None


def prepare(spec: Scenario, dataset: CTRDataset, device: torch.device, ranks: Ranks) -> Prepared:
    """Build the model and its optimizer: plain on one process, sharded under DMP in a process group."""
    cfg = spec.train
    if not ranks.shard:
        model = build(spec, dataset, device)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.clip_grad_norm)
        return Prepared(LocalPipeline(TrainStep(model, cfg.precision, device.type), optimizer), optimizer,
                        account(model.embeddings, getattr(spec.compressor, "ratio", None)).to_json(),
                        count(model).__dict__, None)
    from dlrs_bench.engine.sharding import shard

    full = spec.compressor.kind == "none"  # full tables are sharded: DMP allocates them (others replicate)
    model = build(spec, dataset, device, for_sharding=full)
    embedding = account(model.embeddings, getattr(spec.compressor, "ratio", None)).to_json()
    counts = count(model).__dict__
    sparse = getattr(model.embeddings, "sparse_parameters", list)()
    pipelined = isinstance(model.embeddings, FullEmbedding)  # asked before DMP swaps in the sharded module
    dmp, optimizer, placement = shard(TrainStep(model, cfg.precision, device.type), cfg.optimizer, cfg.lr, device,
                                      spec.distributed.sharding_types, list(sparse), cfg.clip_grad_norm)
    start_sharded_tables(dmp, spec.model, dataset.info)
    if pipelined:  # the KJT goes straight from the batch to the tables
        return Prepared(ShardedPipeline(dmp, optimizer, device), optimizer, embedding, counts, placement)
    # replicated embeddings: DDP, nothing to pipeline
    return Prepared(LocalPipeline(dmp, optimizer, list(sparse), device), optimizer, embedding, counts, placement)


def reader_threads(device: torch.device, ranks: Ranks) -> int:
    """Threads that read and assemble batches ahead of the step: on a GPU up to 4 per rank from this
    machine's cores (MLPerf multi-hot bags take ~1 core per 1M samples/s); none on CPU, where they
    would compete with the training step for the same cores."""
    if device.type != "cuda":
        return 0
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world))
    return max(1, min(4, len(os.sched_getaffinity(0)) // max(local_ranks, 1) - 1))


@torch.no_grad()
def evaluate(model: nn.Module, split: CTRSplit, keys: list[str], batch_size: int, device: torch.device,
             train_ctr: float, ranks: Ranks = SINGLE, precision: str = "fp32") -> dict[str, float]:
    """AUC / LogLoss / NE of ``model`` (its forward in ``precision``) over the whole ``split`` (on N
    ranks: each rank scores its share of every global batch of ``batch_size`` rows and the logits are
    gathered in order)."""
    model.eval()
    batches = iter_batches(split, batch_size, keys, rank=ranks.rank, world=ranks.world, pad=True,
                           workers=reader_threads(device, ranks))
    # one buffer for every logit (4 bytes a row; a share holds at most one padded row per batch): many
    # small kept tensors between each batch's large temporaries would fragment the heap and grow it
    logits = torch.empty(len(split) + len(split) // batch_size + 1)
    done = 0
    with autocast(device.type, precision):
        for batch in batches:
            batch = batch.to(device)
            part = model(batch.dense_features, batch.sparse_features).float().flatten()
            logits[done : done + len(part)] = part.cpu()
            done += len(part)
    logits = logits[:done]
    model.train()
    if ranks.distributed:
        logits = merge_rank_rows([part.cpu() for part in gather_rows(logits, device)], len(split), batch_size,
                                 ranks.world)
    return all_metrics(logits, torch.from_numpy(split.labels()), train_ctr)


class CTRTask:
    """The ``ctr`` task family (:mod:`dlrs_bench.engine.task`): dense features and pooled bags of a
    :class:`~dlrs_bench.data.base.CTRDataset`, binary cross-entropy, AUC / LogLoss / NE."""

    metric_names = ("auc", "logloss", "ne")
    finite_metric = "logloss"  # finite logits give a finite LogLoss

    def prepare(self, spec: Scenario, dataset: CTRDataset, device: torch.device, ranks: Ranks) -> Prepared:
        return prepare(spec, dataset, device, ranks)

    def train_split(self, spec: Scenario, dataset: CTRDataset) -> CTRSplit:
        return dataset.splits["train"]

    def train_batches(self, spec: Scenario, dataset: CTRDataset, seed: int, ranks: Ranks,
                      device: torch.device) -> Iterator[Batch]:
        return iter_batches(dataset.splits["train"], spec.train.batch_size, dataset.feature_names, seed, ranks.rank,
                            ranks.world, workers=reader_threads(device, ranks))

    def evaluate(self, model: nn.Module, spec: Scenario, dataset: CTRDataset, device: torch.device,
                 ranks: Ranks) -> dict[str, float]:
        cfg = spec.train
        return evaluate(model, dataset.splits[cfg.eval_split], dataset.feature_names,
                        cfg.eval_batch_size or 4 * cfg.batch_size, device, dataset.splits["train"].ctr, ranks,
                        cfg.precision)


def best_evaluation(curve: list[dict[str, Any]], target: TargetSpec, metric_names: tuple[str, ...]
                    ) -> dict[str, Any] | None:
    """The evaluation with the best target metric (the first of equals): its ``metric_names``, epoch and
    samples; None without evaluations (a run that diverged before its first)."""
    if not curve:
        return None
    sign = 1 if target.higher_is_better else -1
    best = max(curve, key=lambda point: sign * point[target.metric])
    return {k: best[k] for k in (*metric_names, "epoch", "samples")}


def train(
    spec: Scenario,
    dataset: CTRDataset,
    seed: int,
    device: torch.device,
    log: EventLog,
    progress: ProgressFn | None = None,
    ranks: Ranks = SINGLE,
) -> TrainOutcome:
    """Train ``spec`` on ``dataset`` with ``seed`` until the target or a budget is reached.

    On N ranks every rank calls this; all return the same outcome (rank 0's timings)."""
    cfg = spec.train
    task: Task = TASKS.get(spec.dataset.task)()
    train_split, eval_split = task.train_split(spec, dataset), dataset.splits[cfg.eval_split]
    try:  # validate refuses it where the train split's size is known without the data
        cfg.check_batch(len(train_split))
    except ValueError as e:
        raise UserInputError(f"train.{e}") from None
    global_rows = global_batch_rows(len(train_split), cfg.batch_size, ranks.world)

    with MemorySampler(device) as memory:
        log.start("init_start")
        seed_everything(seed)
        prepared = task.prepare(spec, dataset, device, ranks)
        pipeline = prepared.pipeline
        lr = LrControl(build_schedule(cfg, spec.target.metric), prepared.optimizer.param_groups)
        steps_per_epoch = len(global_rows)
        max_steps = max(1, math.ceil(cfg.max_epochs * steps_per_epoch))
        eval_interval = max(1, round(cfg.eval_every * steps_per_epoch))
        for key, value in (("seed", seed), ("global_batch_size", cfg.batch_size), ("opt_name", cfg.optimizer),
                           ("opt_base_learning_rate", cfg.lr), ("train_samples", len(train_split)),
                           ("eval_samples", len(eval_split)), ("world_size", ranks.world)):
            log.event(key, value)
        log.configuration(spec, dataset, pipeline, eval_interval)
        log.end("init_stop")

        timer = StepTimer(device, cfg.warmup_iters)
        curve: list[dict[str, Any]] = []
        reached_at: dict[str, Any] | None = None
        eval_time = 0.0
        step = samples = epoch = 0
        loss_sum = torch.zeros((), device=device)
        loss_steps = 0
        first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
        diverged: dict[str, Any] | None = None
        stop = False
        log.start("run_start")
        run_start = time.perf_counter()

        def run_eval() -> dict[str, float] | None:
            """Evaluate, unless training diverged (then record it and return None)."""
            nonlocal eval_time, loss_sum, loss_steps, reached_at, diverged
            bad = int(first_bad)  # the one host sync of the check, at evaluation time
            if all_ranks_agree(bad >= 0, device) if ranks.distributed else bad >= 0:
                diverged = {"step": bad if bad >= 0 else step, "cause": "non-finite training loss"}
                log.event("diverged", diverged["cause"], step=diverged["step"])
                return None
            t0 = time.perf_counter()
            epoch_num = samples / len(train_split)
            log.start("eval_start", epoch_num=epoch_num)
            metrics = task.evaluate(pipeline.eval_model(), spec, dataset, device, ranks)
            if not math.isfinite(metrics[task.finite_metric]):
                eval_time += time.perf_counter() - t0
                diverged = {"step": step, "cause": "non-finite predictions"}
                log.event("diverged", diverged["cause"], step=step)
                return None
            train_loss = loss_sum / max(loss_steps, 1)
            if ranks.distributed:
                torch.distributed.all_reduce(train_loss)
                train_loss /= ranks.world
            eval_time += time.perf_counter() - t0
            now = time.perf_counter() - run_start
            log.event("eval_accuracy", metrics[spec.target.metric], epoch_num=epoch_num)
            log.end("eval_stop", epoch_num=epoch_num)
            curve.append({"epoch": epoch_num, "samples": samples, "time_s": now, **metrics,
                          "train_loss": float(train_loss), "lr": lr.lr})
            lr.after_eval(metrics)
            loss_sum, loss_steps = torch.zeros((), device=device), 0
            if reached_at is None and spec.target.reached_by(metrics[spec.target.metric]):
                reached_at = {"time_to_target_s": now, "epochs_to_target": epoch_num, "samples_to_target": samples}
            return metrics

        last = None
        while not stop:
            log.start("epoch_start", epoch_num=epoch)
            batches = task.train_batches(spec, dataset, seed * 1_000_003 + epoch, ranks, device)
            if device.type == "cuda":  # overlap reading with the step (on CPU it only competes for the cores)
                # TorchRec's sharded pipeline copies batches itself (from pinned memory)
                batches = prefetch(batches, device, copy=not isinstance(pipeline, ShardedPipeline))
            for rows in global_rows:
                lr.before_step(step + 1)
                timer.start()
                loss = pipeline.progress(batches)
                timer.stop()
                loss_sum += loss
                loss_steps += 1
                step += 1
                samples += rows
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)  # no sync
                evaluated = step % eval_interval == 0 or step == max_steps
                if evaluated:
                    last = run_eval() or last
                over_time = cfg.max_time_s is not None and time.perf_counter() - run_start >= cfg.max_time_s
                if ranks.distributed and cfg.max_time_s is not None:  # ranks' clocks differ: stop together
                    over_time = all_ranks_agree(over_time, device)
                stop = ((reached_at is not None and cfg.stop_at_target) or step >= max_steps or over_time
                        or diverged is not None)
                if over_time and not evaluated:
                    last = run_eval() or last
                if progress:
                    progress(step, max_steps, last)
                if stop:
                    break
            batches.close()
            log.end("epoch_stop", epoch_num=epoch)
            epoch += 1
        wall = time.perf_counter() - run_start
        log.end("run_stop", status="success" if reached_at else "aborted")

    iter_ms = timer.summary()
    train_time = wall - eval_time
    peaks = memory.peaks().__dict__
    distributed = None
    if ranks.shard:
        per_rank = gather_objects({"memory": peaks, "iter_ms_p50": iter_ms["p50"]})
        peaks = {k: max((r["memory"][k] for r in per_rank if r["memory"][k] is not None), default=None)
                 for k in peaks}
        distributed = {"world_size": ranks.world, "backend": torch.distributed.get_backend(),
                       "placement": prepared.placement, "per_rank": per_rank}
    return TrainOutcome(
        metrics=last,
        best_metrics=best_evaluation(curve, spec.target, task.metric_names),
        target={"metric": spec.target.metric, "value": spec.target.value, "reached": reached_at is not None,
                "time_to_target_s": None, "epochs_to_target": None, "samples_to_target": None,
                **(reached_at or {})},
        timing={"train_time_s": train_time, "eval_time_s": eval_time, "run_time_s": wall,
                "samples_per_s": samples / train_time if train_time > 0 else None,
                "iter_ms": {k: iter_ms[k] for k in ("mean", "p50", "p90", "p99")},
                "warmup_iters": iter_ms["warmup_iters"], "steps": step, "samples": samples,
                "epochs": samples / len(train_split)},
        memory=peaks,
        embedding=prepared.embedding,
        model=prepared.counts,
        eval_curve=curve,
        distributed=distributed,
        diverged=diverged,
        optimization=None if prepared.optimizer.clip is None else {"clip_grad_norm": prepared.optimizer.clip.record()},
    )
