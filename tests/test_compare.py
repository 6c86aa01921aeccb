"""Baseline comparisons: every verdict on hand-made result sets, and the CI regression gate."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compare.verdicts import Aggregate, compare_with_baseline
from dlrs_bench.results.schema import ResultFile

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "reference_results" / "ci"
runner = CliRunner()


@pytest.fixture(scope="module")
def template() -> dict:
    path = next(BASELINE.rglob("seed0.json"))
    return json.loads(path.read_text())


def result(template: dict, auc: float, ne: float = 0.78, seed: int = 0, status: str = "reached",
           scenario_id: str = "s1") -> ResultFile:
    data = copy.deepcopy(template)
    data.update(seed=seed, status=status, scenario_id=scenario_id)
    data["best_metrics"].update(auc=auc, ne=ne)
    if status == "failed":
        data["error"] = {"type": "RuntimeError", "message": "boom"}
    return ResultFile.model_validate(data)


def verdicts(current: list[ResultFile], baseline: list[ResultFile]) -> dict[str, str]:
    return {c.metric: c.verdict for c in compare_with_baseline(current, baseline)}


def test_pass_improved_regressed_with_one_seed(template):
    base = [result(template, 0.800, 0.780)]
    assert verdicts([result(template, 0.801, 0.781)], base) == {"auc": "PASS", "ne": "PASS"}
    assert verdicts([result(template, 0.810, 0.770)], base) == {"auc": "IMPROVED", "ne": "IMPROVED"}
    assert verdicts([result(template, 0.790, 0.790)], base) == {"auc": "REGRESSED", "ne": "REGRESSED"}


def test_noise_and_significant_changes_with_several_seeds(template):
    base = [result(template, a, seed=i) for i, a in enumerate([0.800, 0.806, 0.794])]
    noisy = [result(template, a, seed=i) for i, a in enumerate([0.805, 0.797, 0.801])]
    assert verdicts(noisy, base)["auc"] == "NOISE"
    worse = [result(template, a, seed=i) for i, a in enumerate([0.780, 0.781, 0.779])]
    comparison = next(c for c in compare_with_baseline(worse, base) if c.metric == "auc")
    assert comparison.verdict == "REGRESSED" and comparison.p_value < 0.05


def test_failed_and_not_comparable(template):
    base = [result(template, 0.8)]
    assert verdicts([result(template, 0.8, status="failed")], base)["auc"] == "FAILED"
    assert verdicts([result(template, 0.8, scenario_id="other")], base)["auc"] == "NOT_COMPARABLE"
    assert verdicts([result(template, 0.8)], [result(template, 0.8, status="failed")])["auc"] == "NOT_COMPARABLE"


def test_seed_aggregates():
    agg = Aggregate.of([0.1, 0.5, 0.2, 0.3, 0.9])
    assert agg.mean == pytest.approx(0.4) and agg.olympic_mean == pytest.approx((0.5 + 0.2 + 0.3) / 3)
    assert Aggregate.of([0.3]).std == 0.0


def test_ci_gate_passes_and_a_degraded_result_fails(tmp_path: Path) -> None:
    """The regression gate of CI: suites/ci.yaml against the stored baseline, then a degraded copy."""
    out = tmp_path / "results"
    assert runner.invoke(app, ["run", str(REPO / "suites" / "ci.yaml"), "--results-dir", str(out)]).exit_code == 0
    gate = runner.invoke(app, ["compare", str(out), "--baseline", str(BASELINE), "--json"])
    assert gate.exit_code == 0, gate.output
    rows = json.loads(gate.output)
    assert len(rows) == 10 and {r["verdict"] for r in rows} <= {"PASS", "IMPROVED"}

    degraded = tmp_path / "degraded"
    shutil.copytree(out, degraded)
    victim = next(degraded.rglob("seed0.json"))
    data = json.loads(victim.read_text())
    data["best_metrics"]["auc"] -= 0.01
    victim.write_text(json.dumps(data))
    gate = runner.invoke(app, ["compare", str(degraded), "--baseline", str(BASELINE)])
    assert gate.exit_code == 1 and "REGRESSED" in gate.output


def test_compare_needs_a_baseline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(BASELINE)])
    assert result.exit_code == 2 and "--baseline" in result.output
