"""``report`` on hand-made results: the papers' ratio axis, seed means with spread, fits only where the suite
varies the axis, titles, sorted tables and rounded numbers (issue 14, part 3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dlrs_bench.compare.report import (
    compressed_ratio,
    scaling_families,
    seed_means,
    title,
    write_report,
)
from dlrs_bench.results.schema import ResultFile

BASELINE = Path(__file__).resolve().parents[1] / "reference_results" / "ci"
FULL = [("user", 610, False), ("movie", 9742, True), ("genres", 20, False), ("year", 107, False)]


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(next(BASELINE.rglob("seed0.json")).read_text())


def run(template: dict, kind: str = "none", ratio: float | None = None, seed: int = 0, auc: float = 0.79,
        suite: str = "comp", time_to_target: float | None = None, **spec: object) -> ResultFile:
    """A MovieLens DLRM result whose movie table (only) is compressed ``ratio``-fold by ``kind``."""
    data = copy.deepcopy(template)
    compressor = {"kind": kind, **({"ratio": ratio, "threshold": 1000} if ratio else {})}
    data["scenario"]["compressor"] = compressor
    for key, value in spec.items():
        section, _, name = key.partition("__")
        data["scenario"][section][name] = value
    scenario_id = f"{kind}{ratio or ''}" + "".join(f"{k}{v}" for k, v in spec.items())
    label = f"{kind}(ratio={ratio:g})" if ratio else kind
    per_table = []
    for name, rows, compressible in FULL:
        params = rows * 16 // ratio if compressible and ratio else rows * 16
        per_table.append({"name": name, "rows": rows, "dim": 16, "params": int(params),
                          "compressed": bool(compressible and ratio)})
    total = sum(t["params"] for t in per_table)
    data["embedding"].update(per_table=per_table, params=total, bytes=4 * total,
                             compression_ratio=sum(r * 16 for _, r, _ in FULL) / total)
    data.update(suite=suite, scenario_id=scenario_id, seed=seed, label=label, status="reached")
    data["best_metrics"]["auc"] = auc
    data["target"]["time_to_target_s"] = time_to_target
    return ResultFile.model_validate(data)


def test_compressed_ratio_is_the_ratio_of_the_compressed_tables(template):
    hashed = run(template, "hashing", 64)
    assert compressed_ratio(hashed) == pytest.approx(9742 * 16 / (9742 * 16 // 64))
    assert hashed.embedding.compression_ratio == pytest.approx(167664 / (9760 + 2435 + 320 + 1712))  # 11.8x
    assert compressed_ratio(run(template)) == 1.0  # nothing compressed
    broken = run(template, "hashing", 4).model_copy(deep=True)
    broken.embedding.per_table[1].pop("params")
    assert compressed_ratio(broken) is None


def test_seeds_are_one_point_with_their_spread(template):
    runs = [run(template, "hashing", 4, seed=i, auc=a) for i, a in enumerate([0.78, 0.79, 0.80])]
    points = [([compressed_ratio(r), r.best_metrics.auc], r) for r in runs]
    (mean,) = seed_means(points)
    assert mean.x == pytest.approx(4.0, rel=1e-3) and mean.y == pytest.approx(0.79) and mean.seeds == 3
    assert mean.y_std == pytest.approx(0.01)


def test_compression_report_draws_no_fit_and_says_why(template, tmp_path):
    runs = [run(template, time_to_target=19.52273857099999)]
    for kind in ("hashing", "qr"):
        for ratio in (4, 16, 64):
            runs += [run(template, kind, ratio, seed=s, auc=0.79 - 0.001 * ratio / 4 + 0.001 * s) for s in (0, 1)]
    markdown = write_report(runs, tmp_path).read_text()
    assert not list(tmp_path.glob("scaling_*.png"))
    assert ("- params: the suite does not vary params by design: its scenarios differ only in compressor "
            "(kind, ratio, threshold) (the knobs of params: model.*).") in markdown
    assert (tmp_path / "auc_vs_ratio.png").stat().st_size > 10_000 and (tmp_path / "pareto.png").exists()
    # the papers' axis, with the all-tables ratio stated
    assert "hashing 64×: 64× → 11.8×" in markdown and "qr 4×: 4× → 3.3×" in markdown
    assert "Error bars: ± one standard deviation over seeds." in markdown
    # sorted table (full tables first, then by method and ratio, then seed), rounded numbers
    rows = [line for line in markdown.splitlines() if line.startswith("| comp |")]
    assert [r.split(" | ")[1:3] for r in rows[:4]] == [
        ["none", "0"], ["hashing(ratio=4)", "0"], ["hashing(ratio=4)", "1"], ["hashing(ratio=16)", "0"]]
    assert rows[0].endswith("| 1 | 1 | 55,297 | 19.5 |") and "19.52273857099999" not in markdown
    assert rows[-1].split(" | ")[1] == "qr(ratio=64)"
    assert "| 64 | 11.8 |" in rows[5]


def test_a_scaling_suite_is_fitted_per_family(template, tmp_path):
    runs = [run(template, suite="scaling", seed=s, dataset__num_samples=n, auc=0.7)
            for n in (1000, 3000, 10000, 30000) for s in (0, 1)]
    for r, (n, s) in zip(runs, [(n, s) for n in (1000, 3000, 10000, 30000) for s in (0, 1)]):
        r.timing.samples = n
        r.best_metrics.ne = 0.8 + 2.0 * n**-0.3 + 0.002 * s
    families, why = scaling_families(runs, "samples")
    assert why == "" and list(families) == ["dlrm, none"] and len(families["dlrm, none"]) == 8
    assert scaling_families(runs, "params") == (
        {}, "the suite does not vary params by design: its scenarios differ only in dataset (num_samples) "
            "(the knobs of params: model.*)")
    markdown = write_report(runs, tmp_path).read_text()
    assert (tmp_path / "scaling_samples.png").stat().st_size > 10_000
    assert "dlrm, none: α = " in markdown and "bounded: γ ≤ the lowest observed ne" in markdown


def test_two_families_are_fitted_separately(template):
    runs = [run(template, kind, ratio, dataset__num_samples=n) for kind, ratio in (("none", None), ("hashing", 4))
            for n in (1000, 3000, 10000)]
    families, _ = scaling_families(runs, "samples")
    assert sorted(families) == ["dlrm, hashing", "dlrm, none"] and all(len(f) == 3 for f in families.values())
    too_few = [r for r in runs if r.scenario["dataset"]["num_samples"] != 10000]
    assert scaling_families(too_few, "samples")[1].endswith(
        "and in dataset (num_samples) at fewer than 3 values per family (the knobs of samples: dataset.num_samples, "
        "dataset.fraction, train.max_epochs, train.max_time_s)")


def test_plot_titles_name_suites_and_datasets(template):
    runs = [run(template, suite="b"), run(template, suite="a")]
    assert title(runs, "Best AUC") == "Best AUC\na, b (movielens-latest-small)"
