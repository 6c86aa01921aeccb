"""Datasets read from a prepared cache (``dlrs-bench data prepare``), with their standard splits.

Split protocols (``split``), chosen when the dataset is loaded:

- ``dlrm-7day`` (Criteo Kaggle, DLRM reference): rows cut by count into 7 "days" (extras to the
  first ones); days 0-5 train; day 6 halved: test = first half (the larger), val = second half.
- ``last-day`` (Criteo Terabyte): every input file but the last is train; the last file (day 23)
  is halved: val = first half, test = second half (the MLPerf evaluation half is val).
- ``random``: rows shuffled with ``split_seed`` and cut by ``split_fractions`` (BARS: 8:1:1, seed 2018).
- ``temporal``: rows in file order cut by ``split_fractions`` (the last rows are test).

Every split but ``random`` is a row range of the cache (no index in memory); ``random`` keeps one
int64 index per row, as the protocol needs.
"""

from __future__ import annotations

from dlrs_bench.data.base import CTRDataset, dataset_from_cache
from dlrs_bench.data.cache import Manifest
from dlrs_bench.data.options import (
    AvazuOptions,
    CriteoKaggleOptions,
    CriteoTerabyteOptions,
    MovieLensPreparedOptions,
    PreparedOptions,
    bag_sizes,
    check_split,
    prepared_cache,
)
from dlrs_bench.data.rows import RowSet
from dlrs_bench.data.splits import split_rows


def split_ranges(manifest: Manifest, options: PreparedOptions) -> dict[str, RowSet]:
    """Rows of train / val / test under ``options.split``."""
    n = manifest.rows
    train_end = check_split(manifest, options)
    if options.split in ("dlrm-7day", "last-day"):
        rest = n - train_end
        first_half_end = train_end + (rest + 1) // 2
        first, second = RowSet(train_end, first_half_end), RowSet(first_half_end, n)
        # dlrm-7day: test is the first (larger) half of day 6; last-day: val is the first half of day 23
        evaluation = {"test": first, "val": second} if options.split == "dlrm-7day" else {"val": first, "test": second}
        return {"train": RowSet(0, train_end), **evaluation}
    if options.split == "temporal":
        n_val, n_test = int(options.split_fractions[1] * n), int(options.split_fractions[2] * n)
        n_train = n - n_val - n_test
        val_end = n_train + n_val
        return {"train": RowSet(0, n_train), "val": RowSet(n_train, val_end), "test": RowSet(val_end, n)}
    return {k: RowSet(index=v) for k, v in split_rows(n, options.split_fractions, options.split_seed).items()}


class Prepared:
    """Shared builder of every prepared dataset; subclasses only pin their options."""

    Options: type[PreparedOptions] = PreparedOptions

    @classmethod
    def build(cls, options: PreparedOptions) -> CTRDataset:
        cache = prepared_cache(options)
        manifest = cache.manifest
        sizes = bag_sizes(options, manifest)
        info = {"source": options.path,
                "split": {"protocol": options.split, "fractions": list(options.split_fractions),
                          "seed": options.split_seed},
                "prepared": {"options": manifest.options, "inputs": [i.model_dump() for i in manifest.inputs],
                             "skipped": manifest.skipped["count"]}}
        if sizes != [1] * len(sizes):
            info["multi_hot_sizes"] = sizes
        if manifest.multi_hot is not None:  # bags stored as MLPerf materialised them
            info["prepared"]["multi_hot"] = manifest.multi_hot.model_dump()
        return dataset_from_cache(options, cache, split_ranges(manifest, options), info, sizes)


class CriteoKaggle(Prepared):
    Options = CriteoKaggleOptions


class CriteoTerabyte(Prepared):
    Options = CriteoTerabyteOptions


class Avazu(Prepared):
    Options = AvazuOptions


class MovieLensPrepared(Prepared):
    Options = MovieLensPreparedOptions
