"""The in-memory form every dataset plugin produces.

A split holds N rows: dense features ``[N, num_dense]`` float32, labels ``[N]`` float32 in
{0, 1}, and per sparse feature a jagged id list (``values`` int64, ``offsets`` int64 ``[N + 1]``)
with ids in ``[0, cardinality)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from dlrs_bench.config.schema import DatasetOptions
from dlrs_bench.registry import DATASETS


@dataclass(frozen=True)
class SparseFeature:
    """One categorical feature: its name, its table size and whether bags hold one id."""

    name: str
    cardinality: int
    multi_hot: bool = False


@dataclass
class Jagged:
    """Variable-length id lists of N rows: row i is ``values[offsets[i]:offsets[i + 1]]``."""

    values: torch.Tensor  # int64 [total ids]
    offsets: torch.Tensor  # int64 [N + 1]
    is_single: bool = field(init=False)  # every row holds exactly one id

    def __post_init__(self) -> None:
        self.is_single = len(self.values) == len(self.offsets) - 1 and bool(
            torch.equal(self.offsets, torch.arange(len(self.offsets), dtype=torch.int64))
        )

    @classmethod
    def single(cls, ids: torch.Tensor) -> Jagged:
        """One id per row (``ids`` int64 ``[N]``)."""
        return cls(ids.to(torch.int64), torch.arange(len(ids) + 1, dtype=torch.int64))

    def take(self, rows: torch.Tensor) -> Jagged:
        """The rows ``rows`` (int64 indexes) as a new jagged list."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        new_offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=new_offsets[1:])
        shift = torch.repeat_interleave(starts - new_offsets[:-1], lengths)
        positions = torch.arange(int(new_offsets[-1]), dtype=torch.int64) + shift
        return Jagged(self.values[positions], new_offsets)


@dataclass
class CTRSplit:
    """N labelled rows of one split (train, val or test)."""

    dense: torch.Tensor  # float32 [N, num_dense]
    sparse: dict[str, Jagged]
    labels: torch.Tensor  # float32 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: torch.Tensor) -> CTRSplit:
        return CTRSplit(self.dense[rows], {k: j.take(rows) for k, j in self.sparse.items()}, self.labels[rows])

    @property
    def ctr(self) -> float:
        return float(self.labels.mean()) if len(self) else math.nan


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

    def summary(self) -> dict[str, Any]:
        """Sizes and CTRs of the splits plus ``info``, as recorded in result files."""
        return {
            "name": self.name,
            "num_dense": self.num_dense,
            "features": {f.name: f.cardinality for f in self.features},
            "rows": {k: len(s) for k, s in self.splits.items()},
            "ctr": {k: round(s.ctr, 6) for k, s in self.splits.items()},
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
    return take_subset(DATASETS.get(options.name).build(options), options)


def take_subset(full: CTRDataset, options: DatasetOptions) -> CTRDataset:
    """``full`` with its train split cut to the subset of ``options`` (``full`` is not modified)."""
    train = full.splits["train"]
    keep = subset_rows(len(train), options)
    if keep is None:
        return full
    info = {**full.info, "subset": {"rows": len(keep), "of": len(train), "seed": options.subset_seed}}
    return CTRDataset(full.name, full.features, full.num_dense, {**full.splits, "train": train.take(keep)}, info)


def subset_rows(n: int, options: DatasetOptions) -> torch.Tensor | None:
    """Sorted indexes of the nested train subset, or None for all rows.

    The subset is the first k rows of one permutation of ``range(n)`` seeded by ``subset_seed``,
    so subsets of the same seed are nested.
    """
    if options.num_samples is None and options.fraction is None:
        return None
    k = options.num_samples if options.num_samples is not None else max(1, round(options.fraction * n))
    if k > n:
        raise ValueError(f"num_samples {k} is more than the {n} train rows of {options.name}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(options.subset_seed))
    return torch.sort(order[:k]).values
