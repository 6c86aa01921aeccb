"""Synthetic CTR data with a known ceiling, generated chunk by chunk into a cache.

Ids of table t are drawn from a Zipf(s) law over ``cardinalities[t]`` ids (rank → id by a
fixed random permutation); bags of ``multi_hot_sizes[t]`` ids. Dense features are standard
normal. Labels come from a hidden teacher:

    logit = signal * (sum_t b_t(x_t) + sum_{s<t} <V_s(x_s), V_t(x_t)> + w . dense - mu) / sd + bias

with per-id scalars ``b_t``, per-id vectors ``V_t`` of size ``teacher_dim`` (mean over a bag),
``mu`` / ``sd`` the mean and spread of the raw score and ``bias`` set so the mean CTR is
``base_ctr`` (both calibrated on a fixed pilot sample, so they do not depend on ``rows``);
label ~ Bernoulli(sigmoid(logit)). The teacher's own probabilities are the Bayes-optimal
predictor, so their AUC / LogLoss / NE on val and test are the best any model can reach on these
rows; they are recorded as ``ceiling`` with the results.

Rows are independent and identically distributed, generated in chunks of :data:`CHUNK_ROWS` from
random streams of their own (seeded by ``seed`` and the chunk number), so any number of rows is
written in bounded memory: the teacher's tables (per id ``teacher_dim + 1`` float32, a float64 CDF
entry and an id) and a chunk per thread; ``write_synthetic`` refuses options whose estimate
(``SyntheticOptions.generation_bytes``) passes the memory available. The splits are row ranges: train
first, then val, then test. Independent rows are already in random order, so the cache records itself
as shuffled when prepared and ``shuffle: auto`` reads it in order (any protocol can still be asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dlrs_bench.data.ahead import in_order
from dlrs_bench.data.base import CTRDataset, dataset_from_cache
from dlrs_bench.data.cache import CacheWriter, Manifest, ShuffleRecord, now
from dlrs_bench.data.local_cache import first_use_cache
from dlrs_bench.data.options import CHUNK_ROWS, SyntheticOptions, synthetic_cache
from dlrs_bench.data.rows import RowSet

PILOT_ROWS = CHUNK_ROWS  # the memory estimate counts the pilot as one chunk
#: Rows of val and test (each) whose teacher logits are kept for the ceiling (the first ones).
CEILING_MAX_ROWS = 1 << 24
#: Bump when the rows generated for given options change (first-use caches are then rebuilt).
BUILD_VERSION = 3
#: How the rows come to be in random order: they are independent draws (recorded as the cache's shuffle,
#: so ``shuffle: auto`` reads them in order, as MLPerf reads data shuffled once).
IID = "independent, identically distributed draws: generated in random order"


#: Called with (rows written so far, rows in all).
ProgressFn = Callable[[int, int], None]


class Synthetic:
    Options = SyntheticOptions

    @staticmethod
    def build(options: SyntheticOptions) -> CTRDataset:
        if options.path is not None:
            cache = synthetic_cache(options.path)
        else:
            key = {"version": BUILD_VERSION, **options.generation()}
            cache = first_use_cache("synthetic", key, lambda out: write_synthetic(options, out))
        splits = {k: RowSet(*bounds) for k, bounds in cache.manifest.splits.items()}
        return dataset_from_cache(options, cache, splits, cache.manifest.info)


class Teacher:
    """The hidden model of one options set: per-table Zipf samplers and per-id effects."""

    def __init__(self, options: SyntheticOptions) -> None:
        self.options = options
        self.cardinalities, self.hots = options.table_sizes(), options.bag_sizes()
        k = options.teacher_dim
        self.cdf, self.ids, self.b, self.v = [], [], [], []
        for t, card in enumerate(self.cardinalities):
            rng = np.random.default_rng([options.seed, 0, t])
            cdf = np.cumsum(np.arange(1, card + 1, dtype=np.float64) ** -options.zipf_exponent)
            cdf /= cdf[-1]  # in place, as v below: the temporaries are what the memory estimate counts
            self.cdf.append(cdf)
            self.ids.append(rng.permutation(card).astype(np.int32 if card < 2**31 else np.int64))
            self.b.append(rng.standard_normal(card, dtype=np.float32))
            v = rng.standard_normal((card, k), dtype=np.float32)
            v /= np.float32(np.sqrt(k))
            self.v.append(v)
        rng = np.random.default_rng([options.seed, 0, len(self.cardinalities)])
        self.w = rng.standard_normal(options.num_dense) / np.sqrt(max(options.num_dense, 1))
        self.mu, self.sd, self.bias = 0.0, 1.0, 0.0
        raw = self.rows(np.random.default_rng([options.seed, 2]), PILOT_ROWS)[3]
        self.mu, self.sd = float(raw.mean()), float(raw.std() + 1e-12)
        self.bias = _bias_for_ctr(self.logit(raw), options.base_ctr)

    def rows(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` fresh rows: (sparse ids ``[n, W]`` int64, dense ``[n, num_dense]`` f32, label uniforms
        ``[n]``, raw teacher score ``[n]`` float64)."""
        k = self.options.teacher_dim
        columns, scalar, vector_sum, vector_sq = [], np.zeros(n), np.zeros((n, k)), np.zeros(n)
        for cdf, ids, b, v, hot in zip(self.cdf, self.ids, self.b, self.v, self.hots):
            ranks = np.searchsorted(cdf, rng.random((n, hot)), side="right")
            np.minimum(ranks, len(cdf) - 1, out=ranks)
            table_ids = ids[ranks].astype(np.int64)
            pooled = v[table_ids].mean(axis=1, dtype=np.float64)  # [n, k]
            scalar += b[table_ids].mean(axis=1, dtype=np.float64)
            vector_sum += pooled
            vector_sq += (pooled**2).sum(axis=1)
            columns.append(table_ids)
        pairwise = 0.5 * ((vector_sum**2).sum(axis=1) - vector_sq)  # sum over table pairs s < t
        dense = rng.standard_normal((n, self.options.num_dense), dtype=np.float32)
        raw = scalar + pairwise + dense.astype(np.float64) @ self.w
        return np.concatenate(columns, axis=1), dense, rng.random(n), raw

    def logit(self, raw: np.ndarray) -> np.ndarray:
        return self.options.signal * (raw - self.mu) / self.sd + self.bias

    def chunk(self, index: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Chunk ``index`` of ``n`` rows: (labels u8, dense, sparse, teacher logits)."""
        sparse, dense, uniforms, raw = self.rows(np.random.default_rng([self.options.seed, 1, index]), n)
        logit = self.logit(raw)
        labels = (uniforms < 1 / (1 + np.exp(-logit))).astype(np.uint8)
        return labels, dense, sparse, logit


def split_sizes(rows: int, fractions: tuple[float, float, float]) -> dict[str, tuple[int, int]]:
    """Row ranges of train, val, test: ``floor(fraction * rows)`` for val and test, train the rest."""
    n_val, n_test = int(fractions[1] * rows), int(fractions[2] * rows)
    n_train = rows - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, rows)}


def write_synthetic(options: SyntheticOptions, out: Path, progress: ProgressFn | None = None,
                    workers: int = 1) -> Manifest:
    """Generate ``options.rows`` rows into the cache folder ``out`` chunk by chunk (``workers``
    threads generate chunks ahead; the rows do not depend on it); returns the manifest. Options whose
    generation needs more memory than this machine has available are refused first."""
    import torch

    from dlrs_bench.measure.metrics import all_metrics

    options.check_memory(workers)
    teacher = Teacher(options)
    n = options.rows
    bounds = split_sizes(n, options.split_fractions)
    kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"val": [], "test": []}  # (logits, labels)
    positives = train_positives = 0
    names = [f"t{i}" for i in range(len(teacher.cardinalities))]
    chunks = [(i, min(CHUNK_ROWS, n - lo)) for i, lo in enumerate(range(0, n, CHUNK_ROWS))]
    ids_dtype = "int32" if max(teacher.cardinalities) < 2**31 else "int64"
    with CacheWriter(out, options.num_dense, sum(teacher.hots), ids_dtype=ids_dtype) as writer, \
            ThreadPoolExecutor(workers) as pool:
        for labels, dense, sparse, logit in in_order(pool, teacher.chunk, chunks, 2 * workers):
            start = writer.rows
            writer.append(labels, dense, sparse)
            positives += int(labels.sum())
            train_positives += int(labels[: max(0, bounds["train"][1] - start)].sum())
            for name, part in kept.items():  # the teacher's logits for the ceiling
                a, b = max(bounds[name][0], start), min(bounds[name][1], bounds[name][0] + CEILING_MAX_ROWS)
                b = min(b, start + len(labels))
                if a < b:
                    part.append((logit[a - start : b - start], labels[a - start : b - start]))
            if progress:
                progress(writer.rows, n)
        train_ctr = train_positives / max(bounds["train"][1], 1)
        ceiling = {}
        for name, parts in kept.items():
            if parts:
                logits = torch.from_numpy(np.concatenate([p[0] for p in parts]))
                labels = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))
                ceiling[name] = {**all_metrics(logits, labels, train_ctr), "rows": len(labels)}
        ctr = positives / n
        cards = dict(zip(names, teacher.cardinalities))
        manifest = Manifest(
            dataset="synthetic", rows=n, num_dense=options.num_dense, features=cards,
            sparse_dtype=ids_dtype, ctr=ctr, parts=[n],
            options=options.generation(), inputs=[], skipped={"policy": "error", "count": 0, "examples": []},
            created_at=now(), bags={f: h for f, h in zip(names, teacher.hots) if h != 1},
            splits=bounds, shuffle=ShuffleRecord(seed=options.seed, rows=n, method=IID),
            info={"split": {"protocol": "random", "fractions": list(options.split_fractions), "seed": options.seed,
                            "note": "i.i.d. rows: train, val and test are consecutive row ranges"},
                  "ceiling": ceiling,
                  "teacher": {"dim": options.teacher_dim, "signal": options.signal, "base_ctr": options.base_ctr}})
        writer.commit(manifest, manifest.sparse_dtype)
    return manifest


def _bias_for_ctr(logit: np.ndarray, ctr: float) -> float:
    """The shift b with mean(sigmoid(logit + b)) = ctr (bisection; the mean is monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < ctr:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
