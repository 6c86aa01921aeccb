"""MLPerf compatibility (issue 14, parts 1-2): event logs that mlperf_logging's compliance checker
accepts, the closed-division rules, and ``compare --rcp`` against MLPerf DLRM-DCNv2's RCPs."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compare.rcp import RCP_FILE, Rcps, compare_with_rcps, load_rcps, olympic_mean
from dlrs_bench.config.expand import load_suite
from dlrs_bench.config.schema import ConstantSchedule
from dlrs_bench.data.shapes import MLPERF_MATERIALISED, MLPERF_MULTI_HOT, TERABYTE_CARDINALITIES
from dlrs_bench.errors import UserInputError
from dlrs_bench.measure import mllog
from dlrs_bench.measure.mllog import (
    TB_EVAL_SAMPLES,
    TB_TRAIN_SAMPLES,
    EventLog,
    MLPerfContext,
    RunFacts,
    closed_rules_broken,
    hyperparameters,
    optimizer_groups,
)
from dlrs_bench.results.schema import ResultFile

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
HAVE_CHECKER = importlib.util.find_spec("mlperf_logging") is not None
needs_checker = pytest.mark.skipif(
    not HAVE_CHECKER, reason="mlperf_logging is not installed (pip install -e '.[mlperf]'; `make install` does it)")
runner = CliRunner()

#: Adagrad as MLPerf's closed division fixes it (the checker's closed_dlrm_dcnv2.yaml).
CLOSED_ADAGRAD = {"opt_adagrad_learning_rate_decay": 0, "opt_weight_decay": 0,
                  "opt_adagrad_initial_accumulator_value": 0, "opt_adagrad_epsilon": 1e-8,
                  "opt_learning_rate_warmup_steps": 0, "opt_learning_rate_decay_start_step": 0,
                  "opt_learning_rate_decay_steps": 0}


def check_log(log: Path, cwd: Path) -> subprocess.CompletedProcess:
    """mlperf_logging's compliance checker on ``log`` (ruleset 6.0.0), as the README shows it."""
    return subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                           "--ruleset", "6.0.0", str(log)], capture_output=True, text=True, cwd=cwd, timeout=120)


def events(log: Path) -> dict[str, list[dict]]:
    """Every MLLOG record of ``log`` by key."""
    out: dict[str, list[dict]] = {}
    for line in log.read_text().splitlines():
        record = json.loads(line.removeprefix(":::MLLOG "))
        out.setdefault(record["key"], []).append(record)
    return out


# ---------------------------------------------------------------- the compliance checker on real runs


@needs_checker
@pytest.mark.slow
def test_checker_accepts_the_dcnv2_stand_in_and_quickstart_logs(tmp_path):
    """The CI-size DCNv2 stand-in (asks for closed, cannot have it) and a quickstart scenario (open by
    default) both pass ruleset 6.0.0's checker in the open division."""
    results = tmp_path / "results"
    runs = [("mlperf_dcnv2_synthetic.yaml", []), ("quickstart.yaml", ["--filter", "none"])]
    for suite, extra in runs:
        out = runner.invoke(app, ["run", str(SUITES / suite), "--results-dir", str(results), "--threads", "1", *extra])
        assert out.exit_code == 0, out.output
    standin = sorted((results / "mlperf-dcnv2-synthetic").rglob("seed*.mllog"))
    quickstart = sorted((results / "quickstart").rglob("seed*.mllog"))
    assert len(standin) == 3 and len(quickstart) == 1
    for log in (*standin, *quickstart):
        checked = check_log(log, tmp_path)
        assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
        keys = events(log)
        for key in ("submission_org", "submission_platform", "submission_division", "submission_benchmark",
                    "scenario", "init_stop", "run_start", "run_stop", "train_samples", "eval_samples"):
            assert len(keys[key]) == 1, key
        assert keys["submission_benchmark"][0]["value"] == "dlrm_dcnv2"
        assert keys["submission_org"][0]["value"] == "dlrs-bench"
        assert keys["cache_clear"][0]["value"] is True and keys["cache_clear"][0]["metadata"]["files"] > 0
        assert keys["submission_division"][0]["value"] == "open"
    quick = events(quickstart[0])
    assert quick["scenario"][0]["value"] == "none"
    assert quick["submission_division"][0]["metadata"] == {"requested": "open"}
    assert quick["opt_adam_epsilon"][0]["value"] == 1e-8  # torch Adam's default, read from the optimizer
    stand = events(standin[0])
    division = stand["submission_division"][0]["metadata"]
    assert division["requested"] == "closed"
    broken = [line.split(":")[0] for line in division["closed_rules_broken"]]
    assert broken == ["data.dataset", "data.train_samples", "data.eval_samples", "data.tables", "data.multi_hot",
                      "model.reference", "eval.cadence", "eval.target"]
    assert stand["opt_adagrad_epsilon"][0]["value"] == 1e-8  # dlrs-bench's Adagrad (torch's default: 1e-10)
    assert stand["gradient_accumulation_steps"][0]["value"] == 1


