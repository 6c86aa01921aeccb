"""Caches whose files were changed byte by byte after preparation: every read refuses the bad row
(naming the file, the feature and the cache row) instead of training or evaluating on it, and a
suite run on such a cache records the scenario ``failed`` with that message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DATASET, tiny_suite
from test_cli import EXIT_FAILED, EXIT_OK, invoke, results_of, write

from dlrs_bench.data.base import build_dataset, dataset_from_cache
from dlrs_bench.data.batching import iter_batches
from dlrs_bench.data.cache import CacheWriter, Manifest, open_cache
from dlrs_bench.data.integrity import DamagedCacheError, column_max
from dlrs_bench.data.rows import RowSet
from dlrs_bench.data.synthetic import SyntheticOptions

ROWS, NUM_DENSE, CARDINALITIES = 3000, 4, [64, 32, 16]  # the tiny suite's data: train [0, 2400), val [2400, 2700)
KEYS = ["t0", "t1", "t2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean synthetic cache written by ``dlrs-bench data prepare`` (int32 ids)."""
    out = tmp_path_factory.mktemp("prepared") / "syn"
    args = ["data", "prepare", "synthetic", "--rows", ROWS, "--set", f"cardinalities={CARDINALITIES}",
            "--set", f"num_dense={NUM_DENSE}", "--set", "signal=2.0", "--out", out]
    assert invoke(*args).exit_code == EXIT_OK
    return out


@pytest.fixture
def cache_copy(prepared: Path, tmp_path: Path) -> Path:
    """A copy of the clean cache, for a test to damage."""
    return Path(shutil.copytree(prepared, tmp_path / "syn"))


def poke(file: Path, dtype: type, item: int, value: float) -> None:
    """Overwrite item ``item`` (counted in ``dtype`` items) of ``file`` with ``value``."""
    array = np.memmap(file, dtype=dtype, mode="r+")
    array[item] = value
    array.flush()
    del array


def options(path: Path, **update: object) -> SyntheticOptions:
    return SyntheticOptions(path=str(path), **update)


def read_all(split, shuffle_seed: int | None) -> None:
    """Read every batch of ``split``: in order (contiguous reads) or shuffled (gathers)."""
    for _ in iter_batches(split, 256, KEYS, seed=shuffle_seed):
        pass


def message(row: int, *parts: str) -> str:
    """A regular expression: the start of a damage message naming ``parts`` (file, ...) and ``row``."""
    return re.escape(parts[0]) + rf": row {row:,} holds " + ".*".join(re.escape(p) for p in parts[1:])


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize("shuffle", ["none", "permutation"])
def test_a_label_7_in_train_is_refused_when_its_batch_is_read(cache_copy, shuffle):
    poke(cache_copy / "labels.u8", np.uint8, 1234, 7)
    train = build_dataset(options(cache_copy, shuffle=shuffle)).splits["train"]
    with pytest.raises(DamagedCacheError, match=message(1234, str(cache_copy / "labels.u8"), "label 7",
                                                         "labels must be 0 or 1", "data prepare")):
        read_all(train, shuffle_seed=1)


def test_a_label_2_in_val_is_refused_by_evaluation_and_the_ctr(cache_copy):
    poke(cache_copy / "labels.u8", np.uint8, 2500, 2)
    dataset = build_dataset(options(cache_copy))
    val = dataset.splits["val"]
    expected = message(2500, str(cache_copy / "labels.u8"), "label 2")
    for read in (val.labels, lambda: val.ctr, lambda: read_all(val, shuffle_seed=None)):
        with pytest.raises(DamagedCacheError, match=expected):
            read()
    assert dataset.splits["train"].ctr > 0  # the other splits read as before


def test_a_bad_label_in_a_subset_names_its_cache_row(cache_copy):
    poke(cache_copy / "labels.u8", np.uint8, 2001, 9)
    train = build_dataset(options(cache_copy)).splits["train"].take(np.arange(2000, 2100))  # gathered labels
    with pytest.raises(DamagedCacheError, match=message(2001, "labels.u8", "label 9")):
        train.labels()


