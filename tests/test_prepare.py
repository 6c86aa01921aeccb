"""``dlrs-bench data prepare`` for Criteo: the streaming preparer, the binary cache, the split
protocols of the prepared datasets, nested train subsets, bad input, and the command line.

Every Criteo-format file here is generated into ``tmp_path`` by :func:`criteo_rows` (seeded, known
values); expected caches are computed again in plain Python (:func:`reference`) and compared.
The real Criteo sample under ``../shared/data`` is used only when it exists (it may not be copied
into the repository).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_suite
from pydantic import ValidationError
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.data.base import build_dataset
from dlrs_bench.data.cache import Manifest, open_cache
from dlrs_bench.data.criteo import CriteoFormat
from dlrs_bench.data.prepare import PrepareOptions, prepare
from dlrs_bench.data.prepared import CriteoKaggleOptions, CriteoTerabyteOptions, split_ranges
from dlrs_bench.errors import UserInputError

EXIT_OK, EXIT_INVALID = 0, 2
N_DENSE, N_SPARSE = 13, 26
UNIQUE_BASE = 0x80000000  # C26 of row i is UNIQUE_BASE + i: its dlrm id is the row index

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRITEO_SAMPLE = SHARED_DATA / "criteo-kaggle-sample" / "train_head1999.tsv"
CRITEO_TEST_SAMPLE = SHARED_DATA / "criteo-kaggle-sample" / "test_head100_nolabel.tsv"
needs_sample = pytest.mark.skipif(
    not CRITEO_SAMPLE.exists(),
    reason=f"real Criteo sample not found in the shared data folder ({CRITEO_SAMPLE}); it is not in the repository",
)

runner = CliRunner()


# ---------------------------------------------------------------- helpers


def criteo_rows(n: int, seed: int = 0, start: int = 0) -> list[list[str]]:
    """``n`` Criteo rows (40 string fields each), seeded.

    Labels ~30% ones; dense fields ~10% missing, ~5% negative (-1..-3), else 0..50*(j+1);
    C1..C25 ~10% missing, else drawn from a small per-column vocabulary of random 32-bit
    hashes (both halves of the unsigned range); C26 is never missing and unique per row
    (``UNIQUE_BASE + start + i``), so it identifies the row.
    """
    rng = random.Random(seed)
    vocab = [[f"{rng.getrandbits(32):08x}" for _ in range(3 * (j + 1))] for j in range(N_SPARSE - 1)]
    rows = []
    for i in range(n):
        row = ["1" if rng.random() < 0.3 else "0"]
        for j in range(N_DENSE):
            r = rng.random()
            row.append("" if r < 0.1 else str(-rng.randint(1, 3)) if r < 0.15 else str(rng.randint(0, 50 * (j + 1))))
        for j in range(N_SPARSE - 1):
            row.append("" if rng.random() < 0.1 else rng.choice(vocab[j]))
        row.append(f"{UNIQUE_BASE + start + i:08x}")
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[list[str]], extra_lines: dict[int, str] | None = None) -> Path:
    """Write ``rows`` as a TSV; ``extra_lines`` {1-based line number: raw text} are put in at those lines."""
    lines = ["\t".join(r) for r in rows]
    for number, text in sorted((extra_lines or {}).items()):
        lines.insert(number - 1, text)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def reference(rows: list[list[str]]) -> dict[str, Any]:
    """Raw values of ``rows`` in plain Python: labels, dense ints (missing 0), sparse ints (missing 0)."""
    return {
        "labels": [int(r[0]) for r in rows],
        "dense": [[int(v) if v else 0 for v in r[1 : 1 + N_DENSE]] for r in rows],
        "sparse": [[int(v, 16) if v else 0 for v in r[1 + N_DENSE :]] for r in rows],
    }


def run_prepare(raw: Path | list[Path], out: Path, dataset: str = "criteo-kaggle", dense_transform: str = "dlrm",
                **options: Any) -> Manifest:
    options = {"workers": 2, "chunk_rows": 100, **options}
    paths = raw if isinstance(raw, list) else [raw]
    return prepare(CriteoFormat(dataset, dense_transform), paths, out, PrepareOptions(**options))


def partial_folders(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name]


def invoke(*args: Any):
    result = runner.invoke(app, [str(a) for a in args])
    # every exit goes through typer.Exit / SystemExit, never an uncaught exception
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def c26(split: Any) -> list[int]:
    """Row indexes of a split (its C26 ids, dlrm numbering of unique values)."""
    return split.to_memory().sparse["C26"].values.tolist()


# ---------------------------------------------------------------- fixtures

N_ROWS = 710  # divmod(710, 7) = (101, 3): days 102, 102, 102, 101, 101, 101, 101


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Any]:
    """One generated file of N_ROWS rows, prepared with the defaults (dlrm numbering and transform)."""
    root = tmp_path_factory.mktemp("generated")
    rows = criteo_rows(N_ROWS, seed=1)
    raw = write_rows(root / "train.txt", rows)
    out = root / "cache"
    manifest = run_prepare(raw, out)
    return {"rows": rows, "ref": reference(rows), "raw": raw, "out": out, "manifest": manifest}


@pytest.fixture(scope="module")
def two_days(tmp_path_factory) -> dict[str, Any]:
    """Two "day" files (300 and 101 rows) prepared as Criteo Terabyte."""
    root = tmp_path_factory.mktemp("days")
    day0 = write_rows(root / "day_0", criteo_rows(300, seed=2))
    day1 = write_rows(root / "day_1", criteo_rows(101, seed=3, start=300))
    out = root / "cache"
    manifest = run_prepare([day0, day1], out, dataset="criteo-tb")
    return {"days": [day0, day1], "out": out, "manifest": manifest}


# ---------------------------------------------------------------- the cache: values and conventions


def test_rows_ctr_labels_and_dtypes(generated):
    manifest, labels, dense, sparse = open_cache(generated["out"]).columns()
    ref = generated["ref"]
    assert manifest.rows == N_ROWS == len(labels) == len(dense) == len(sparse)
    assert manifest.dataset == "criteo-kaggle"
    assert manifest.num_dense == N_DENSE and list(manifest.features) == [f"C{i}" for i in range(1, 27)]
    assert labels.dtype == np.uint8 and dense.dtype == np.float32 and dense.shape == (N_ROWS, N_DENSE)
    assert manifest.sparse_dtype == "int32" and sparse.dtype == np.int32 and sparse.shape == (N_ROWS, N_SPARSE)
    assert labels.tolist() == ref["labels"]
    assert manifest.ctr == pytest.approx(sum(ref["labels"]) / N_ROWS, abs=1e-12)
    assert manifest.parts == [N_ROWS]
    assert manifest.skipped == {"policy": "error", "count": 0, "examples": []}
    assert manifest.options["numbering"] == "dlrm" and "dense_transform" in manifest.options


def test_cardinality_is_the_number_of_distinct_values_missing_included(generated):
    manifest, _, _, sparse = open_cache(generated["out"]).columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64)
    for j, (name, cardinality) in enumerate(manifest.features.items()):
        distinct = set(ref[:, j].tolist())
        assert cardinality == len(distinct), name
        assert 0 <= sparse[:, j].min() and sparse[:, j].max() == cardinality - 1, name
    assert 0 in set(ref[:, 0].tolist())  # the generator did produce missing values (hash 0)
    assert manifest.features["C26"] == N_ROWS


def test_dlrm_numbering_is_the_rank_among_sorted_distinct_values(generated):
    _, _, _, sparse = open_cache(generated["out"]).columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64)
    for j in range(N_SPARSE):
        ranks = {v: i for i, v in enumerate(sorted(set(ref[:, j].tolist())))}
        assert sparse[:, j].tolist() == [ranks[v] for v in ref[:, j].tolist()], f"C{j + 1}"
    assert sparse[:, 25].tolist() == list(range(N_ROWS))  # hashes >= 2^31 read as unsigned


def test_dlrm_dense_transform(generated):
    _, _, dense, _ = open_cache(generated["out"]).columns()
    expected = [[math.log(max(x, 0) + 1) for x in row] for row in generated["ref"]["dense"]]
    np.testing.assert_allclose(dense, np.array(expected), rtol=1e-6, atol=1e-7)


# A tiny hand-written file: three rows whose values are checked by hand below.
#   I1: 3, missing, -2  (every other dense field is 0 or missing, so the dense minimum is -2)
#   C1: 0000000a, missing, ffffffff  -> raw 10, 0, 4294967295
#   C2: 00000005 three times; C3: 0000000b, 0000000a, 0000000b
HAND_ROWS = [
    ["1", "3"] + ["0"] * 12 + ["0000000a", "00000005", "0000000b"] + ["00000001"] * 23,
    ["0", ""] + [""] * 12 + ["", "00000005", "0000000a"] + ["00000001"] * 23,
    ["0", "-2"] + ["0"] * 12 + ["ffffffff", "00000005", "0000000b"] + ["00000001"] * 23,
]


@pytest.fixture
def hand_file(tmp_path) -> Path:
    return write_rows(tmp_path / "hand.tsv", HAND_ROWS)


def test_hand_checked_values_dlrm(hand_file, tmp_path):
    manifest = run_prepare(hand_file, tmp_path / "c")
    _, labels, dense, sparse = open_cache(tmp_path / "c").columns()
    assert labels.tolist() == [1, 0, 0] and manifest.ctr == pytest.approx(1 / 3)
    np.testing.assert_allclose(dense[:, 0], [math.log(4), 0.0, 0.0], rtol=1e-6)  # log(3+1), missing, clamp(-2)
    assert (dense[:, 1:] == 0).all()  # log1p(0)
    assert sparse[:, 0].tolist() == [1, 0, 2]  # sorted 0 < 10 < 4294967295
    assert sparse[:, 1].tolist() == [0, 0, 0] and sparse[:, 2].tolist() == [1, 0, 1]
    assert list(manifest.features.values())[:4] == [3, 1, 2, 1]


def test_hand_checked_values_torchrec(hand_file, tmp_path):
    manifest = run_prepare(hand_file, tmp_path / "c", dense_transform="torchrec", numbering="torchrec")
    _, _, dense, sparse = open_cache(tmp_path / "c").columns()
    # log(x - min + 2) with min = -2: log(7), log(4) (missing = 0), log(2); the zeros give log(4)
    np.testing.assert_allclose(dense[:, 0], [math.log(7), math.log(4), math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(dense[:, 1:], math.log(4), rtol=1e-6)
    assert manifest.options["dense_min"] == -2
    assert sparse[:, 0].tolist() == [2, 3, 4]  # first appearance, from 2
    assert sparse[:, 2].tolist() == [2, 3, 2]
    assert list(manifest.features.values())[:3] == [5, 3, 4]  # 2 + distinct kept values


def test_hand_checked_values_modulo(hand_file, tmp_path):
    manifest = run_prepare(hand_file, tmp_path / "c", numbering="modulo", max_rows=7)
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    assert sparse[:, 0].tolist() == [3, 0, 3]  # 10 % 7, 0, (2^32 - 1) % 7 = 3
    assert sparse[:, 2].tolist() == [4, 3, 4]
    assert set(manifest.features.values()) == {7}


def test_torchrec_transform_uses_the_minimum_over_all_dense_values(generated, tmp_path):
    run_prepare(generated["raw"], tmp_path / "c", dense_transform="torchrec")
    manifest, _, dense, _ = open_cache(tmp_path / "c").columns()
    raw = np.array(generated["ref"]["dense"], dtype=np.float64)
    low = raw.min()
    assert low == -3 and manifest.options["dense_min"] == low
    np.testing.assert_allclose(dense, np.log(raw - low + 2), rtol=1e-6)


def test_torchrec_numbering_first_appearance_from_2_rare_to_1(generated, tmp_path):
    manifest = run_prepare(generated["raw"], tmp_path / "c", numbering="torchrec", frequency_threshold=10)
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64)
    for j in range(N_SPARSE):
        column = ref[:, j].tolist()
        counts = {v: column.count(v) for v in set(column)}
        ids: dict[int, int] = {}
        for v in column:
            if counts[v] >= 10 and v not in ids:
                ids[v] = 2 + len(ids)
        assert sparse[:, j].tolist() == [ids.get(v, 1) for v in column], f"C{j + 1}"
        assert manifest.features[f"C{j + 1}"] == 2 + len(ids)
    assert set(sparse[:, 25].tolist()) == {1}  # every C26 value is seen once: all rare
    assert sparse[:, 0].min() >= 1


def test_torchrec_numbering_without_threshold(generated, tmp_path):
    run_prepare(generated["raw"], tmp_path / "c", numbering="torchrec")
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    assert sparse[:, 25].tolist() == list(range(2, N_ROWS + 2))
    column = np.array(generated["ref"]["sparse"])[:, 3].tolist()
    order = list(dict.fromkeys(column))
    assert sparse[:, 3].tolist() == [2 + order.index(v) for v in column]


def test_modulo_numbering_with_max_rows(generated, tmp_path):
    manifest = run_prepare(generated["raw"], tmp_path / "c", numbering="modulo", max_rows=50)
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64)
    np.testing.assert_array_equal(sparse, ref % 50)
    assert list(manifest.features.values()) == [50] * N_SPARSE
    assert manifest.options["numbering"] == "modulo" and manifest.options["max_rows"] == 50


def test_modulo_numbering_needs_max_rows(generated, tmp_path):
    with pytest.raises(ValidationError, match="max_rows"):  # refused up front, before any parsing
        PrepareOptions(numbering="modulo")
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", str(generated["raw"]),
                    "--out", str(tmp_path / "c"), "--numbering", "modulo")
    assert result.exit_code == 2 and "max_rows" in result.output
    assert not (tmp_path / "c").exists() and not partial_folders(tmp_path)


def test_max_rows_with_dlrm_numbering(generated, tmp_path):
    manifest = run_prepare(generated["raw"], tmp_path / "c", max_rows=50)
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64) % 50
    for j in range(N_SPARSE):
        ranks = {v: i for i, v in enumerate(sorted(set(ref[:, j].tolist())))}
        assert sparse[:, j].tolist() == [ranks[v] for v in ref[:, j].tolist()], f"C{j + 1}"
        assert manifest.features[f"C{j + 1}"] == len(ranks) <= 50
    assert manifest.features["C26"] == 50  # 710 distinct values fold onto all 50 rows


def test_frequency_threshold_with_dlrm_numbering(generated, tmp_path):
    manifest = run_prepare(generated["raw"], tmp_path / "c", frequency_threshold=20)
    _, _, _, sparse = open_cache(tmp_path / "c").columns()
    ref = np.array(generated["ref"]["sparse"], dtype=np.int64)
    saw_rare = False
    for j in range(N_SPARSE):
        column = ref[:, j].tolist()
        counts = {v: column.count(v) for v in set(column)}
        kept = sorted(v for v, c in counts.items() if c >= 20)
        ids = {v: 1 + i for i, v in enumerate(kept)}  # rare -> 0, kept from 1 in sorted order
        saw_rare |= any(c < 20 for c in counts.values())
        assert sparse[:, j].tolist() == [ids.get(v, 0) for v in column], f"C{j + 1}"
        assert manifest.features[f"C{j + 1}"] == len(kept) + 1
    assert saw_rare and set(sparse[:, 25].tolist()) == {0}
    assert manifest.options["frequency_threshold"] == 20


def test_chunking_and_workers_do_not_change_the_cache(generated, tmp_path):
    run_prepare(generated["raw"], tmp_path / "small", chunk_rows=7, workers=2)
    run_prepare(generated["raw"], tmp_path / "large", chunk_rows=100_000, workers=1)
    for name in ("labels.u8", "dense.f32", "sparse.i32"):
        small, large = (tmp_path / "small" / name).read_bytes(), (tmp_path / "large" / name).read_bytes()
        assert small == large, name
        assert small == (generated["out"] / name).read_bytes(), name  # chunk_rows 100, 2 workers
    a, b = (open_cache(tmp_path / d).manifest.model_dump(exclude={"created_at", "inputs"}) for d in ("small", "large"))
    assert a == b


def test_crlf_line_ends_give_the_same_cache(generated, tmp_path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(generated["raw"].read_bytes().replace(b"\n", b"\r\n"))
    run_prepare(crlf, tmp_path / "c")
    for name in ("labels.u8", "dense.f32", "sparse.i32"):
        assert (tmp_path / "c" / name).read_bytes() == (generated["out"] / name).read_bytes(), name


def test_two_files_give_parts_and_one_vocabulary(two_days):
    manifest, labels, _, sparse = open_cache(two_days["out"]).columns()
    assert manifest.parts == [300, 101] and manifest.rows == 401
    assert manifest.dataset == "criteo-tb"
    assert sparse[:, 25].tolist() == list(range(401))  # renumbered over both days together
    ref = reference(criteo_rows(300, seed=2)) , reference(criteo_rows(101, seed=3, start=300))
    assert labels.tolist() == ref[0]["labels"] + ref[1]["labels"]


def test_manifest_inputs_record_size_and_sha256(two_days):
    manifest = open_cache(two_days["out"]).manifest
    assert [Path(i.path) for i in manifest.inputs] == two_days["days"]
    for record, path in zip(manifest.inputs, two_days["days"]):
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record.bytes == path.stat().st_size
    on_disk = json.loads((two_days["out"] / "manifest.json").read_text())
    assert on_disk["inputs"][1]["sha256"] == manifest.inputs[1].sha256


# ---------------------------------------------------------------- splits and subsets through the dataset plugin


def test_dlrm_7day_split_reference_sizes():
    """Kaggle's 45,840,617 rows: 39,291,958 train, test = first 3,274,330 of day 6, val = last 3,274,329."""
    manifest = Manifest(dataset="criteo-kaggle", rows=45_840_617, num_dense=13, features={}, sparse_dtype="int32",
                        ctr=0.0, parts=[45_840_617], options={}, inputs=[], skipped={}, created_at="")
    ranges = split_ranges(manifest, CriteoKaggleOptions(path="x"))
    assert [len(ranges[k]) for k in ("train", "test", "val")] == [39_291_958, 3_274_330, 3_274_329]
    assert ranges["test"].start == 39_291_958 and ranges["val"].start == 39_291_958 + 3_274_330