# ---------------------------------------------------------------- closed rules


def reference_facts(**changes) -> RunFacts:
    """The facts of a run of suites/mlperf_dcnv2.yaml on MLPerf's data with a closed Adagrad."""
    (scenario,) = load_suite(SUITES / "mlperf_dcnv2.yaml", machine_checks=False).scenarios
    steps = math.ceil(TB_TRAIN_SAMPLES / scenario.spec.train.batch_size)
    facts = dict(spec=scenario.spec, dataset="criteo-tb", train_rows=TB_TRAIN_SAMPLES, eval_rows=TB_EVAL_SAMPLES,
                 cardinalities=list(TERABYTE_CARDINALITIES), stored_bags=list(MLPERF_MULTI_HOT),
                 synthesised_bags=None, hyperparameters=dict(CLOSED_ADAGRAD),
                 eval_interval_steps=round(scenario.spec.train.eval_every * steps), bag_source=MLPERF_MATERIALISED)
    return RunFacts(**{**facts, **changes})


def test_the_reference_suite_keeps_every_closed_rule_on_mlperf_data():
    facts = reference_facts()
    assert facts.eval_interval_steps == 3200  # FLOOR(4,195,197,692 / (65,536 x 20))
    assert closed_rules_broken("dlrm_dcnv2", facts) == []


def test_each_broken_closed_rule_is_named():
    broken = closed_rules_broken("dlrm_dcnv2", reference_facts(
        synthesised_bags=list(MLPERF_MULTI_HOT), hyperparameters={**CLOSED_ADAGRAD, "opt_adagrad_epsilon": 1e-10},
        train_rows=1000, eval_interval_steps=3201))
    assert broken == [
        "data.train_samples: train rows is 1,000, closed requires 4,195,197,692",
        "data.multi_hot: multi-hot bags are synthesised at read time by dlrs-bench's hashes (multi_hot_sizes), not "
        "read from MLPerf's materialised multi-hot dataset",
        "opt_adagrad_epsilon: opt_adagrad_epsilon is 1e-10, closed requires 1e-08",
        "eval.cadence: evaluation interval (steps) is 3,201, closed requires 3,200",
    ]
    # parameter groups that disagree (fused tables 1e-8, dense 1e-10) are no closed Adagrad either
    mixed = reference_facts(hyperparameters={**CLOSED_ADAGRAD, "opt_adagrad_epsilon": [1e-10, 1e-8]})
    assert [b.split(":")[0] for b in closed_rules_broken("dlrm_dcnv2", mixed)] == ["opt_adagrad_epsilon"]


def context(division: str) -> MLPerfContext:
    return MLPerfContext("org", "1xCPU", division, "dlrm_dcnv2", "label", "suite", "abc")