# ---------------------------------------------------------------- dense values


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shuffle", ["none", "permutation"])
def test_a_non_finite_dense_value_is_refused(cache_copy, value, shuffle):
    poke(cache_copy / "dense.f32", np.float32, 777 * NUM_DENSE + 2, value)
    train = build_dataset(options(cache_copy, shuffle=shuffle)).splits["train"]
    with pytest.raises(DamagedCacheError, match=message(777, str(cache_copy / "dense.f32"), f"{value}",
                                                         "dense column 2 (of 4)", "must be finite")):
        read_all(train, shuffle_seed=3)


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("column,value", [(1, 32), (1, 10**6), (2, -1), (0, -(2**31))])
@pytest.mark.parametrize("shuffle", ["none", "permutation"])
def test_an_id_outside_its_table_is_refused(cache_copy, column, value, shuffle):
    """An id = the cardinality (or past it), or negative, in the int32 ids file."""
    poke(cache_copy / "sparse.i32", np.int32, 1500 * len(KEYS) + column, value)
    train = build_dataset(options(cache_copy, shuffle=shuffle)).splits["train"]
    cardinality = CARDINALITIES[column]
    with pytest.raises(DamagedCacheError, match=message(
            1500, str(cache_copy / "sparse.i32"), f"id {value} of feature {KEYS[column]}",
            f"outside its table [0, {cardinality})", "data prepare")):
        read_all(train, shuffle_seed=2)


def test_a_bad_stored_id_of_a_synthesised_bag_is_refused(cache_copy):
    """MLPerf multi-hot: the bags derived from a stored id are only as good as that id."""
    poke(cache_copy / "sparse.i32", np.int32, 10 * len(KEYS) + 1, -5)
    cache = open_cache(cache_copy)
    dataset = dataset_from_cache(options(cache_copy), cache, {"train": RowSet(0, 2400)}, {}, [1, 4, 1])
    with pytest.raises(DamagedCacheError, match=message(10, "sparse.i32", "id -5 of feature t1")):
        read_all(dataset.splits["train"], shuffle_seed=None)


def bag_cache(folder: Path) -> Path:
    """A cache of 40 rows: one-hot ``a`` (5 ids), ``m`` stored 2 ids a row (9), ``b`` variable-length
    bags (17; row i holds i % 4 ids), ids int32, as the bundled MovieLens stores its genres."""
    rows = 40
    lengths = np.arange(rows) % 4
    values = np.arange(int(lengths.sum())) % 17
    sparse = np.stack([np.arange(rows) % 5, np.arange(rows) % 9, (np.arange(rows) + 1) % 9], axis=1)
    with CacheWriter(folder, 2, 3, jagged=("b",)) as writer:
        writer.append(np.arange(rows) % 2, np.zeros((rows, 2)), sparse, {"b": (lengths, values)})
        return writer.commit(Manifest(dataset="bags", rows=rows, num_dense=2, features={"a": 5, "m": 9, "b": 17},
                                      sparse_dtype="int32", ctr=0.5, parts=[rows], options={}, inputs=[],
                                      skipped={}, created_at="", bags={"m": 2, "b": 0}), "int32")


def bag_split(folder: Path):
    cache = open_cache(folder)
    return dataset_from_cache(options(folder), cache, {"train": RowSet(0, cache.manifest.rows)}, {}).splits["train"]


@pytest.mark.parametrize("value", [17, -1])
def test_a_bad_id_in_a_variable_length_bag_names_its_row(tmp_path, value):
    folder = bag_cache(tmp_path / "bags")
    offsets = np.fromfile(folder / "bags" / "b.offsets.i64", np.int64)
    poke(folder / "bags" / "b.values.i32", np.int32, int(offsets[22]) + 1, value)  # row 22 holds 2 ids
    split = bag_split(folder)
    expected = message(22, str(folder / "bags" / "b.values.i32"), f"id {value} of feature b", "[0, 17)")
    for positions in (slice(0, 40), slice(20, 30), np.array([3, 22, 7]), np.array([22])):
        with pytest.raises(DamagedCacheError, match=expected):
            split.read(positions)
    split.read(np.array([21, 23, 1]))  # the other rows read as before


@pytest.mark.parametrize(("item", "value", "bag"), [(10, 5, "[12, 5)"), (10, 10_000, "[12, 10000)"),
                                                    (10, -3, "[12, -3)"), (39, 100, "[55, 100)")])
