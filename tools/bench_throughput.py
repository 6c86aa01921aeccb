"""Training throughput of DLRM on Criteo-Kaggle-shaped data, one device: embeddings x precision.

The model is the MLPerf-sized DLRM (bottom MLP 512-256-128, top MLP 1024-1024-512-256-1, d = 128)
over the 26 Criteo Kaggle tables (their cardinalities x ``--cardinality-scale``), trained by
dlrs-bench's engine (``dlrs_bench.engine.train.train``) on synthetic data with Adagrad. Variants:

* ``unsharded``: TorchRec's ``EmbeddingBagCollection`` as a plain module (what ``gpus: 1`` trains),
  dense table gradients stepped by ``torch.optim.Adagrad``;
* ``fused``: the same tables under ``DistributedModelParallel`` in a one-rank process group
  (``distributed.one_rank_dmp: true``): fbgemm's fused TBE kernels with the optimizer inside the
  backward pass (what every rank of ``gpus: N`` runs), with TorchRec's ``TrainPipelineSparseDist``;

* ``bare``: the fused model and optimizer (same tables, same sharding, same TorchRec
  ``TrainPipelineSparseDist``) in a bare loop over batches built beforehand and already on the
  device — what the fused variant would reach if reading the cache cost nothing;

each in ``fp32`` and ``bf16`` (``train.precision``). Reported per variant: step p50 (ms; CUDA events
on GPU; none for ``bare``), training samples/s (the time-to-target clock without evaluations; for
``bare`` the loop's wall clock; both from the first step), peak memory (NVML on GPU, RSS on CPU; none
for ``bare``), and the samples/s ratios against ``unsharded fp32`` and against ``bare`` of the same
precision, measured in the same run: ``fused / bare`` is what feeding the engine from the cache costs
end to end.

Run (from the repository root)::

    .venv/bin/python tools/bench_throughput.py --device cpu      # small: tables / 1000, 40 steps
    python tools/bench_throughput.py --device cuda --cardinality-scale 1 --batch 16384 --steps 300

On CUDA the fused variant needs the CUDA ``fbgemm-gpu`` wheel (``make install-gpu``); with
``fbgemm-gpu-cpu`` it is reported as failed with the error.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dlrs_bench.config.schema import Scenario, validate_scenario
from dlrs_bench.data.batching import iter_batches
from dlrs_bench.data.loading import DatasetCache
from dlrs_bench.engine.runner import one_rank
from dlrs_bench.engine.sharding import shard
from dlrs_bench.engine.train import TrainStep, build, seed_everything, train
from dlrs_bench.measure.mllog import EventLog

BOTTOM, TOP, DIM = [512, 256, 128], [1024, 1024, 512, 256, 1], 128


@dataclass(frozen=True)
class Measured:
    step_p50_ms: float | None
    samples_per_s: float
    peak_mib: float | None
    tables: int | None  # embedding rows in all tables


def scenario(args: argparse.Namespace, precision: str, embeddings: str) -> Scenario:
    train_rows = args.batch * args.steps
    spec, errors = validate_scenario({
        "dataset": {"name": "synthetic", "rows": math.ceil(train_rows / 0.8) + 2 * args.batch,
                    "cardinalities": "criteo-kaggle", "cardinality_scale": args.cardinality_scale,
                    "num_dense": 13, "split_fractions": [0.8, 0.1, 0.1]},
        "model": {"name": "dlrm", "embedding_dim": DIM, "bottom_mlp": BOTTOM, "top_mlp": TOP},
        "train": {"batch_size": args.batch, "optimizer": "adagrad", "lr": 0.01, "max_epochs": 1,
                  "eval_every": 1, "warmup_iters": min(20, args.steps // 4), "precision": precision,
                  "eval_batch_size": 4 * args.batch},
        "target": {"metric": "auc", "value": 0.99},
        "distributed": {"one_rank_dmp": embeddings != "unsharded"},
    })
    if spec is None:
        raise SystemExit(f"invalid benchmark scenario: {errors}")
    return spec


def run(spec: Scenario, cache: DatasetCache, device: torch.device) -> Measured:
    """One training run through the engine, as ``dlrs-bench run`` does it for one rank."""
    dataset, _ = cache.get(spec.dataset)
    with tempfile.TemporaryDirectory() as tmp, one_rank(spec, device) as ranks:
        out = train(spec, dataset, 0, device, EventLog(Path(tmp) / "bench.mllog"), ranks=ranks)
    memory = out.memory["gpu_peak_mib"] if device.type == "cuda" else out.memory["host_peak_rss_mib"]
    tables = sum(t["rows"] for t in out.embedding["per_table"])
    return Measured(out.timing["iter_ms"]["p50"], out.timing["samples_per_s"], memory, tables)


def run_bare(spec: Scenario, cache: DatasetCache, device: torch.device) -> Measured:
    """The fused model in a bare TorchRec loop over batches pre-built on the device."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    dataset, _ = cache.get(spec.dataset)
    cfg = spec.train
    batches = [b.to(device) for b in iter_batches(dataset.splits["train"], cfg.batch_size, dataset.feature_names)]
    with one_rank(spec, device):
        seed_everything(0)
        model = build(spec, dataset, device, for_sharding=True)
        dmp, optimizer, _ = shard(TrainStep(model, cfg.precision), cfg.optimizer, cfg.lr, device, None, [])
        pipeline = TrainPipelineSparseDist(dmp, optimizer, device, execute_all_batches=True)
        steps = iter(batches)
        start = time.perf_counter()  # from the first step, as the engine's training clock
        while True:
            try:
                pipeline.progress(steps)
            except StopIteration:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    rows = sum(len(b.labels) for b in batches)
    return Measured(None, rows / seconds, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cardinality-scale", type=float, default=None,
                        help="table rows = Kaggle cardinalities x this (default 1 on CUDA, 0.001 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 16384 on CUDA, 1024 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 300 on CUDA, 40 on CPU)")
    parser.add_argument("--embeddings", nargs="+", choices=["unsharded", "fused", "bare"],
                        default=["unsharded", "fused", "bare"])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.cardinality_scale = args.cardinality_scale or (1.0 if cuda else 0.001)
    args.batch = args.batch or (16384 if cuda else 1024)
    args.steps = args.steps or (300 if cuda else 40)
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")

    cache = DatasetCache()
    rows = []
    for embeddings in args.embeddings:
        for precision in args.precisions:
            spec = scenario(args, precision, embeddings)
            try:
                out = (run_bare if embeddings == "bare" else run)(spec, cache, device)
            except Exception as e:  # noqa: BLE001 - reported in the table, the other variants still run
                rows.append((embeddings, precision, None, f"{type(e).__name__}: {e}".splitlines()[0]))
                traceback.print_exc()
                continue
            rows.append((embeddings, precision, out, None))

    console = Console()
    tables = next((o.tables for _, _, o, _ in rows if o and o.tables), 0)
    table = Table(title=f"DLRM, 26 tables ({tables:,} rows) x d {DIM}, batch {args.batch}, {args.steps} steps, "
                        f"{device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}), "
                        f"{torch.get_num_threads()} CPU threads, load {os.getloadavg()[0]:.2f}")
    for column in ("embeddings", "precision", "step p50 ms", "samples/s", "peak MiB", "vs unsharded fp32",
                   "vs bare"):
        table.add_column(column, justify="right")

    def rate(embeddings: str, precision: str) -> float | None:
        return next((o.samples_per_s for e, p, o, _ in rows if o and e == embeddings and p == precision), None)

    base = rate("unsharded", "fp32")
    for embeddings, precision, out, error in rows:
        if out is None:
            table.add_row(embeddings, precision, "failed", error, "", "", "")
            continue
        bare = rate("bare", precision)
        sps = out.samples_per_s
        table.add_row(embeddings, precision, f"{out.step_p50_ms:.2f}" if out.step_p50_ms is not None else "-",
                      f"{sps:,.0f}", f"{out.peak_mib:,.0f}" if out.peak_mib is not None else "-",
                      f"{sps / base:.2f}" if base else "-", f"{sps / bare:.2f}" if bare else "-")
    console.print(table)


if __name__ == "__main__":
    main()
