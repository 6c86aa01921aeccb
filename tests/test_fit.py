"""Scaling-law fits: recovery of known parameters, robustness, phases, and the `fit` command."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_suite
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compare.fit import (
    HIGH_RETURN,
    Ceiling,
    compare_with_seed003,
    fit_power_law,
    interval_notes,
    recorded_ceiling,
)
from dlrs_bench.compare.verdicts import Verdict, interval_verdict, published_range
from dlrs_bench.results.schema import ResultFile

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
    suite["defaults"]["train"].update(max_epochs=1, eval_every=1, batch_size=64)  # a batch within 100 rows
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
    assert not (tmp_path / "report" / "pareto.png").exists()  # the memory does not vary: no trade-off
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "![" in markdown and "scaling_samples.png" in markdown and markdown.count("| num_samples=") == 4
    assert "- params: the suite does not vary params by design: its scenarios differ only in dataset (num_samples)" \
        in markdown


def test_fit_command_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    (tmp_path / "seed0.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["fit", str(tmp_path)])
    assert result.exit_code == 2 and "not a dlrs-bench result file" in result.output


def seed003():
    from dlrs_bench.cli import SEED003_TABLE
    from dlrs_bench.compare.reference import load_reference

    return load_reference(SEED003_TABLE)


def test_fit_compares_with_seed003_ranges():
    x = np.logspace(5, 9, 12)
    fit = fit_power_law(x, 0.07 * (x / 1e5) ** -0.1 + 0.97, bootstrap=10)  # in seed 003's data range
    checks = {c.metric: c for c in compare_with_seed003(fit, "samples", seed003())}
    assert set(checks) == {"beta", "r2", "saturated"}
    assert checks["beta"].verdict is Verdict.AGREES and checks["beta"].published == "0.09–0.12"
    steep = fit_power_law(x, 5 * (x / 1e5) ** -0.6 + 0.5, bootstrap=10)
    beta = compare_with_seed003(steep, "samples", seed003())[0]
    assert beta.metric == "beta" and beta.verdict is Verdict.DIFFERS and "excludes the published" in beta.reason


# -- direction: AUC rises, losses fall ------------------------------------------------------------------------


def test_auc_is_fitted_with_a_rising_law():
    """The issue's case: a decreasing law was fitted to a rising AUC (γ −21.39, "1.08% lower auc")."""
    x = np.logspace(3, 6, 8)
    auc = 0.80 - 0.5 * x**-0.15
    fit = fit_power_law(x, auc, metric="auc", bootstrap=30)
    assert fit.direction == "rises" and fit.formula == "auc(x) = γ − α·x^(−β)"
    assert fit.beta == pytest.approx(0.15, rel=0.05) and fit.gamma == pytest.approx(0.80, abs=0.005)
    assert fit.alpha == pytest.approx(0.5, rel=0.2)
    assert np.allclose(fit.predict(x), auc, atol=1e-3)
    assert fit.gain_from_doubling > 0 and fit.phase == "high-return"  # doubling x raises AUC
    assert fit.gamma_bounds == (pytest.approx(auc.max()), 1.0)


def test_a_loss_is_fitted_with_a_falling_law():
    x = np.logspace(3, 6, 8)
    fit = fit_power_law(x, 0.7 + 2.0 * x**-0.4, metric="logloss", bootstrap=10)
    assert fit.direction == "falls" and fit.formula == "logloss(x) = γ + α·x^(−β)"
    assert fit.gamma == pytest.approx(0.7, abs=1e-3) and fit.beta == pytest.approx(0.4, rel=0.02)


def test_a_metric_that_does_not_improve_fits_no_decay():
    """NE rising with x (the wrong way) cannot be fitted as an improvement: α or β go to 0, uninformative."""
    x = np.logspace(3, 6, 8)
    fit = fit_power_law(x, 0.80 + 0.01 * np.log10(x), metric="ne", bootstrap=30)
    assert fit.gain_from_doubling == pytest.approx(0.0, abs=1e-3) and fit.phase == "saturating"
    assert not fit.informative("beta") or not fit.informative("alpha")