@pytest.mark.parametrize(("division", "broken", "claimed"), [
    ("closed", [], "closed"), ("closed", ["eval.target: target is ..."], "open"), ("open", [], "open")])
def test_division_is_closed_only_where_asked_for_and_every_rule_holds(tmp_path, monkeypatch, division, broken,
                                                                      claimed):
    monkeypatch.setattr(mllog, "run_facts", lambda *a: None)
    monkeypatch.setattr(mllog, "closed_rules_broken", lambda benchmark, facts: broken)
    params = [torch.nn.Parameter(torch.zeros(2))]
    pipeline = SimpleNamespace(optimizer=torch.optim.Adagrad(params, lr=0.004, eps=1e-8))
    spec = SimpleNamespace(train=SimpleNamespace(optimizer="adagrad", lr_schedule=ConstantSchedule()))
    log = EventLog(tmp_path / "run.mllog", context(division))
    log.configuration(spec, None, pipeline, 3200)
    log.close()
    keys = events(tmp_path / "run.mllog")
    assert keys["submission_division"][0]["value"] == claimed
    expected = {"requested": division, **({"closed_rules_broken": broken} if division == "closed" else {})}
    assert keys["submission_division"][0]["metadata"] == expected
    assert {k: keys[k][0]["value"] for k in CLOSED_ADAGRAD} == CLOSED_ADAGRAD
    assert keys["gradient_accumulation_steps"][0]["value"] == 1


def test_no_submission_keys_without_a_context(tmp_path):
    log = EventLog(tmp_path / "run.mllog")
    log.submission()
    log.cache_clear(tmp_path)
    log.event("run_start")
    log.close()
    assert list(events(tmp_path / "run.mllog")) == ["run_start"]


def test_cache_clear_drops_the_dataset_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 5000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 300)
    cleared = mllog.clear_page_cache(tmp_path)
    assert (cleared["cleared"], cleared["files"], cleared["bytes"]) == (True, 2, 5300)
    assert mllog.clear_page_cache(tmp_path / "absent")["cleared"] is False


def test_fused_and_dense_adagrad_hyperparameters_are_read_from_the_built_optimizer():
    """Under one-rank DMP on CPU the tables' Adagrad is fbgemm's fused kernel, the dense parameters'
    torch's: both read from the built optimizers, both ε 1e-8 (torch's default would be 1e-10)."""
    from dlrs_bench.data.loading import DatasetCache
    from dlrs_bench.engine import distributed
    from dlrs_bench.engine.train import prepare

    (scenario,) = load_suite(SUITES / "mlperf_dcnv2_synthetic.yaml").scenarios
    spec = scenario.spec.model_copy(update={"distributed": scenario.spec.distributed.model_copy(
        update={"one_rank_dmp": True})})
    dataset, _ = DatasetCache().get(spec.dataset)
    device = torch.device("cpu")
    with distributed.one_rank_group(device, 60) as ranks:
        prepared = prepare(spec, dataset, device, ranks)
        groups = optimizer_groups(mllog.pipeline_optimizer(prepared.pipeline))
    assert any(g.get("fused") for g in groups) and any(not g.get("fused") for g in groups)
    hyper = hyperparameters("adagrad", groups)
    assert hyper["opt_adagrad_epsilon"] == 1e-8
    assert hyper["opt_weight_decay"] == 0 and hyper["opt_adagrad_initial_accumulator_value"] == 0


