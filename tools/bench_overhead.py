"""Harness overhead: dlrs-bench's training step against a bare TorchRec loop, in one process.

Both train the same DLRM (TorchRec's DenseArch / InteractionArch / OverArch over an
EmbeddingBagCollection with the same tables), on the same synthetic Criteo-shaped batches, with the
same optimizer and batch size:

* ``dlrs-bench``: ``dlrs_bench.engine.train.train`` — the real engine with its step timer, loss
  accumulation, progress callback and evaluation cadence (one evaluation at the end);
* ``bare``: ``torchrec.models.dlrm.DLRM`` and a plain loop over pre-built batches
  (forward, BCE loss, backward, optimizer step), timed the same way (CUDA events on GPU,
  ``perf_counter`` on CPU).

Reported per run: the median step time (forward + backward + optimizer, warm-up excluded) and the
wall-clock samples/s of the whole training loop (dlrs-bench includes building its batches from the
dataset, the bare loop does not). Runs alternate A/B ``--repeat`` times; the ratio of medians
dlrs-bench / bare is the overhead (target ≤ 1.03).

Run::

    .venv/bin/python tools/bench_overhead.py --device cpu --steps 200
    python tools/bench_overhead.py --device cuda --steps 500 --batch 8192
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchrec import EmbeddingBagCollection
from torchrec.models.dlrm import DLRM

from dlrs_bench.compression.full import table_configs
from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.batching import iter_batches
from dlrs_bench.data.synthetic import Synthetic, SyntheticOptions
from dlrs_bench.engine.train import seed_everything, train
from dlrs_bench.measure.mllog import EventLog
from dlrs_bench.measure.timer import StepTimer

BOTTOM, TOP, DIM = [128, 64, 16], [256, 128, 1], 16


def scenario(batch: int, epochs: float):
    spec, errors = validate_scenario({
        "dataset": {"name": "synthetic"},
        "model": {"name": "dlrm", "embedding_dim": DIM, "bottom_mlp": BOTTOM, "top_mlp": TOP},
        "train": {"batch_size": batch, "optimizer": "adam", "lr": 0.001, "max_epochs": epochs,
                  "eval_every": epochs, "warmup_iters": 10},
        "target": {"metric": "auc", "value": 0.99},
    })
    assert not errors, errors
    return spec


def run_dlrs(spec, dataset, device: torch.device) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train(spec, dataset, 0, device, EventLog(Path(tmp) / "log"), progress=lambda *_: None)
    timing = outcome.timing
    return timing["iter_ms"]["p50"], timing["samples"] / timing["train_time_s"]


def run_bare(dataset, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    seed_everything(0)
    features = dataset.features
    ebc = EmbeddingBagCollection(tables=table_configs(features, [f.cardinality for f in features], DIM, "sum"),
                                 device=device)
    model = DLRM(embedding_bag_collection=ebc, dense_in_features=dataset.num_dense,
                 dense_arch_layer_sizes=BOTTOM, over_arch_layer_sizes=TOP, dense_device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batches = [b.to(device) for b in iter_batches(dataset.splits["train"], batch, dataset.feature_names, 0)]
    timer = StepTimer(device, warmup_iters=10)
    start = time.perf_counter()
    for step in range(steps):
        b = batches[step % len(batches)]
        timer.start()
        loss = loss_fn(model(b.dense_features, b.sparse_features).squeeze(-1), b.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timer.stop()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return timer.summary()["p50"], steps * batch / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    rows = int(args.steps * args.batch / 0.8) + 1
    dataset = Synthetic.build(SyntheticOptions(rows=rows, cardinalities="criteo-kaggle", cardinality_scale=0.01,
                                               num_dense=13))
    spec = scenario(args.batch, 1.0)
    dlrs, bare = [], []
    for _ in range(args.repeat):
        dlrs.append(run_dlrs(spec, dataset, device))
        bare.append(run_bare(dataset, args.batch, args.steps, device))
    d_step, b_step = statistics.median(x[0] for x in dlrs), statistics.median(x[0] for x in bare)
    d_rate, b_rate = statistics.median(x[1] for x in dlrs), statistics.median(x[1] for x in bare)
    print(f"device {device}, batch {args.batch}, {args.steps} steps, 26 tables (Kaggle sizes / 100), d = {DIM}, "
          f"{args.repeat} alternating repeats, {torch.get_num_threads()} CPU threads")
    print(f"{'':12} {'step p50 ms':>12} {'samples/s':>12}")
    print(f"{'dlrs-bench':12} {d_step:12.3f} {d_rate:12,.0f}")
    print(f"{'bare TorchRec':12} {b_step:12.3f} {b_rate:12,.0f}")
    print(f"step-time ratio dlrs-bench / bare = {d_step / b_step:.3f} (target <= 1.03); "
          f"throughput ratio (dlrs-bench includes batching) = {b_rate / d_rate:.3f}")


if __name__ == "__main__":
    main()
