"""Datasets read from a prepared cache (``dlrs-bench data prepare``), with their standard splits.

Split protocols (``split``), chosen when the dataset is loaded:

- ``dlrm-7day`` (Criteo Kaggle, DLRM reference): rows cut by count into 7 "days" (extras to the
  first ones); days 0-5 train; day 6 halved: test = first half (the larger), val = second half.
- ``last-day`` (Criteo Terabyte): every input file but the last is train; the last file (day 23)
  is halved: val = first half, test = second half (the MLPerf evaluation half is val).
- ``random``: rows shuffled with ``split_seed`` and cut by ``split_fractions`` (BARS: 8:1:1, seed 2018).
- ``temporal``: rows in file order cut by ``split_fractions`` (the last rows are test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt

from dlrs_bench.config.schema import DatasetOptions
from dlrs_bench.data.base import CTRDataset, CTRSplit, Jagged, SparseFeature
from dlrs_bench.data.cache import Manifest, open_cache
from dlrs_bench.data.criteo import MLPERF_MULTI_HOT
from dlrs_bench.data.splits import SplitFractions, split_rows
from dlrs_bench.errors import UserInputError

MULTI_HOT_PRIME = 2**31 - 1
SplitProtocol = Literal["dlrm-7day", "last-day", "random", "temporal"]


class PreparedOptions(DatasetOptions):
    path: str = Field(description="folder written by `dlrs-bench data prepare`")
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    split_seed: int = 2018
    multi_hot_sizes: list[PositiveInt] | Literal["mlperf"] | None = Field(
        None, description="MLPerf-style multi-hot synthesis: ids per bag per table ('mlperf' = DLRM-DCNv2 sizes)"
    )


class CriteoKaggleOptions(PreparedOptions):
    name: Literal["criteo-kaggle"] = "criteo-kaggle"
    split: SplitProtocol = "dlrm-7day"


class CriteoTerabyteOptions(PreparedOptions):
    name: Literal["criteo-tb"] = "criteo-tb"
    split: SplitProtocol = "last-day"


class AvazuOptions(PreparedOptions):
    name: Literal["avazu"] = "avazu"
    split: SplitProtocol = "random"


class MovieLensPreparedOptions(PreparedOptions):
    name: Literal["movielens"] = "movielens"
    split: SplitProtocol = "random"


def split_ranges(manifest: Manifest, options: PreparedOptions) -> dict[str, np.ndarray]:
    """Row indexes (int64) of train / val / test under ``options.split``."""
    n = manifest.rows
    if options.split == "dlrm-7day":
        size, extra = divmod(n, 7)
        day_sizes = [size + (1 if d < extra else 0) for d in range(7)]
        train_end = sum(day_sizes[:6])
        test_end = train_end + (day_sizes[6] + 1) // 2
        return {"train": np.arange(train_end), "val": np.arange(test_end, n), "test": np.arange(train_end, test_end)}
    if options.split == "last-day":
        if len(manifest.parts) < 2:
            raise UserInputError(f"{options.path}: split 'last-day' needs at least two prepared input files (days)")
        train_end = n - manifest.parts[-1]
        val_end = train_end + (manifest.parts[-1] + 1) // 2
        return {"train": np.arange(train_end), "val": np.arange(train_end, val_end), "test": np.arange(val_end, n)}
    order_key = np.arange(n) if options.split == "temporal" else None
    return split_rows(n, options.split_fractions, options.split_seed, order_key)


class Prepared:
    """Shared builder of every prepared dataset; subclasses only pin their options."""

    Options: type[PreparedOptions] = PreparedOptions

    @classmethod
    def build(cls, options: PreparedOptions) -> CTRDataset:
        manifest, labels, dense, sparse = open_cache(Path(options.path))
        if manifest.dataset != options.name:
            raise UserInputError(f"{options.path}: holds a prepared {manifest.dataset!r}, not {options.name!r}")
        sizes = bag_sizes(options, len(manifest.features))
        splits = {}
        for name, rows in split_ranges(manifest, options).items():
            ids = torch.from_numpy(np.asarray(sparse[rows], dtype=np.int64))
            values = (np.asarray(dense[rows], dtype=np.float32) if manifest.num_dense
                      else np.ones((len(rows), 1), np.float32))
            splits[name] = CTRSplit(
                dense=torch.from_numpy(values),
                sparse={f: multi_hot(ids[:, j].contiguous(), n, size, j)
                        for j, ((f, n), size) in enumerate(zip(manifest.features.items(), sizes))},
                labels=torch.from_numpy(np.asarray(labels[rows], dtype=np.float32)),
            )
        return CTRDataset(
            name=options.name,
            features=[SparseFeature(f, n, multi_hot=size > 1)
                      for (f, n), size in zip(manifest.features.items(), sizes)],
            num_dense=max(manifest.num_dense, 1),  # no dense features: one constant 1 (a bias input)
            splits=splits,
            info={"source": options.path, "split": {"protocol": options.split,
                                                    "fractions": list(options.split_fractions),
                                                    "seed": options.split_seed},
                  "prepared": {"options": manifest.options, "inputs": [i.model_dump() for i in manifest.inputs],
                               "skipped": manifest.skipped["count"]}},
        )


def bag_sizes(options: PreparedOptions, num_features: int) -> list[int]:
    """Ids per bag of each feature (1 = the prepared one-hot data as is)."""
    sizes = MLPERF_MULTI_HOT if options.multi_hot_sizes == "mlperf" else options.multi_hot_sizes or [1] * num_features
    if len(sizes) != num_features:
        raise UserInputError(f"multi_hot_sizes has {len(sizes)} entries for {num_features} sparse features")
    return list(sizes)


def multi_hot(ids: torch.Tensor, cardinality: int, size: int, table: int) -> Jagged:
    """Bags of ``size`` ids per row: the row's own id, then ``size - 1`` ids derived from it by
    fixed universal hashes into ``[0, cardinality)``.

    MLPerf DLRM-DCNv2 materialises a random ``[n, size]`` table per feature for this; hashing the id
    gives every id the same kind of fixed random companions without that memory.
    """
    if size == 1:
        return Jagged.single(ids)
    g = torch.Generator().manual_seed(7919 * (table + 1))
    a = torch.randint(1, MULTI_HOT_PRIME, (size - 1,), generator=g)
    b = torch.randint(0, MULTI_HOT_PRIME, (size - 1,), generator=g)
    extra = (ids.unsqueeze(1) * a + b) % MULTI_HOT_PRIME % cardinality
    bags = torch.cat([ids.unsqueeze(1), extra], dim=1)
    return Jagged(bags.reshape(-1), torch.arange(len(ids) + 1, dtype=torch.int64) * size)


class CriteoKaggle(Prepared):
    Options = CriteoKaggleOptions


class CriteoTerabyte(Prepared):
    Options = CriteoTerabyteOptions


class Avazu(Prepared):
    Options = AvazuOptions


class MovieLensPrepared(Prepared):
    Options = MovieLensPreparedOptions
