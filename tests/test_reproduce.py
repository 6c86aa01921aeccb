"""``reproduce`` on hand-made results: every verdict kind for published rows and claims, the sign test over seeds
with too few and enough seeds, claims not testable here, the claims schema, and the command's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_compare import REFERENCE_TABLE
from test_report import run as report_run
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compare.reference import ReferenceClaim, load_reference, load_references
from dlrs_bench.compare.reproduce import (
    MIN_SEEDS,
    Outcome,
    judge_claim,
    judge_row,
    reproduce,
    sign_test,
    write_reproduce,
)
from dlrs_bench.errors import UserInputError
from dlrs_bench.results.schema import ResultFile

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: test_compare's MovieLens table header (source, dataset, its 100,836 rows) with Criteo TB's size, then rows
#: and claims of its own.
TABLE = REFERENCE_TABLE.split("\nrows:")[0] + """
  criteo-tb: {rows: 4373472329, source: day_0 ... day_23}
rows:
  - {model: dlrm, compressor: none, ratio: 1, metric: auc, value: 0.800, tolerance: 0.01, units: AUC}
  - {model: dlrm, compressor: hashing, ratio: 4, metric: auc, value: 0.800, tolerance: 0.01, units: AUC}
  - {dataset: criteo-tb, model: dlrm, compressor: none, ratio: 1, metric: epochs_to_target, value: 1.0,
     units: epochs, target: {metric: auc, value: 0.8025}}
claims:
  - kind: ordering
    statement: QR beats hashing at 4x and 16x.
    metric: auc
    over: compressor
    order: [[qr], [hashing]]
    ratios: [4, 16]
  - kind: flat
    statement: Hashing at 4x is no worse than full tables.
    metric: auc
    over: ratio
    reference: 1
    others: [4]
    levels: {1: {compressor: none}, 4: {compressor: hashing}}
    tolerance: 0.005
  - kind: ordering
    statement: In Wukong, QR beats hashing.
    metric: auc
    over: compressor
    order: [[qr], [hashing]]
    where: {model: wukong}
