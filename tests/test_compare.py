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


def retrieval(template: dict, ndcg: float, hr: float, mrr: float) -> ResultFile:
    """A result of the retrieval task: its dataset says so and its metrics are HR@K / NDCG@K / MRR."""
    data = copy.deepcopy(template)
    data["dataset"] = {**data["dataset"], "task": "retrieval"}
    data["best_metrics"] = {"epoch": 1.0, "samples": 100, "ndcg@10": ndcg, "hr@10": hr, "mrr": mrr}
    return ResultFile.model_validate(data)


def test_retrieval_results_are_judged_on_ndcg_hr_and_mrr(template):
    base = [retrieval(template, 0.030, 0.060, 0.030)]
    assert verdicts([retrieval(template, 0.031, 0.070, 0.020)], base) == {
        "ndcg@10": "PASS", "hr@10": "IMPROVED", "mrr": "REGRESSED"}


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
    assert result.exit_code == 2 and "--baseline" in result.output and "--reference" in result.output


REFERENCE_TABLE = """\
source: test table
table: Table T
dataset: movielens-latest-small
dataset_sizes:
  movielens-latest-small: {rows: 100836, source: ml-latest-small ratings.csv}
rows:
  - {model: dlrm, compressor: none, ratio: 1, metric: auc, value: 0.800, tolerance: 0.002, units: AUC}
  - {model: dlrm, compressor: hashing, ratio: 4, metric: auc, low: 0.79, high: 0.81, units: AUC}
"""


def with_spec(template: dict, compressor: dict, auc: float, seed: int = 0, scenario_id: str = "s1") -> ResultFile:
    data = copy.deepcopy(template)
    data["scenario"]["compressor"] = compressor
    data["scenario"]["model"]["name"] = "dlrm"
    data["scenario"]["dataset"]["name"] = "movielens-latest-small"
    data.update(seed=seed, scenario_id=scenario_id, status="reached")
    data["best_metrics"]["auc"] = auc
    return ResultFile.model_validate(data)


def test_reference_verdicts(template, tmp_path: Path) -> None:
    from dlrs_bench.compare.reference import load_references
    from dlrs_bench.compare.verdicts import compare_with_reference

    (tmp_path / "t.yaml").write_text(REFERENCE_TABLE)
    tables = load_references(tmp_path)

    def verdict(results: list[ResultFile]) -> str:
        (only,) = [c.verdict for c in compare_with_reference(results, tables)]
        return only

    full = {"kind": "none"}
    assert verdict([with_spec(template, full, 0.801)]) == "PASS"
    assert verdict([with_spec(template, full, 0.810)]) == "IMPROVED"
    assert verdict([with_spec(template, full, 0.780)]) == "REGRESSED"
    assert verdict([with_spec(template, full, a, seed=i) for i, a in enumerate([0.79, 0.81, 0.80])]) == "NOISE"
    assert verdict([with_spec(template, {"kind": "hashing", "ratio": 4}, 0.805)]) == "PASS"  # inside the range
    assert verdict([with_spec(template, {"kind": "hashing", "ratio": 16}, 0.805)]) == "NOT_COMPARABLE"


CRITEO_TABLE = """\
source: test table
table: Table K
dataset: criteo-kaggle
dataset_sizes:
  criteo-kaggle: {rows: 45840617, source: train.txt}
rows:
  - {model: dlrm, compressor: none, ratio: 1, metric: auc, value: 0.8031, tolerance: 0.002, units: AUC}
"""


def on_rows(template: dict, dataset: dict, auc: float = 0.80, name: str = "criteo-kaggle",
            spec: dict | None = None) -> ResultFile:
    """A full-table DLRM result whose ``dataset`` section is ``dataset`` (rows, cache, subset)."""
    data = copy.deepcopy(template)
    data["scenario"]["compressor"] = {"kind": "none"}
    data["scenario"]["model"]["name"] = "dlrm"
    data["scenario"]["dataset"] = {"name": name, **(spec or {})}
    data["dataset"] = {"name": name, **dataset}
    data["best_metrics"]["auc"] = auc
    return ResultFile.model_validate(data)


def reference_verdicts(results: list[ResultFile], text: str, tmp_path: Path) -> list:
    from dlrs_bench.compare.reference import load_references
    from dlrs_bench.compare.verdicts import compare_with_reference

    (tmp_path / "t.yaml").write_text(text)
    return compare_with_reference(results, load_references(tmp_path / "t.yaml"))


def test_reference_refuses_a_sample_of_the_published_dataset(template, tmp_path: Path) -> None:
    """The issue's case: a 1,999-row Criteo sample against the full Criteo Kaggle row gave NOISE, exit 0."""
    sample = {"rows": {"train": 1714, "val": 142, "test": 143}, "cache": {"rows": 1999}}
    (c,) = reference_verdicts([on_rows(template, sample, 0.65)], CRITEO_TABLE, tmp_path)
    assert c.verdict == "NOT_COMPARABLE" and c.metric == "auc" and c.current is None
    assert c.reason == ("Table K (t.yaml): seed 0 ran on 1,999 rows of criteo-kaggle (1,714 for training), "
                        "the published row on 45,840,617 (train.txt)")
    full = {"rows": {"train": 39291958, "val": 3274329, "test": 3274330}, "cache": {"rows": 45840617}}
    (c,) = reference_verdicts([on_rows(template, full, 0.8035)], CRITEO_TABLE, tmp_path)
    assert c.verdict == "PASS"


