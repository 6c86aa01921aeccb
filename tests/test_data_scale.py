"""The out-of-core data path: row sets, the keyed permutation, shuffle protocols, reads per rank,
multi-hot synthesis, the prepare-time shuffle, synthetic caches, and training under a memory limit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.config.schema import DatasetOptions, validate_scenario
from dlrs_bench.data import shuffle as external
from dlrs_bench.data.base import ShuffleSpec, build_dataset, subset_rows, synthesise_bags
from dlrs_bench.data.batching import iter_batches, make_batch
from dlrs_bench.data.cache import Cache, CacheWriter, Manifest, open_cache
from dlrs_bench.data.order import AUTO_PERMUTATION_ROWS, PERMUTATION_MAX_ROWS, ReadOrder
from dlrs_bench.data.rows import KeyedPermutation, RowSet
from dlrs_bench.data.synthetic import IID, SyntheticOptions
from dlrs_bench.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]


def synthetic(**kw) -> SyntheticOptions:
    return SyntheticOptions(**{"rows": 5000, "cardinalities": [200, 50, 7], "num_dense": 2, **kw})


def row_ids(batches) -> list[int]:
    """The dense column 0 of synthetic rows: a standard normal value, distinct per row."""
    return [float(v) for b in batches for v in b.dense_features[:, 0]]


# ---------------------------------------------------------------- row sets and the keyed permutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 4097])
def test_keyed_permutation_is_a_bijection(n):
    values = KeyedPermutation(n, seed=3).values(0, n)
    assert sorted(values.tolist()) == list(range(n))
    if n > 10:
        assert values.tolist() != list(range(n))
        assert KeyedPermutation(n, seed=4).values(0, n).tolist() != values.tolist()
        assert KeyedPermutation(n, seed=3).values(5, 9).tolist() == values[5:9].tolist()


def test_keyed_permutation_of_terabyte_size_costs_only_what_is_asked():
    n = 4_373_472_329  # Criteo Terabyte rows
    values = KeyedPermutation(n, seed=0).values(0, 100_000)
    assert len(set(values.tolist())) == 100_000 and values.min() >= 0 and values.max() < n
    assert values.max() > n // 2  # spread over the whole range


def test_subsets_are_nested_sorted_and_seeded():
    small, large = (subset_rows(10_000, DatasetOptions(name="x", num_samples=k)) for k in (100, 1000))
    assert set(small.tolist()) < set(large.tolist())
    assert small.tolist() == sorted(small.tolist())
    other = subset_rows(10_000, DatasetOptions(name="x", num_samples=100, subset_seed=1))
    assert set(other.tolist()) != set(small.tolist())


def test_row_set_positions_map_to_cache_rows():
    assert RowSet(10, 20).rows(slice(2, 5)) == slice(12, 15)
    assert RowSet(10, 20).rows(np.array([0, 9])).tolist() == [10, 19]
    index = RowSet(index=np.array([5, 3, 9, 1]))
    assert index.rows(slice(1, 3)).tolist() == [3, 9]
    assert index.subset(np.array([3, 0])).rows(slice(0, 2)).tolist() == [1, 5]
    assert len(RowSet(10, 20).subset(slice(2, 5))) == 3


# ---------------------------------------------------------------- shuffle protocols


def positions(order: ReadOrder, n: int, batch: int, seed: int | None) -> list[int]:
    out = []
    for p in order.batches(n, batch, seed):
        out.extend(range(p.start, p.stop) if isinstance(p, slice) else p.tolist())
    return out


@pytest.mark.parametrize("protocol", ["permutation", "blocks", "none"])
def test_every_protocol_reads_each_row_once_per_epoch(protocol):
    order = ReadOrder(protocol, block_rows=16, window_rows=64)
    n = 1000
    first = positions(order, n, 100, seed=1)
    assert sorted(first) == list(range(n))
    assert (first == list(range(n))) == (protocol == "none")
    if protocol != "none":
        assert positions(order, n, 100, seed=1) == first
        assert positions(order, n, 100, seed=2) != first
    assert positions(order, n, 100, seed=None) == list(range(n))  # evaluation: in order


def test_permutation_is_the_torch_permutation_of_the_epoch_seed():
    """The protocol of earlier versions: results on small data are unchanged."""
    got = positions(ReadOrder("permutation"), 500, 64, seed=7)
    assert got == torch.randperm(500, generator=torch.Generator().manual_seed(7)).tolist()


def test_blocks_shuffle_rows_within_windows_of_whole_blocks():
    order = ReadOrder("blocks", block_rows=10, window_rows=40)
    got = positions(order, 1000, 25, seed=3)
    for w in range(0, 1000, 40):
        window = got[w : w + 40]
        blocks = {r // 10 for r in window}
        assert len(blocks) == 4  # four whole blocks...
        assert sorted(window) == sorted(r for b in blocks for r in range(10 * b, 10 * b + 10))
    assert got[:40] != sorted(got[:40])  # ...whose rows are mixed
    assert [r // 10 for r in got[::40]] != sorted(r // 10 for r in got[::40])  # blocks in a random order


def test_auto_picks_none_for_a_shuffled_cache_permutation_when_small_else_blocks():
    assert ShuffleSpec().resolve(1000).protocol == "permutation"
    assert ShuffleSpec().resolve(AUTO_PERMUTATION_ROWS + 1).protocol == "blocks"
    assert ShuffleSpec(shuffled_when_prepared=True).resolve(1000).protocol == "none"
    assert ShuffleSpec("blocks").resolve(1000).describe() == {"protocol": "blocks", "block_rows": 4096,
                                                              "window_rows": 1 << 20}
    with pytest.raises(UserInputError, match="shuffle 'permutation' of .* train rows needs"):
        ShuffleSpec("permutation").resolve(PERMUTATION_MAX_ROWS + 1)


def test_training_order_is_recorded_in_the_dataset_summary():
    summary = build_dataset(synthetic(shuffle="blocks", shuffle_block_rows=64)).summary()
    assert summary["train_order"] == {"protocol": "blocks", "block_rows": 64, "window_rows": 1 << 20}
    assert summary["cache"]["row_bytes"] == 1 + 4 * 2 + 4 * 3
    assert summary["cache"]["shuffled_when_prepared"] == {"seed": 0, "rows": 5000, "method": IID}
    assert build_dataset(synthetic()).summary()["train_order"] == {"protocol": "none"}  # i.i.d. rows: in order


# ---------------------------------------------------------------- reading batches


def test_a_range_read_and_a_gather_give_the_same_batch():
    split = build_dataset(synthetic(multi_hot_sizes=[1, 3, 2])).splits["train"]
    keys = [f.name for f in split.layout]
    a, b = make_batch(split, slice(10, 50), keys), make_batch(split, np.arange(10, 50), keys)
    assert torch.equal(a.dense_features, b.dense_features) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
    assert a.sparse_features.lengths().tolist() == [1] * 40 + [3] * 40 + [2] * 40


@pytest.mark.parametrize("protocol", ["permutation", "blocks", "none"])
def test_each_rank_reads_only_its_share(monkeypatch, protocol):
    split = build_dataset(synthetic(shuffle=protocol, shuffle_block_rows=32, shuffle_window_rows=256)
                          ).splits["train"]
    keys = [f.name for f in split.layout]
    read: list[int] = []
    range_read, gather = Cache.read_range, Cache.gather
    monkeypatch.setattr(Cache, "read_range", lambda self, a, b: read.extend(range(a, b)) or range_read(self, a, b))
    monkeypatch.setattr(Cache, "gather", lambda self, rows: read.extend(rows.tolist()) or gather(self, rows))
    shares = []
    for rank in range(3):
        read.clear()
        batches = list(iter_batches(split, 100, keys, seed=5, rank=rank, world=3))
        assert len(read) == sum(len(b.labels) for b in batches)  # nothing read beyond the share
        shares.append(set(read))
    assert not shares[0] & shares[1] and not shares[1] & shares[2] and not shares[0] & shares[2]
    assert set().union(*shares) == set(range(len(split)))


def test_mlperf_bags_are_synthesised_from_the_stored_id():
    ids = np.array([0, 5, 99, 5])
    bags = synthesise_bags(ids, cardinality=100, size=7, table=3)
    assert bags.shape == (4, 7) and bags.dtype == np.int64
    assert bags[:, 0].tolist() == ids.tolist()
    assert bags.min() >= 0 and bags.max() < 100
    assert bags[1].tolist() == bags[3].tolist()  # a function of the id
    assert bags[1].tolist() != synthesise_bags(ids, 100, 7, table=4)[1].tolist()  # per table
    assert len(set(synthesise_bags(np.arange(1000), 10**6, 2, 0)[:, 1].tolist())) > 990  # spread


# ---------------------------------------------------------------- caches: bad files


def small_cache(tmp_path: Path) -> Path:
    with CacheWriter(tmp_path / "c", 1, 1, jagged=("b",)) as writer:
        writer.append(np.array([0, 1, 1]), np.zeros((3, 1)), np.array([[0], [1], [2]]),
                      {"b": (np.array([2, 0, 1]), np.array([4, 5, 6]))})
        writer.commit(Manifest(dataset="x", rows=3, num_dense=1, features={"a": 3, "b": 7}, sparse_dtype="int32",
                               ctr=2 / 3, parts=[3], options={}, inputs=[], skipped={}, created_at="",
                               bags={"b": 0}), "int32")
    return tmp_path / "c"


def test_a_truncated_or_missing_file_names_the_file_and_sizes(tmp_path):
    folder = small_cache(tmp_path)
    assert open_cache(folder).read_range(0, 3).bags["b"][1].tolist() == [4, 5, 6]
    values = folder / "bags" / "b.values.i32"
    values.write_bytes(values.read_bytes()[:-4])
    with pytest.raises(UserInputError, match=r"b\.values\.i32: 8 bytes but the manifest \(3 rows\) says 12"):
        open_cache(folder)
    (folder / "labels.u8").unlink()
    with pytest.raises(UserInputError, match=r"labels\.u8: missing"):
        open_cache(folder)


def test_a_manifest_claiming_more_rows_than_the_files_hold(tmp_path):
    folder = small_cache(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["rows"], manifest["parts"] = 4, [4]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="do not match the manifest"):
        open_cache(folder)


def test_run_refuses_a_truncated_cache_before_training(tmp_path):
    out = tmp_path / "syn"
    assert CliRunner().invoke(app, ["data", "prepare", "synthetic", "--rows", "300", "--out", str(out)]).exit_code == 0
    sparse = next(out.glob("sparse.*"))
    sparse.write_bytes(sparse.read_bytes()[:100])
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "defaults": {
        "dataset": {"name": "synthetic", "path": str(out)}, "model": {"name": "dlrm", "embedding_dim": 4,
                                                                     "bottom_mlp": [4], "top_mlp": [4, 1]},
        "target": {"value": 0.6}}, "scenarios": [{}]}))
    result = CliRunner().invoke(app, ["run", str(suite), "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert f"{sparse}: 100 bytes but the manifest (300 rows) says" in " ".join(result.output.split())


# ---------------------------------------------------------------- the prepare-time shuffle


def row_file(folder: Path, n: int) -> list[tuple[str, int]]:
    """Three files whose rows encode their row number (1, 8 and 16 bytes a row)."""
    rows = np.arange(n, dtype=np.int64)
    (folder / "a").write_bytes((rows % 256).astype(np.uint8).tobytes())
    (folder / "b").write_bytes(rows.tobytes())
    (folder / "c").write_bytes(np.stack([rows, -rows], 1).tobytes())
    return [("a", 1), ("b", 8), ("c", 16)]


@pytest.mark.parametrize("bucket_bytes", [1 << 20, 2000])  # one bucket, then 15 of them
def test_external_shuffle_permutes_rows_whole_and_only_the_given_prefix(tmp_path, bucket_bytes):
    files = row_file(tmp_path, 1200)
    external.shuffle_rows(tmp_path, files, rows=1000, seed=4, bucket_bytes=bucket_bytes, chunk_rows=300)
    b = np.fromfile(tmp_path / "b", np.int64)
    assert sorted(b[:1000].tolist()) == list(range(1000)) and b[:1000].tolist() != list(range(1000))
    assert b[1000:].tolist() == list(range(1000, 1200))  # evaluation rows untouched
    assert np.fromfile(tmp_path / "a", np.uint8).tolist() == (b % 256).tolist()
    assert np.array_equal(np.fromfile(tmp_path / "c", np.int64).reshape(-1, 2), np.stack([b, -b], 1))
    assert not (tmp_path / ".shuffle").exists()


def test_external_shuffle_is_uniform_enough_and_seeded(tmp_path):
    first = []
    for seed in range(300):
        files = row_file(tmp_path, 40)
        external.shuffle_rows(tmp_path, files, rows=40, seed=seed, bucket_bytes=100)  # 10 buckets
        first.append(int(np.fromfile(tmp_path / "b", np.int64)[0]))
    counts = np.bincount(first, minlength=40)
    assert counts.max() < 25 and (counts > 0).sum() > 30  # row at position 0: spread over all rows
    assert np.mean(first) == pytest.approx(19.5, abs=2.5)


def criteo_lines(n: int) -> str:
    rng = np.random.default_rng(0)
    return "".join(f"{i % 2}\t{i}" + "\t1" * 12 + "".join(f"\t{rng.integers(0, 50):08x}" for _ in range(26)) + "\n"
                   for i in range(n))


def test_prepare_with_a_shuffle_seed_shuffles_the_training_days_once(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text(criteo_lines(700))
    runner = CliRunner()
    for name, seed in (("plain", []), ("shuffled", ["--shuffle-seed", "3"])):
        result = runner.invoke(app, ["data", "prepare", "criteo-kaggle", "--raw", str(raw), "--out",
                                     str(tmp_path / name), "--workers", "1", *seed])
        assert result.exit_code == 0, result.output
    plain, shuffled = (open_cache(tmp_path / n) for n in ("plain", "shuffled"))
    assert shuffled.manifest.shuffle.model_dump() == {"seed": 3, "rows": 600, "method": external.METHOD}
    i1 = np.asarray(plain.dense[:, 0])  # I1 = the line number, log-transformed: identifies the row
    j1 = np.asarray(shuffled.dense[:, 0])
    assert sorted(j1[:600].tolist()) == sorted(i1[:600].tolist()) and j1[:600].tolist() != i1[:600].tolist()
    assert j1[600:].tolist() == i1[600:].tolist()  # day 6 (test and val) keeps its order
    order = {v: k for k, v in enumerate(i1.tolist())}
    moved = [order[v] for v in j1.tolist()]
    assert np.array_equal(np.asarray(shuffled.sparse), np.asarray(plain.sparse)[moved])
    assert np.array_equal(np.asarray(shuffled.labels), np.asarray(plain.labels)[moved])

    from dlrs_bench.data.prepared import CriteoKaggleOptions

    dataset = build_dataset(CriteoKaggleOptions(path=str(tmp_path / "shuffled")))
    assert dataset.summary()["train_order"] == {"protocol": "none"}  # MLPerf: shuffled once, read in order
    assert dataset.summary()["cache"]["shuffled_when_prepared"]["seed"] == 3
    assert build_dataset(CriteoKaggleOptions(path=str(tmp_path / "plain"))).summary()["train_order"] == {
        "protocol": "permutation"}
    with pytest.raises(UserInputError, match="split 'temporal' needs rows in file order"):
        build_dataset(CriteoKaggleOptions(path=str(tmp_path / "shuffled"), split="temporal"))


@pytest.mark.parametrize("args,message", [
    (["criteo-tb", "--raw", "{raw}", "--shuffle-seed", "1"], "one input file has no training rows to shuffle"),
    (["synthetic", "--rows", "100", "--shuffle-seed", "1"], "already in random order"),
    (["synthetic", "--rows", "100", "--raw", "{raw}"], "--raw"),
    (["synthetic", "--rows", "100", "--set", "num_dense"], "expected KEY=VALUE"),
    (["synthetic", "--rows", "100", "--set", "shuffle=none"], "chosen when the dataset is read"),
    (["synthetic", "--set", "rows=0"], "rows: Input should be greater than 0"),
    (["criteo-kaggle", "--rows", "5"], "only for synthetic"),
])
def test_data_prepare_refuses_what_cannot_be_done(tmp_path, args, message):
    raw = tmp_path / "day_0"
    raw.write_text(criteo_lines(10))
    result = CliRunner().invoke(app, ["data", "prepare", *[a.format(raw=raw) for a in args], "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- synthetic caches


def test_data_prepare_synthetic_writes_the_rows_of_the_suite_dataset(tmp_path):
    options = synthetic(multi_hot_sizes=[1, 2, 1])
    args = ["data", "prepare", "synthetic", "--rows", "5000", "--set", "cardinalities=[200, 50, 7]",
            "--set", "num_dense=2", "--set", "multi_hot_sizes=[1, 2, 1]", "--out", str(tmp_path / "s"),
            "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    prepared = build_dataset(SyntheticOptions(path=str(tmp_path / "s")))
    generated = build_dataset(options)
    for name in ("train", "val", "test"):
        a, b = prepared.splits[name].to_memory(), generated.splits[name].to_memory()
        assert torch.equal(a.labels, b.labels) and torch.equal(a.dense, b.dense)
        assert all(torch.equal(a.sparse[k].values, b.sparse[k].values) for k in a.sparse)
    assert prepared.info["ceiling"] == generated.info["ceiling"]
    assert prepared.info["ceiling"]["val"]["rows"] == 500
    manifest = open_cache(tmp_path / "s").manifest
    assert manifest.splits == {"train": (0, 4000), "val": (4000, 4500), "test": (4500, 5000)}
    assert manifest.options["multi_hot_sizes"] == [1, 2, 1] and manifest.bags == {"t1": 2}


def test_a_synthetic_path_takes_no_generation_options():
    _, errors = validate_scenario({"dataset": {"name": "synthetic", "path": "x", "rows": 10},
                                   "model": {"name": "dlrm"}, "target": {"value": 0.7}})
    assert errors and "generation options come from the cache's manifest; remove rows" in errors[0][1]


def test_first_use_caches_are_built_once_per_options(dataset_cache):
    before = set(dataset_cache.iterdir())
    build_dataset(synthetic(seed=11))
    build_dataset(synthetic(seed=11, shuffle="blocks", num_samples=10))  # read options: the same cache
    added = {p for p in set(dataset_cache.iterdir()) - before if not p.name.startswith(".")}
    assert len(added) == 1 and added.pop().name.startswith("synthetic-")
    build_dataset(synthetic(seed=12))
    assert len({p for p in set(dataset_cache.iterdir()) - before if not p.name.startswith(".")}) == 2


# ---------------------------------------------------------------- memory: a cache larger than the limit


def test_a_cache_larger_than_the_memory_limit_trains(tmp_path):
    """A 1.05 GB cache (1M rows of 256 dense features) trains for a fraction of an epoch in a process
    whose data segment (anonymous memory: RLIMIT_DATA) is limited to 900 MiB: the rows are read from
    the cache, never held. (The earlier in-memory loader needed > 2 GB for it.)"""
    cache = tmp_path / "fat"
    prepare = [sys.executable, "-m", "dlrs_bench", "data", "prepare", "synthetic", "--rows", "1000000",
               "--set", "num_dense=256", "--set", "cardinalities=[1000, 100]", "--out", str(cache)]
    subprocess.run(prepare, check=True, capture_output=True, cwd=ROOT, timeout=300)
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    limit = 900 * 2**20
    assert size > limit
    suite = tmp_path / "fat.yaml"
    suite.write_text(yaml.safe_dump({"name": "fat", "defaults": {
        "dataset": {"name": "synthetic", "path": str(cache)},
        "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [16, 1]},
        "train": {"batch_size": 4096, "lr": 0.01, "max_epochs": 0.05, "eval_every": 1, "eval_batch_size": 16384},
        "target": {"value": 0.6}}, "scenarios": [{}]}))

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "dlrs_bench", "run", str(suite), "--results-dir",
                           str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          preexec_fn=limit_memory)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "fat").glob("*/seed0.json")]
    assert result["dataset"]["rows"]["train"] == 800_000 and result["timing"]["samples"] >= 40_000
    assert result["metrics"]["auc"] > 0.55
    assert result["memory"]["host_peak_rss_mib"] < 900


def test_reader_threads_give_the_same_batches_in_the_same_order():
    split = build_dataset(synthetic(shuffle="blocks", shuffle_block_rows=64)).splits["train"]
    keys = [f.name for f in split.layout]
    plain = list(iter_batches(split, 256, keys, seed=2, rank=1, world=2))
    threaded = list(iter_batches(split, 256, keys, seed=2, rank=1, world=2, workers=3))
    assert len(plain) == len(threaded) == 16
    for a, b in zip(plain, threaded):
        assert torch.equal(a.dense_features, b.dense_features)
        assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
    early = iter_batches(split, 256, keys, seed=2, workers=2)
    next(early)
    early.close()  # stops its threads


def test_a_prepared_criteo_cache_reads_mlperf_multi_hot_bags(tmp_path):
    from dlrs_bench.data.prepared import CriteoKaggleOptions
    from dlrs_bench.data.shapes import MLPERF_MULTI_HOT

    raw = tmp_path / "train.txt"
    raw.write_text(criteo_lines(70))
    assert CliRunner().invoke(app, ["data", "prepare", "criteo-kaggle", "--raw", str(raw), "--out",
                                    str(tmp_path / "c"), "--workers", "1"]).exit_code == 0
    one_hot = build_dataset(CriteoKaggleOptions(path=str(tmp_path / "c"))).splits["train"]
    dataset = build_dataset(CriteoKaggleOptions(path=str(tmp_path / "c"), multi_hot_sizes="mlperf"))
    split = dataset.splits["train"]
    assert [f.multi_hot for f in dataset.features] == [n > 1 for n in MLPERF_MULTI_HOT]
    assert dataset.info["multi_hot_sizes"] == MLPERF_MULTI_HOT
    keys = dataset.feature_names
    kjt = make_batch(split, slice(0, 8), keys).sparse_features.to_dict()
    stored = make_batch(one_hot, slice(0, 8), keys).sparse_features.to_dict()
    for key, size, feature in zip(keys, MLPERF_MULTI_HOT, dataset.features):
        bags = kjt[key].values().reshape(8, size)
        assert kjt[key].lengths().tolist() == [size] * 8
        assert bags[:, 0].tolist() == stored[key].values().tolist()  # the stored id comes first
        assert int(bags.min()) >= 0 and int(bags.max()) < feature.cardinality
