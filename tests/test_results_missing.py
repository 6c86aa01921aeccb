"""Readers of result files (report, compare, fit) on every result the schema allows: any nullable
number null (or NaN, as files written before strict JSON hold), failed and diverged runs, an empty
curve, a free-form scenario. A missing number is shown as '–' or left out of a plot or fit with a
note; never a traceback (issue 12)."""

from __future__ import annotations

import copy
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.results.schema import ResultFile

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "reference_results" / "ci" / "ci" / "9e5c0f0d92" / "seed0.json"  # hashing, a real CI result
runner = CliRunner()
Loc = tuple[str | int, ...]

#: Table columns of report.md and the result field each shows.
COLUMNS = ("suite", "scenario", "seed", "status", "best AUC", "best NE", "ratio (compressed tables)",
           "ratio (all tables)", "params", "time → target s")


def nullable_paths(model: type[BaseModel], prefix: Loc = ()) -> list[Loc]:
    """Every field of the result schema that may be null, as a path (list items: index 0)."""
    out: list[Loc] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation)
        if type(None) in args:
            out.append((*prefix, name))
        for arg in (annotation,) if typing.get_origin(annotation) is list else args or (annotation,):
            if typing.get_origin(arg) is list:
                item = typing.get_args(arg)[0]
                if isinstance(item, type) and issubclass(item, BaseModel):
                    out.extend(nullable_paths(item, (*prefix, name, 0)))
            elif isinstance(arg, type) and issubclass(arg, BaseModel):
                out.extend(nullable_paths(arg, (*prefix, name)))
    return out


NULLABLE = nullable_paths(ResultFile)


