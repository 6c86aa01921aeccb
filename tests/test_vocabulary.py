"""dataset.vocabulary of bundled MovieLens: ``train`` numbers each table by the train split (padding row 0,
ids seen in train 1..k, OOV k + 1) with FuxiCTR's row counts; ``all`` (the default) keeps today's ids,
cache and scenario ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dlrs_bench.data.movielens import train_vocabulary
from dlrs_bench.data.options import BUNDLED_TABLES, BUNDLED_TRAIN_TABLES, MovieLensOptions
from dlrs_bench.registry import DATASETS


def build(**options: Any) -> Any:
    return DATASETS.get("movielens-latest-small").build(MovieLensOptions(**options))


def ids_of(dataset: Any, split: str) -> dict[str, np.ndarray]:
    """Every id each feature looks up in ``split`` (a multi-hot feature: every id of every bag)."""
    arrays = dataset.splits[split].to_memory()
    return {k: jagged.values.numpy() for k, jagged in arrays.sparse.items()}


@pytest.fixture(scope="module")
def datasets() -> tuple[Any, Any]:
    return build(), build(vocabulary="train")


def test_train_vocabulary_order_padding_and_oov():
    mapping = train_vocabulary(np.array([3, 1, 3, 4, 1, 3]), 6)
    assert mapping.tolist() == [4, 2, 4, 1, 3, 4]  # 3 (3 times), then 1 and 4 (twice: by id); 0, 2, 5 → OOV 4


def test_sizes_are_the_ids_seen_in_train_plus_two(datasets):
    everything, train_only = datasets
    seen = ids_of(everything, "train")
    assert [(f.name, f.cardinality) for f in train_only.features] == [
        (name, len(np.unique(seen[name])) + 2) for name in train_only.feature_names]


def test_table_rows_match_fuxictr(datasets):
    """FuxiCTR's tokenizer over the same split (ids seen in train + PAD + OOV): 9,717 rows in all."""
    everything, train_only = datasets
    assert sum(f.cardinality for f in train_only.features) == 9_717
    assert sum(f.cardinality for f in everything.features) == 10_479


def test_train_ids_are_one_to_k_and_unseen_ids_read_as_oov(datasets):
    everything, train_only = datasets
    for feature in train_only.features:
        old_train = ids_of(everything, "train")[feature.name]
        new_train = ids_of(train_only, "train")[feature.name]
        assert new_train.min() == 1 and new_train.max() == feature.cardinality - 2  # padding 0 never looked up
        for split in ("val", "test"):
            old, new = ids_of(everything, split)[feature.name], ids_of(train_only, split)[feature.name]
            unseen = ~np.isin(old, old_train)
            assert (new[unseen] == feature.cardinality - 1).all()  # OOV: the last row
            assert (new[~unseen] >= 1).all() and (new[~unseen] <= feature.cardinality - 2).all()
            assert (new != 0).all()
    unseen_movies = ~np.isin(ids_of(everything, "val")["movie"], ids_of(everything, "train")["movie"])
    assert unseen_movies.any()  # the val split does have movies never rated in train


def test_renumbering_is_one_to_one_on_train_ids(datasets):
    everything, train_only = datasets
    old, new = ids_of(everything, "test")["movie"], ids_of(train_only, "test")["movie"]
    seen = new != train_only.features[1].cardinality - 1
    pairs = np.unique(np.stack([old[seen], new[seen]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_padding_row_is_recorded_for_the_init(datasets):
    from dlrs_bench.models.init import has_padding_row

    everything, train_only = datasets
    assert has_padding_row(train_only.info) and not has_padding_row(everything.info)
    assert "vocabulary" not in everything.info


@pytest.mark.parametrize("split", ["random", "temporal"])
def test_check_data_tables_match_the_built_dataset(split):
    options = MovieLensOptions(vocabulary="train", split=split)
    assert options.check_data().tables == [(f.name, f.cardinality) for f in build(vocabulary="train",
                                                                                  split=split).features]
    assert MovieLensOptions(split=split).check_data().tables == BUNDLED_TABLES
    assert len(BUNDLED_TRAIN_TABLES) == 2


def test_other_splits_leave_train_tables_to_the_run():
    assert MovieLensOptions(vocabulary="train", split_seed=3).check_data().tables is None


def test_default_vocabulary_keeps_cache_and_scenario_ids(datasets):
    from dlrs_bench.config.expand import scenario_id
    from dlrs_bench.config.schema import validate_scenario

    everything, train_only = datasets
    assert everything.summary()["cache"]["identity"] != train_only.summary()["cache"]["identity"]
    model = {"name": "dlrm", "embedding_dim": 16, "bottom_mlp": [32, 16], "top_mlp": [16, 1]}
    specs = [validate_scenario({"dataset": {"name": "movielens-latest-small", **extra}, "model": model,
                                "target": {"value": 0.7}})[0] for extra in ({}, {"vocabulary": "all"},
                                                                            {"vocabulary": "train"})]
    assert scenario_id(specs[0]) == scenario_id(specs[1]) != scenario_id(specs[2])