"""


@pytest.fixture(scope="module")
def template() -> dict:
    """A MovieLens DLRM result (100,836 rows: the table's dataset size)."""
    return json.loads((REPO / "reference_results/ci/ci/0e334f97f4/seed0.json").read_text())


@pytest.fixture
def table(tmp_path: Path):
    (tmp_path / "t.yaml").write_text(TABLE)
    return load_reference(tmp_path / "t.yaml")


def runs(template: dict, kind: str, ratio: float | None, aucs: list[float], **spec: object) -> list[ResultFile]:
    """One result per seed of one scenario (``report_run``: MovieLens DLRM, the movie table compressed)."""
    return [report_run(template, kind, ratio, seed=i, auc=a, **spec) for i, a in enumerate(aucs)]


def claim_finding(table, results: list[ResultFile], index: int = 0):
    (finding,) = judge_claim(table, table.claims[index], results)
    return finding


def test_the_sign_test_needs_five_seeds():
    assert MIN_SEEDS == 5
    assert sign_test(5, 5) == pytest.approx(1 / 32)  # all five agree: p = 0.031 < 0.05
    assert sign_test(4, 4) == pytest.approx(1 / 16)  # four are not enough
    assert sign_test(9, 10) == pytest.approx(11 / 1024)
    assert sign_test(0, 0) == 1.0


def test_an_ordering_every_seed_agrees_with_is_reproduced(template, table):
    qr4 = runs(template, "qr", 4, [0.80, 0.81, 0.805, 0.79, 0.80])
    hash4 = runs(template, "hashing", 4, [0.79, 0.80, 0.800, 0.78, 0.79])
    qr16 = runs(template, "qr", 16, [0.78, 0.79, 0.785, 0.77, 0.78])
    hash16 = runs(template, "hashing", 16, [0.77, 0.78, 0.780, 0.76, 0.77])
    f = claim_finding(table, qr4 + hash4 + qr16 + hash16)
    assert f.verdict is Outcome.REPRODUCED and f.dataset == "movielens-latest-small"
    assert [(p.what, p.seeds, p.wins, p.losses) for p in f.parts] == [("qr > hashing at 4×", 5, 5, 0),
                                                                     ("qr > hashing at 16×", 5, 5, 0)]
    assert f.parts[0].p_holds == pytest.approx(1 / 32)
    assert f.parts[0].mean_difference == pytest.approx(0.009)
    assert f.test == "sign test over 5 seed(s) per comparison"


def test_an_ordering_judged_by_seeds_not_by_means(template, table):
    """One large win outweighs four losses in the mean; the seeds say the opposite of the claim."""
    qr4 = runs(template, "qr", 4, [0.90, 0.79, 0.79, 0.79, 0.79])
    hash4 = runs(template, "hashing", 4, [0.70, 0.80, 0.80, 0.80, 0.80])
    f = claim_finding(table, qr4 + hash4)
    part = f.parts[0]
    assert part.mean_difference > 0 and (part.wins, part.losses) == (1, 4)
    assert f.verdict is Outcome.INCONCLUSIVE  # 4 losses of 5: p = 0.19, not reversed
    assert "qr > hashing at 16×: no run with compressor=qr, ratio=16" in f.reason


def test_an_ordering_the_seeds_reverse_is_not_reproduced(template, table):
    qr = runs(template, "qr", 4, [0.78] * 6) + runs(template, "qr", 16, [0.76] * 6)
    hashing = runs(template, "hashing", 4, [0.79] * 6) + runs(template, "hashing", 16, [0.77] * 6)
    f = claim_finding(table, qr + hashing)
    assert f.verdict is Outcome.NOT_REPRODUCED
    assert f.reason.startswith("qr > hashing at 4×: reversed in 6 of 6 seeds (p = 0.0156 < 0.025)")


def test_too_few_seeds_are_inconclusive_never_reproduced(template, table):
    qr = runs(template, "qr", 4, [0.81, 0.81, 0.81]) + runs(template, "qr", 16, [0.80, 0.80, 0.80])
    hashing = runs(template, "hashing", 4, [0.70, 0.70, 0.70]) + runs(template, "hashing", 16, [0.7, 0.7, 0.7])
    f = claim_finding(table, qr + hashing)
    assert f.verdict is Outcome.INCONCLUSIVE
    assert "0 of 2 tested comparison(s) hold" in f.reason
    assert "3 seed(s): the sign test needs at least 5 seeds, all agreeing" in f.reason


def test_a_flat_claim_allows_the_tolerance(template, table):
    full = runs(template, "none", None, [0.800, 0.801, 0.799, 0.800, 0.802])
    within = runs(template, "hashing", 4, [0.797, 0.799, 0.798, 0.801, 0.800])  # at most 0.003 worse
    f = claim_finding(table, full + within, 1)
    assert f.verdict is Outcome.REPRODUCED and f.parts[0].what == "4 ≥ 1 − 0.005"
    dropped = runs(template, "hashing", 4, [0.79, 0.79, 0.79, 0.79, 0.79])  # 0.01 worse in every seed
    f = claim_finding(table, full + dropped, 1)
    assert f.verdict is Outcome.NOT_REPRODUCED


def test_a_claim_without_its_model_is_not_testable_here(template, table):
    f = claim_finding(table, runs(template, "qr", 4, [0.8] * 5), 2)
    assert f.verdict is Outcome.NOT_TESTABLE and f.dataset is None
    assert f.reason == "no run with model=wukong (the results hold model dlrm)"


def test_several_scenarios_for_one_member_must_be_pinned(template, table):
    mult = runs(template, "qr", 4, [0.8] * 5)
    add = [r.model_copy(update={"scenario_id": "qr4add", "scenario": {**r.scenario, "compressor": {
        **r.scenario["compressor"], "fusion": "add"}}}) for r in mult]
    f = claim_finding(table, mult + add + runs(template, "hashing", 4, [0.7] * 5))
    assert "2 scenarios match compressor=qr, ratio=4" in f.parts[0].untestable


def test_published_rows_through_the_interval_of_the_seed_mean(template, table):
    full, hashed = table.rows[0], table.rows[1]
    (f,) = judge_row(table, full, runs(template, "none", None, [0.800, 0.801, 0.799]))
    assert f.verdict is Outcome.REPRODUCED and "lies inside the published [0.79, 0.81]" in f.reason
    assert f.test == "95% t-interval of the mean over 3 seeds"
    (f,) = judge_row(table, full, runs(template, "none", None, [0.70, 0.71, 0.70]))
    assert f.verdict is Outcome.NOT_REPRODUCED and "excludes" in f.reason
    (f,) = judge_row(table, full, runs(template, "none", None, [0.79, 0.83, 0.75]))
    assert f.verdict is Outcome.INCONCLUSIVE  # too wide
    (f,) = judge_row(table, hashed, runs(template, "hashing", 4, [0.80]))
    assert f.verdict is Outcome.INCONCLUSIVE and "one seed: no interval" in f.reason


def test_a_row_on_other_data_is_not_testable_here_and_says_what_is_missing(template, table):
    (f,) = judge_row(table, table.rows[2], runs(template, "none", None, [0.8]))
    assert f.verdict is Outcome.NOT_TESTABLE
    assert f.reason == ("needs criteo-tb (4,373,472,329 rows); the results hold movielens-latest-small "
                        "(100,836 rows)")
    sample = [r.model_copy(update={"dataset": {**r.dataset, "rows": {"train": 800, "val": 100, "test": 100}}})
              for r in runs(template, "none", None, [0.8, 0.8])]
    (f,) = judge_row(table, table.rows[0], sample)
    assert f.verdict is Outcome.NOT_TESTABLE
    assert "ran on 1,000 rows of movielens-latest-small (800 for training), the published row on 100,836" in f.reason


def scaling_runs(template: dict, seeds: int, gain: float) -> list[ResultFile]:
    """Data scaling on one DLRM: NE(x) = 0.7 + gain·(x/1000)^-0.3 at 1k ... 1M samples, one curve per seed."""
    out = []
    for seed in range(seeds):
        for n in (1000, 3000, 10000, 30000, 100000, 1000000):
            r = report_run(template, seed=seed, dataset__num_samples=n)
            ne = 0.7 + gain * (n / 1000) ** -0.3 + 0.0005 * ((seed + n) % 3 - 1)
            out.append(r.model_copy(update={"timing": r.timing.model_copy(update={"samples": n}),
                                            "best_metrics": r.best_metrics.model_copy(update={"ne": ne})}))
    return out


def test_a_phase_is_judged_per_seed(template):
    seed003 = load_reference(REPO / "reference_results/seed003_table1_scaling_laws.yaml")
    data_phase = next(c for c in seed003.claims if c.kind == "phase" and c.where["resource"] == "data")
    (f,) = judge_claim(seed003, data_phase, scaling_runs(template, 5, gain=0.3))
    assert f.verdict is Outcome.REPRODUCED  # still falling steeply at 1M: not saturated in every seed
    assert (f.parts[0].what, f.parts[0].seeds, f.parts[0].wins) == ("not saturated along samples", 5, 5)
    (f,) = judge_claim(seed003, data_phase, scaling_runs(template, 2, gain=0.3))
    assert f.verdict is Outcome.INCONCLUSIVE and "2 seed(s)" in f.reason
    compression = runs(template, "hashing", 4, [0.8] * 5)
    (f,) = judge_claim(seed003, data_phase, compression)
    assert f.verdict is Outcome.NOT_TESTABLE and "does not vary samples by design" in f.reason


def test_every_published_row_and_claim_gets_a_verdict(template, tmp_path: Path):
    tables = load_references(REPO / "reference_results")
    results = runs(template, "hashing", 4, [0.8, 0.81])
    findings = reproduce(results, tables)
    rows = sum(len(t.rows) for t in tables)
    assert sum(f.kind == "row" for f in findings) == rows
    assert {f.verdict for f in findings} == {Outcome.NOT_TESTABLE}  # no published data here
    tb = next(f for f in findings if f.source == "seed002_table4_criteo_tb.yaml")
    assert tb.reason.startswith("needs criteo-tb (4,373,472,329 rows); the results hold movielens-latest-small")
    path, _ = write_reproduce(results, tables, tmp_path / "out")
    text = path.read_text()
    assert "| seed002_table4_criteo_tb.yaml | row | 15 rows, e.g. epochs_to_target" in text
    assert json.loads((tmp_path / "out/reproduce.json").read_text())[0]["verdict"] == "not testable here"


def test_the_command_writes_markdown_with_plots_and_exits_0(template, tmp_path: Path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref/t.yaml").write_text(TABLE)
    results = (runs(template, "qr", 4, [0.80] * 5) + runs(template, "hashing", 4, [0.78] * 5)
               + runs(template, "qr", 16, [0.76] * 5) + runs(template, "hashing", 16, [0.77] * 5))
    for r in results:
        folder = tmp_path / "results" / r.suite / r.scenario_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed{r.seed}.json").write_text(r.model_dump_json())
    out = tmp_path / "out"
    result = runner.invoke(app, ["reproduce", str(tmp_path / "results"), "--out", str(out), "--reference",
                                 str(tmp_path / "ref")])
    assert result.exit_code == 0, result.output
    assert "not reproduced" in result.output and "1 not reproduced" in result.output
    text = (out / "reproduce.md").read_text()
    assert "| qr > hashing at 16× | 5 | 0 | 5 | 1 | 0.0312 | -0.01 |" in text
    assert "![QR beats hashing at 4x and 16x.](claim_03.png)" in text and (out / "claim_03.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["reproduce", "nowhere"], "nowhere: no such file or folder"),
    (["reproduce", "EMPTY"], "no result files (seed*.json)"),
    (["reproduce", "BAD"], "not a dlrs-bench result file"),
])
def test_bad_input_exits_2_without_a_traceback(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BAD").mkdir()
    (tmp_path / "BAD/seed0.json").write_text("{}")
    args = [str(tmp_path / a) if a in ("EMPTY", "BAD") else a for a in args]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_an_unreadable_reference_exits_2(template, tmp_path: Path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/seed0.json").write_text(runs(template, "none", None, [0.8])[0].model_dump_json())
    (tmp_path / "bad.yaml").write_text(TABLE.replace("tolerance: 0.005", "tolerance: 0.005\n    tolerence: 1"))
    result = runner.invoke(app, ["reproduce", str(tmp_path / "r"), "--reference", str(tmp_path / "bad.yaml"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'bad.yaml'}:27: claims[1].tolerence: unknown key" in result.output


def test_the_claims_schema_is_strict():
    base = {"statement": "s", "metric": "auc", "over": "ratio"}
    with pytest.raises(ValueError, match="a flat claim needs others, reference, tolerance"):
        ReferenceClaim.model_validate({**base, "kind": "flat"})
    with pytest.raises(ValueError, match="a phase claim takes no over"):
        ReferenceClaim.model_validate({**base, "kind": "phase", "saturated": True, "where": {"resource": "data"}})
    with pytest.raises(ValueError, match="where.resource must say its x"):
        ReferenceClaim.model_validate({"kind": "phase", "statement": "s", "metric": "ne", "saturated": False})
    with pytest.raises(ValueError, match="levels names 7"):
        ReferenceClaim.model_validate({**base, "kind": "ordering", "order": [[1], [4]], "levels": {7: {}}})
    with pytest.raises(ValueError, match="unknown match key"):
        ReferenceClaim.model_validate({**base, "kind": "ordering", "order": [[1], [4]],
                                       "levels": {1: {"compresor": "none"}}})
    with pytest.raises(UserInputError):
        load_reference(REPO / "reference_results" / "missing.yaml")
