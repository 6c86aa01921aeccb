"""What every dataset plugin produces: a feature schema and splits that are views over a cache.

A split (:class:`CTRSplit`) holds no rows: it is a :class:`~dlrs_bench.data.rows.RowSet` (a range
or an index array) over an opened :class:`~dlrs_bench.data.cache.Cache` plus how to read it (which
columns hold each feature, multi-hot bags synthesised on the fly, the shuffle protocol). Batches are
read from the cache when they are needed (:mod:`dlrs_bench.data.batching`), so host memory does not
grow with the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from dlrs_bench.config.schema import DatasetOptions
from dlrs_bench.data.cache import Cache, RawRows
from dlrs_bench.data.integrity import RowChecks
from dlrs_bench.data.order import ReadOrder, Shuffle
from dlrs_bench.data.rows import KeyedPermutation, Rows, RowSet
from dlrs_bench.registry import DATASETS

#: Rows per read when a whole split is scanned (CTR, labels for evaluation).
SCAN_ROWS = 1 << 22


@dataclass(frozen=True)
class SparseFeature:
    """One categorical feature: its name, its table size and whether bags hold one id."""

    name: str
    cardinality: int
    multi_hot: bool = False


@dataclass(frozen=True)
class FeatureLayout:
    """Where feature ``name`` lives in the cache: ``width`` columns of ``sparse`` from ``column``
    (0 = a variable-length bag in ``bags/``), and ``synthesised`` ids per bag derived from its one
    stored id (MLPerf multi-hot; 1 = none), hashed with the seeds of table ``table``."""

    name: str
    cardinality: int
    column: int
    width: int
    synthesised: int = 1
    table: int = 0

    @property
    def bag_size(self) -> int | None:
        """Ids per bag when fixed, else None."""
        return None if self.width == 0 else self.width * self.synthesised


@dataclass(frozen=True)
class ShuffleSpec:
    """The training-order options of a dataset (see :mod:`dlrs_bench.data.order`)."""

    shuffle: Shuffle = "auto"
    block_rows: int = 4096
    window_rows: int = 1 << 20
    shuffled_when_prepared: bool = False

    def resolve(self, rows: int) -> ReadOrder:
        return ReadOrder.resolve(self.shuffle, rows, self.shuffled_when_prepared, self.block_rows, self.window_rows)


@dataclass
class Jagged:
    """Variable-length id lists of N rows: row i is ``values[offsets[i]:offsets[i + 1]]``."""

    values: torch.Tensor  # int64 [total ids]
    offsets: torch.Tensor  # int64 [N + 1]


@dataclass
class SplitArrays:
    """A split (or part of one) in memory: dense ``[N, num_dense]`` float32, labels ``[N]`` float32,
    per feature a :class:`Jagged` id list. For inspection and tests; training reads batches."""

    dense: torch.Tensor
    sparse: dict[str, Jagged]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(eq=False)
class CTRSplit:
    """N labelled rows of one split (train, val or test): a view over a cache."""

    cache: Cache
    rows: RowSet
    layout: list[FeatureLayout]
    shuffle: ShuffleSpec = ShuffleSpec()
    _lengths: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # one-per-row lengths by batch size

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def order(self) -> ReadOrder:
        """The training order of this split (``auto`` resolved for its size)."""
        return self.shuffle.resolve(len(self))

    def take(self, positions: Rows) -> CTRSplit:
        """The rows at ``positions`` of this split as a new view."""
        return replace(self, rows=self.rows.subset(positions), _lengths={})

    @cached_property
    def checks(self) -> RowChecks:
        """What the rows of this split's cache may hold (checked on every read)."""
        return RowChecks.of(self.cache)

    def read(self, positions: Rows) -> RawRows:
        """The raw rows at ``positions``: one contiguous read per file for a range, else a gather;
        a row holding what no prepared cache holds raises
        :class:`~dlrs_bench.data.integrity.DamagedCacheError`."""
        rows = self.rows.rows(positions)
        raw = self.cache.read_range(rows.start, rows.stop) if isinstance(rows, slice) else self.cache.gather(rows)
        self.checks.check_rows(raw, rows)
        return raw

    def scan(self) -> Iterator[slice]:
        """Position slices covering the split, :data:`SCAN_ROWS` at a time."""
        return (slice(lo, min(lo + SCAN_ROWS, len(self))) for lo in range(0, len(self), SCAN_ROWS))

    def labels(self) -> np.ndarray:
        """Every label of the split, uint8 ``[N]`` (1 byte a row: what exact evaluation keeps)."""
        return np.concatenate([self.read_labels(part) for part in self.scan()] or [np.zeros(0, np.uint8)])

    def read_labels(self, positions: slice) -> np.ndarray:
        """Labels (uint8) at the positions ``positions``: a contiguous read, or a gather; a label
        other than 0 or 1 raises :class:`~dlrs_bench.data.integrity.DamagedCacheError`."""
        rows = self.rows.rows(positions)
        labels = (self.cache.read_labels(rows.start, rows.stop) if isinstance(rows, slice)
                  else np.asarray(self.cache.labels[rows]))
        self.checks.check_labels(labels, rows)
        return labels

    @cached_property
    def ctr(self) -> float:
        """Mean label (a bounded-memory pass over the labels)."""
        if not len(self):
            return math.nan
        return sum(int(self.read_labels(part).sum(dtype=np.int64)) for part in self.scan()) / len(self)

    def lengths_of_ones(self, count: int) -> torch.Tensor:
        """A reusable int32 tensor of ``count`` ones (KJT lengths of one-hot bags)."""
        if count not in self._lengths:
            self._lengths[count] = torch.ones(count, dtype=torch.int32)
        return self._lengths[count]

    def to_memory(self) -> SplitArrays:
        """The whole split in memory, as tensors."""
        from dlrs_bench.data.batching import make_batch

        batch = make_batch(self, slice(0, len(self)), [f.name for f in self.layout])
        kjt = batch.sparse_features
        sparse = {}
        for key, jt in kjt.to_dict().items():
            sparse[key] = Jagged(jt.values(), jt.offsets().to(torch.int64))
        return SplitArrays(batch.dense_features, sparse, batch.labels)