def test_dlrm_7day_split(generated):
    dataset = build_dataset(CriteoKaggleOptions(path=str(generated["out"])))
    # days 102, 102, 102, 101, 101, 101, 101 (extras to the first days): train 609; day 6 = 101 rows,
    # test = its first (larger) half 51, val = the last 50
    assert c26(dataset.splits["train"]) == list(range(609))
    assert c26(dataset.splits["test"]) == list(range(609, 660))
    assert c26(dataset.splits["val"]) == list(range(660, 710))
    labels = generated["ref"]["labels"]
    assert dataset.splits["test"].to_memory().labels.tolist() == labels[609:660]
    assert dataset.summary()["rows"] == {"train": 609, "val": 50, "test": 51}
    assert dataset.info["split"]["protocol"] == "dlrm-7day"
    assert [f.cardinality for f in dataset.features] == list(generated["manifest"].features.values())
    assert dataset.num_dense == 13
    assert not any(f.multi_hot for f in dataset.features)  # one id per row by default
    assert all(torch.equal(j.offsets, torch.arange(610)) for j in dataset.splits["train"].to_memory().sparse.values())


def test_last_day_split_halves_the_last_file_val_first(two_days):
    dataset = build_dataset(CriteoTerabyteOptions(path=str(two_days["out"])))
    assert c26(dataset.splits["train"]) == list(range(300))
    assert c26(dataset.splits["val"]) == list(range(300, 351))  # first (larger) half of day 1
    assert c26(dataset.splits["test"]) == list(range(351, 401))