def put(data: dict[str, Any], at: Loc, value: Any) -> None:
    for key in at[:-1]:
        data = data[key]
    data[at[-1]] = value


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def run(template: dict[str, Any], i: int, label: str, scenario_id: str | None = None,
        **changes: Any) -> dict[str, Any]:
    """A finished hashing run that scales with ``i`` (ratio 2^i of the compressed tables and over all, more
    samples (the suite varies num_samples) and parameters, lower NE)."""
    data = copy.deepcopy(template)
    data.update(label=label, scenario_id=scenario_id or f"id{i:02d}", seed=0, status="reached")
    data["scenario"]["dataset"]["num_samples"] = 1000 * 3**i
    data["embedding"].update(compression_ratio=2.0**i, bytes=2**20 // 2**i)
    for table in data["embedding"]["per_table"]:
        if table["compressed"]:
            table["params"] = table["rows"] * table["dim"] // 2**i
    data["best_metrics"].update(auc=0.80 - 0.005 * i, ne=0.80 + 0.1 / (i + 1))
    data["timing"]["samples"] = 1000 * 3**i
    data["model"].update(total_params=10_000 * 2**i, flops_per_sample=100 + i)
    data.update(changes)
    return data


def scaling_set(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [run(template, i, f"ok{i}") for i in range(6)]


def write(results: list[dict[str, Any]], folder: Path) -> Path:
    for data in results:
        path = folder / data["suite"] / data["scenario_id"] / f"seed{data['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    return folder


def invoke(*args: Any):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def table(markdown: str) -> dict[str, dict[str, str]]:
    """The table of runs of report.md: label -> {column: cell}."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| suite")]
    out = {}
    for line in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == len(COLUMNS), line
        out[cells[1]] = dict(zip(COLUMNS, cells))
    return out


def test_every_nullable_field_is_read_without_a_traceback(template, tmp_path):
    """One run per nullable field of the schema with that field null, beside runs that have all numbers:
    report, compare and fit read them all; the table shows '–' where the number is missing."""
    assert ("best_metrics", "ne") in NULLABLE and ("timing", "samples") in NULLABLE and ("memory",) in NULLABLE
    good = scaling_set(template)
    nulled = []
    for n, at in enumerate(NULLABLE):
        data = run(template, n % 6, "null:" + ".".join(map(str, at)), scenario_id=f"null{n:02d}")
        put(data, at, None)
        if at == ("error",):
            data.update(status="failed", error=None)  # a failed run may lack its error section
        nulled.append(ResultFile.model_validate(data).model_dump(mode="json"))  # the schema allows it
    everything = [run(template, 0, "all-null", "all-null", **{k: None for k in (
        "metrics", "best_metrics", "target", "timing", "memory", "embedding", "model", "distributed")},
        eval_curve=[])]
    results = write(good + nulled + everything, tmp_path / "r")
    baseline = write(good, tmp_path / "baseline")

    report = invoke("report", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    rows = table(markdown)
    assert len(rows) == len(good) + len(nulled) + 1
    expect_missing = {("best_metrics",): {"best AUC", "best NE"}, ("best_metrics", "auc"): {"best AUC"},
                      ("best_metrics", "ne"): {"best NE"}, ("model",): {"params"},
                      ("embedding",): {"ratio (compressed tables)", "ratio (all tables)"},
                      ("target",): {"time → target s"}, ("target", "time_to_target_s"): {"time → target s"}}
    for at, columns in expect_missing.items():
        row = rows["null:" + ".".join(map(str, at))]
        assert {c for c in COLUMNS if row[c] == "–"} == columns, row
    assert set(rows["all-null"].values()) >= {"–"} and rows["all-null"]["best AUC"] == "–"
    assert (rows["ok0"]["best AUC"], rows["ok0"]["best NE"], rows["ok0"]["params"]) == ("0.8000", "0.9000", "10,000")
    for name in ("auc_vs_ratio.png", "pareto.png", "scaling_samples.png", "scaling_flops.png"):
        assert (tmp_path / "report" / name).stat().st_size > 10_000, name
    assert not (tmp_path / "report" / "scaling_params.png").exists()  # the suite varies no model knob
    # the runs a plot could not use are named in its caption, with what they lack
    assert "null:best_metrics.auc seed 0 (best AUC)" in markdown
    assert "null:timing.samples seed 0 (samples)" in markdown

    for x in ("samples", "params", "flops"):
        fit = invoke("fit", results, "--x", x, "--json")
        assert fit.exit_code == 0, fit.output
        data = json.loads(fit.stdout)
        assert data["points"] + len(data["left_out"]) == len(good) + len(nulled) + 1
        assert any("all-null" not in note and "no ne" in note for note in data["left_out"])
    text = invoke("fit", results, "--x", "samples")
    assert text.exit_code == 0 and "result(s) left out" in text.output and "no samples (timing.samples)" in text.output

    for args in (["--baseline", baseline], ["--reference", REPO / "reference_results"]):
        compare = invoke("compare", results, *args, "--json")
        assert compare.exit_code in (0, 1), compare.output
        assert json.loads(compare.stdout)
    verdicts = {(c["label"], c["metric"]): c["verdict"] for c in json.loads(
        invoke("compare", results, "--baseline", baseline, "--json").stdout)}
    assert verdicts[("null:error", "auc")] == "FAILED" and verdicts[("ok0", "auc")] == "PASS"


def test_diverged_and_failed_runs_are_reported_not_plotted(template, tmp_path):
    not_reached = {"metric": "auc", "value": 0.79, "reached": False, "time_to_target_s": None,
                   "epochs_to_target": None, "samples_to_target": None}
    diverged = run(template, 6, "diverged", None, status="diverged", best_metrics=None, eval_curve=[],
                   target=not_reached, metrics={"auc": None, "logloss": None, "ne": None},
                   diverged={"step": 7, "cause": "nan loss"})
    unknown = run(template, 7, "diverged-no-step", None, status="diverged", metrics=None, best_metrics=None,
                  diverged=None, target=not_reached)
    failed = run(template, 8, "failed", None, status="failed", error={"type": "RuntimeError", "message": "boom"},
                 metrics=None, best_metrics=None, target=None, timing=None, memory=None, embedding=None, model=None,
                 eval_curve=[])
    results = write([*scaling_set(template), diverged, unknown, failed], tmp_path / "r")

    report = invoke("report", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "9 result(s): 6 reached, 0 not reached, 2 diverged, 1 failed" in markdown
    rows = table(markdown)
    assert rows["diverged"]["status"] == "diverged at step 7" and rows["diverged"]["best AUC"] == "–"
    assert rows["diverged-no-step"]["status"] == "diverged"
    assert rows["diverged"]["time → target s"] == "–" and rows["ok0"]["time → target s"] == "0.6"
    assert [rows["failed"][c] for c in COLUMNS[4:]] == ["–"] * 6

    compare = invoke("compare", results, "--baseline", results, "--json")
    assert compare.exit_code == 1
    reasons = {c["label"]: (c["verdict"], c["reason"]) for c in json.loads(compare.stdout) if c["metric"] == "auc"}
    assert reasons["diverged"] == ("FAILED", "seed 0: diverged at step 7")
    assert reasons["diverged-no-step"] == ("FAILED", "seed 0: diverged")
    assert reasons["failed"] == ("FAILED", "seed 0: RuntimeError")

    fit = invoke("fit", results, "--json")
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.stdout)["points"] == 6
    assert sorted(json.loads(fit.stdout)["left_out"]) == [
        f"ci/{d['scenario_id']} seed 0: {d['status']}" for d in sorted((diverged, unknown, failed),
                                                                      key=lambda d: f"ci/{d['scenario_id']}")]


def test_a_fit_left_with_too_few_points_names_the_results_left_out(template, tmp_path):
    runs = scaling_set(template)[:4]
    runs[1]["timing"]["samples"] = None
    runs[2]["best_metrics"] = runs[2]["metrics"] = None
    results = write(runs, tmp_path / "r")
    fit = invoke("fit", results)
    assert fit.exit_code == 2
    assert "cannot fit" in fit.output and "2 result(s) left out" in fit.output
    assert f"ci/{runs[1]['scenario_id']} seed 0: no samples (timing.samples)" in fit.output
    assert f"ci/{runs[2]['scenario_id']} seed 0: no ne" in fit.output


def test_nan_in_a_file_written_before_strict_json_counts_as_missing(template, tmp_path):
    runs = scaling_set(template)
    results = write(runs, tmp_path / "r")
    baseline = write(copy.deepcopy(runs), tmp_path / "baseline")
    victim = results / "ci" / runs[0]["scenario_id"] / "seed0.json"
    text = victim.read_text(encoding="utf-8")
    data = json.loads(text)
    data["best_metrics"]["auc"] = float("nan")
    data["best_metrics"]["ne"] = float("inf")
    victim.write_text(json.dumps(data), encoding="utf-8")  # bare NaN / Infinity, as older files hold
    assert "NaN" in victim.read_text(encoding="utf-8")

    report = invoke("report", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    row = table((tmp_path / "report" / "report.md").read_text(encoding="utf-8"))["ok0"]
    assert row["best AUC"] == "–" and row["best NE"] == "–"
    compare = invoke("compare", results, "--baseline", baseline, "--json")
    verdicts = {(c["label"], c["metric"]): c for c in json.loads(compare.stdout)}
    assert verdicts[("ok0", "auc")]["verdict"] == "NOT_COMPARABLE"  # not 'REGRESSED Δ +nan'
    assert verdicts[("ok0", "auc")]["reason"] == "auc missing"
    assert "nan" not in compare.stdout.lower()
    fit = invoke("fit", results, "--json")
    assert fit.exit_code == 0 and json.loads(fit.stdout)["points"] == 5


def test_zero_and_free_form_values_the_schema_allows(template, tmp_path):
    """Zero ratio, memory and parameters (no log axis can show them), an empty scenario, a label that
    is not text or holds a '|'."""
    runs = scaling_set(template)
    runs[0]["embedding"].update(compression_ratio=0.0, bytes=0)
    runs[1]["model"]["total_params"] = 0
    runs[2]["scenario"] = {}
    runs[3]["label"] = None
    runs[4]["label"] = "a|b [/x]"
    results = write(runs, tmp_path / "r")
    report = invoke("report", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    rows = table(markdown)
    assert runs[3]["scenario_id"] in rows and "a\\|b [/x]" in rows
    assert "ok0 seed 0 (embedding bytes ≤ 0)" in markdown
    for args in (["--baseline", results], ["--reference", REPO / "reference_results"]):
        assert invoke("compare", results, *args).exit_code in (0, 1)
    fit = invoke("fit", results, "--x", "params", "--json")
    assert fit.exit_code == 0 and any("params 0 ≤ 0" in n for n in json.loads(fit.stdout)["left_out"])


@pytest.mark.parametrize("command", ["report", "compare", "fit"])
def test_a_null_the_schema_forbids_is_an_input_error(template, tmp_path, command):
    """embedding.compression_ratio may not be null: the file is named, exit 2."""
    runs = scaling_set(template)
    runs[0]["embedding"]["compression_ratio"] = None
    results = write(runs, tmp_path / "r")
    extra = {"report": ["--out", tmp_path / "out"], "compare": ["--baseline", results], "fit": []}[command]
    result = invoke(command, results, *extra)
    assert result.exit_code == 2
    assert "not a dlrs-bench result file (embedding.compression_ratio:" in result.output
