"""Batch pipeline: TorchRec batches read from a Criteo-shaped cache, against plain reads of the same rows.

Each benchmark reads one pass over the train split (``BENCH_BATCH`` rows a batch, default 65,536) and
records ``samples_per_s`` and, where it has one, ``ratio`` = its rate / the baseline's rate measured
in the same test (same process, same load) in ``extra_info`` of the JSON that ``make bench`` writes.

Baselines, on the memory-mapped cache files:
- ``plain_first_touch``: a fresh ``np.memmap`` of labels, dense and sparse, every batch's rows copied
  out with ``np.array`` (each page is mapped once, as in an epoch over a mapping);
- ``plain_warm``: the same rows copied again from a mapping whose pages are already mapped (a
  memcpy from the page cache: the upper bound of any reader).

``*_from_disk`` variants drop the cache files from the OS page cache (``posix_fadvise DONTNEED``)
before every pass of both the reader and its baseline: a dataset larger than RAM.

The cost of the checks every read makes (:mod:`dlrs_bench.data.integrity`) is measured two ways:
``ratio_vs_unchecked`` (the pipeline against itself with the checks switched off, in the same test)
and :func:`test_row_checks_alone` (the checks alone against the reads they check). Every benchmark
records the 1-minute load average (``load_1min``) it ran under.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import pytest

from dlrs_bench.data.base import CTRSplit, build_dataset, dataset_from_cache
from dlrs_bench.data.batching import batch_positions, iter_batches, make_batch
from dlrs_bench.data.cache import RawRows
from dlrs_bench.data.integrity import RowChecks
from dlrs_bench.data.rows import RowSet
from dlrs_bench.data.shapes import MLPERF_MULTI_HOT

from .conftest import BATCH


def rate(read_pass: Callable[[], int]) -> float:
    """Samples per second of one call of ``read_pass`` (which returns the samples it read)."""
    t0 = time.perf_counter()
    samples = read_pass()
    return samples / (time.perf_counter() - t0)


def evicted(split, read_pass: Callable[[], int]) -> Callable[[], int]:
    """``read_pass`` after dropping the cache's files from the OS page cache (read from disk)."""
    files = [p for p in split.cache.path.rglob("*") if p.is_file()]

    def read() -> int:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        return read_pass()

    return read


def plain_pass(split, warm: bool) -> Callable[[], int]:
    """A contiguous read of the split's rows, batch by batch, from the memory-mapped files."""
    cache = split.cache
    start, stop = split.rows.start, split.rows.stop

    def read() -> int:
        maps = (cache.labels, cache.dense, cache.sparse) if warm else tuple(
            np.memmap(m.filename, dtype=m.dtype, mode="r", shape=m.shape)
            for m in (cache.labels, cache.dense, cache.sparse))
        for lo in range(start, stop, BATCH):
            for m in maps:
                np.array(m[lo : min(lo + BATCH, stop)])
        return stop - start

    return read


def pipeline_pass(split, keys: list[str], workers: int = 0) -> Callable[[], int]:
    def read() -> int:
        return sum(len(batch.labels) for batch in iter_batches(split, BATCH, keys, seed=1, workers=workers))

    return read


def unchecked(monkeypatch: pytest.MonkeyPatch, read_pass: Callable[[], int]) -> Callable[[], int]:
    """``read_pass`` with the checks of the rows it reads switched off."""
    def read() -> int:
        with monkeypatch.context() as patch:
            patch.setattr(RowChecks, "check_rows", lambda self, raw, rows: None)
            return read_pass()

    return read


def record(benchmark, run: Callable[[], int], baselines: dict[str, Callable[[], int]], repeat: int = 3) -> None:
    """Benchmark ``run``; record its rate and its ratio to each baseline, both the best of ``repeat``
    passes measured in turn (passes slowed by other processes' load do not count)."""
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["load_1min"] = os.getloadavg()[0]
    rates: dict[str, list[float]] = {name: [] for name in ["ours", *baselines]}
    for _ in range(repeat):
        for name, read_pass in {"ours": run, **baselines}.items():
            rates[name].append(rate(read_pass))
    ours = max(rates.pop("ours"))
    benchmark.extra_info["samples_per_s"] = round(ours)
    for name, measured in rates.items():
        benchmark.extra_info[f"{name}_samples_per_s"] = round(max(measured))
        benchmark.extra_info[f"ratio_vs_{name}"] = round(ours / max(measured), 3)