def test_retrieval_metrics_are_fitted_with_a_rising_law_within_0_and_1():
    """NDCG@10 of a sequential model rising with compute: the AUC law, asymptote at most 1."""
    x = np.logspace(9, 12, 8)
    ndcg = 0.20 - 1.0 * x**-0.1
    fit = fit_power_law(x, ndcg, metric="ndcg@10", bootstrap=30)
    assert fit.direction == "rises" and fit.formula == "ndcg@10(x) = γ − α·x^(−β)"
    assert fit.beta == pytest.approx(0.1, rel=0.05) and fit.gamma == pytest.approx(0.20, abs=0.005)
    assert fit.gamma_bounds == (pytest.approx(ndcg.max()), 1.0)
    with pytest.raises(ValueError, match="outside its possible range"):
        fit_power_law(x[:5], [0.1, 0.2, 0.3, 0.4, 1.5], metric="hr@10")


def test_fit_command_refuses_an_unknown_metric(tmp_path: Path) -> None:
    (tmp_path / "seed0.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["fit", str(tmp_path), "--y", "ndcg"])
    assert result.exit_code == 2 and "--y: no scaling law for metric 'ndcg'" in result.output
    assert "hr@K, ndcg@K, mrr" in result.output


def test_unknown_metric_and_impossible_values_are_errors():
    x = np.logspace(3, 6, 5)
    with pytest.raises(ValueError, match="no scaling law for metric 'acc'"):
        fit_power_law(x, np.full(5, 0.7), metric="acc")
    with pytest.raises(ValueError, match=r"auc 1.2 is outside its possible range \[0, 1\]"):
        fit_power_law(x, [0.7, 0.8, 0.9, 1.0, 1.2], metric="auc")
    with pytest.raises(ValueError, match="outside its possible range"):
        fit_power_law(x, [0.7, 0.6, 0.5, 0.4, -0.1], metric="ne")


# -- bounds on γ ---------------------------------------------------------------------------------------------


def test_gamma_is_bounded_by_zero_and_the_lowest_loss():
    """Points falling almost linearly in log x pull an unbounded γ far below 0 (the issue's γ = −0.22 for NE)."""
    x = np.logspace(3, 6, 7)
    ne = 0.95 - 0.04 * np.log10(x / 1e3)  # no visible floor
    fit = fit_power_law(x, ne, metric="ne", bootstrap=30)
    assert fit.gamma_bounds == (0.0, pytest.approx(ne.min()))
    assert 0.0 <= fit.gamma <= ne.min() + 1e-12
    assert fit.gamma_ci[0] >= 0.0 and fit.gamma_ci[1] <= ne.min() + 1e-9
    assert "γ ≤ the lowest observed ne 0.83" in fit.gamma_bounds_why and "≥ 0" in fit.gamma_bounds_why


def test_gamma_respects_a_recorded_ceiling():
    """The issue's scaling_data case: γ 0.502 below the Bayes-optimal NE 0.662 the results record."""
    x = np.logspace(3, 6, 7)
    ne = 0.95 - 0.04 * np.log10(x / 1e3)
    fit = fit_power_law(x, ne, metric="ne", ceiling=Ceiling(0.662, "dataset.ceiling.val.ne"), bootstrap=30)
    assert fit.gamma_bounds == (0.662, pytest.approx(ne.min()))
    assert fit.gamma >= 0.662 - 1e-9 and fit.gamma_ci[0] >= 0.662 - 1e-9
    assert "≥ the ceiling 0.662 (dataset.ceiling.val.ne)" in fit.gamma_bounds_why
    auc = fit_power_law(x, 0.70 + 0.02 * np.log10(x / 1e3), metric="auc",
                        ceiling=Ceiling(0.78, "dataset.ceiling.val.auc"), bootstrap=10)
    assert auc.gamma_bounds == (pytest.approx(0.76), 0.78) and 0.76 - 1e-9 <= auc.gamma <= 0.78 + 1e-9


def test_a_ceiling_the_runs_already_pass_holds_gamma_at_the_best():
    x = np.logspace(3, 6, 5)
    ne = np.array([0.80, 0.72, 0.68, 0.665, 0.660])
    fit = fit_power_law(x, ne, metric="ne", ceiling=Ceiling(0.662, "teacher"), bootstrap=10)
    assert fit.gamma_bounds == (0.660, 0.660) and fit.gamma == pytest.approx(0.660, abs=1e-9)
    assert "γ is held at the observed best" in fit.gamma_bounds_why


def test_recorded_ceiling_is_read_from_the_eval_split(template):
    runs = [result_with(template, ceiling={"val": {"ne": 0.66, "auc": 0.87, "rows": 15000},
                                           "test": {"ne": 0.5, "auc": 0.9}}),
            result_with(template, ceiling={"val": {"ne": 0.64, "auc": 0.88}})]
    ne = recorded_ceiling(runs, "ne")
    assert ne.value == 0.64 and "dataset.ceiling.val.ne of 2 result(s)" in ne.source and "loosest" in ne.source
    assert recorded_ceiling(runs, "auc").value == 0.88  # the loosest bound of a rising metric is the highest
    assert recorded_ceiling([result_with(template)], "ne") is None


# -- informative intervals -----------------------------------------------------------------------------------


def test_interval_notes_name_what_makes_an_interval_uninformative():
    notes = interval_notes({"alpha": (0.0, 3.0), "beta": (0.0013, 0.61), "gamma": (-64.4, 0.72)}, 0.3)
    assert notes["alpha"].startswith("reaches 0")
    assert notes["beta"] == "spans a factor of 469 (more than 10)"
    assert notes["gamma"] == "width 65.1 exceeds the observed spread of the metric 0.3"
    assert interval_notes({"beta": (0.0, 0.2)}, 1.0)["beta"].startswith("reaches 0")
    assert interval_notes({"beta": (0.5, 5.0)}, 1.0)["beta"] == "reaches the fit's bound 5"
    assert interval_notes({"alpha": (2.0, 3.0), "beta": (0.09, 0.12), "gamma": (0.7, 0.75)}, 0.3) == {}
    assert interval_notes({"beta": (math.nan, math.nan)}, 1.0) == {"beta": "no bootstrap fit succeeded"}


def test_clean_data_give_informative_intervals_and_noisy_few_points_do_not():
    x = np.logspace(3, 7, 15)
    clean = fit_power_law(x, 5.0 * x**-0.3 + 0.7 + np.random.default_rng(0).normal(0, 2e-4, 15), bootstrap=50)
    assert clean.uninformative == {}
    x = np.array([1e3, 3e3, 1e4, 3e4])
    noisy = fit_power_law(x, [0.90, 0.91, 0.87, 0.89], bootstrap=50)
    assert not noisy.informative("beta")


# -- verdicts through intervals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "published", "verdict"), [
    ((0.0013, 0.61), (0.09, 0.12), Verdict.INCONCLUSIVE),  # the issue's case: covers seed 003's range
    ((0.095, 0.11), (0.09, 0.12), Verdict.AGREES),  # inside
    ((0.09, 0.12), (0.09, 0.12), Verdict.AGREES),  # the ends count as inside
    ((0.2, 0.5), (0.09, 0.12), Verdict.DIFFERS),  # above
    ((0.01, 0.05), (0.09, 0.12), Verdict.DIFFERS),  # below
    ((0.10, 0.20), (0.09, 0.12), Verdict.INCONCLUSIVE),  # only partly inside
    ((0.79, 0.80), (0.7991, 0.8071), Verdict.INCONCLUSIVE),
    ((0.02, 0.03), (0.005, math.inf), Verdict.AGREES),  # an open-ended range
    ((0.07, 0.07), (0.07, 0.07), Verdict.AGREES),
    ((0.06, 0.08), (0.07, 0.07), Verdict.INCONCLUSIVE),  # a point without tolerance cannot be confirmed
    ((math.nan, math.nan), (0.09, 0.12), Verdict.INCONCLUSIVE),
])
def test_interval_verdicts(interval, published, verdict):
    assert interval_verdict(interval, published, what="β").verdict is verdict


