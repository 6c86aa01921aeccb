"""Datasets (bundled MovieLens, synthetic), splits and batching into TorchRec KJTs."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from dlrs_bench.data.base import CTRSplit, build_dataset
from dlrs_bench.data.batching import iter_batches, make_batch
from dlrs_bench.data.movielens import BUNDLED, MovieLensLatestSmall, MovieLensOptions
from dlrs_bench.data.splits import split_rows
from dlrs_bench.data.synthetic import Synthetic, SyntheticOptions
from dlrs_bench.errors import UserInputError

ML_ROWS = 100_836


@pytest.fixture(scope="module")
def movielens():
    return MovieLensLatestSmall.build(MovieLensOptions())


@pytest.fixture(scope="module")
def movielens_temporal():
    return MovieLensLatestSmall.build(MovieLensOptions(split="temporal"))


def rows_of(split: CTRSplit, key: str) -> list[list[int]]:
    j = split.to_memory().sparse[key]
    return [j.values[j.offsets[i] : j.offsets[i + 1]].tolist() for i in range(len(split))]


# ---------------------------------------------------------------- MovieLens


def test_movielens_sizes_ctr_and_cardinalities(movielens):
    splits = movielens.splits
    assert sum(len(s) for s in splits.values()) == ML_ROWS
    labels = torch.cat([s.to_memory().labels for s in splits.values()])
    assert set(labels.unique().tolist()) == {0.0, 1.0}
    assert float(labels.mean()) == pytest.approx(0.482, abs=5e-4)  # 48,580 of 100,836 ratings are >= 4
    cards = {f.name: f.cardinality for f in movielens.features}
    assert cards["user"] == 610
    assert cards["movie"] == 9742
    assert cards["genres"] == 20
    assert [f.name for f in movielens.features] == ["user", "movie", "genres", "year"]
    assert [f.multi_hot for f in movielens.features] == [False, False, True, False]
    assert movielens.num_dense == 4
    for split in splits.values():
        assert split.to_memory().dense.shape == (len(split), 4) and split.to_memory().dense.dtype == torch.float32
        assert torch.isfinite(split.to_memory().dense).all()
        for f in movielens.features:
            values = split.to_memory().sparse[f.name].values
            assert values.dtype == torch.int64
            assert int(values.min()) >= 0 and int(values.max()) < f.cardinality


def test_movielens_random_split_is_80_10_10_and_disjoint(movielens):
    sizes = {k: len(s) for k, s in movielens.splits.items()}
    assert sizes == {"train": ML_ROWS - 2 * 10_083, "val": 10_083, "test": 10_083}
    # every (user, movie) pair is rated once in ml-latest-small, so pairs identify rows
    pairs = {}
    for name, split in movielens.splits.items():
        user = split.to_memory().sparse["user"].values.tolist()
        movie = split.to_memory().sparse["movie"].values.tolist()
        pairs[name] = set(zip(user, movie))
        assert len(pairs[name]) == len(split)
    assert not pairs["train"] & pairs["val"]
    assert not pairs["train"] & pairs["test"]
    assert not pairs["val"] & pairs["test"]
    assert len(pairs["train"] | pairs["val"] | pairs["test"]) == ML_ROWS


def test_movielens_split_seed_changes_the_split_deterministically(movielens):
    again = MovieLensLatestSmall.build(MovieLensOptions())
    other = MovieLensLatestSmall.build(MovieLensOptions(split_seed=1))
    val, again_val, other_val = (d.splits["val"].to_memory() for d in (movielens, again, other))
    assert torch.equal(again_val.sparse["user"].values, val.sparse["user"].values)
    assert torch.equal(again_val.dense, val.dense)
    assert not torch.equal(other_val.sparse["user"].values, val.sparse["user"].values)


def test_movielens_temporal_split_orders_by_time(movielens_temporal, movielens):
    s = movielens_temporal.splits
    assert {k: len(v) for k, v in s.items()} == {"train": ML_ROWS - 2 * 10_083, "val": 10_083, "test": 10_083}
    year = {k: v.to_memory().dense[:, 2] for k, v in s.items()}  # standardised rating time: monotone in the timestamp
    assert float(year["train"].max()) <= float(year["val"].min())
    assert float(year["val"].max()) <= float(year["test"].min())
    assert float(year["train"].max()) <= float(year["test"].min())
    assert movielens_temporal.info["split"]["protocol"] == "temporal"
    # the random split, by contrast, mixes times
    r = movielens.splits
    assert float(r["train"].to_memory().dense[:, 2].max()) > float(r["test"].to_memory().dense[:, 2].min())


def test_movielens_dense_features_are_standardised_on_train(movielens):
    train = movielens.splits["train"].to_memory().dense.double()
    torch.testing.assert_close(train.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(train.std(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-3, rtol=0)


def test_movielens_genres_bag_of_a_known_movie(movielens):
    with (BUNDLED / "movies.csv").open(encoding="utf-8", newline="") as f:
        movies = list(csv.reader(f))[1:]
    vocab = sorted({g for row in movies for g in row[2].split("|")})
    assert len(vocab) == 20 and "(no genres listed)" in vocab
    # movieId 1 is the first row of movies.csv (movie index 0): Toy Story (1995)
    assert movies[0][:2] == ["1", "Toy Story (1995)"]
    expected = movies[0][2].split("|")
    assert expected == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    titles = [r[1].strip() for r in movies]
    years = sorted({int(t[-5:-1]) for t in titles if t[-6:-5] == "(" and t[-5:-1].isdigit()})
    found = 0
    for split in movielens.splits.values():
        movie = split.to_memory().sparse["movie"].values
        rows = (movie == 0).nonzero().flatten()
        bags = rows_of(split.take(rows), "genres")
        year_ids = split.to_memory().sparse["year"].values[rows]
        for bag in bags:
            assert [vocab[i] for i in bag] == expected
        assert (year_ids == years.index(1995) + 1).all()  # year ids: 0 = unknown, then sorted years
        found += len(rows)
    ratings = sum(1 for line in (BUNDLED / "ratings.csv").open() if line.split(",")[1] == "1")
    assert found == ratings == 215


def test_movielens_labels_follow_threshold():
    high = MovieLensLatestSmall.build(MovieLensOptions(label_threshold=4.5))
    labels = torch.cat([s.to_memory().labels for s in high.splits.values()])
    assert float(labels.mean()) < 0.482 - 0.1  # fewer positives at rating >= 4.5


def ratings_folder(tmp_path, lines: list[str]):
    folder = tmp_path / "ml"
    folder.mkdir()
    shutil.copy(BUNDLED / "movies.csv", folder / "movies.csv")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_malformed_ratings_csv_names_file_and_line(tmp_path):
    folder = ratings_folder(tmp_path, ["userId,movieId,rating,timestamp", "1,1,4.0,964982703",
                                       "1,3,4.0,964981247", "1,6,four,964982224", "1,47,5.0,964983815"])
    with pytest.raises(UserInputError) as info:
        MovieLensLatestSmall.build(MovieLensOptions(path=str(folder)))
    assert f"{folder / 'ratings.csv'}:4:" in str(info.value)
    assert "four" in str(info.value)


def test_ratings_csv_with_missing_field_and_bad_header(tmp_path):
    folder = ratings_folder(tmp_path, ["userId,movieId,rating,timestamp", "1,1,4.0"])
    with pytest.raises(UserInputError, match=r"ratings\.csv:2: expected 4 fields, got 3"):
        MovieLensLatestSmall.build(MovieLensOptions(path=str(folder)))
    (folder / "ratings.csv").write_text("user,movie,rating,time\n1,1,4.0,1\n")
    with pytest.raises(UserInputError, match=r"ratings\.csv:1: expected header"):
        MovieLensLatestSmall.build(MovieLensOptions(path=str(folder)))


def test_ratings_of_unknown_movie_is_user_input_error(tmp_path):
    folder = ratings_folder(tmp_path, ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,999999,4.0,1"])
    with pytest.raises(UserInputError, match="movieId 999999 is not in movies.csv"):
        MovieLensLatestSmall.build(MovieLensOptions(path=str(folder)))


def test_missing_movielens_folder_is_user_input_error(tmp_path):
    with pytest.raises(UserInputError, match="cannot read"):
        MovieLensLatestSmall.build(MovieLensOptions(path=str(tmp_path / "nowhere")))


def test_split_rows_partition():
    rows = split_rows(1001, (0.8, 0.1, 0.1), seed=3)
    assert [len(rows[k]) for k in ("train", "val", "test")] == [801, 100, 100]
    together = np.concatenate([rows["train"], rows["val"], rows["test"]])
    assert sorted(together.tolist()) == list(range(1001))
    key = np.random.default_rng(0).random(1001)
    temporal = split_rows(1001, (0.8, 0.1, 0.1), seed=None, order_key=key)
    assert key[temporal["train"]].max() <= key[temporal["test"]].min()


# ---------------------------------------------------------------- synthetic


def synth(**kw):
    base = {"rows": 3000, "cardinalities": [50, 20, 10], "num_dense": 3}
    return Synthetic.build(SyntheticOptions(**{**base, **kw}))


def same_split(a, b) -> bool:
    return (torch.equal(a.labels, b.labels) and torch.equal(a.dense, b.dense)
            and all(torch.equal(a.sparse[f].values, b.sparse[f].values) for f in a.sparse))


def same_dataset(x, y) -> bool:
    return all(same_split(x.splits[k].to_memory(), y.splits[k].to_memory()) for k in x.splits)


def test_synthetic_is_deterministic_per_seed():
    a, b, c = synth(seed=4), synth(seed=4), synth(seed=5)
    assert same_dataset(a, b)
    assert a.info["ceiling"] == b.info["ceiling"]
    assert not torch.equal(a.splits["train"].to_memory().labels, c.splits["train"].to_memory().labels)
    a_train, c_train = a.splits["train"].to_memory(), c.splits["train"].to_memory()
    assert not torch.equal(a_train.sparse["t0"].values, c_train.sparse["t0"].values)


def test_synthetic_through_the_registry():
    ds = build_dataset(SyntheticOptions(rows=2000, cardinalities=[10, 10]))
    assert ds.name == "synthetic"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 1600, "val": 200, "test": 200}


@pytest.mark.parametrize("ctr", [0.1, 0.3, 0.6])
def test_synthetic_base_ctr_close_to_requested(ctr):
    ds = synth(rows=20_000, base_ctr=ctr)
    labels = torch.cat([s.to_memory().labels for s in ds.splits.values()])
    assert float(labels.mean()) == pytest.approx(ctr, abs=0.015)


def test_synthetic_ids_within_cardinality_and_bag_sizes():
    ds = synth(cardinalities=[40, 7, 3], multi_hot_sizes=[1, 3, 2])
    assert [(f.name, f.cardinality, f.multi_hot) for f in ds.features] == [
        ("t0", 40, False), ("t1", 7, True), ("t2", 3, True)]
    for split in ds.splits.values():
        assert split.to_memory().dense.shape == (len(split), 3)
        for f, hot in zip(ds.features, [1, 3, 2]):
            j = split.to_memory().sparse[f.name]
            lengths = j.offsets[1:] - j.offsets[:-1]
            assert (lengths == hot).all()
            assert len(j.values) == hot * len(split)
            assert int(j.values.min()) >= 0 and int(j.values.max()) < f.cardinality


def test_synthetic_zipf_skew():
    skewed = synth(rows=20_000, cardinalities=[100], zipf_exponent=1.2, num_dense=0)
    uniform = synth(rows=20_000, cardinalities=[100], zipf_exponent=0.0, num_dense=0)

    def counts(ds):
        ids = torch.cat([s.to_memory().sparse["t0"].values for s in ds.splits.values()])
        return torch.bincount(ids, minlength=100).double()

    c = counts(skewed)
    assert c.max() > 20 * c.median()
    u = counts(uniform)
    assert u.min() > 0
    assert u.max() < 1.5 * u.mean() and u.min() > 0.5 * u.mean()


def test_synthetic_ceiling_auc_rises_with_signal():
    ceilings = [synth(rows=20_000, signal=s).info["ceiling"]["val"]["auc"] for s in (0.3, 1.0, 3.0)]
    assert all(a > 0.5 for a in ceilings)
    assert ceilings[0] < ceilings[1] < ceilings[2]
    ds = synth(rows=20_000, signal=3.0)
    for split in ("val", "test"):
        ceiling = ds.info["ceiling"][split]
        assert set(ceiling) == {"auc", "logloss", "ne", "rows"} and ceiling["rows"] == 2000
        assert 0.5 < ceiling["auc"] < 1 and ceiling["ne"] < 1


def test_synthetic_options_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multi_hot_sizes"):
        SyntheticOptions(cardinalities=[10, 10], multi_hot_sizes=[1])
    with pytest.raises(ValidationError):
        SyntheticOptions(base_ctr=1.0)


# ---------------------------------------------------------------- batching


@pytest.fixture
def small_split(tmp_path) -> CTRSplit:
    """Five rows in a cache: one-hot 'a', multi-hot 'b' with bags of lengths 2, 0, 3, 1, 1."""
    from dlrs_bench.config.schema import DatasetOptions
    from dlrs_bench.data.base import dataset_from_cache
    from dlrs_bench.data.cache import CacheWriter, Manifest, open_cache
    from dlrs_bench.data.rows import RowSet

    b_rows = [[10, 11], [], [12, 13, 14], [15], [16]]
    with CacheWriter(tmp_path / "small", 2, 1, jagged=("b",)) as writer:
        writer.append(np.array([0, 1, 0, 1, 1]), np.arange(10, dtype=np.float32).reshape(5, 2),
                      np.arange(5).reshape(5, 1),
                      {"b": (np.array([len(r) for r in b_rows]), np.array([v for r in b_rows for v in r]))})
        writer.commit(Manifest(dataset="small", rows=5, num_dense=2, features={"a": 5, "b": 17}, sparse_dtype="int32",
                               ctr=0.6, parts=[5], options={}, inputs=[], skipped={}, created_at="",
                               bags={"b": 0}), "int32")
    cache = open_cache(tmp_path / "small")
    return dataset_from_cache(DatasetOptions(name="small"), cache, {"train": RowSet(0, 5)}, {}).splits["train"]


def test_make_batch_matches_jagged_rows(small_split):
    rows = np.array([3, 0, 2, 1])
    batch = make_batch(small_split, rows, ["a", "b"])
    kjt = batch.sparse_features
    assert kjt.keys() == ["a", "b"]
    assert kjt.lengths().tolist() == [1, 1, 1, 1, 1, 2, 3, 0]
    assert kjt.values().tolist() == [3, 0, 2, 1, 15, 10, 11, 12, 13, 14]
    assert kjt.stride() == 4
    per_key = kjt.to_dict()
    assert [t.tolist() for t in per_key["b"].to_dense()] == [[15], [10, 11], [12, 13, 14], []]
    assert torch.equal(batch.dense_features, small_split.to_memory().dense[rows])
    assert torch.equal(batch.labels, small_split.to_memory().labels[rows])


def test_make_batch_key_order_follows_keys(small_split):
    kjt = make_batch(small_split, np.array([4, 2]), ["b", "a"]).sparse_features
    assert kjt.keys() == ["b", "a"]
    assert kjt.lengths().tolist() == [1, 3, 1, 1]
    assert kjt.values().tolist() == [16, 12, 13, 14, 4, 2]


def test_make_batch_on_movielens_genres(movielens):
    split = movielens.splits["val"]
    rows = np.array([5, 17, 2, 1000])
    kjt = make_batch(split, rows, movielens.feature_names).sparse_features
    expected = rows_of(split, "genres")
    got = [t.tolist() for t in kjt.to_dict()["genres"].to_dense()]
    assert got == [expected[i] for i in rows.tolist()]
    assert kjt.to_dict()["user"].values().tolist() == split.to_memory().sparse["user"].values[rows].tolist()


def test_iter_batches_covers_every_row_once(small_split):
    batches = list(iter_batches(small_split, 2, ["a", "b"]))
    assert [len(b.labels) for b in batches] == [2, 2, 1]
    assert torch.cat([b.sparse_features.to_dict()["a"].values() for b in batches]).tolist() == [0, 1, 2, 3, 4]


def test_iter_batches_shuffled_covers_every_row_once_and_is_reproducible():
    ds = synth(rows=1000, shuffle="permutation")
    split = ds.splits["train"]
    row_id = split.to_memory().dense[:, 0]  # standard-normal dense column: distinct per row

    def order(seed):
        return torch.cat([b.dense_features[:, 0] for b in iter_batches(split, 64, ds.feature_names, seed)])

    first = order(7)
    assert len(first) == len(split) == 800
    assert torch.equal(first.sort().values, row_id.sort().values)  # a permutation: each row once
    assert not torch.equal(first, row_id)  # actually shuffled
    assert torch.equal(order(7), first)  # same seed, same order
    assert not torch.equal(order(8), first)


@pytest.mark.gpu
def test_prefetch_moves_every_batch_in_order_and_stops_early():
    import threading

    from dlrs_bench.data.batching import iter_batches, prefetch
    from dlrs_bench.data.synthetic import Synthetic, SyntheticOptions

    split = Synthetic.build(SyntheticOptions(rows=2000, cardinalities=[50, 20], num_dense=3)).splits["train"]
    keys = ["t0", "t1"]
    device = torch.device("cuda", 0)
    expected = list(iter_batches(split, 128, keys, 1))
    got = list(prefetch(iter(iter_batches(split, 128, keys, 1)), device))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.labels.device.type == "cuda"
        assert torch.equal(a.labels.cpu(), b.labels) and torch.equal(a.sparse_features.values().cpu(),
                                                                     b.sparse_features.values())
    early = prefetch(iter(iter_batches(split, 128, keys)), device)
    next(early)
    early.close()
    assert not any(t.name == "dlrs-bench-prefetch" and t.is_alive() for t in threading.enumerate())