def test_last_day_split_needs_two_files(generated, tmp_path):
    run_prepare(generated["raw"], tmp_path / "tb", dataset="criteo-tb")
    with pytest.raises(UserInputError, match="at least two"):
        build_dataset(CriteoTerabyteOptions(path=str(tmp_path / "tb")))


def test_cache_of_another_dataset_is_refused(generated):
    with pytest.raises(UserInputError, match="criteo-kaggle"):
        build_dataset(CriteoTerabyteOptions(path=str(generated["out"])))


def test_random_split_is_deterministic_disjoint_and_complete(generated):
    def rows(seed: int) -> dict[str, list[int]]:
        ds = build_dataset(CriteoKaggleOptions(path=str(generated["out"]), split="random", split_seed=seed))
        return {k: c26(s) for k, s in ds.splits.items()}

    first, again, other = rows(2018), rows(2018), rows(7)
    assert first == again
    assert first != other
    assert [len(first[k]) for k in ("train", "val", "test")] == [568, 71, 71]  # floor(0.1 * 710) for val, test
    together = first["train"] + first["val"] + first["test"]
    assert sorted(together) == list(range(N_ROWS))  # disjoint and covering
    assert first["test"] != list(range(639, 710))  # shuffled, not the last rows


def test_temporal_split_keeps_file_order(generated):
    ds = build_dataset(CriteoKaggleOptions(path=str(generated["out"]), split="temporal",
                                           split_fractions=(0.7, 0.2, 0.1)))
    assert c26(ds.splits["train"]) == list(range(497))  # 710 - 142 - 71
    assert c26(ds.splits["val"]) == list(range(497, 639))
    assert c26(ds.splits["test"]) == list(range(639, 710))