@dataclass
class CTRDataset:
    """A dataset ready to train on: feature schema, splits, and facts to record with results.

    ``info`` is written into every result file (``dataset`` section): provenance, split
    protocol, label rule and, for synthetic data, the known ceiling (oracle AUC / NE).
    """

    name: str
    features: list[SparseFeature]
    num_dense: int
    splits: dict[str, CTRSplit]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def subset(self, options: DatasetOptions) -> CTRDataset:
        """This dataset with the train subset of ``options`` (``num_samples`` / ``fraction``)."""
        return take_subset(self, options)

    def summary(self) -> dict[str, Any]:
        """Sizes and CTRs of the splits, the training order, plus ``info``, as recorded in result files."""
        cache = next(iter(self.splits.values())).cache
        manifest = cache.manifest
        row_bytes = 1 + 4 * manifest.num_dense + np.dtype(manifest.sparse_dtype).itemsize * manifest.sparse_columns
        return {
            "name": self.name,
            "num_dense": self.num_dense,
            "features": {f.name: f.cardinality for f in self.features},
            "rows": {k: len(s) for k, s in self.splits.items()},
            "ctr": {k: round(s.ctr, 6) for k, s in self.splits.items()},
            "cache": {"path": str(cache.path), "identity": cache.identity, "rows": manifest.rows,
                      "row_bytes": row_bytes,
                      "shuffled_when_prepared": manifest.shuffle.model_dump() if manifest.shuffle else None},
            "train_order": self.splits["train"].order.describe(),
            **self.info,
        }


class DatasetPlugin(Protocol):
    """What a registered dataset provides: its options model and a builder."""

    Options: ClassVar[type[DatasetOptions]]

    @staticmethod
    def build(options: Any) -> CTRDataset: ...


SUBSET_FIELDS = {"num_samples", "fraction", "subset_seed"}


def build_dataset(options: DatasetOptions) -> CTRDataset:
    """Build the dataset named by ``options.name`` (deterministic for given options), keeping
    the train subset that ``num_samples`` / ``fraction`` ask for."""
    return DATASETS.get(options.name).build(options).subset(options)


