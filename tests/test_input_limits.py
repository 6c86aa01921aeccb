"""Inputs at or past what the suite loader, the synthetic generator and training can take: every one
ends in a message with exit 2 (``file:line`` for suites) or a ``failed`` record, never a traceback or a
run that silently trains something else; and every scenario dumped the way a result stores it validates
again with the same id."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import tiny_suite
from test_cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, invoke, results_of, write
from test_prepare import criteo_rows, run_prepare, write_rows

from dlrs_bench.config.expand import load_suite, scenario_id
from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.config.yaml_lines import load_yaml
from dlrs_bench.data.movielens import BUNDLED
from dlrs_bench.data.options import SyntheticOptions
from dlrs_bench.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").glob("*.yaml"))

#: A valid suite; ``KEY`` marks where a test puts a line of its own (indented as the line it replaces).
SUITE = """\
name: limits
defaults:
  dataset: {name: synthetic, rows: 20000, cardinalities: [50, 10]}
  model:
    name: dlrm
    embedding_dim: 16
  train: {batch_size: 256, max_epochs: 0.5}
  target: {value: 0.7}
  seeds: [0]
mlperf:
  org: me
matrix:
  compressor: [{kind: none}]
scenarios:
  - {name: one, train: {lr: 0.01}}
"""


def suite_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(result: Any) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------------- keys that are not text


def insert_after(text: str, needle: str, line: str) -> str:
    """``text`` with ``line`` put after the line holding ``needle``, indented as the line after it."""
    lines = text.splitlines()
    i = next(n for n, t in enumerate(lines) if needle in t)
    indent = " " * (len(lines[i + 1]) - len(lines[i + 1].lstrip()))
    return "\n".join([*lines[: i + 1], *(indent + part for part in line.split("\n")), *lines[i + 1:]]) + "\n"


#: (where, the suite with a list key inserted, the 1-based line of that key, its parent's dotted path)
LIST_KEYS = [
    ("top level", insert_after(SUITE, "name: limits", "? [a, b]\n: 1"), 2, "(top)"),
    ("defaults", insert_after(SUITE, "defaults:", "? [a, b]\n: 1"), 3, "defaults"),
    ("dataset", SUITE.replace("cardinalities: [50, 10]}", "cardinalities: [50, 10], [a, b]: 1}"), 3,
     "defaults.dataset"),
    ("model", insert_after(SUITE, "name: dlrm", "? [a, b]\n: 1"), 6, "defaults.model"),
    ("train", SUITE.replace("max_epochs: 0.5}", "max_epochs: 0.5, {a: 1}: 2}"), 7, "defaults.train"),
    ("seeds", SUITE.replace("seeds: [0]", "seeds: {[a, b]: 1}"), 9, "defaults.seeds"),
    ("mlperf", insert_after(SUITE, "mlperf:", "? [a, b]\n: 1"), 11, "mlperf"),
    ("matrix", insert_after(SUITE, "matrix:", "? [a, b]\n: [1]"), 13, "matrix"),
    ("matrix entry", SUITE.replace("[{kind: none}]", "[{kind: none, [a]: 1}]"), 13, "matrix.compressor.0"),
    ("scenarios", SUITE.replace("{name: one, train: {lr: 0.01}}", "{name: one, [a, b]: 1}"), 15, "scenarios.0"),
    ("root list", "- ? [a, b]\n  : 1\n", 1, "0"),
    ("only the key", "? [a, b]\n: 1\n", 1, "(top)"),
]


@pytest.mark.parametrize("where, text, line, parent", LIST_KEYS, ids=[c[0] for c in LIST_KEYS])
def test_a_list_or_mapping_key_is_an_error_at_its_line(tmp_path, where, text, line, parent):
    path = suite_file(tmp_path, text)
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID, result.output
    (error,) = errors_of(result)
    assert error.startswith(f"error: {path}:{line}: {parent}: the key "), error
    assert error.endswith(("is a list; a key must be text", "is a mapping; a key must be text")), error


def test_run_refuses_a_list_key_like_validate(tmp_path):
    path = suite_file(tmp_path, insert_after(SUITE, "name: limits", "? [a, b]\n: 1"))
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_INVALID
    assert errors_of(result) == [f"error: {path}:2: (top): the key [a, b] is a list; a key must be text"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("key, kind", [("true", "a boolean"), ("3", "a number"), ("~", "null"), ("1.5", "a number"),
                                       ("2024-01-01", "a date")])
def test_a_key_of_another_type_is_an_error_at_its_own_line(tmp_path, key, kind):
    path = suite_file(tmp_path, insert_after(SUITE, "mlperf:", f"{key}: 1"))
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID
    assert errors_of(result) == [f'error: {path}:11: mlperf: the key {key} is {kind}; a key must be text (quote it '
                                 f'to mean the text: "{key}":)']
    path = suite_file(tmp_path, SUITE.replace("name: limits", f"name: limits\n{key}: 1"))
    assert errors_of(invoke("validate", path)) == [
        f'error: {path}:2: (top): the key {key} is {kind}; a key must be text (quote it to mean the text: "{key}":)']


def test_a_quoted_key_is_text(tmp_path):
    path = suite_file(tmp_path, SUITE.replace("org: me", 'org: me\n  "3": 1'))
    assert errors_of(invoke("validate", path)) == [f"error: {path}:12: mlperf.3: unknown key"]


def test_files_that_allow_other_keys_still_refuse_list_keys_and_know_their_lines(tmp_path):
    """Reference tables key levels by number (``{1: ..., 10: ...}``): only suites ask for text keys."""
    path = suite_file(tmp_path, "levels:\n  1: a\n  10: b\n")
    data, lines = load_yaml(path)
    assert data == {"levels": {1: "a", 10: "b"}} and lines[("levels", 10)] == 3
    path = suite_file(tmp_path, "levels:\n  ? [1]\n  : a\n")
    with pytest.raises(UserInputError, match=r"suite\.yaml:2: levels: the key \[1\] is a list; a key must be a "
                                             r"single value$"):
        load_yaml(path)
    path = suite_file(tmp_path, "levels:\n  1: a\n  1.0: b\n")  # one key once constructed
    with pytest.raises(UserInputError, match=r"suite\.yaml:3: levels\.1\.0: duplicate key \(first defined on line 2"):
        load_yaml(path)


@pytest.mark.parametrize("value, problem", [("2020-13-45", "'2020-13-45' is not a valid timestamp (month must be in "
                                                           "1..12)"),
                                            ("0x_", "'0x_' is not a valid int")])
def test_a_value_yaml_cannot_construct_is_an_error_at_its_line(tmp_path, value, problem):
    path = suite_file(tmp_path, SUITE.replace("org: me", f"org: me\n  platform: {value}"))
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID
    (error,) = errors_of(result)
    assert error.startswith(f"error: {path}:12: YAML syntax error: {problem}"), error


# ------------------------------------------------------------------ synthetic data past int64 or this machine


def test_prepare_refuses_table_ids_past_int64(tmp_path):
    out = tmp_path / "syn"
    result = invoke("data", "prepare", "synthetic", "--rows", "1000", "--set", "cardinalities=[99999999999999999999]",
                    "--out", out)
    assert result.exit_code == EXIT_INVALID
    assert errors_of(result) == ["error: --set cardinalities: a table has at most 9,223,372,036,854,775,807 rows "
                                 "(2^63 - 1: its ids are int64) (got [99999999999999999999])"]
    assert not out.exists()


@pytest.mark.parametrize("options, error", [
    ("rows: 5", "rows 5 split by split_fractions [0.8, 0.1, 0.1] leave 0 val and 0 test rows; every split needs at "
                "least one (more rows)"),
    ("cardinalities: []", "give at least one table (got [])")])
def test_synthetic_options_that_could_not_be_generated_are_refused(tmp_path, options, error):
    path = suite_file(tmp_path, SUITE.replace("rows: 20000, cardinalities: [50, 10]", options))
    field = ".cardinalities" if "cardinalities" in options else ""
    assert errors_of(invoke("validate", "--portable", path)) == [f"error: {path}:3: defaults.dataset{field}: {error}"]
    key, value = options.split(": ")
    result = invoke("data", "prepare", "synthetic", "--set", f"{key}={value}", "--out", tmp_path / "syn")
    assert result.exit_code == EXIT_INVALID and error in result.output, result.output


@pytest.mark.parametrize("setting, named", [("cardinalities=[9000000000000]", "cardinalities: 9,000,000,000,000 ids"),
                                            ("teacher_dim=100000000", "teacher_dim 100000000")])
def test_prepare_refuses_what_this_machine_has_not_the_memory_to_generate(tmp_path, setting, named):
    out = tmp_path / "syn"
    result = invoke("data", "prepare", "synthetic", "--rows", "1000", "--set", setting, "--out", out, "--workers", "1")
    assert result.exit_code == EXIT_INVALID
    (error,) = errors_of(result)
    assert error.startswith("error: generating this synthetic data needs about ") and named in error, error
    assert "available on this machine" in error and "(1 thread(s);" in error
    assert not any(out.glob("*.bin"))


@pytest.fixture
def little_memory(monkeypatch) -> int:
    """This machine shown with 64 MiB available (bytes returned)."""
    import dlrs_bench.data.options as options

    available = 64 << 20
    monkeypatch.setattr(options.psutil, "virtual_memory", lambda: SimpleNamespace(available=available))
    return available


def test_validate_and_run_refuse_synthetic_data_past_the_memory_available_and_portable_skips_it(tmp_path,
                                                                                                 little_memory):
    path = suite_file(tmp_path, SUITE.replace("cardinalities: [50, 10]", "cardinalities: [5000000, 10]"))
    need = SyntheticOptions(rows=20000, cardinalities=[5_000_000, 10]).generation_bytes()
    assert need > little_memory
    expected = (f"error: {path}:3: defaults.dataset: generating this synthetic data needs about {need / 2**20:,.1f} "
                "MiB of memory, more than the 64.0 MiB available on this machine: ")
    for command in (["validate"], ["run", "--results-dir", tmp_path / "results"]):
        result = invoke(*command, path)
        assert result.exit_code == EXIT_INVALID
        (error,) = errors_of(result)
        assert error.startswith(expected) and "(cardinalities: 5,000,010 ids in all, teacher_dim 8)" in error, error
    assert invoke("validate", "--portable", path).exit_code == EXIT_OK


def test_the_memory_estimate_counts_every_array_the_teacher_keeps():
    """Beyond what the teacher keeps, the estimate adds the largest table's temporaries (16 bytes an id)."""
    from dlrs_bench.data.synthetic import Teacher

    options = SyntheticOptions(cardinalities=[3000, 700, 20], teacher_dim=5, num_dense=3)
    teacher = Teacher(options)
    kept = sum(a.nbytes for arrays in (teacher.cdf, teacher.ids, teacher.b, teacher.v) for a in arrays)
    assert options.teacher_bytes() == kept + 16 * 3000
    assert options.generation_bytes(3) - options.generation_bytes(2) == options.generation_bytes(2) - \
        options.generation_bytes(1) > options.chunk_bytes()


