"""Synthetic CTR data with a known ceiling.

Ids of table t are drawn from a Zipf(s) law over ``cardinalities[t]`` ids (rank → id by a
fixed random permutation); bags of ``multi_hot_sizes[t]`` ids. Dense features are standard
normal. Labels come from a hidden teacher:

    logit = signal * standardise( sum_t b_t(x_t) + sum_{s<t} <V_s(x_s), V_t(x_t)> + w . dense ) + bias

with per-id scalars ``b_t``, per-id vectors ``V_t`` of size ``teacher_dim`` (mean over a bag) and
``bias`` set so the mean CTR is ``base_ctr``; label ~ Bernoulli(sigmoid(logit)). The teacher's own
probabilities are the Bayes-optimal predictor, so their AUC / LogLoss / NE on each split are
the best any model can reach on these rows; they are recorded as ``ceiling`` with the results.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

from dlrs_bench.config.schema import DatasetOptions
from dlrs_bench.data.base import CTRDataset, CTRSplit, Jagged, SparseFeature
from dlrs_bench.data.criteo import KAGGLE_CARDINALITIES, MLPERF_MULTI_HOT, TERABYTE_CARDINALITIES
from dlrs_bench.data.splits import SplitFractions, split_rows
from dlrs_bench.measure.metrics import all_metrics

CHUNK_ROWS = 1 << 17


#: Table-size presets: the DLRM Criteo Kaggle cardinalities and TorchRec's Terabyte ones (40M cap).
CARDINALITY_PRESETS = {"criteo-kaggle": KAGGLE_CARDINALITIES, "criteo-tb": TERABYTE_CARDINALITIES}


class SyntheticOptions(DatasetOptions):
    name: Literal["synthetic"] = "synthetic"
    rows: PositiveInt = Field(100_000, description="rows generated, all splits together")
    cardinalities: list[PositiveInt] | Literal["criteo-kaggle", "criteo-tb"] = Field(
        default_factory=lambda: [10_000, 1_000, 100, 10], description="rows per table, or a Criteo preset"
    )
    cardinality_scale: float = Field(1.0, gt=0, le=1, description="multiply every table size (at least 2 rows)")
    multi_hot_sizes: list[PositiveInt] | Literal["mlperf"] | None = Field(
        None, description="ids per bag per table (default 1); 'mlperf' = MLPerf DLRM-DCNv2 sizes"
    )
    zipf_exponent: NonNegativeFloat = Field(1.05, description="0 = uniform ids")
    num_dense: NonNegativeInt = 13
    teacher_dim: PositiveInt = 8
    signal: float = Field(1.5, gt=0, description="std of the teacher logit before the bias")
    base_ctr: float = Field(0.25, gt=0, lt=1)
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    seed: int = Field(0, description="data seed (rows and teacher), independent of training seeds")

    def table_sizes(self) -> list[int]:
        """Rows per table after the preset and ``cardinality_scale``."""
        base = CARDINALITY_PRESETS[self.cardinalities] if isinstance(self.cardinalities, str) else self.cardinalities
        return [max(2, math.ceil(n * self.cardinality_scale)) for n in base] if self.cardinality_scale < 1 else base

    def bag_sizes(self) -> list[int]:
        """Ids per bag per table."""
        if self.multi_hot_sizes == "mlperf":
            return MLPERF_MULTI_HOT
        return self.multi_hot_sizes or [1] * len(self.table_sizes())

    @model_validator(mode="after")
    def _shapes(self) -> SyntheticOptions:
        if len(self.bag_sizes()) != len(self.table_sizes()):
            raise ValueError(
                f"multi_hot_sizes has {len(self.bag_sizes())} entries, cardinalities {len(self.table_sizes())}"
            )
        return self


class Synthetic:
    Options = SyntheticOptions

    @staticmethod
    def build(options: SyntheticOptions) -> CTRDataset:
        rng = np.random.default_rng(options.seed)
        n = options.rows
        cardinalities, hots = options.table_sizes(), options.bag_sizes()
        k = options.teacher_dim

        ids, scalar_sum, vector_sum, vector_sq = [], np.zeros(n), np.zeros((n, k)), np.zeros(n)
        for card, hot in zip(cardinalities, hots):
            table_ids = _zipf_ids(rng, card, (n, hot), options.zipf_exponent)
            b = rng.standard_normal(card)
            v = rng.standard_normal((card, k)) / np.sqrt(k)
            for lo in range(0, n, CHUNK_ROWS):
                chunk = table_ids[lo : lo + CHUNK_ROWS]
                pooled = v[chunk].mean(axis=1)  # [rows, k]
                scalar_sum[lo : lo + CHUNK_ROWS] += b[chunk].mean(axis=1)
                vector_sum[lo : lo + CHUNK_ROWS] += pooled
                vector_sq[lo : lo + CHUNK_ROWS] += (pooled**2).sum(axis=1)
            ids.append(table_ids)
        pairwise = 0.5 * ((vector_sum**2).sum(axis=1) - vector_sq)  # sum over table pairs s < t
        dense = rng.standard_normal((n, options.num_dense)).astype(np.float32)
        w = rng.standard_normal(options.num_dense) / np.sqrt(max(options.num_dense, 1))
        raw = scalar_sum + pairwise + dense.astype(np.float64) @ w
        logit = options.signal * (raw - raw.mean()) / (raw.std() + 1e-12)
        logit += _bias_for_ctr(logit, options.base_ctr)
        labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)

        rows = split_rows(n, options.split_fractions, seed=options.seed)
        features = [
            SparseFeature(f"t{i}", card, multi_hot=hot > 1)
            for i, (card, hot) in enumerate(zip(cardinalities, hots))
        ]
        splits = {
            name: CTRSplit(
                dense=torch.from_numpy(dense[r]),
                sparse={f.name: _bags(table_ids[r]) for f, table_ids in zip(features, ids)},
                labels=torch.from_numpy(labels[r]),
            )
            for name, r in rows.items()
        }
        train_ctr = splits["train"].ctr
        ceiling = {
            name: all_metrics(torch.from_numpy(logit[r]), splits[name].labels, train_ctr)
            for name, r in rows.items()
            if name != "train"
        }
        return CTRDataset(
            name=options.name,
            features=features,
            num_dense=options.num_dense,
            splits=splits,
            info={
                "split": {"protocol": "random", "fractions": list(options.split_fractions), "seed": options.seed},
                "ceiling": ceiling,
                "teacher": {"dim": k, "signal": options.signal, "base_ctr": options.base_ctr},
            },
        )


def _zipf_ids(rng: np.random.Generator, cardinality: int, shape: tuple[int, int], s: float) -> np.ndarray:
    """Ids in ``[0, cardinality)`` with P(rank r) ∝ (r + 1)^-s, ranks shuffled onto ids."""
    weights = np.arange(1, cardinality + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(weights)
    ranks = np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right")
    np.minimum(ranks, cardinality - 1, out=ranks)
    return rng.permutation(cardinality)[ranks].astype(np.int64)


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


def _bags(ids: np.ndarray) -> Jagged:
    """Fixed-size bags ``ids`` ``[rows, hot]`` as a jagged list."""
    rows, hot = ids.shape
    return Jagged(torch.from_numpy(np.ascontiguousarray(ids).reshape(-1)), torch.arange(rows + 1) * hot)