def test_plain_contiguous_read(benchmark, criteo_shaped):
    split = build_dataset(criteo_shaped).splits["train"]
    benchmark.pedantic(plain_pass(split, warm=False), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("shuffle", ["none", "blocks", "permutation"])
def test_one_hot_batches(benchmark, criteo_shaped, shuffle, monkeypatch):
    """26 one-hot features; ``none`` = in order (a cache shuffled when prepared), the others shuffle."""
    dataset = build_dataset(criteo_shaped.model_copy(update={"shuffle": shuffle}))
    split = dataset.splits["train"]
    run = pipeline_pass(split, dataset.feature_names)
    record(benchmark, run, {"plain_first_touch": plain_pass(split, warm=False),
                            "plain_warm": plain_pass(split, warm=True), "unchecked": unchecked(monkeypatch, run)})


def test_one_hot_batches_from_disk(benchmark, criteo_shaped):
    """In order from a cache that is not in the page cache (both sides read the disk)."""
    dataset = build_dataset(criteo_shaped.model_copy(update={"shuffle": "none"}))
    split = dataset.splits["train"]
    record(benchmark, evicted(split, pipeline_pass(split, dataset.feature_names)),
           {"plain_from_disk": evicted(split, plain_pass(split, warm=False))})


@pytest.mark.parametrize("workers", [0, 2])
def test_mlperf_multi_hot_batches(benchmark, criteo_shaped, workers, monkeypatch):
    """MLPerf DLRM-DCNv2 bags (sizes 1…100, 214 ids a row) synthesised on the fly from the one-hot ids;
    in this thread (0), or by 2 reader threads (as GPU runs read: numpy releases the GIL)."""
    dataset = build_dataset(criteo_shaped.model_copy(update={"shuffle": "none"}))
    cache = dataset.splits["train"].cache
    multi_hot = dataset_from_cache(criteo_shaped.model_copy(update={"shuffle": "none"}), cache,
                                   {"train": RowSet(*cache.manifest.splits["train"])}, {}, MLPERF_MULTI_HOT)
    split = multi_hot.splits["train"]
    run = pipeline_pass(split, multi_hot.feature_names, workers)
    record(benchmark, run,
           {"plain_first_touch": plain_pass(split, warm=False), "unchecked": unchecked(monkeypatch, run)})


def raw_batches(split: CTRSplit, batches: int, monkeypatch: pytest.MonkeyPatch) -> list[tuple[RawRows, object]]:
    """The first ``batches`` shuffled batches of ``split`` as (raw rows, their cache rows), read unchecked."""
    with monkeypatch.context() as patch:
        patch.setattr(RowChecks, "check_rows", lambda self, raw, rows: None)
        positions = list(batch_positions(split, BATCH, seed=1))[:batches]
        return [(split.read(p), split.rows.rows(p)) for p in positions]


@pytest.mark.parametrize("shuffle", ["none", "permutation"])
def test_row_checks_alone(benchmark, criteo_shaped, shuffle, monkeypatch):
    """The checks (labels, dense, ids) of 4 batches alone; ``ratio_vs_batches`` = their time / the time of
    making the same batches (read, checked and assembled): the share of the batch pipeline they cost."""
    dataset = build_dataset(criteo_shaped.model_copy(update={"shuffle": shuffle}))
    split = dataset.splits["train"]
    raws = raw_batches(split, 4, monkeypatch)
    positions = list(batch_positions(split, BATCH, seed=1))[: len(raws)]
    samples = sum(len(raw.labels) for raw, _ in raws)

    def check() -> int:
        for raw, rows in raws:
            split.checks.check_rows(raw, rows)
        return samples

    def batches() -> int:
        return sum(len(make_batch(split, p, dataset.feature_names).labels) for p in positions)

    benchmark.pedantic(check, rounds=10, iterations=1, warmup_rounds=1)
    benchmark.extra_info["load_1min"] = os.getloadavg()[0]
    checks_s = min(samples / rate(check) for _ in range(5))
    batches_s = min(samples / rate(batches) for _ in range(5))
    benchmark.extra_info["samples_per_s"] = round(samples / checks_s)
    benchmark.extra_info["batches_samples_per_s"] = round(samples / batches_s)
    benchmark.extra_info["ratio_vs_batches"] = round(checks_s / batches_s, 4)