def test_interval_verdict_reasons_and_published_ranges():
    from dlrs_bench.compare.reference import ReferenceRow

    judged = interval_verdict((0.0013, 0.61), (0.09, 0.12), what="β", uninformative="spans a factor of 469")
    assert judged.reason == ("95% interval of β [0.0013, 0.61] covers the published [0.09, 0.12]; the interval is "
                             "uninformative (spans a factor of 469)")
    row = ReferenceRow(dataset="d", metric="auc", value=0.8031, tolerance=0.002, units="AUC")
    assert published_range(row) == (pytest.approx(0.8011), pytest.approx(0.8051))
    assert published_range(ReferenceRow(dataset="d", metric="beta", low=0.09, units="-")) == (0.09, math.inf)
    with pytest.raises(ValueError, match="yes/no"):
        published_range(ReferenceRow(dataset="d", metric="saturated", reached=True, units="yes/no"))


def test_seed003_phase_is_judged_by_the_interval_of_the_gain():
    x = np.logspace(5, 9, 12)
    fit = fit_power_law(x, 0.07 * (x / 1e5) ** -0.1 + 0.97, bootstrap=10)
    saturated = next(c for c in compare_with_seed003(fit, "params", seed003()) if c.metric == "saturated")
    assert saturated.published == "saturated" and fit.gain_ci[1] < HIGH_RETURN  # doubling x gains 0.19%
    assert saturated.verdict is Verdict.AGREES and "[-inf, 0.005]" in saturated.reason
    data = next(c for c in compare_with_seed003(fit, "samples", seed003()) if c.metric == "saturated")
    assert data.published == "not saturated" and data.verdict is Verdict.DIFFERS
    r2 = next(c for c in compare_with_seed003(fit, "samples", seed003()) if c.metric == "r2")
    assert r2.verdict is Verdict.AGREES and "a threshold" in r2.reason


