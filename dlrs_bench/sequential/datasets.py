"""Sequence datasets ready to train on (``retrieval`` task): a sequence cache, its splits and what result
files record (registered as ``movielens-sequences``, ``synthetic-sequences`` and ``yambda``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlrs_bench.data.local_cache import first_use_folder
from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential.cache import SequenceCache
from dlrs_bench.sequential.data_options import SyntheticSequenceOptions
from dlrs_bench.sequential.dataset_options import (
    MovieLensSequencesOptions,
    SequenceDatasetOptions,
    SyntheticSequencesOptions,
    YambdaOptions,
)
from dlrs_bench.sequential.movielens import bundled_movielens_sequences, prepare_movielens_sequences, ratings_file
from dlrs_bench.sequential.splits import SequenceSplit, make_splits
from dlrs_bench.sequential.synthetic import synthetic_sequences

#: Bump when the sequences prepared from a raw MovieLens folder change.
RAW_BUILD_VERSION = 1


@dataclass
class SequenceDataset:
    """User sequences with train / val / test splits (:class:`SequenceSplit` views over ``cache``)."""

    name: str
    cache: SequenceCache
    splits: dict[str, SequenceSplit]
    exclude_seen: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        """Rows of the item table (ids 1..N-1, 0 = padding)."""
        return self.cache.num_items

    def subset(self, options: SequenceDatasetOptions) -> SequenceDataset:
        """This dataset with the training samples of ``options`` (``num_samples`` / ``fraction``)."""
        return replace(self, splits={**self.splits, "train": subset(self.splits["train"], options)})

    def summary(self) -> dict[str, Any]:
        """What result files record: sizes, the split protocol and each split's samples, the cache."""
        m = self.cache.manifest
        return {"name": self.name, "task": "retrieval", "users": m.users, "events": m.events, "items": m.items,
                "splits": {k: s.describe() for k, s in self.splits.items()}, "exclude_seen": self.exclude_seen,
                "cache": {"path": str(self.cache.path), "identity": cache_identity(self.cache)}, **self.info}


def cache_identity(cache: SequenceCache) -> str:
    """A digest (16 hex digits) of the cache's manifest without the time it was written, plus its files'
    sizes: the same sequences prepared again have the same identity."""
    content = cache.manifest.model_dump(mode="json", exclude={"created_at"})
    content["files"] = {p.name: p.stat().st_size for p in sorted(Path(cache.path).glob("*.npy"))}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def subset(split: SequenceSplit, options: SequenceDatasetOptions) -> SequenceSplit:
    """The ``num_samples`` / ``fraction`` training samples: the first of one fixed permutation
    (``subset_seed``), in their original order, so a smaller subset lies in a larger one."""
    keep = options.subset_rows(len(split))
    if keep >= len(split):
        return split
    picks = np.sort(np.random.default_rng(options.subset_seed).permutation(len(split))[:keep])
    return replace(split, users=split.users[picks], positions=split.positions[picks])


def open_dataset(name: str, folder: Path, options: SequenceDatasetOptions, info: dict[str, Any]) -> SequenceDataset:
    cache = SequenceCache.open(folder)
    return SequenceDataset(name, cache, make_splits(cache, options.split), options.exclude_seen, info)


class MovieLensSequences:
    Options = MovieLensSequencesOptions

    @staticmethod
    def build(options: MovieLensSequencesOptions) -> SequenceDataset:
        if options.path is None:
            folder = bundled_movielens_sequences()
            source = "bundled ml-latest-small"
        else:
            file = ratings_file(Path(options.path))
            st = file.stat()
            key = {"version": RAW_BUILD_VERSION, "file": [str(file.resolve()), st.st_size, st.st_mtime_ns]}
            folder = first_use_folder(None, "movielens-sequences", key,
                                      lambda out: prepare_movielens_sequences(Path(options.path), out))
            source = str(file)
        info = {"source": source, "interactions": "every rating, sorted per user by (timestamp, movieId)"}
        return open_dataset(options.name, folder, options, info)


class SyntheticSequences:
    Options = SyntheticSequencesOptions

    @staticmethod
    def build(options: SyntheticSequencesOptions) -> SequenceDataset:
        generation = SyntheticSequenceOptions(**{k: getattr(options, k) for k in SyntheticSequenceOptions.model_fields})
        folder = synthetic_sequences(generation)
        dataset = open_dataset(options.name, Path(folder), options, {})
        dataset.info = {"ceiling": dataset.cache.manifest.source.get("ceiling")}
        return dataset


class Yambda:
    Options = YambdaOptions

    @staticmethod
    def build(options: YambdaOptions) -> SequenceDataset:
        dataset = open_dataset(options.name, Path(options.path), options, {})
        source = dataset.cache.manifest.source
        if source.get("dataset") != "yambda":
            raise UserInputError(f"{options.path}: holds prepared {source.get('dataset')!r} sequences, not yambda")
        dataset.info = {"source": options.path, "event_types": source.get("events"),
                        "time_range_s": dataset.cache.manifest.ranges["timestamps"]}
        return dataset
