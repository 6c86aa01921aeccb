"""Training batches of sequence splits (leave-last-out train), against plain reads of the same events.

Caches (synthetic sequences, built on first use under ``$DLRS_BENCH_CACHE``):

- ``typical``: 9,986 users, geometric lengths (mean 200, at most 2,000; ~2 M events), read at
  ``max_len`` 200 in batches of 128 (SASRec/HSTU on MovieLens);
- ``long``: 511 users of 4,097 events (2.1 M events), read at ``max_len`` 4,096 in batches of 32
  (S = 4,096, the dlrmv4 sequence length).

Users scale with ``BENCH_ROWS`` (default 1,048,576: the sizes above), as the CTR benchmarks' rows do.

Each benchmark makes one pass over the train split and records ``samples_per_s`` and, measured in the same test
(same process, same load), ``ratio_vs_plain`` = its rate / the rate of ``np.take`` of exactly the events
its batches hold (items and timestamps, from the same memory maps, positions computed beforehand) and
``ratio_vs_row_loop`` = its rate / the rate of a Python loop over the samples copying each one's slices
into the three padded matrices (the same outputs); plus the threads (``torch`` and numpy run on one) and
the 1-minute load average. (The pipeline itself copies rows one by one only when they are long:
``ROW_COPY_EVENTS`` in dlrs_bench/sequential/batches.py.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from dlrs_bench.sequential.batches import iter_retrieval_batches, jagged_positions, rank_batches
from dlrs_bench.sequential.cache import SequenceCache
from dlrs_bench.sequential.data_options import SyntheticSequenceOptions
from dlrs_bench.sequential.splits import SequenceSplit, leave_last_out
from dlrs_bench.sequential.synthetic import synthetic_sequences

#: Events of each cache: about 2 x ``BENCH_ROWS`` (the CTR benchmarks' size knob; default 2,097,152 events).
EVENTS = 2 * int(os.environ.get("BENCH_ROWS", 1 << 20))
CASES = {
    "typical": (SyntheticSequenceOptions(users=max(1, EVENTS // 210), items=20_000, mean_length=200, max_length=2_000),
                200, 128),
    "long": (SyntheticSequenceOptions(users=max(1, EVENTS // 4_097), items=20_000, length="fixed", mean_length=4_097,
                                      max_length=4_097), 4_096, 32),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> tuple[str, SequenceCache, int, int]:
    options, max_len, batch = CASES[request.param]
    return request.param, SequenceCache.open(synthetic_sequences(options)), max_len, batch


def rate(read_pass: Callable[[], int]) -> float:
    """Samples per second of one call of ``read_pass`` (which returns the samples it read)."""
    t0 = time.perf_counter()
    samples = read_pass()
    return samples / (time.perf_counter() - t0)


def windows(split: SequenceSplit, max_len: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(first event, events) of each sample of each batch of a training pass: the last ``max_len + 1``
    events of each prefix, as the batches hold them."""
    out = []
    for samples in rank_batches(len(split), batch, 0, 0, 1, True, True):
        stops = split.positions[samples]
        begins = np.maximum(split.starts(samples), stops - (max_len + 1))
        out.append((begins, stops - begins))
    return out


def plain_pass(split: SequenceSplit, max_len: int, batch: int) -> Callable[[], int]:
    """``np.take`` of the events of every batch (items and timestamps), positions computed beforehand."""
    positions = [jagged_positions(b, n) for b, n in windows(split, max_len, batch)]
    items, times = split.cache.items, split.cache.timestamps

    def read() -> int:
        for p in positions:
            np.take(items, p)
            np.take(times, p)
        return len(split)

    return read


def row_loop_pass(split: SequenceSplit, max_len: int, batch: int) -> Callable[[], int]:
    """The batches' inputs, timestamps and targets copied sample by sample (a Python loop over B, one slice
    copy per sample and matrix) into zero-padded matrices, from windows computed beforehand."""
    parts = windows(split, max_len, batch)
    items, times = split.cache.items, split.cache.timestamps

    def read() -> int:
        for begins, events in parts:
            shape = (len(begins), int(events.max()) - 1)
            x, t, y = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
            for row, (b, n) in enumerate(zip(begins.tolist(), (events - 1).tolist())):
                x[row, :n] = items[b : b + n]
                t[row, :n] = times[b : b + n]
                y[row, :n] = items[b + 1 : b + 1 + n]
        return len(split)

    return read


def test_train_batches(benchmark, case):
    name, cache, max_len, batch = case
    split = leave_last_out(cache)["train"]

    def ours() -> int:
        return sum(len(b) for b in iter_retrieval_batches(split, batch, max_len, seed=0))

    benchmark.pedantic(ours, rounds=3, iterations=1, warmup_rounds=1)
    baselines = {"plain": plain_pass(split, max_len, batch), "row_loop": row_loop_pass(split, max_len, batch)}
    rates: dict[str, list[float]] = {k: [] for k in ["ours", *baselines]}
    for _ in range(3):  # best of 3, each in turn: passes slowed by other processes do not count
        for key, read_pass in {"ours": ours, **baselines}.items():
            rates[key].append(rate(read_pass))
    events = sum(int(n.sum()) for _, n in windows(split, max_len, batch))
    benchmark.extra_info.update({
        "cache": name, "max_len": max_len, "batch": batch, "samples": len(split), "events_per_sample":
        round(events / len(split), 1), "samples_per_s": round(max(rates["ours"])),
        "threads": torch.get_num_threads(), "load_1min": os.getloadavg()[0]})
    for key in baselines:
        benchmark.extra_info[f"{key}_samples_per_s"] = round(max(rates[key]))
        benchmark.extra_info[f"ratio_vs_{key}"] = round(max(rates["ours"]) / max(rates[key]), 3)