def test_suite_mlperf_block_is_validated(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text((SUITES / "mlperf_dcnv2_synthetic.yaml").read_text().replace(
        "mlperf: {division: closed}", "mlperf: {division: closed, benchmark: closed_none}"))
    with pytest.raises(UserInputError) as e:
        load_suite(path, machine_checks=False)
    line = path.read_text().splitlines().index("mlperf: {division: closed, benchmark: closed_none}") + 1
    assert str(e.value) == f"{path}:{line}: mlperf.benchmark: Input should be 'dlrm_dcnv2' (got 'closed_none')"
    (scenario,) = load_suite(SUITES / "quickstart.yaml").scenarios[:1]
    assert scenario.mlperf.division == "open" and scenario.mlperf.org == "dlrs-bench"


# ---------------------------------------------------------------- RCPs


def test_rcp_file_holds_the_checker_points_with_provenance():
    rcps = Rcps(load_rcps())
    assert rcps.file.source.package == "mlperf-logging" and rcps.file.source.version == "4.1.68"
    assert [(p.batch_size, round(p.mean, 4)) for p in rcps.points] == [
        (32768, 0.7071), (55296, 0.7615), (65536, 0.7911), (102400, 0.8906), (135168, 0.9279), (160000, 0.9583)]
    assert [p.batch_size for p in rcps.pruned] == [32768, 55296, 160000]
    point, how = rcps.at(65536)  # pruned away: interpolated as the checker's default pass does
    assert how == "RCP interpolated" and round(point.mean, 6) == 0.780713
    assert round(rcps.min_epochs(point, 10), 6) == 0.744831
    point, how = rcps.at(20000)
    assert point.batch_size == 32768 and "below every RCP" in how
    assert rcps.at(200000)[0] is None


@needs_checker
@pytest.mark.parametrize("batch", [32768, 40000, 55296, 65536, 102400, 150000, 160000])
def test_rcp_statistics_equal_mlperf_loggings(batch):
    """Mean, deviation and the fewest accepted epochs equal rcp_checker's own (10 runs, pruned RCPs)."""
    import logging

    from mlperf_logging.rcp_checker.rcp_checker import RCP_Checker

    logging.disable(logging.CRITICAL)
    theirs = RCP_Checker("training", "6.0.0", "dlrm_dcnv2", False)
    record = theirs._find_rcp(batch, "pruned_rcps")
    if record is None:
        low, high = theirs._find_top_min_rcp(batch, "pruned_rcps"), theirs._find_bottom_max_rcp(batch, "pruned_rcps")
        _, record = theirs._create_interp_rcp(batch, low, high)
    rcps = Rcps(load_rcps())
    point, _ = rcps.at(batch)
    assert point.mean == pytest.approx(record["RCP Mean"], abs=1e-12)
    assert point.stdev == pytest.approx(record["RCP Stdev"], abs=1e-12)
    assert rcps.min_epochs(point, 10) == pytest.approx(record["Min Epochs"], abs=1e-12)


def test_a_bad_rcp_file_is_named(tmp_path):
    data = json.loads(RCP_FILE.read_text())
    del data["rcps"]["dlrm_dcnv2_ref_32768"]["BS"]
    path = tmp_path / "rcps.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"rcps\.json: rcps\.dlrm_dcnv2_ref_32768\.BS: Field required"):
        load_rcps(path)


@pytest.fixture(scope="module")
def template() -> dict:
    """A result file of the reference suite's scenario on MLPerf's data (hand-made from the CI baseline's)."""
    data = json.loads(next((REPO / "reference_results" / "ci").rglob("seed0.json")).read_text())
    (scenario,) = load_suite(SUITES / "mlperf_dcnv2.yaml", machine_checks=False).scenarios
    data.update(suite="mlperf-dcnv2", scenario_id=scenario.scenario_id, label="reference",
                scenario=scenario.spec.model_dump(mode="json"))
    data["dataset"] = {"name": "criteo-tb", "rows": {"train": TB_TRAIN_SAMPLES, "val": TB_EVAL_SAMPLES},
                       "features": {f"C{i}": n for i, n in enumerate(TERABYTE_CARDINALITIES)}}
    return data


def runs(template: dict, epochs: list[float | None], batch: int = 65536) -> list[ResultFile]:
    """One result per entry of ``epochs`` (None: the target not reached)."""
    out = []
    for seed, e in enumerate(epochs):
        data = copy.deepcopy(template)
        data["seed"] = seed
        data["scenario"]["train"]["batch_size"] = batch  # evaluated 20 times an epoch, as closed asks
        data["scenario"]["train"]["eval_every"] = TB_TRAIN_SAMPLES // (batch * 20) / math.ceil(TB_TRAIN_SAMPLES / batch)
        data["status"] = "reached" if e is not None else "not_reached"
        data["target"] = {"metric": "auc", "value": 0.80275, "reached": e is not None, "time_to_target_s": None,
                          "epochs_to_target": e, "samples_to_target": None}
        out.append(ResultFile.model_validate(data))
    return out


def test_rcp_verdicts(template):
    rcps = Rcps(load_rcps())

    def compare(results):
        (c,) = compare_with_rcps(results, rcps)
        return c

    slow = compare(runs(template, [0.75, 0.8, 0.8, 0.85, 0.8, 0.75, 0.8, 0.8, 0.85, 0.9]))
    assert (slow.verdict, slow.score_scale) == ("PASS", None)
    assert slow.mean_epochs == pytest.approx(olympic_mean([0.75, 0.8, 0.8, 0.85, 0.8, 0.75, 0.8, 0.8, 0.85, 0.9]))
    assert slow.min_epochs == pytest.approx(0.744831, abs=1e-6)
    assert "no faster than the reference" in slow.reason
    within = compare(runs(template, [0.75] * 9 + [None]))  # one run may miss: the slowest, dropped
    assert within.verdict == "PASS" and within.score_scale == pytest.approx(0.780713 / 0.75, abs=1e-5)
    assert within.epochs[-1] == math.inf and within.converged == 9
    fast = compare(runs(template, [0.70] * 10))
    assert fast.verdict == "FASTER" and fast.p_value < 0.05
    assert "converges faster than the reference: olympic mean 0.700 epochs < 0.745" in fast.reason

    def refused(results) -> str:
        c = compare(results)
        assert c.verdict == "NOT_COMPARABLE"
        return c.reason

    assert refused(runs(template, [0.8, 0.8])) == "2 run(s): an olympic mean needs at least 3 (MLPerf submits 10)"
    assert refused(runs(template, [0.8] * 8 + [None, None])) == "2 of 10 runs did not reach the target (MLPerf " \
        "allows one)"
    assert "no RCP at or above global batch 200,000" in refused(runs(template, [0.8] * 10, batch=200000))
    other = copy.deepcopy(template)
    other["scenario"]["model"] = {"name": "dlrm", "embedding_dim": 128, "bottom_mlp": [512, 256, 128],
                                  "top_mlp": [1024, 1024, 512, 256, 1]}
    other["scenario_id"] = "dlrm"
    assert refused(runs(other, [0.8] * 10)) == ("not the MLPerf configuration: model.reference: model is 'dlrm', "
                                                "closed requires the reference DCNv2")


def test_compare_rcp_command_exit_codes(template, tmp_path):
    def write(results: list[ResultFile], folder: Path) -> Path:
        for r in results:
            path = folder / r.scenario_id / f"seed{r.seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(r.model_dump_json())
        return folder

    passing = write(runs(template, [0.8] * 10), tmp_path / "pass")
    out = runner.invoke(app, ["compare", "--rcp", str(passing), "--json"])
    assert out.exit_code == 0, out.output
    assert [c["verdict"] for c in json.loads(out.output)] == ["PASS"]
    faster = write(runs(template, [0.7] * 10), tmp_path / "fast")
    out = runner.invoke(app, ["compare", "--rcp", str(faster)])
    assert out.exit_code == 1 and "FASTER" in out.output
    out = runner.invoke(app, ["compare", "--rcp", str(passing), "--baseline", str(faster)])
    assert out.exit_code == 2 and "takes no --baseline or --reference" in out.output
    out = runner.invoke(app, ["compare", "--rcp", str(tmp_path / "absent")])
    assert out.exit_code == 2 and "no such file or folder" in out.output


# ---------------------------------------------------------------- learning-rate schedules and clipping


@needs_checker
def test_a_run_with_a_schedule_and_clipping_logs_them_and_passes_the_checker(tmp_path):
    """MLPerf's schedule (warm-up 2 steps, decay from step 4 over 4) with clipping on the tiny suite:
    the log carries the schedule's keys, the checker accepts it, the result records the rate of each
    evaluation and what was clipped."""
    import yaml

    from tests.conftest import tiny_suite

    suite = tiny_suite("sched", matrix={"compressor": [{"kind": "none"}]})
    suite["defaults"]["train"].update(
        lr_schedule={"kind": "mlperf_dlrm", "warmup_steps": 2, "decay_start_step": 4, "decay_steps": 4},
        clip_grad_norm=1.0, max_epochs=1, stop_at_target=False)
    path = tmp_path / "sched.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = runner.invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "results"), "--threads", "1"])
    assert out.exit_code == 0, out.output
    (log,) = sorted((tmp_path / "results").rglob("seed*.mllog"))
    checked = check_log(log, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    keys = events(log)
    assert {k: keys[k][0]["value"] for k in ("opt_learning_rate_warmup_steps", "opt_learning_rate_decay_start_step",
                                             "opt_learning_rate_decay_steps", "opt_learning_rate_decay_poly_power")} \
        == {"opt_learning_rate_warmup_steps": 2, "opt_learning_rate_decay_start_step": 4,
            "opt_learning_rate_decay_steps": 4, "opt_learning_rate_decay_poly_power": 2}
    result = json.loads(log.with_suffix(".json").read_text())
    steps_per_eval = [round(p["samples"] / 128) for p in result["eval_curve"]]  # 2400 train rows, batch 128
    lr = 0.01
    expected = [lr * ((4 - (s - 4)) / 4) ** 2 if s < 8 else lr * (1 / 4) ** 2 for s in steps_per_eval]
    assert [p["lr"] for p in result["eval_curve"]] == pytest.approx(expected)
    assert result["optimization"]["clip_grad_norm"] == {
        "max_norm": 1.0, "clipped_params": result["model"]["total_params"], "unclipped_params": 0}


def schedule_facts(**train) -> RunFacts:
    facts = reference_facts()
    spec = facts.spec.model_copy(update={"train": facts.spec.train.model_copy(update=train)})
    hyper = {**CLOSED_ADAGRAD, **mllog.schedule_keys(spec.train.lr_schedule)}
    return reference_facts(spec=spec, hyperparameters=hyper)


def test_closed_rules_accept_mlperfs_schedule_and_name_the_others():
    from dlrs_bench.config.schema import MLPerfDLRMSchedule, PlateauSchedule, WarmupSchedule

    assert closed_rules_broken("dlrm_dcnv2", schedule_facts(lr_schedule=MLPerfDLRMSchedule(kind="mlperf_dlrm"))) == []
    plateau = closed_rules_broken("dlrm_dcnv2", schedule_facts(lr_schedule=PlateauSchedule(kind="plateau")))
    assert [b.split(":")[0] for b in plateau] == ["train.lr_schedule"]
    warm = closed_rules_broken("dlrm_dcnv2", schedule_facts(lr_schedule=WarmupSchedule(kind="warmup", warmup_steps=8)))
    assert [b.split(":")[0] for b in warm] == [
        "opt_learning_rate_warmup_steps", "opt_learning_rate_decay_start_step", "train.lr_schedule"]
    clipped = closed_rules_broken("dlrm_dcnv2", schedule_facts(clip_grad_norm=10.0))
    assert clipped == ["train.clip_grad_norm: gradients are clipped to norm 10.0, the reference does not clip"]