# ------------------------------------------------------------------------- batches larger than the train rows


@pytest.mark.parametrize("dataset, train_rows", [
    ("{name: synthetic, rows: 20000, cardinalities: [50, 10]}", "16,000"),
    ("{name: synthetic, rows: 20000, cardinalities: [50, 10], split_fractions: [0.5, 0.25, 0.25]}", "10,000"),
    ("{name: synthetic, rows: 20000, cardinalities: [50, 10], fraction: 0.01}", "160"),
    ("{name: synthetic, rows: 20000, cardinalities: [50, 10], num_samples: 200}", "200"),
    ("{name: movielens-latest-small}", "80,670"),
    ("{name: movielens-latest-small, split: temporal, split_fractions: [0.5, 0.3, 0.2]}", "50,419"),
])
def test_validate_refuses_a_batch_larger_than_the_rows_trained_on(tmp_path, dataset, train_rows):
    text = SUITE.replace("{name: synthetic, rows: 20000, cardinalities: [50, 10]}", dataset)
    path = suite_file(tmp_path, text.replace("batch_size: 256", "batch_size: 100000000"))
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID
    assert errors_of(result) == [f"error: {path}:7: defaults.train.batch_size: batch_size 100,000,000 is larger than "
                                 f"the {train_rows} rows trained on (the train split, after num_samples / fraction)"]
    path = suite_file(tmp_path, text.replace("batch_size: 256", f"batch_size: {train_rows.replace(',', '')}"))
    assert invoke("validate", path).exit_code == EXIT_OK


