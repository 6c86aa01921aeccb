"""The results folder: concurrent writers lose nothing, and --resume trusts only a result that is
really the run's own."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

from conftest import tiny_suite
from test_cli import EXIT_OK, invoke, write

from dlrs_bench.results.store import ResultStore


def a_result(path: Path) -> dict:
    """A real result file of the tiny suite's first scenario (made once per test folder)."""
    suite = write(path / "tiny.yaml", tiny_suite())
    assert invoke("run", suite, "--results-dir", path / "r", "--filter", "none").exit_code == EXIT_OK
    (file,) = (path / "r" / "tiny").glob("*/seed0.json")
    return json.loads(file.read_text())


def write_many(args: tuple[str, dict, int]) -> int:
    root, result, count = args
    store = ResultStore(Path(root))
    for i in range(count):
        store.write({**result, "label": f"{result['label']} #{i}"})
    return count


def test_concurrent_writers_of_one_run_lose_no_result(tmp_path):
    result = a_result(tmp_path)
    root = tmp_path / "concurrent"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        written = sum(pool.map(write_many, [(str(root), result, 25)] * 4))
    folder = root / "tiny" / result["scenario_id"]
    kept = [folder / "seed0.json", *sorted((folder / "history").glob("seed0*.json"))]
    assert written == 100 and len(kept) == 100  # the current one and 99 archived, none overwritten
    assert all(json.loads(p.read_text())["scenario_id"] == result["scenario_id"] for p in kept)
    assert not list(folder.glob(".tmp-*"))


def test_resume_reruns_a_result_file_that_is_not_the_runs_own(tmp_path):
    result = a_result(tmp_path)
    store = ResultStore(tmp_path / "r")
    assert store.finished("tiny", result["scenario_id"], 0) is not None
    other = tmp_path / "r" / "tiny" / "0123456789" / "seed0.json"  # another scenario's id
    other.parent.mkdir()
    shutil.copy(store.path("tiny", result["scenario_id"], 0), other)
    assert store.finished("tiny", "0123456789", 0) is None
    (store.path("tiny", result["scenario_id"], 0).parent / "seed1.json").write_text(
        store.path("tiny", result["scenario_id"], 0).read_text())
    assert store.finished("tiny", result["scenario_id"], 1) is None  # seed 0's result under seed 1
    (tmp_path / "r" / "tiny" / "0123456789" / "seed2.json").mkdir()  # not even a file
    assert store.finished("tiny", "0123456789", 2) is None


def test_readers_and_writers_refuse_what_is_not_a_folder_or_a_result(tmp_path):
    result = a_result(tmp_path)
    folder = tmp_path / "r" / "tiny"
    (folder / "odd" / "seed0.json").mkdir(parents=True)  # a folder with a result's name: skipped
    listed = invoke("compare", str(tmp_path / "r"), "--baseline", str(tmp_path / "r"))
    assert listed.exit_code == EXIT_OK, listed.output
    binary = tmp_path / "seed9.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    refused = invoke("fit", str(binary), "--x", "samples", "--y", "ne")
    assert refused.exit_code == 2 and "not a dlrs-bench result file" in refused.output
    data = json.loads((folder / result["scenario_id"] / "seed0.json").read_text())
    data["timing"]["samples"] = None
    (tmp_path / "nulls").mkdir()
    (tmp_path / "nulls" / "seed0.json").write_text(json.dumps(data))
    nulls = invoke("fit", str(tmp_path / "nulls"), "--x", "samples", "--y", "ne")
    assert nulls.exit_code == 2 and "Traceback" not in nulls.output  # the only result is left out: nothing to fit
    assert "1 result(s) left out" in nulls.output and "seed 0: no samples (timing.samples)" in nulls.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    suite = write(tmp_path / "t.yaml", tiny_suite())
    for args in (["run", suite, "--results-dir", a_file / "sub"], ["report", str(tmp_path / "r"), "--out", a_file]):
        out = invoke(*args)
        assert out.exit_code == 2 and f"{a_file} is a file, not a folder" in " ".join(out.output.split()), out.output