def test_nested_train_subsets_leave_val_and_test_alone(generated):
    def build(**subset: Any):
        return build_dataset(CriteoKaggleOptions(path=str(generated["out"]), split="random", **subset))

    full = build()
    s100, s300, s90 = build(num_samples=100), build(num_samples=300), build(fraction=0.9)
    train = {name: set(c26(ds.splits["train"])) for name, ds in
             {"100": s100, "300": s300, "90%": s90, "all": full}.items()}
    assert [len(train[k]) for k in ("100", "300", "90%", "all")] == [100, 300, round(0.9 * 568), 568]
    assert train["100"] < train["300"] < train["90%"] < train["all"]
    # the rows are whole rows: labels and dense values travel with the ids
    labels, dense = generated["ref"]["labels"], generated["ref"]["dense"]
    split = s100.splits["train"]
    assert split.to_memory().labels.tolist() == [labels[i] for i in c26(split)]
    np.testing.assert_allclose(split.to_memory().dense[:, 1].numpy(),
                               [math.log(max(dense[i][1], 0) + 1) for i in c26(split)], rtol=1e-6)
    for ds in (s100, s300, s90):
        for name in ("val", "test"):
            assert c26(ds.splits[name]) == c26(full.splits[name])
        assert ds.info["subset"]["of"] == 568
    assert build(num_samples=100, subset_seed=1).splits["train"].to_memory().labels.shape == (100,)
    assert train["100"] != set(c26(build(num_samples=100, subset_seed=1).splits["train"]))


