"""Fixtures of the benchmarks: a Criteo-shaped synthetic cache, made once per session.

Size: ``BENCH_ROWS`` (default 1,048,576 rows; 26 one-hot tables, 13 dense features, 157 bytes a
row). Tables are the Criteo Kaggle ones scaled by 0.01 (reading costs do not depend on table size).
The cache is written under ``$DLRS_BENCH_CACHE`` like every first-use cache, so later runs reuse it.
"""

from __future__ import annotations

import os

import pytest
import torch

from dlrs_bench.data.base import build_dataset
from dlrs_bench.data.synthetic import SyntheticOptions

BATCH = int(os.environ.get("BENCH_BATCH", 65_536))


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    """Every benchmark on one core (the batch pipeline's budget per training process)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def criteo_shaped() -> SyntheticOptions:
    """Options of the benchmark cache (built on first use)."""
    options = SyntheticOptions(rows=int(os.environ.get("BENCH_ROWS", 1 << 20)), cardinalities="criteo-kaggle",
                               cardinality_scale=0.01, num_dense=13)
    build_dataset(options)  # writes the cache once
    return options