def test_reference_refuses_a_training_subset(template, tmp_path: Path) -> None:
    subset = {"rows": {"train": 1000000, "val": 3274329, "test": 3274330}, "cache": {"rows": 45840617},
              "subset": {"rows": 1000000, "of": 39291958, "seed": 0}}
    (c,) = reference_verdicts([on_rows(template, subset, spec={"num_samples": 1000000})], CRITEO_TABLE, tmp_path)
    assert c.verdict == "NOT_COMPARABLE"
    assert ("seed 0 trained on a subset: 1,000,000 of its 39,291,958 training rows; the published row used all "
            "45,840,617 rows of criteo-kaggle (train.txt)") in c.reason
    unrecorded = {"rows": {"train": 1000, "val": 10, "test": 10}, "cache": {"rows": 45840617}}
    (c,) = reference_verdicts([on_rows(template, unrecorded, spec={"fraction": 0.1})], CRITEO_TABLE, tmp_path)
    assert c.verdict == "NOT_COMPARABLE" and "subset of unrecorded size" in c.reason


def test_reference_needs_both_row_counts(template, tmp_path: Path) -> None:
    data = copy.deepcopy(template)
    data.pop("dataset", None)
    data["scenario"]["compressor"] = {"kind": "none"}
    data["scenario"]["model"]["name"] = "dlrm"
    data["scenario"]["dataset"] = {"name": "criteo-kaggle"}
    (c,) = reference_verdicts([ResultFile.model_validate(data)], CRITEO_TABLE, tmp_path)
    assert c.verdict == "NOT_COMPARABLE" and "does not record how many rows its dataset has" in c.reason
    no_size = CRITEO_TABLE.replace("dataset_sizes:\n  criteo-kaggle: {rows: 45840617, source: train.txt}\n", "")
    full = {"rows": {"train": 39291958, "val": 3274329, "test": 3274330}, "cache": {"rows": 45840617}}
    (c,) = reference_verdicts([on_rows(template, full)], no_size, tmp_path)
    assert c.verdict == "NOT_COMPARABLE" and "states no dataset size for criteo-kaggle" in c.reason
    failed = on_rows(template, {}, 0.5).model_copy(update={"status": "failed"})
    (c,) = reference_verdicts([failed], CRITEO_TABLE, tmp_path)
    assert c.verdict == "FAILED"  # a failed run is failed before anything else


def test_compare_reference_command_exit_codes(template, tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "t.yaml").write_text(REFERENCE_TABLE)
    run = tmp_path / "results" / "s" / "s1"
    run.mkdir(parents=True)
    (run / "seed0.json").write_text(with_spec(template, {"kind": "none"}, 0.70).model_dump_json())
    result = runner.invoke(app, ["compare", str(tmp_path / "results"), "--reference", str(tmp_path / "ref")])
    assert result.exit_code == 1 and "REGRESSED" in result.output and "Table T" in result.output
    both = runner.invoke(app, ["compare", str(tmp_path / "results"), "--reference", str(tmp_path / "ref"),
                               "--baseline", str(BASELINE)])
    assert both.exit_code == 2


def with_ranks(template: dict, ranks: int, samples_per_s: float, kind: str = "none") -> ResultFile:
    data = copy.deepcopy(template)
    data["scenario"]["compressor"] = {"kind": kind}
    data["timing"]["samples_per_s"] = samples_per_s
    if ranks > 1:
        data["distributed"] = {"world_size": ranks, "backend": "nccl", "placement": {}, "per_rank": []}
    return ResultFile.model_validate(data)


def test_scaling_efficiency_is_relative_to_the_fewest_ranks(template):
    from dlrs_bench.compare.report import scaling_efficiency

    runs = [with_ranks(template, 1, 100.0), with_ranks(template, 2, 180.0), with_ranks(template, 4, 300.0),
            with_ranks(template, 4, 340.0), with_ranks(template, 2, 50.0, kind="robe")]
    eff = scaling_efficiency(runs)
    assert eff["none"] == [(1, 100.0, 1.0), (2, 180.0, 0.9), (4, 320.0, 0.8)]
    assert eff["robe"] == [(2, 50.0, 1.0)]


def test_report_plots_throughput_against_ranks(template, tmp_path):
    from dlrs_bench.compare.report import write_report

    runs = [with_ranks(template, n, 100.0 * n * 0.9 ** (n - 1)) for n in (1, 2, 4)]
    markdown = write_report(runs, tmp_path).read_text()
    assert (tmp_path / "throughput_vs_ranks.png").stat().st_size > 10_000
    assert "scaling efficiency at the most ranks: none 73% at 4" in markdown
    single = write_report([with_ranks(template, 1, 100.0)], tmp_path / "single").read_text()
    assert "throughput_vs_ranks" not in single


def test_autoint_with_a_dnn_matches_published_autoint_plus_rows():
    """BARS' AutoInt+ is this bench's autoint with a non-empty dnn: the match key says so."""
    from dlrs_bench.compare.verdicts import model_key

    assert model_key({"name": "autoint", "dnn": [400, 400, 1]}) == "autoint+"
    assert model_key({"name": "autoint", "dnn": []}) == "autoint"
    assert model_key({"name": "autoint"}) == "autoint"
    assert model_key({"name": "dcnv2"}) == "dcnv2"