def test_fit_command_output_states_direction_bounds_and_verdicts(tmp_path: Path, template) -> None:
    folder = tmp_path / "r"
    for i, (samples, auc, ne) in enumerate([(1000, 0.60, 0.97), (3000, 0.66, 0.93), (10000, 0.70, 0.89),
                                            (30000, 0.72, 0.86), (100000, 0.74, 0.84)]):
        run = result_with(template, samples=samples, auc=auc, ne=ne, scenario_id=f"s{i}",
                          ceiling={"val": {"ne": 0.80, "auc": 0.76, "rows": 15000}})
        (folder / f"s{i}").mkdir(parents=True)
        (folder / f"s{i}" / "seed0.json").write_text(run.model_dump_json())
    out = runner.invoke(app, ["fit", str(folder), "--y", "auc", "--compare-seed003"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "auc(samples) = γ − α·samples^(−β) over 5 results" in text and "it rises with samples" in text
    assert "γ bounded to [0.74, 0.76]" in text and "≤ the ceiling 0.76 (dataset.ceiling.val.auc" in text
    assert "higher auc" in text and "seed 003 (data): beta published 0.09–0.12" in text
    data = json.loads(runner.invoke(app, ["fit", str(folder), "--y", "ne", "--json", "--compare-seed003"]).output)
    assert data["direction"] == "falls" and data["gamma_bounds"][0] == 0.80 and data["gamma"] >= 0.80
    assert {c["verdict"] for c in data["seed003"]} <= {"agrees", "differs", "inconclusive"}


@pytest.fixture(scope="module")
def template() -> dict:
    path = next((Path(__file__).resolve().parents[1] / "reference_results" / "ci").rglob("seed0.json"))
    return json.loads(path.read_text())


def result_with(template: dict, samples: int = 1000, auc: float = 0.7, ne: float = 0.9,
                ceiling: dict | None = None, scenario_id: str = "s1") -> ResultFile:
    data = copy.deepcopy(template)
    data.update(scenario_id=scenario_id, status="not_reached")
    data["timing"]["samples"] = samples
    data["best_metrics"].update(auc=auc, ne=ne)
    if ceiling is not None:
        data["dataset"] = {**data.get("dataset", {}), "ceiling": ceiling}
    return ResultFile.model_validate(data)