def test_num_samples_larger_than_train_is_an_error(generated):
    with pytest.raises((ValueError, UserInputError), match="568"):
        build_dataset(CriteoKaggleOptions(path=str(generated["out"]), split="random", num_samples=569))


# ---------------------------------------------------------------- bad input


GOOD = criteo_rows(60, seed=4)
BAD_LINE = 37  # with chunk_rows=10 the bad line is in a later chunk: line numbers must carry over


def bad_row(**changes: str) -> str:
    """A copy of a good row with fields replaced (``f0`` = label, ``f1`` = I1, ``f14`` = C1, ...)."""
    row = list(GOOD[0])
    for key, value in changes.items():
        row[int(key[1:])] = value
    return "\t".join(row)


BAD_LINES = {
    "too few fields": ("\t".join(GOOD[0][:39]), "expected 40"),
    "too many fields": ("\t".join(GOOD[0] + ["1"]), "expected 40"),
    "non-hex category": (bad_row(f14="zzzzzzzz"), "C1"),
    "short category": (bad_row(f20="abc"), "C7"),
    "non-numeric dense": (bad_row(f3="1.5x"), "I3"),
    "float dense": (bad_row(f3="1.5"), "I3"),
    "label 2": (bad_row(f0="2"), "label"),
    "empty label": (bad_row(f0=""), "label"),
    "empty line": ("", "expected 40"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_line_names_file_and_line_and_leaves_nothing(tmp_path, case):
    text, what = BAD_LINES[case]
    raw = write_rows(tmp_path / "train.txt", GOOD, {BAD_LINE: text})
    out = tmp_path / "cache"
    with pytest.raises(UserInputError) as error:
        run_prepare(raw, out, chunk_rows=10)
    assert f"{raw}:{BAD_LINE}:" in str(error.value)
    assert what in str(error.value)
    assert not out.exists() and not partial_folders(tmp_path)


def test_truncated_last_line(tmp_path):
    raw = tmp_path / "train.txt"
    text = "".join("\t".join(r) + "\n" for r in GOOD)
    raw.write_text(text + "\t".join(GOOD[0])[:100], encoding="utf-8")  # cut in the middle, no newline
    with pytest.raises(UserInputError, match=re.escape(f"{raw}:{len(GOOD) + 1}:")):
        run_prepare(raw, tmp_path / "cache", chunk_rows=10)
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_last_line_without_newline_is_a_row(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text("\n".join("\t".join(r) for r in GOOD), encoding="utf-8")
    assert run_prepare(raw, tmp_path / "cache").rows == len(GOOD)


def test_empty_file_has_no_data_rows(tmp_path):
    raw = tmp_path / "empty.txt"
    raw.write_text("", encoding="utf-8")
    with pytest.raises(UserInputError, match=re.escape(f"{raw}: no data rows")):
        run_prepare(raw, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_empty_second_file_is_named(tmp_path):
    good = write_rows(tmp_path / "day_0", GOOD)
    empty = tmp_path / "day_1"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(UserInputError, match=re.escape(f"{empty}: no data rows")):
        run_prepare([good, empty], tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        run_prepare(tmp_path / "nope.txt", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_skip_drops_and_counts_bad_lines(tmp_path):
    bad = {5: BAD_LINES["non-hex category"][0], 12: BAD_LINES["too few fields"][0], 20: BAD_LINES["label 2"][0],
           31: BAD_LINES["non-numeric dense"][0], 40: BAD_LINES["short category"][0], 50: "garbage",
           66: BAD_LINES["too many fields"][0]}
    raw = write_rows(tmp_path / "train.txt", GOOD, bad)
    manifest = run_prepare(raw, tmp_path / "cache", chunk_rows=10, on_error="skip")
    assert manifest.rows == len(GOOD) and manifest.parts == [len(GOOD)]
    assert manifest.skipped["policy"] == "skip" and manifest.skipped["count"] == 7
    examples = manifest.skipped["examples"]
    assert len(examples) == 5  # capped
    assert [int(e.split(":")[1]) for e in examples] == [5, 12, 20, 31, 40]
    assert all(e.startswith(f"{raw}:") for e in examples)
    # the good rows are all there, in order, with their values
    _, labels, _, sparse = open_cache(tmp_path / "cache").columns()
    assert sparse[:, 25].tolist() == list(range(len(GOOD)))
    assert labels.tolist() == reference(GOOD)["labels"]


def test_skip_with_every_line_bad_has_no_data_rows(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text("a\tb\nc\n", encoding="utf-8")
    with pytest.raises(UserInputError, match="no data rows"):
        run_prepare(raw, tmp_path / "cache", on_error="skip")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_existing_out_is_refused_and_left_alone(tmp_path):
    raw = write_rows(tmp_path / "train.txt", GOOD)
    out = tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="already exists"):
        run_prepare(raw, out)
    assert (out / "keep.txt").read_text() == "mine" and not partial_folders(tmp_path)


def test_open_cache_without_manifest(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserInputError, match="no manifest.json"):
        open_cache(tmp_path / "folder")
    with pytest.raises(UserInputError, match="no manifest.json"):
        build_dataset(CriteoKaggleOptions(path=str(tmp_path / "folder")))


def test_open_cache_with_a_truncated_array(generated, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(generated["out"], copy)
    with (copy / "dense.f32").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserInputError, match="do not match the manifest"):
        open_cache(copy)
    (copy / "sparse.i32").unlink()
    with pytest.raises(UserInputError, match="do not match the manifest"):
        open_cache(copy)


def test_open_cache_with_a_broken_manifest(generated, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(generated["out"], copy)
    (copy / "manifest.json").write_text('{"format": "dlrs-bench-cache"')
    with pytest.raises(UserInputError, match="invalid manifest"):
        open_cache(copy)


# Odd input the parser must also refuse with file:line, never with a traceback.


def test_category_lengths_that_compensate_are_refused(tmp_path):
    """A 3-digit and a 13-digit hash in one chunk add up to 2 x 8 digits: the values must not shift."""
    raw = write_rows(tmp_path / "train.txt", GOOD, {3: bad_row(f14="abc"), 4: bad_row(f14="0123456789abc")})
    with pytest.raises(UserInputError, match=re.escape(f"{raw}:3:")):
        run_prepare(raw, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


@pytest.mark.parametrize("value", ["--5", "99999999999999999999"])
def test_odd_dense_values_are_user_errors(tmp_path, value):
    raw = write_rows(tmp_path / "train.txt", GOOD, {BAD_LINE: bad_row(f2=value)})
    with pytest.raises(UserInputError, match=re.escape(f"{raw}:{BAD_LINE}:")):
        run_prepare(raw, tmp_path / "cache", chunk_rows=10)
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_non_utf8_bytes_are_a_user_error(tmp_path):
    raw = write_rows(tmp_path / "train.txt", GOOD)
    raw.write_bytes(raw.read_bytes() + b"\xff\xfe\n")
    with pytest.raises(UserInputError, match=re.escape(f"{raw}:{len(GOOD) + 1}:")):
        run_prepare(raw, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


# ---------------------------------------------------------------- command line


def test_cli_prepare(generated, tmp_path):
    out = tmp_path / "cache"
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", generated["raw"], "--out", out, "--workers", 1)
    assert result.exit_code == EXIT_OK, result.output
    assert "710 rows" in result.output and f"CTR {generated['manifest'].ctr:.4f}" in result.output
    assert (out / "sparse.i32").read_bytes() == (generated["out"] / "sparse.i32").read_bytes()


def test_cli_prepare_two_days_with_options(two_days, tmp_path):
    out = tmp_path / "cache"
    result = invoke("data", "prepare", "criteo-tb", "--raw", two_days["days"][0], "--raw", two_days["days"][1],
                    "--out", out, "--numbering", "modulo", "--max-rows", 40, "--dense-transform", "torchrec",
                    "--workers", 2)
    assert result.exit_code == EXIT_OK, result.output
    manifest = open_cache(out).manifest
    assert manifest.parts == [300, 101] and set(manifest.features.values()) == {40}
    assert manifest.options["dense_transform"].startswith("torchrec")


def test_cli_bad_file_exits_2_with_file_and_line(tmp_path):
    raw = write_rows(tmp_path / "train.txt", GOOD, {BAD_LINE: BAD_LINES["non-hex category"][0]})
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", raw, "--out", tmp_path / "cache", "--workers", 1)
    assert result.exit_code == EXIT_INVALID
    assert f"{raw}:{BAD_LINE}:" in result.output
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


def test_cli_skip_reports_the_count(tmp_path):
    raw = write_rows(tmp_path / "train.txt", GOOD, {BAD_LINE: BAD_LINES["non-hex category"][0]})
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", raw, "--out", tmp_path / "cache",
                    "--on-error", "skip", "--workers", 1)
    assert result.exit_code == EXIT_OK, result.output
    assert "60 rows" in result.output and "1 bad line(s) skipped" in result.output


@pytest.mark.parametrize("flags", [["--numbering", "bogus"], ["--on-error", "ignore"], ["--frequency-threshold", "-1"],
                                   ["--dense-transform", "sqrt"], ["--max-rows", "0"]])
def test_cli_invalid_options_exit_2(tmp_path, flags):
    raw = write_rows(tmp_path / "train.txt", GOOD[:5])
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", raw, "--out", tmp_path / "cache", *flags)
    assert result.exit_code == EXIT_INVALID
    assert flags[0] in result.output
    assert not (tmp_path / "cache").exists()


def test_cli_existing_out_exits_2(tmp_path):
    raw = write_rows(tmp_path / "train.txt", GOOD[:5])
    (tmp_path / "cache").mkdir()
    result = invoke("data", "prepare", "criteo-kaggle", "--raw", raw, "--out", tmp_path / "cache", "--workers", 1)
    assert result.exit_code == EXIT_INVALID and "already exists" in result.output


# ---------------------------------------------------------------- the real Criteo sample (when present)


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory) -> Path:
    if not CRITEO_SAMPLE.exists():
        pytest.skip(f"real Criteo sample not found in the shared data folder ({CRITEO_SAMPLE})")
    out = tmp_path_factory.mktemp("sample") / "criteo"
    run_prepare(CRITEO_SAMPLE, out)
    return out


@needs_sample
def test_real_sample_prepares(sample_cache):
    manifest, labels, dense, sparse = open_cache(sample_cache).columns()
    assert manifest.rows == 1999 and manifest.parts == [1999]
    assert manifest.ctr == pytest.approx(0.209, abs=5e-4)
    assert manifest.skipped["count"] == 0
    assert np.isfinite(dense).all() and (dense >= 0).all()
    for j, cardinality in enumerate(manifest.features.values()):
        assert 1 <= cardinality <= 1999 and sparse[:, j].max() == cardinality - 1


@needs_sample
def test_real_sample_trains_through_the_cli(sample_cache, tmp_path):
    suite = tiny_suite(name="criteo-sample", matrix={"compressor": [{"kind": "none"}]})
    suite["defaults"]["dataset"] = {"name": "criteo-kaggle", "path": str(sample_cache), "split": "random"}
    suite["defaults"]["train"].update(max_epochs=2, stop_at_target=False)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_OK, result.output
    (file,) = list((tmp_path / "results" / "criteo-sample").glob("*/seed0.json"))
    data = json.loads(file.read_text())
    assert data["status"] != "failed", data["error"]
    assert math.isfinite(data["metrics"]["auc"]) and 0.0 < data["metrics"]["auc"] < 1.0
    assert data["eval_curve"] and data["eval_curve"][-1]["epoch"] == pytest.approx(2.0, abs=0.01)
    assert data["dataset"]["rows"] == {"train": 1601, "val": 199, "test": 199}


@needs_sample
def test_real_test_file_without_labels_is_refused(tmp_path):
    with pytest.raises(UserInputError, match=re.escape(f"{CRITEO_TEST_SAMPLE}:1:") + ".*expected 40.*got 39"):
        run_prepare(CRITEO_TEST_SAMPLE, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not partial_folders(tmp_path)


@pytest.mark.parametrize("numbering", ["dlrm", "torchrec"])
def test_renumbering_in_small_blocks_matches_one_block(monkeypatch, numbering):
    """The vocabulary and mapping passes work block by block (memory bounded by the vocabulary);
    the ids must not depend on the block size."""
    import dlrs_bench.data.prepare as prepare_module

    raw = np.random.default_rng(3).integers(0, 40, (500, 2)).astype(np.int64) * 104729
    options = PrepareOptions(numbering=numbering, frequency_threshold=3)
    whole, blocks = raw.copy(), raw.copy()
    sizes = [prepare_module.renumber(whole, j, options) for j in range(2)]
    monkeypatch.setattr(prepare_module, "BLOCK_ROWS", 17)
    assert [prepare_module.renumber(blocks, j, options) for j in range(2)] == sizes
    assert np.array_equal(whole, blocks)