def take_subset(full: CTRDataset, options: DatasetOptions) -> CTRDataset:
    """``full`` with its train split cut to the subset of ``options`` (``full`` is not modified)."""
    train = full.splits["train"]
    keep = subset_rows(len(train), options)
    if keep is None:
        return full
    info = {**full.info, "subset": {"rows": len(keep), "of": len(train), "seed": options.subset_seed}}
    return CTRDataset(full.name, full.features, full.num_dense, {**full.splits, "train": train.take(keep)}, info)


def subset_rows(n: int, options: DatasetOptions) -> np.ndarray | None:
    """Sorted positions (int64) of the nested train subset, or None for all rows.

    The subset is the first k positions of one keyed pseudo-random permutation of ``range(n)``
    (``subset_seed``), so subsets of the same seed are nested, and computing it costs k entries of
    memory however large n is.
    """
    if options.num_samples is None and options.fraction is None:
        return None
    k = options.num_samples if options.num_samples is not None else max(1, round(options.fraction * n))
    if k > n:
        from dlrs_bench.errors import UserInputError

        raise UserInputError(f"num_samples {k} is more than the {n} train rows of {options.name}")
    return np.sort(KeyedPermutation(n, options.subset_seed).values(0, k))


@cache
def _bag_hashes(size: int, table: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size - 1`` (multiplier, increment) pairs of table ``table``'s bag hashes (uint64; odd multipliers)."""
    rng = np.random.default_rng([7919, table])
    a = rng.integers(1, 2**63, size - 1, dtype=np.uint64) | np.uint64(1)
    return a, rng.integers(0, 2**63, size - 1, dtype=np.uint64)


def synthesise_bags(ids: np.ndarray, cardinality: int, size: int, table: int, out: np.ndarray | None = None
                    ) -> np.ndarray:
    """Bags of ``size`` ids per row ``[B, size]`` int64 (into ``out`` when given): the row's own id,
    then ``size - 1`` ids derived from it by fixed multiply-shift hashes into ``[0, cardinality)``:
    ``((a_j * id + b_j) mod 2^64 >> 32) * cardinality >> 32`` (no division: 3x faster than modular hashing).

    MLPerf DLRM-DCNv2 materialises a random ``[n, size]`` table per feature for this; hashing the id
    gives every id the same kind of fixed random companions without that memory.
    """
    a, b = _bag_hashes(size, table)
    out = np.empty((len(ids), size), np.int64) if out is None else out
    out[:, 0] = ids
    extra = np.multiply(ids.astype(np.uint64)[:, None], a)  # contiguous: 1.7x faster than into out's columns
    extra += b
    extra >>= np.uint64(32)
    extra *= np.uint64(cardinality)
    extra >>= np.uint64(32)
    out[:, 1:] = extra
    return out


def dataset_from_cache(options: DatasetOptions, cache: Cache, splits: dict[str, RowSet], info: dict[str, Any],
                       synthesised: list[int] | None = None) -> CTRDataset:
    """A dataset whose ``splits`` are views over ``cache``; ``synthesised`` = ids per bag to derive
    from each one-hot feature's stored id (MLPerf multi-hot; default 1 each)."""
    manifest = cache.manifest
    layout, column = [], 0
    for table, (name, cardinality) in enumerate(manifest.features.items()):
        width = manifest.width(name)
        size = synthesised[table] if synthesised and width == 1 else 1
        layout.append(FeatureLayout(name, cardinality, column, width, size, table))
        column += width
    train = splits["train"]
    prepared = manifest.shuffle
    shuffled = prepared is not None and train.is_range and train.start == 0 and train.stop <= prepared.rows
    spec = ShuffleSpec(options.shuffle, options.shuffle_block_rows, options.shuffle_window_rows, shuffled)
    return CTRDataset(
        name=options.name,
        features=[SparseFeature(f.name, f.cardinality, multi_hot=f.bag_size != 1) for f in layout],
        num_dense=max(manifest.num_dense, 1),  # no dense features: one constant 1 (a bias input)
        splits={k: CTRSplit(cache, rows, layout, spec) for k, rows in splits.items()},
        info=info,
    )
