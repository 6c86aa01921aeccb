"""`data prepare criteo-tb --format mlperf-multihot`: MLPerf DLRM-DCNv2's materialised multi-hot files
(written here with numpy in MLPerf's exact layout) into the cache, read back as batches, trained on, and
judged by the closed data.multi_hot rule."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, invoke

from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import build_dataset
from dlrs_bench.data.batching import iter_batches
from dlrs_bench.data.cache import CacheWriter, Manifest, open_cache
from dlrs_bench.data.criteo import DENSE, SPARSE
from dlrs_bench.data.mlperf_multihot import MultiHotPrepareOptions, prepare_mlperf_multihot
from dlrs_bench.data.options import CriteoTerabyteOptions, SyntheticOptions
from dlrs_bench.data.shapes import MLPERF_MATERIALISED, MLPERF_MULTI_HOT
from dlrs_bench.errors import UserInputError
from dlrs_bench.measure.mllog import _multi_hot_rule, run_facts

DAY_ROWS = [200, 120]
TABLES = [10 + 3 * t for t in range(len(SPARSE))]  # tiny tables: 10, 13, ..., 85 rows


def write_days(folder: Path, rows: list[int] = DAY_ROWS, tables: list[int] = TABLES, seed: int = 0,
               sizes: list[int] = MLPERF_MULTI_HOT) -> dict[str, list[Any]]:
    """MLPerf's files for ``len(rows)`` days as TorchRec's preprocessing and the materialise script write
    them (labels int32 [n, 1], dense float32 [n, 13], np.savez of int32 [n, size_t] per table, the first id
    of a bag the one-hot id); returns the arrays written, per day."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list[Any]] = {"labels": [], "dense": [], "tables": []}
    for i, n in enumerate(rows):
        labels = rng.integers(0, 2, (n, 1), dtype=np.int32)
        dense = np.log(rng.integers(0, 50, (n, 13)) + 2).astype(np.float32)
        bags = [rng.integers(0, c, (n, s), dtype=np.int32) for c, s in zip(tables, sizes)]
        np.save(folder / f"day_{i}_labels.npy", labels)
        np.save(folder / f"day_{i}_dense.npy", dense)
        np.savez(folder / f"day_{i}_sparse_multi_hot.npz", **{str(t): b for t, b in enumerate(bags)})
        for key, value in zip(written, (labels, dense, bags)):
            written[key].append(value)
    return written


def prepare_cli(raw: Path, out: Path, *extra: Any):
    return invoke("data", "prepare", "criteo-tb", "--format", "mlperf-multihot", "--raw", raw, "--out", out,
                  "--table-sizes", ",".join(map(str, TABLES)), "--workers", 2, *extra)


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlperf")
    written = write_days(root / "raw")
    result = prepare_cli(root / "raw", root / "cache")
    assert result.exit_code == EXIT_OK, result.output
    return {"raw": root / "raw", "cache": root / "cache", "written": written, "output": result.output}


def stored_bags(written: dict[str, list[Any]], table: int, day: int, rows: slice) -> np.ndarray:
    return written["tables"][day][table][rows]


# ---------------------------------------------------------------- the cache and its manifest


def test_manifest_records_mlperf_bags_days_and_inputs(days):
    manifest = open_cache(days["cache"]).manifest
    written = days["written"]
    labels = np.concatenate([x.reshape(-1) for x in written["labels"]])
    assert manifest.dataset == "criteo-tb" and manifest.rows == 320 and manifest.parts == DAY_ROWS
    assert manifest.num_dense == 13 and manifest.sparse_dtype == "int32"
    assert manifest.features == dict(zip(SPARSE, TABLES))
    assert manifest.bags == {f: s for f, s in zip(SPARSE, MLPERF_MULTI_HOT) if s != 1}
    assert manifest.sparse_columns == sum(MLPERF_MULTI_HOT) == 214
    assert manifest.ctr == pytest.approx(labels.mean())
    assert manifest.multi_hot is not None and manifest.multi_hot.source == MLPERF_MATERIALISED
    assert manifest.multi_hot.sizes == MLPERF_MULTI_HOT
    assert manifest.shuffle is not None and (manifest.shuffle.seed, manifest.shuffle.rows) == (0, 200)
    assert manifest.options["format"] == "mlperf-multihot"
    names = [Path(i.path).name for i in manifest.inputs]
    assert names == [f"day_{d}_{part}" for d in (0, 1) for part in ("labels.npy", "dense.npy", "sparse_multi_hot.npz")]
    assert all(len(i.sha256) == 64 and i.bytes > 0 for i in manifest.inputs)
    assert "320 rows" in days["output"]


