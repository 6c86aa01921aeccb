"""What a prepared cache holds: its manifest's meaning checked when read, its identity recorded when written,
checked when opened, stored with every result and matched by ``--resume`` and ``compare``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MODEL, TINY_TRAIN
from test_cli import EXIT_INVALID, invoke, write

from dlrs_bench.data.cache import open_cache
from dlrs_bench.errors import UserInputError


def prepare(out: Path, rows: int = 2000, cardinalities: str = "[64,32,16,8]") -> Path:
    result = invoke("data", "prepare", "synthetic", "--rows", rows, "--set", f"cardinalities={cardinalities}",
                    "--set", "num_dense=2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("prepared") / "syn")


def edited(cache: Path, to: Path, **changes: Any) -> Path:
    """A copy of ``cache`` whose manifest has ``changes`` (and no recorded identity, so that what is checked is
    the meaning of the fields)."""
    shutil.copytree(cache, to)
    manifest = json.loads((to / "manifest.json").read_text())
    (to / "manifest.json").write_text(json.dumps({**manifest, **changes, "identity": None}))
    return to


def suite_on(tmp_path: Path, path: Path, name: str = "s", **train: Any) -> Path:
    return write(tmp_path / f"{name}.yaml", {"name": name, "defaults": {
        "dataset": {"name": "synthetic", "path": str(path)}, "model": TINY_MODEL,
        "train": {**TINY_TRAIN, "max_epochs": 1, "eval_every": 1, **train}, "target": {"value": 0.55}},
        "scenarios": [{"compressor": {"kind": "none"}}]})


SPLITS = {"train": [0, 1600], "val": [1600, 1800], "test": [1800, 2000]}

EDITS = [
    ({"features": {"t0": 0, "t1": 32, "t2": 16, "t3": 8}},
     "features.t0: a table of 0 rows; every table needs at least one"),
    ({"features": {"t0": -1, "t1": 32, "t2": 16, "t3": 8}}, "features.t0: a table of -1 rows"),
    ({"sparse_dtype": "int16"}, "sparse_dtype: Input should be 'int32' or 'int64'"),
    ({"splits": {**SPLITS, "train": [0, 1700]}},
     "splits.val: starts at row 1,600, before the previous split ends (1,700): splits must be in the order train, "
     "val, test and disjoint"),
    ({"splits": {**SPLITS, "val": [1600, 1600]}}, "splits.val: [1600, 1600) is not a non-empty row range"),
    ({"splits": {**SPLITS, "train": [1600, 0]}}, "splits.train: [1600, 0) is not a non-empty row range"),
    ({"splits": {**SPLITS, "test": [1800, 2001]}}, "splits.test: [1800, 2001) is not a non-empty row range within "
     "the 2,000 rows"),
    ({"splits": {"train": [0, 1600], "val": [1600, 2000]}}, "splits: expected train, val, test, got train, val"),
    ({"rows": 4000}, "parts: [2000] add up to 2,000 rows, but rows says 4,000"),
    ({"ctr": 1.5}, "ctr: Input should be less than or equal to 1"),
    ({"shuffle": {"seed": 0, "rows": 3000, "method": "x"}}, "shuffle: 3,000 shuffled rows of 2,000"),
    ({"bags": {"t9": 2}}, "bags: 't9' is not one of the features"),
]


@pytest.mark.parametrize(("changes", "message"), EDITS, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(EDITS)])
def test_an_edited_manifest_is_refused_naming_the_field(cache, tmp_path, changes, message):
    folder = edited(cache, tmp_path / "edited", **changes)
    with pytest.raises(UserInputError) as error:
        open_cache(folder)
    assert str(error.value).startswith(f"{folder / 'manifest.json'}: invalid manifest: {message}")
    # validate (and run) say the same, at the suite's line of the dataset path, with exit 2
    result = invoke("validate", suite_on(tmp_path, folder))
    assert result.exit_code == EXIT_INVALID
    assert message in " ".join(result.output.split())


def test_the_identity_is_recorded_and_names_the_content_not_the_place(cache, tmp_path):
    recorded = json.loads((cache / "manifest.json").read_text())["identity"]
    assert len(recorded) == 16 and open_cache(cache).identity == recorded
    shutil.copytree(cache, tmp_path / "moved")  # the same data elsewhere
    assert open_cache(tmp_path / "moved").identity == recorded
    assert open_cache(prepare(tmp_path / "again")).identity == recorded  # prepared again, at another time
    assert open_cache(prepare(tmp_path / "more", rows=4000)).identity != recorded
    assert open_cache(prepare(tmp_path / "fewer", cardinalities="[64,32]")).identity != recorded


def test_a_manifest_changed_after_prepare_is_refused(cache, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "ctr": 0.9}))  # still a valid manifest
    with pytest.raises(UserInputError, match=r"manifest\.json: changed since `dlrs-bench data prepare` wrote it"):
        open_cache(copy)
    # a manifest without an identity (an earlier version's) is read, its identity computed
    (copy / "manifest.json").write_text(json.dumps({**manifest, "identity": None}))
    assert open_cache(copy).identity == manifest["identity"]


def test_every_result_records_the_identity_of_its_data(cache, tmp_path):
    result = invoke("run", suite_on(tmp_path, cache), "--results-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "r" / "s").rglob("seed0.json")
    dataset = json.loads(path.read_text())["dataset"]
    assert dataset["cache"]["identity"] == open_cache(cache).identity


def test_a_cache_prepared_again_with_other_data_is_rerun_and_not_compared(tmp_path):
    """The same path, other contents (2,000 → 4,000 rows, 4 → 2 tables): ``--resume`` trains again, and
    ``compare --baseline`` calls the two NOT_COMPARABLE instead of judging the change."""
    data = prepare(tmp_path / "data")
    suite = suite_on(tmp_path, data)
    first = invoke("run", suite, "--results-dir", tmp_path / "before")
    assert first.exit_code == 0, first.output
    shutil.rmtree(data)
    prepare(data, rows=4000, cardinalities="[64,32]")
    shutil.copytree(tmp_path / "before", tmp_path / "after")
    resumed = invoke("run", suite, "--results-dir", tmp_path / "after", "--resume")
    assert resumed.exit_code == 0, resumed.output
    (path,) = (tmp_path / "after" / "s").glob("*/seed0.json")
    assert json.loads(path.read_text())["dataset"]["rows"]["train"] == 3200  # trained again, on the new rows
    compared = invoke("compare", tmp_path / "after", "--baseline", tmp_path / "before", "--json")
    assert compared.exit_code == 0, compared.output
    verdicts = json.loads(compared.output)
    assert {c["verdict"] for c in verdicts} == {"NOT_COMPARABLE"}
    assert verdicts[0]["reason"].startswith(f"trained on other data: dataset cache {open_cache(data).identity} here")
