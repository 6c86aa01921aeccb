"""Train one scenario with one seed to its target, with MLPerf time-to-target semantics.

The clock starts after the model is built and before the first training batch is read; it
includes training and evaluations and stops at the end of the first evaluation whose metric
reaches the target. Evaluations run every ``eval_every`` epochs (rounded to whole steps)
and once more at the end if the last step was not evaluated.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.rows import RowScaledEmbedding, scaled_features
from dlrs_bench.config.schema import Scenario, TargetSpec
from dlrs_bench.data.base import CTRDataset, CTRSplit
from dlrs_bench.data.batching import iter_batches, prefetch
from dlrs_bench.engine.optim import build_optimizer
from dlrs_bench.measure.memory import MemorySampler
from dlrs_bench.measure.metrics import all_metrics
from dlrs_bench.measure.mllog import EventLog
from dlrs_bench.measure.timer import StepTimer
from dlrs_bench.models.base import build_model, count

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(spec: Scenario, dataset: CTRDataset, device: torch.device) -> nn.Module:
    """The scenario's model with its (compressed) embeddings, on ``device``."""
    rows = spec.model.scale.rows
    tables = scaled_features(dataset.features, rows) if rows else dataset.features
    embeddings = build_embeddings(tables, spec.model.dim, spec.compressor, device)
    if rows:
        embeddings = RowScaledEmbedding(embeddings, tables, device)
    return build_model(spec.model, dataset.num_dense, dataset.features, embeddings).to(device)


@torch.no_grad()
def evaluate(model: nn.Module, split: CTRSplit, keys: list[str], batch_size: int, device: torch.device,
             train_ctr: float) -> dict[str, float]:
    """AUC / LogLoss / NE of ``model`` over the whole ``split``."""
    model.eval()
    logits = [model(b.dense_features, b.sparse_features).float().cpu()
              for b in (b.to(device) for b in iter_batches(split, batch_size, keys))]
    model.train()
    return all_metrics(torch.cat(logits), split.labels, train_ctr)


def best_evaluation(curve: list[dict[str, Any]], target: TargetSpec) -> dict[str, Any]:
    """The evaluation with the best target metric (the first of equals), with its epoch."""
    sign = 1 if target.higher_is_better else -1
    best = max(curve, key=lambda point: sign * point[target.metric])
    return {k: best[k] for k in ("auc", "logloss", "ne", "epoch", "samples")}


def train(
    spec: Scenario,
    dataset: CTRDataset,
    seed: int,
    device: torch.device,
    log: EventLog,
    progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Train ``spec`` on ``dataset`` with ``seed`` until the target or a budget is reached."""
    cfg = spec.train
    train_split, eval_split = dataset.splits["train"], dataset.splits[cfg.eval_split]
    keys = dataset.feature_names
    train_ctr = train_split.ctr

    with MemorySampler(device) as memory:
        log.start("init_start")
        seed_everything(seed)
        model = build(spec, dataset, device)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr)
        loss_fn = nn.BCEWithLogitsLoss()
        embedding = account(model.embeddings, getattr(spec.compressor, "ratio", None))
        counts = count(model)
        steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
        max_steps = max(1, math.ceil(cfg.max_epochs * steps_per_epoch))
        eval_interval = max(1, round(cfg.eval_every * steps_per_epoch))
        eval_batch = cfg.eval_batch_size or 4 * cfg.batch_size
        for key, value in (("seed", seed), ("global_batch_size", cfg.batch_size), ("opt_name", cfg.optimizer),
                           ("opt_base_learning_rate", cfg.lr), ("train_samples", len(train_split)),
                           ("eval_samples", len(eval_split))):
            log.event(key, value)
        log.end("init_stop")

        timer = StepTimer(device, cfg.warmup_iters)
        curve: list[dict[str, Any]] = []
        reached_at: dict[str, Any] | None = None
        eval_time = 0.0
        step = samples = epoch = 0
        loss_sum = torch.zeros((), device=device)
        loss_steps = 0
        stop = False
        log.start("run_start")
        run_start = time.perf_counter()

        def run_eval() -> dict[str, float]:
            nonlocal eval_time, loss_sum, loss_steps, reached_at
            t0 = time.perf_counter()
            epoch_num = samples / len(train_split)
            log.start("eval_start", epoch_num=epoch_num)
            metrics = evaluate(model, eval_split, keys, eval_batch, device, train_ctr)
            eval_time += time.perf_counter() - t0
            now = time.perf_counter() - run_start
            log.event("eval_accuracy", metrics[spec.target.metric], epoch_num=epoch_num)
            log.end("eval_stop", epoch_num=epoch_num)
            curve.append({"epoch": epoch_num, "samples": samples, "time_s": now, **metrics,
                          "train_loss": float(loss_sum) / max(loss_steps, 1)})
            loss_sum, loss_steps = torch.zeros((), device=device), 0
            if reached_at is None and spec.target.reached_by(metrics[spec.target.metric]):
                reached_at = {"time_to_target_s": now, "epochs_to_target": epoch_num, "samples_to_target": samples}
            return metrics

        last = None
        while not stop:
            log.start("epoch_start", epoch_num=epoch)
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            batches = iter_batches(train_split, cfg.batch_size, keys, generator)
            if device.type == "cuda":  # overlap batching and the copy with GPU work (on CPU it only competes)
                batches = prefetch(batches, device)
            for batch in batches:
                timer.start()
                logits = model(batch.dense_features, batch.sparse_features)
                loss = loss_fn(logits, batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                timer.stop()
                loss_sum += loss.detach()
                loss_steps += 1
                step += 1
                samples += len(batch.labels)
                evaluated = step % eval_interval == 0 or step == max_steps
                if evaluated:
                    last = run_eval()
                over_time = cfg.max_time_s is not None and time.perf_counter() - run_start >= cfg.max_time_s
                stop = (reached_at is not None and cfg.stop_at_target) or step >= max_steps or over_time
                if over_time and not evaluated:
                    last = run_eval()
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
    return TrainOutcome(
        metrics=last,
        best_metrics=best_evaluation(curve, spec.target),
        target={"metric": spec.target.metric, "value": spec.target.value, "reached": reached_at is not None,
                "time_to_target_s": None, "epochs_to_target": None, "samples_to_target": None,
                **(reached_at or {})},
        timing={"train_time_s": train_time, "eval_time_s": eval_time, "run_time_s": wall,
                "samples_per_s": samples / train_time if train_time > 0 else None,
                "iter_ms": {k: iter_ms[k] for k in ("mean", "p50", "p90", "p99")},
                "warmup_iters": iter_ms["warmup_iters"], "steps": step, "samples": samples,
                "epochs": samples / len(train_split)},
        memory=memory.peaks().__dict__,
        embedding=embedding.to_json(),
        model=counts.__dict__,
        eval_curve=curve,
    )