def test_cache_holds_the_rows_row_major(days):
    _, labels, dense, sparse = open_cache(days["cache"]).columns()
    written = days["written"]
    assert labels.tolist() == np.concatenate([x.reshape(-1) for x in written["labels"]]).tolist()
    assert np.array_equal(dense, np.concatenate(written["dense"]))
    rows = [np.concatenate(written["tables"][d], axis=1) for d in (0, 1)]  # each row: table 0's 3 ids, table 1's 2…
    assert np.array_equal(sparse, np.concatenate(rows))


def test_chunks_and_threads_do_not_change_the_cache(days, tmp_path):
    options = MultiHotPrepareOptions(table_sizes=TABLES, chunk_rows=7, workers=1)
    manifest = prepare_mlperf_multihot(days["raw"], tmp_path / "cache", options)
    for name in ("labels.u8", "dense.f32", "sparse.i32"):
        assert (tmp_path / "cache" / name).read_bytes() == (days["cache"] / name).read_bytes(), name
    assert manifest.parts == DAY_ROWS


# ---------------------------------------------------------------- batches carry exactly the stored bags


def test_batches_carry_exactly_the_stored_bags(days):
    dataset = build_dataset(CriteoTerabyteOptions(path=str(days["cache"])))
    written = days["written"]
    assert {k: len(s) for k, s in dataset.splits.items()} == {"train": 200, "val": 60, "test": 60}
    assert dataset.splits["train"].order.describe()["protocol"] == "none"  # shuffled by MLPerf: read in order
    assert [f.multi_hot for f in dataset.features] == [s != 1 for s in MLPERF_MULTI_HOT]
    for split, day, first in (("train", 0, 0), ("val", 1, 0), ("test", 1, 60)):
        seen = 0
        for batch in iter_batches(dataset.splits[split], 64, dataset.feature_names):
            b = len(batch.labels)
            rows = slice(first + seen, first + seen + b)
            kjt = batch.sparse_features.to_dict()
            for t, name in enumerate(SPARSE):
                size = MLPERF_MULTI_HOT[t]
                assert kjt[name].lengths().tolist() == [size] * b, (split, name)
                assert kjt[name].values().tolist() == stored_bags(written, t, day, rows).reshape(-1).tolist()
            assert batch.labels.tolist() == written["labels"][day][rows].reshape(-1).tolist()
            assert np.array_equal(batch.dense_features.numpy(), written["dense"][day][rows])
            seen += b
        assert seen == len(dataset.splits[split])


def test_multi_hot_sizes_on_a_materialised_cache_is_refused(days):
    options = CriteoTerabyteOptions(path=str(days["cache"]), multi_hot_sizes="mlperf")
    with pytest.raises(UserInputError, match=r"multi_hot_sizes: this cache stores MLPerf's materialised bags"):
        options.check_data()
    with pytest.raises(UserInputError, match="remove multi_hot_sizes"):
        build_dataset(options)


# ---------------------------------------------------------------- training and the closed rule


TINY_DCNV2 = {"name": "dcnv2", "embedding_dim": 8, "dense_features": "field", "bottom_mlp": [16, 8],
              "structure": "stacked", "cross_layers": 2, "low_rank": 4, "top_mlp": [16, 8, 1], "init": "torch"}