def test_bag_offsets_that_are_not_a_range_of_the_values_are_refused(tmp_path, item, value, bag):
    """An offset moved back (a bag of negative length), below 0 or past the values: the row whose bag it ends
    is named, by the contiguous read and the gather alike (the last offset sets the values file's size, which
    opening the cache checks)."""
    folder = bag_cache(tmp_path / "bags")
    poke(folder / "bags" / "b.offsets.i64", np.int64, item, value)
    split = bag_split(folder)
    row = item - 1
    expected = (re.escape(f"{folder / 'bags' / 'b.offsets.i64'}: row {row} has the bag {bag}, not a range within "
                          "the 60 ids of feature b (the file changed since"))
    for positions in (slice(0, 40), slice(row, row + 1), np.array([3, row, 7])):
        with pytest.raises(DamagedCacheError, match=expected):
            split.read(positions)
    split.read(np.array([3, 7]))  # the other rows read as before


def test_a_bad_id_in_a_fixed_width_stored_bag_names_its_feature(tmp_path):
    folder = bag_cache(tmp_path / "bags")
    poke(folder / "sparse.i32", np.int32, 31 * 3 + 2, 9)  # row 31, the second id of m
    split = bag_split(folder)
    for positions in (slice(0, 40), np.array([5, 31])):
        with pytest.raises(DamagedCacheError, match=message(31, "sparse.i32", "id 9 of feature m", "[0, 9)")):
            split.read(positions)


def test_a_clean_cache_reads_every_row(tmp_path):
    split = bag_split(bag_cache(tmp_path / "bags"))
    assert len(split.read(slice(0, 40)).labels) == 40 and len(split.read(np.arange(39, -1, -1)).labels) == 40


@pytest.mark.parametrize("rows", [1, 2, 63, 64, 65, 128, 129, 1000, 4097])
def test_column_max_is_the_max_of_each_column(rows):
    ids = np.random.default_rng(rows).integers(0, 2**32, (rows, 5), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(column_max(ids), ids.max(axis=0))


# ---------------------------------------------------------------- through `dlrs-bench run`


def damaged_suite(cache: Path, compressors: list[dict], **defaults: object) -> dict:
    suite = tiny_suite("damaged", matrix={"compressor": compressors})
    suite["defaults"]["dataset"] = {"name": "synthetic", "path": str(cache)}
    suite["defaults"].update(defaults)
    return suite


COMPRESSORS = [{"kind": "none"}, {"kind": "hashing", "ratio": 4},
               {"kind": "robe", "ratio": 8, "chunk": 2, "gradient": "sparse"}]


@pytest.mark.parametrize("file,dtype,item,value,expected", [
    ("labels.u8", np.uint8, 1234, 7, message(1234, "labels.u8", "label 7")),
    ("sparse.i32", np.int32, 1500 * 3 + 0, 64, message(1500, "sparse.i32", "id 64 of feature t0")),
    ("sparse.i32", np.int32, 100 * 3 + 0, -1, message(100, "sparse.i32", "id -1 of feature t0")),
], ids=["label-7", "id-of-the-table-size", "id-minus-1"])
def test_a_run_on_a_damaged_cache_fails_with_the_message(cache_copy, tmp_path, file, dtype, item, value, expected):
    poke(cache_copy / file, dtype, item, value)
    suite = damaged_suite(cache_copy, COMPRESSORS, target={"metric": "logloss", "value": 0.3})
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_FAILED
    results = results_of(tmp_path / "r", "damaged")
    assert len(results) == len(COMPRESSORS)
    for label, outcome in results.items():
        assert outcome["status"] == "failed", label
        assert outcome["error"]["type"] == "DamagedCacheError"
        assert re.match(re.escape(str(cache_copy)) + "/" + expected, outcome["error"]["message"])


def test_a_run_on_two_ranks_fails_with_the_rank_s_message(tmp_path, monkeypatch):
    """The tiny suite's own first-use cache, damaged (the ranks inherit ``DLRS_BENCH_CACHE``)."""
    monkeypatch.setenv("DLRS_BENCH_CACHE", str(tmp_path / "first-use"))
    cache = build_dataset(SyntheticOptions(**TINY_DATASET)).splits["train"].cache.path
    poke(cache / "sparse.i32", np.int32, 2000 * 3 + 1, -1)
    suite = tiny_suite("damaged", matrix={"compressor": [{"kind": "hashing", "ratio": 4}]})
    suite["defaults"].update(processes=2)
    suite["defaults"]["train"]["optimizer"] = "adagrad"
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_FAILED
    (outcome,) = results_of(tmp_path / "r", "damaged").values()
    assert outcome["status"] == "failed"
    assert re.search(message(2000, str(cache / "sparse.i32"), "id -1 of feature t1"), outcome["error"]["message"])
