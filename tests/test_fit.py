"""Scaling-law fits: recovery of known parameters, robustness, phases, and the `fit` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_suite
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compare.fit import fit_power_law

runner = CliRunner()


@pytest.mark.parametrize(("alpha", "beta", "gamma"), [(5.0, 0.3, 0.7), (30.0, 0.5, 0.95), (2.0, 0.15, 0.8)])
def test_recovers_known_parameters_under_noise(alpha, beta, gamma):
    rng = np.random.default_rng(0)
    x = np.logspace(3, 7, 15)
    y = alpha * x**-beta + gamma + rng.normal(0, 2e-4, len(x))
    fit = fit_power_law(x, y, bootstrap=50)
    assert fit.beta == pytest.approx(beta, rel=0.10)
    assert fit.gamma == pytest.approx(gamma, abs=0.01)
    assert fit.r2 > 0.99
    assert fit.beta_ci[0] <= fit.beta <= fit.beta_ci[1]
    assert np.allclose(fit.predict(x), alpha * x**-beta + gamma, rtol=5e-3)


def test_one_outlier_does_not_drag_the_fit():
    x = np.logspace(3, 7, 12)
    y = 4.0 * x**-0.4 + 0.8
    y[5] += 0.05  # a bad point
    assert fit_power_law(x, y, bootstrap=20).beta == pytest.approx(0.4, rel=0.10)


def test_phase_high_return_versus_saturating():
    x = np.logspace(2, 4, 10)
    assert fit_power_law(x, 10 * x**-0.5 + 0.5, bootstrap=10).phase == "high-return"  # still steep at x = 1e4
    x = np.logspace(4, 8, 10)
    assert fit_power_law(x, 0.5 * x**-0.8 + 0.97, bootstrap=10).phase == "saturating"  # flat long before 1e8


@pytest.mark.parametrize(
    ("x", "y"), [([1, 2, 3], [3, 2, 1]), ([1, 1, 2, 2], [4, 3, 2, 1]), ([0, 1, 2, 3], [4, 3, 2, 1])]
)
def test_too_few_or_invalid_points_are_errors(x, y):
    with pytest.raises(ValueError):
        fit_power_law(x, y)


def test_fit_command_on_a_data_scaling_run(tmp_path: Path, write_suite) -> None:
    suite = tiny_suite("datascale", matrix={"dataset.num_samples": [100, 300, 1000, 2000]})
    suite["defaults"]["train"].update(max_epochs=1, eval_every=1)
    path = write_suite(suite)
    assert runner.invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r")]).exit_code == 0
    result = runner.invoke(app, ["fit", str(tmp_path / "r"), "--x", "samples", "--y", "logloss", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["points"] == 4 and data["x"] == "samples" and data["beta"] >= 0
    assert set(data) >= {"alpha", "beta", "gamma", "r2", "alpha_ci", "beta_ci", "gamma_ci", "phase"}

    report = runner.invoke(app, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "scaling_samples.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "pareto.png").exists()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "![" in markdown and "scaling_samples.png" in markdown and markdown.count("| num_samples=") == 4


def test_fit_command_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    (tmp_path / "seed0.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["fit", str(tmp_path)])
    assert result.exit_code == 2 and "not a dlrs-bench result file" in result.output


def test_fit_compares_with_seed003_ranges():
    from dlrs_bench.cli import SEED003_TABLE
    from dlrs_bench.compare.fit import compare_with_seed003
    from dlrs_bench.compare.reference import load_reference

    x = np.logspace(5, 9, 12)
    fit = fit_power_law(x, 0.07 * (x / 1e5) ** -0.1 + 0.97, bootstrap=10)  # in seed 003's data range
    checks = {c["metric"]: c for c in compare_with_seed003(fit, "samples", load_reference(SEED003_TABLE))}
    assert set(checks) == {"beta", "r2", "saturated"}
    assert checks["beta"]["agrees"] and checks["beta"]["published"] == "0.09–0.12"
    steep = fit_power_law(x, 5 * (x / 1e5) ** -0.6 + 0.5, bootstrap=10)
    assert not compare_with_seed003(steep, "samples", load_reference(SEED003_TABLE))[0]["agrees"]