def test_a_run_on_the_cache_trains_and_keeps_the_multi_hot_rule(days, tmp_path):
    suite = {"name": "mh", "description": "tiny DCNv2 on MLPerf-format multi-hot days",
             "mlperf": {"division": "closed"},
             "defaults": {"dataset": {"name": "criteo-tb", "path": str(days["cache"])}, "model": TINY_DCNV2,
                          "train": {"batch_size": 32, "optimizer": "adagrad", "lr": 0.02, "max_epochs": 1,
                                    "eval_every": 0.5, "warmup_iters": 1},
                          "target": {"metric": "auc", "value": 0.99}, "seeds": [0]},
             "scenarios": [{"name": "tiny"}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = invoke("run", path, "--results-dir", tmp_path / "results", "--threads", "1")
    assert result.exit_code in (EXIT_OK, EXIT_FAILED), result.output  # 1: the (unreachable) target was missed
    (result_file,) = (tmp_path / "results" / "mh").rglob("seed0.json")
    data = json.loads(result_file.read_text())
    assert data["status"] == "not_reached" and data["error"] is None
    assert data["dataset"]["rows"] == {"train": 200, "val": 60, "test": 60}
    assert data["dataset"]["prepared"]["multi_hot"]["source"] == MLPERF_MATERIALISED
    assert [p["samples"] for p in data["eval_curve"]] == [128, 200]  # every round(0.5 x 7 steps) = 4 batches, end
    assert 0.0 < data["metrics"]["auc"] < 1.0 and np.isfinite(data["metrics"]["logloss"])
    (log,) = (tmp_path / "results" / "mh").rglob("seed0.mllog")
    records = [json.loads(line.removeprefix(":::MLLOG ")) for line in log.read_text().splitlines()]
    (division,) = [r for r in records if r["key"] == "submission_division"]
    broken = [line.split(":")[0] for line in division["metadata"]["closed_rules_broken"]]
    assert division["value"] == "open" and "data.multi_hot" not in broken
    assert broken[:4] == ["data.train_samples", "data.eval_samples", "data.tables", "model.reference"]


def facts_rule(dataset_options: dict[str, Any]) -> str | None:
    """The data.multi_hot verdict on a run of a tiny scenario on ``dataset_options``."""
    spec, errors = validate_scenario({"dataset": dataset_options, "model": TINY_DCNV2,
                                      "train": {"batch_size": 32, "optimizer": "adagrad"},
                                      "target": {"metric": "auc", "value": 0.8}})
    assert not errors, errors
    return _multi_hot_rule(run_facts(spec, build_dataset(spec.dataset), {}, 1))


def one_hot_criteo_tb(out: Path, rows: list[int] = DAY_ROWS) -> Path:
    """A one-hot criteo-tb cache (as the text format writes it) over the tiny tables."""
    rng = np.random.default_rng(1)
    n = sum(rows)
    with CacheWriter(out, len(DENSE), len(SPARSE), ids_dtype="int32") as writer:
        writer.append(rng.integers(0, 2, n), rng.standard_normal((n, 13)),
                      np.stack([rng.integers(0, c, n) for c in TABLES], axis=1))
        writer.commit(Manifest(dataset="criteo-tb", rows=n, num_dense=13, features=dict(zip(SPARSE, TABLES)),
                               sparse_dtype="int32", ctr=0.5, parts=rows, options={}, inputs=[],
                               skipped={"policy": "error", "count": 0, "examples": []}, created_at="now"), "int32")
    return out


def test_closed_multi_hot_verdict_holds_only_on_the_materialised_cache(days, tmp_path):
    assert facts_rule({"name": "criteo-tb", "path": str(days["cache"])}) is None
    hashed = facts_rule({"name": "criteo-tb", "path": str(one_hot_criteo_tb(tmp_path / "onehot")),
                         "multi_hot_sizes": "mlperf"})
    assert hashed == ("multi-hot bags are synthesised at read time by dlrs-bench's hashes (multi_hot_sizes), not "
                      "read from MLPerf's materialised multi-hot dataset")
    one_hot = facts_rule({"name": "criteo-tb", "path": str(tmp_path / "onehot")})
    generated = facts_rule({**SyntheticOptions(rows=500, cardinalities=TABLES, multi_hot_sizes="mlperf",
                                               num_dense=13).model_dump(mode="json", exclude_defaults=True),
                            "name": "synthetic"})
    for verdict in (one_hot, generated):  # stored bags of MLPerf's sizes, but not MLPerf's materialised ones
        assert verdict is not None and verdict.startswith("the cache's bags are not MLPerf's materialised multi-hot")
    # the manifest's record is what the rule trusts: without it the same bags are not MLPerf's
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in days["cache"].iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    (copy / "bags").mkdir()
    manifest = json.loads((days["cache"] / "manifest.json").read_text())
    # (written without an identity, as by an earlier version: an edited manifest with one is refused)
    (copy / "manifest.json").write_text(json.dumps({**manifest, "multi_hot": None, "identity": None}))
    assert facts_rule({"name": "criteo-tb", "path": str(copy)}).startswith("the cache's bags are not MLPerf's")


# ---------------------------------------------------------------- bad input: the file named, exit 2


def _retype(path: Path, dtype: type) -> None:
    np.save(path, np.load(path).astype(dtype))


def _reshape_dense(path: Path) -> None:
    np.save(path, np.load(path)[:, :12])


def _rewrite_npz(path: Path, change: dict[str, Any], compress: bool = False) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    (np.savez_compressed if compress else np.savez)(path, **arrays)


def _npz_table(path: Path, table: int) -> np.ndarray:
    with np.load(path) as npz:
        return npz[str(table)]


BAD_INPUTS: dict[str, tuple[Any, str]] = {
    "missing day file": (lambda raw: (raw / "day_1_dense.npy").unlink(), r"day_1_dense\.npy: missing"),
    "labels dtype": (lambda raw: _retype(raw / "day_0_labels.npy", np.float32),
                     r"day_0_labels\.npy: dtype float32, expected int32"),
    "dense shape": (lambda raw: _reshape_dense(raw / "day_1_dense.npy"),
                    r"day_1_dense\.npy: shape \[120, 12\], expected \[120, 13\]"),
    "bag size differs": (lambda raw: _rewrite_npz(raw / "day_0_sparse_multi_hot.npz", {
        "20": _npz_table(raw / "day_0_sparse_multi_hot.npz", 20)[:, :50].copy()}),
        r"day_0_sparse_multi_hot\.npz\[20\.npy\]: bags of 50 ids, MLPerf's table 20 has 100 .*not MLPerf's"),
    "table dtype": (lambda raw: _rewrite_npz(raw / "day_1_sparse_multi_hot.npz", {
        "3": _npz_table(raw / "day_1_sparse_multi_hot.npz", 3).astype(np.int64)}),
        r"day_1_sparse_multi_hot\.npz\[3\.npy\]: dtype int64, expected int32"),
    "table rows differ": (lambda raw: _rewrite_npz(raw / "day_1_sparse_multi_hot.npz", {
        "7": _npz_table(raw / "day_1_sparse_multi_hot.npz", 7)[:119].copy()}),
        r"day_1_sparse_multi_hot\.npz\[7\.npy\]: shape \[119, 1\], expected \[120, 1\]"),
    "missing table": (lambda raw: _rewrite_npz(raw / "day_0_sparse_multi_hot.npz", {"25": None}),
                      r"day_0_sparse_multi_hot\.npz: members 25\.npy missing"),
    "compressed": (lambda raw: _rewrite_npz(raw / "day_0_sparse_multi_hot.npz", {}, compress=True),
                   r"day_0_sparse_multi_hot\.npz\[0\.npy\]: compressed"),
    "id outside its table": (lambda raw: _rewrite_npz(raw / "day_1_sparse_multi_hot.npz", {
        "0": np.full((120, 3), TABLES[0], np.int32)}),
        r"day_1_sparse_multi_hot\.npz\[0\.npy\]: row 0: id 10 outside table 0's 10 rows"),
    "label not 0/1": (lambda raw: np.save(raw / "day_0_labels.npy", np.full((200, 1), 2, np.int32)),
                      r"day_0_labels\.npy: row 0: label 2, expected 0 or 1"),
    "one day only": (lambda raw: [(raw / f"day_1_{p}").unlink() for p in
                                  ("labels.npy", "dense.npy", "sparse_multi_hot.npz")],
                     r"one day only"),
    "not an npz": (lambda raw: (raw / "day_1_sparse_multi_hot.npz").write_bytes(b"not a zip"),
                   r"day_1_sparse_multi_hot\.npz: not a \.npz archive"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_exits_2(tmp_path, case):
    raw = tmp_path / "raw"
    write_days(raw)
    damage, message = BAD_INPUTS[case]
    damage(raw)
    result = prepare_cli(raw, tmp_path / "cache")
    assert result.exit_code == EXIT_INVALID, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (tmp_path / "cache").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize(("flags", "message"), [
    (["--shuffle-seed", "1"], "--shuffle-seed: not with --format mlperf-multihot"),
    (["--numbering", "modulo", "--max-rows", "5"], "--max-rows: not with --format mlperf-multihot"),
    (["--table-sizes", "1,2,3"], "--table-sizes: expected 26 table sizes"),
    (["--table-sizes", "a,b"], "--table-sizes: expected comma-separated integers"),
])
def test_text_options_and_bad_table_sizes_exit_2(days, tmp_path, flags, message):
    result = invoke("data", "prepare", "criteo-tb", "--format", "mlperf-multihot", "--raw", days["raw"],
                    "--out", tmp_path / "cache", *flags)
    assert result.exit_code == EXIT_INVALID and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "cache").exists()


def test_format_is_for_criteo_tb_and_one_folder(days, tmp_path):
    kaggle = invoke("data", "prepare", "criteo-kaggle", "--format", "mlperf-multihot", "--raw", days["raw"],
                    "--out", tmp_path / "c")
    assert kaggle.exit_code == EXIT_INVALID and "is Criteo 1TB (criteo-tb), not criteo-kaggle" in kaggle.output
    two = invoke("data", "prepare", "criteo-tb", "--format", "mlperf-multihot", "--raw", days["raw"], "--raw",
                 days["raw"], "--out", tmp_path / "c")
    assert two.exit_code == EXIT_INVALID and "takes one folder" in two.output
    text = invoke("data", "prepare", "criteo-tb", "--raw", days["raw"], "--out", tmp_path / "c", "--table-sizes", "1")
    assert text.exit_code == EXIT_INVALID and "--table-sizes: only with --format mlperf-multihot" in text.output


def test_npz_members_are_located_inside_the_zip(days):
    """The arrays are read in place where np.savez stored them (no copy of the archive is loaded)."""
    from dlrs_bench.data.mlperf_multihot import npz_arrays

    path = days["raw"] / "day_0_sparse_multi_hot.npz"
    arrays = npz_arrays(path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(arrays, key=int) == [n.removesuffix(".npy") for n in zf.namelist()]
    fd = os.open(path, os.O_RDONLY)
    try:
        assert np.array_equal(arrays["20"].read(fd, 5, 9), days["written"]["tables"][0][20][5:9])
    finally:
        os.close(fd)