def test_validate_refuses_more_samples_than_the_train_split_holds(tmp_path):
    path = suite_file(tmp_path, SUITE.replace("[50, 10]}", "[50, 10], num_samples: 16001}"))
    assert errors_of(invoke("validate", path)) == [
        f"error: {path}:3: defaults.dataset.num_samples: 16,001 is more than the 16,000 train rows of synthetic"]


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> Path:
    """A cache of 3,000 synthetic rows (2,400 train) written by ``data prepare synthetic``."""
    out = tmp_path_factory.mktemp("syn") / "cache"
    result = invoke("data", "prepare", "synthetic", "--rows", "3000", "--set", "cardinalities=[64, 32, 16]",
                    "--set", "num_dense=4", "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    return out


def test_validate_reads_the_train_rows_of_a_cache_from_its_manifest(tmp_path, synthetic_cache):
    dataset = f"{{name: synthetic, path: {synthetic_cache}}}"
    text = SUITE.replace("{name: synthetic, rows: 20000, cardinalities: [50, 10]}", dataset)
    path = suite_file(tmp_path, text.replace("batch_size: 256", "batch_size: 2401"))
    assert errors_of(invoke("validate", path)) == [
        f"error: {path}:7: defaults.train.batch_size: batch_size 2,401 is larger than the 2,400 rows trained on (the "
        "train split, after num_samples / fraction)"]


@pytest.fixture(scope="module")
def criteo_cache(tmp_path_factory) -> Path:
    """A prepared Criteo Kaggle cache of 710 rows: days of 102, 102, 102, 101, 101, 101 and 101 rows."""
    root = tmp_path_factory.mktemp("criteo")
    run_prepare(write_rows(root / "train.txt", criteo_rows(710, seed=1)), root / "cache")
    return root / "cache"


@pytest.mark.parametrize("split, train_rows", [("dlrm-7day", 609), ("random", 568), ("temporal", 568)])
def test_validate_takes_the_train_rows_of_a_prepared_cache_from_its_split_protocol(tmp_path, criteo_cache, split,
                                                                                    train_rows):
    dataset = f"{{name: criteo-kaggle, path: {criteo_cache}, split: {split}}}"
    text = SUITE.replace("{name: synthetic, rows: 20000, cardinalities: [50, 10]}", dataset)
    path = suite_file(tmp_path, text.replace("batch_size: 256", f"batch_size: {train_rows + 1}"))
    assert errors_of(invoke("validate", path)) == [
        f"error: {path}:7: defaults.train.batch_size: batch_size {train_rows + 1} is larger than the {train_rows} rows "
        "trained on (the train split, after num_samples / fraction)"]
    path = suite_file(tmp_path, text.replace("batch_size: 256", f"batch_size: {train_rows}"))
    assert invoke("validate", path).exit_code == EXIT_OK


def test_a_run_that_finds_a_batch_larger_than_the_train_split_is_failed(tmp_path):
    """A MovieLens folder of your own: only reading it tells its size, so validate lets the batch pass."""
    folder = tmp_path / "ml"
    folder.mkdir()
    shutil.copy(BUNDLED / "movies.csv", folder / "movies.csv")
    ratings = (BUNDLED / "ratings.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "ratings.csv").write_text("".join(ratings[:201]), encoding="utf-8")  # 200 ratings: 160 train
    suite = tiny_suite("ml-batch", matrix={})
    suite["defaults"]["dataset"] = {"name": "movielens-latest-small", "path": str(folder)}
    suite["defaults"]["train"].update(batch_size=1000, max_epochs=0.5)
    path = write(tmp_path / "suite.yaml", suite)
    assert invoke("validate", path).exit_code == EXIT_OK
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_FAILED, result.output
    (record,) = results_of(tmp_path / "results", "ml-batch").values()
    assert record["status"] == "failed"
    assert record["error"]["message"] == ("train.batch_size 1,000 is larger than the 160 rows trained on (the train "
                                          "split, after num_samples / fraction)")


# ------------------------------------------------------------------- a stored scenario validates again


def assert_dump_validates_with_the_same_id(spec: Any) -> None:
    """``spec`` dumped as a result file stores it validates again to the same spec and scenario id."""
    again, errors = validate_scenario(json.loads(json.dumps(spec.model_dump(mode="json"))))
    assert not errors, errors
    assert again == spec and scenario_id(again) == scenario_id(spec)


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_every_bundled_scenario_validates_again_from_its_dump(suite):
    for scenario in load_suite(suite, machine_checks=False).scenarios:
        assert_dump_validates_with_the_same_id(scenario.spec)


def test_a_synthetic_scenario_with_path_validates_again_from_its_dump():
    spec, errors = validate_scenario({"dataset": {"name": "synthetic", "path": "data/syn", "fraction": 0.5},
                                      "model": {"name": "dlrm"}, "target": {"value": 0.7}})
    assert not errors
    assert spec.model_dump(mode="json")["dataset"] == {
        "name": "synthetic", "path": "data/syn", "num_samples": None, "fraction": 0.5, "subset_seed": 0,
        "shuffle": "auto", "shuffle_block_rows": 4096, "shuffle_window_rows": 1 << 20}
    assert_dump_validates_with_the_same_id(spec)
    assert scenario_id(spec) == "2ffb748dd0"  # the id such scenarios had before the dump left generation out


def test_compare_rcp_judges_a_fresh_result_on_a_synthetic_cache(tmp_path, synthetic_cache):
    suite = tiny_suite("syn-path", matrix={})
    suite["defaults"]["dataset"] = {"name": "synthetic", "path": str(synthetic_cache)}
    path = write(tmp_path / "suite.yaml", suite)
    assert invoke("run", path, "--results-dir", tmp_path / "results").exit_code == EXIT_OK
    result = invoke("compare", "--rcp", tmp_path / "results" / "syn-path", "--json")
    (comparison,) = json.loads(result.output)
    assert comparison["verdict"] == "NOT_COMPARABLE"
    assert comparison["reason"].startswith("not the MLPerf configuration: data.dataset: dataset is 'synthetic'")
