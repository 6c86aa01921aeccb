"""Options of the sequence datasets (the ``retrieval`` task's; pydantic only, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dlrs_bench.config.schema import DataFacts, DatasetOptions
from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential.data_options import SequenceSplitOptions, SyntheticSequenceOptions


class SequenceDatasetOptions(DatasetOptions):
    """What every sequence dataset shares. ``num_samples`` / ``fraction`` keep nested subsets of the training
    samples (user prefixes); val and test are untouched. Training samples are read in a new random order
    every epoch: the CTR read orders (``shuffle``, ``shuffle_block_rows``, ``shuffle_window_rows``) do not
    apply and are refused (but for their defaults)."""

    task: ClassVar[str] = "retrieval"
    split: SequenceSplitOptions = Field(
        SequenceSplitOptions(), description="leave-last-out (SASRec/HSTU papers) or temporal (train_end, gap_s, "
        "test_end, val_s: MLPerf dlrmv4's global split)")
    exclude_seen: bool = Field(
        True, description="remove each user's history items (never the target) from the ranked catalogue (the "
                          "papers' protocol; false for data where users repeat items)")

    @model_validator(mode="after")
    def _no_ctr_read_order(self) -> SequenceDatasetOptions:
        ctr = [k for k in ("shuffle", "shuffle_block_rows", "shuffle_window_rows")
               if getattr(self, k) != type(self).model_fields[k].default]
        if ctr:
            raise ValueError(f"{ctr[0]}: a CTR read order; sequence samples are shuffled every epoch")
        return self



class MovieLensSequencesOptions(SequenceDatasetOptions):
    """MovieLens ratings as user sequences (every rating an interaction, dlrs_bench/sequential/movielens.py):
    the bundled ml-latest-small, or a raw ML-1M / ML-20M / ml-latest folder prepared on first use."""

    name: Literal["movielens-sequences"] = "movielens-sequences"
    path: str | None = Field(None, description="folder with ratings.dat (ML-1M) or ratings.csv; default: the "
                                               "bundled ml-latest-small")

    def check_data(self) -> DataFacts:
        if self.path is not None and not any((Path(self.path) / f).is_file() for f in ("ratings.dat", "ratings.csv")):
            raise UserInputError(f"{self.path}: no ratings.dat (ML-1M) or ratings.csv (ML-20M, ml-latest) found")
        return DataFacts()


#: Yambda's global temporal split in its own seconds (its benchmark's constants: LAST_TIMESTAMP 26,000,000,
#: test = the last day, a 30-minute gap before it); the same clock for 50m, 500m and 5b.
YAMBDA_SPLIT = SequenceSplitOptions(protocol="temporal", train_end=26_000_000 - 86_400 - 1_800, gap_s=1_800,
                                    test_end=26_000_000)


class YambdaOptions(SequenceDatasetOptions):
    """Yambda (Yandex Music) events as user sequences from a cache that ``dlrs-bench data prepare yambda``
    wrote (dlrs_bench/sequential/yambda.py). Users listen to tracks again, so history is not removed from
    the ranked catalogue unless asked (``exclude_seen``)."""

    name: Literal["yambda"] = "yambda"
    path: str = Field(description="the sequence cache folder `dlrs-bench data prepare yambda --out` wrote")
    split: SequenceSplitOptions = Field(
        YAMBDA_SPLIT, description="default: Yambda's global temporal split (train before 25,911,800 s, a 1,800 s "
        "gap, test targets in the last day, up to 26,000,000 s); leave-last-out or other temporal bounds as for "
        "every sequence dataset")
    exclude_seen: bool = Field(False, description="remove each user's history items from the ranked catalogue "
                                                  "(false: Yambda users re-listen to tracks)")

    def check_data(self) -> DataFacts:
        if not (Path(self.path) / "manifest.json").is_file():
            raise UserInputError(f"{self.path}: not a sequence cache (no manifest.json); write one with `dlrs-bench "
                                 f"data prepare yambda --raw <folder of multi_event.parquet> --out {self.path}`")
        return DataFacts()


class SyntheticSequencesOptions(SequenceDatasetOptions, SyntheticSequenceOptions):
    """Synthetic sequences from a hidden teacher with a known ceiling (dlrs_bench/sequential/synthetic.py);
    a user meets an item once, so the ceiling holds with or without ``exclude_seen``."""

    name: Literal["synthetic-sequences"] = "synthetic-sequences"
