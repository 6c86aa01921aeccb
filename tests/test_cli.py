"""End to end through the command line: validate, ls, run (results, resume, failures, filter, device)."""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import broken_movielens, tiny_suite
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.config.expand import load_suite
from dlrs_bench.measure.metrics import entropy

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
TRAIN_ROWS = 2400  # 3000 synthetic rows, 80/10/10

#: DESIGN.md, "Result file": required keys, nested sections included.
REQUIRED = {
    "schema_version": None, "suite": None, "scenario_id": None, "scenario": None, "seed": None,
    "status": None, "error": None,
    "metrics": {"auc", "logloss", "ne"},
    "target": {"metric", "value", "reached", "time_to_target_s", "epochs_to_target", "samples_to_target"},
    "timing": {"train_time_s", "eval_time_s", "wall_time_s", "samples_per_s", "iter_ms", "warmup_iters"},
    "memory": {"gpu_peak_mib", "gpu_allocator_peak_mib", "host_peak_rss_mib"},
    "embedding": {"uncompressed_params", "params", "bytes", "compression_ratio", "per_table"},
    "model": {"dense_params", "total_params", "flops_per_sample"},
    "eval_curve": None,
    "env": {"dlrs_bench", "git_sha", "git_dirty", "python", "torch", "torchrec", "fbgemm_gpu", "cuda", "gpu_name",
            "gpu_count", "driver", "cpu", "hostname", "started_at"},
}
EVAL_POINT_KEYS = {"epoch", "samples", "time_s", "auc", "logloss", "ne"}
ITER_MS_KEYS = {"mean", "p50", "p90", "p99"}

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    # every exit goes through typer.Exit / SystemExit, never an uncaught exception
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def write(path: Path, suite: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def results_of(results_dir: Path, suite: str) -> dict[str, dict[str, Any]]:
    """scenario label -> result dict, for every seed0.json of ``suite``."""
    out = {}
    for path in sorted((results_dir / suite).glob("*/seed0.json")):
        data = json.loads(path.read_text())
        out[data["label"]] = data
    return out


# ---------------------------------------------------------------- (a) validate


def test_validate_good_file(tmp_path):
    path = write(tmp_path / "good.yaml", tiny_suite())
    result = invoke("validate", path)
    assert result.exit_code == EXIT_OK
    assert "ok" in result.output and "'tiny'" in result.output and "2 scenario(s)" in result.output
    for scenario in load_suite(path).scenarios:
        assert scenario.scenario_id in result.output


def test_validate_bad_file_exits_2_with_file_and_line(tmp_path):
    suite = tiny_suite()
    suite["defaults"]["train"]["batch_size"] = "big"
    path = write(tmp_path / "bad.yaml", suite)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "batch_size" in text)
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID
    assert f"{path}:{line}:" in result.output
    assert "defaults.train.batch_size" in result.output
    assert "error" in result.output


def test_validate_reports_every_bad_file_and_still_checks_good_ones(tmp_path):
    good = write(tmp_path / "good.yaml", tiny_suite())
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("name: x\ndefaults: {model: [1, 2\n")
    unknown = write(tmp_path / "unknown.yaml", tiny_suite(matrix={"compressor": [{"kind": "hashng", "ratio": 2}]}))
    result = invoke("validate", good, syntax, unknown)
    assert result.exit_code == EXIT_INVALID
    assert f"ok {good}" in result.output
    assert re.search(rf"{re.escape(str(syntax))}:\d+: YAML syntax error", result.output)
    assert re.search(rf"{re.escape(str(unknown))}:\d+: .*did you mean 'hashing'", result.output)


def test_console_script_validate_bad_file(tmp_path):
    """The installed entry point: exit code 2, file:line on stderr, no traceback."""
    script = Path(sys.executable).parent / "dlrs-bench"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dlrs_bench"]
    path = write(tmp_path / "bad.yaml", tiny_suite(matrix={"compressor": [{"kind": "hashing", "ratio": 0.5}]}))
    proc = subprocess.run([*command, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_INVALID
    assert re.search(rf"{re.escape(str(path))}:\d+: matrix\.compressor\[0\]\.ratio", proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------- (b) ls


@pytest.mark.parametrize(
    "what, names",
    [
        ("datasets", ["movielens-latest-small", "synthetic", "criteo-kaggle", "criteo-tb", "avazu", "movielens",
                      "movielens-sequences", "synthetic-sequences", "yambda"]),
        ("models", ["dlrm", "dcnv2", "wukong", "deepfm", "autoint", "xdeepfm", "fibinet", "hstu", "sasrec",
                    "popularity"]),
        ("compressors", ["none", "hashing", "qr", "memcom", "bch", "robe", "tt", "md"]),
    ],
)
def test_ls_lists_registered_names_with_help(what, names):
    result = invoke("ls", what)
    assert result.exit_code == EXIT_OK
    listed = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert sorted(listed) == sorted(names)
    for line in result.output.splitlines():
        if line.strip():
            assert len(line.split()) > 1  # a one-line help follows each name


def test_ls_suites_lists_bundled_suites():
    result = invoke("ls", "suites")
    assert result.exit_code == EXIT_OK
    assert "quickstart.yaml" in result.output
    assert "DLRM on bundled MovieLens" in result.output


def test_ls_unknown_kind_is_invalid():
    result = runner.invoke(app, ["ls", "optimizers"])
    assert result.exit_code == EXIT_INVALID


# ---------------------------------------------------------------- (c) run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the tiny two-scenario suite (none, hashing at ratio 4)."""
    root = tmp_path_factory.mktemp("run")
    path = write(root / "tiny.yaml", tiny_suite())
    results_dir = root / "results"
    result = runner.invoke(app, ["run", str(path), "--results-dir", str(results_dir)])
    return {"result": result, "dir": results_dir, "suite": load_suite(path), "path": path}


def test_run_exits_0_and_prints_a_summary(tiny_run):
    result = tiny_run["result"]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == EXIT_OK, result.output
    assert "tiny" in result.output
    for scenario in tiny_run["suite"].scenarios:
        assert scenario.scenario_id in result.output  # the summary table lists every run


def test_run_writes_one_file_per_scenario_and_seed(tiny_run):
    for scenario in tiny_run["suite"].scenarios:
        folder = tiny_run["dir"] / "tiny" / scenario.scenario_id
        assert (folder / "seed0.json").is_file()
        assert (folder / "seed0.mllog").is_file()
        assert not list(folder.glob(".tmp-*"))  # atomic writes leave no temporary files
    assert len(list((tiny_run["dir"] / "tiny").iterdir())) == 2


def test_result_files_hold_every_required_key(tiny_run):
    for label, data in results_of(tiny_run["dir"], "tiny").items():
        for key, nested in REQUIRED.items():
            assert key in data, (label, key)
            if nested is not None:
                assert isinstance(data[key], dict), (label, key)
                assert nested <= set(data[key]), (label, key, nested - set(data[key]))
        assert ITER_MS_KEYS <= set(data["timing"]["iter_ms"])
        assert data["eval_curve"] and all(EVAL_POINT_KEYS <= set(p) for p in data["eval_curve"])
        assert data["schema_version"] == "1.0"


def test_result_identity_and_resolved_spec(tiny_run):
    by_id = {s.scenario_id: s for s in tiny_run["suite"].scenarios}
    for data in results_of(tiny_run["dir"], "tiny").values():
        scenario = by_id[data["scenario_id"]]
        assert data["suite"] == "tiny"
        assert data["seed"] == 0
        assert data["scenario"] == scenario.spec.model_dump(mode="json")  # the resolved spec, defaults included
        assert data["scenario"]["train"]["batch_size"] == 128
        assert data["scenario"]["train"]["optimizer"] == "adam"  # a default, written out


def test_full_model_reaches_the_target(tiny_run):
    none = results_of(tiny_run["dir"], "tiny")["none"]
    assert none["status"] == "reached"
    assert none["error"] is None
    target = none["target"]
    assert target["metric"] == "auc" and target["value"] == 0.55 and target["reached"] is True
    assert target["time_to_target_s"] > 0


def test_target_fields_are_consistent_with_the_eval_curve(tiny_run):
    for label, data in results_of(tiny_run["dir"], "tiny").items():
        target, curve = data["target"], data["eval_curve"]
        if data["status"] == "reached":
            assert target["reached"] is True
            assert target["samples_to_target"] / TRAIN_ROWS == pytest.approx(target["epochs_to_target"], rel=1e-12)
            # the run stops at the first evaluation reaching the target
            assert curve[-1]["samples"] == target["samples_to_target"]
            assert curve[-1]["auc"] >= target["value"]
            assert all(p["auc"] < target["value"] for p in curve[:-1])
            assert curve[-1]["time_s"] == pytest.approx(target["time_to_target_s"], abs=1e-9)
            assert target["time_to_target_s"] <= data["timing"]["wall_time_s"]
        else:
            assert data["status"] == "not_reached", label
            assert target["reached"] is False and target["time_to_target_s"] is None
            assert target["epochs_to_target"] is None and target["samples_to_target"] is None
            assert all(p["auc"] < target["value"] for p in curve)
            assert curve[-1]["epoch"] == pytest.approx(2.0)  # ran the whole budget


def test_eval_curve_is_monotone_and_final_metrics_match(tiny_run):
    for data in results_of(tiny_run["dir"], "tiny").values():
        curve = data["eval_curve"]
        samples = [p["samples"] for p in curve]
        assert samples == sorted(samples) and len(set(samples)) == len(samples)
        times = [p["time_s"] for p in curve]
        assert times == sorted(times) and times[0] > 0
        for p in curve:
            assert p["epoch"] == pytest.approx(p["samples"] / TRAIN_ROWS)
            assert 0 <= p["auc"] <= 1 and p["logloss"] > 0
        final = curve[-1]
        assert data["metrics"]["auc"] == final["auc"]
        assert data["metrics"]["logloss"] == final["logloss"]
        train_ctr = data["dataset"]["ctr"]["train"]
        assert data["metrics"]["ne"] == pytest.approx(data["metrics"]["logloss"] / entropy(train_ctr), rel=1e-4)


def test_timing_and_memory_sections(tiny_run):
    for data in results_of(tiny_run["dir"], "tiny").values():
        timing = data["timing"]
        iter_ms = timing["iter_ms"]
        assert 0 < iter_ms["p50"] <= iter_ms["p90"] <= iter_ms["p99"]
        assert iter_ms["mean"] > 0
        assert timing["warmup_iters"] == 2
        assert timing["train_time_s"] > 0 and timing["eval_time_s"] > 0
        assert timing["wall_time_s"] >= timing["train_time_s"] + timing["eval_time_s"] - 1e-6
        assert timing["samples_per_s"] > 0
        memory = data["memory"]
        assert memory["gpu_peak_mib"] is None and memory["gpu_allocator_peak_mib"] is None  # CPU run
        assert memory["host_peak_rss_mib"] > 10


def test_embedding_and_model_sections(tiny_run):
    results = results_of(tiny_run["dir"], "tiny")
    none, hashing = results["none"], results["hashing(ratio=4)"]
    full_params = (64 + 32 + 16) * 8
    assert none["embedding"]["compression_ratio"] == 1.0
    assert none["embedding"]["params"] == none["embedding"]["uncompressed_params"] == full_params
    assert hashing["embedding"]["uncompressed_params"] == full_params
    assert hashing["embedding"]["params"] == (16 + 8 + 4) * 8
    assert hashing["embedding"]["compression_ratio"] == pytest.approx(4.0)
    assert hashing["embedding"]["bytes"] == hashing["embedding"]["params"] * 4
    assert [t["name"] for t in hashing["embedding"]["per_table"]] == ["t0", "t1", "t2"]
    assert [t["params"] for t in hashing["embedding"]["per_table"]] == [128, 64, 32]
    # bottom 4->16->8 and top (8 + 3*4/2)->16->1, with biases
    dense = (4 * 16 + 16) + (16 * 8 + 8) + (14 * 16 + 16) + (16 * 1 + 1)
    for data in (none, hashing):
        assert data["model"]["dense_params"] == dense
        assert data["model"]["total_params"] == dense + data["embedding"]["params"]
        assert data["model"]["flops_per_sample"] == 2 * (4 * 16 + 16 * 8) + 2 * 16 * 8 + 2 * (14 * 16 + 16)


def test_env_section(tiny_run):
    for data in results_of(tiny_run["dir"], "tiny").values():
        env = data["env"]
        assert env["python"] == platform.python_version()
        assert env["torch"] == torch.__version__
        assert env["torchrec"]  # installed, so its version is known
        assert env["gpu_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", env["started_at"])
        assert env["hostname"] and env["cpu"]


def test_event_log_is_mlperf_style(tiny_run):
    for scenario in tiny_run["suite"].scenarios:
        path = tiny_run["dir"] / "tiny" / scenario.scenario_id / "seed0.mllog"
        lines = path.read_text().splitlines()
        assert lines and all(line.startswith(":::MLLOG ") for line in lines)
        events = [json.loads(line.removeprefix(":::MLLOG ")) for line in lines]
        keys = [e["key"] for e in events]
        assert "run_start" in keys and "run_stop" in keys
        assert keys.index("run_start") < keys.index("run_stop")
        assert keys.index("init_stop") < keys.index("run_start")
        assert "eval_accuracy" in keys
        for e in events:
            assert {"namespace", "time_ms", "event_type", "key", "value", "metadata"} <= set(e)
            assert e["event_type"] in ("POINT_IN_TIME", "INTERVAL_START", "INTERVAL_END")
        times = [e["time_ms"] for e in events]
        assert times == sorted(times)
        run_stop = next(e for e in events if e["key"] == "run_stop")
        result = json.loads(path.with_suffix(".json").read_text())
        assert run_stop["metadata"]["status"] == ("success" if result["status"] == "reached" else "aborted")


def test_unreachable_target_is_not_reached_and_not_a_failure(tmp_path):
    suite = tiny_suite(matrix={"compressor": [{"kind": "none"}]})
    suite["defaults"]["target"]["value"] = 0.99
    suite["defaults"]["train"]["max_epochs"] = 1
    path = write(tmp_path / "hard.yaml", suite)
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_OK, result.output  # not reaching a target is a result, not a failure
    (data,) = results_of(tmp_path / "results", "tiny").values()
    assert data["status"] == "not_reached" and data["error"] is None
    target = data["target"]
    assert target["reached"] is False
    assert target["time_to_target_s"] is None and target["epochs_to_target"] is None
    assert target["samples_to_target"] is None
    curve = data["eval_curve"]
    assert len(curve) == 4  # every 0.25 epoch (5 of 19 steps), and once at the end of the budget
    assert curve[-1]["samples"] == TRAIN_ROWS and curve[-1]["epoch"] == pytest.approx(1.0)
    assert data["metrics"]["auc"] == curve[-1]["auc"] < 0.99
    log = (tmp_path / "results" / "tiny" / data["scenario_id"] / "seed0.mllog").read_text()
    assert '"aborted"' in log


# ---------------------------------------------------------------- (d) resume and history


def test_resume_skips_finished_runs_and_rerun_keeps_history(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    results_dir = tmp_path / "results"
    first = invoke("run", path, "--results-dir", results_dir, "--filter", "none")
    assert first.exit_code == EXIT_OK, first.output
    (folder,) = list((results_dir / "tiny").iterdir())
    result_file = folder / "seed0.json"
    content, mtime = result_file.read_bytes(), result_file.stat().st_mtime_ns
    log_content = (folder / "seed0.mllog").read_bytes()

    resumed = invoke("run", path, "--results-dir", results_dir, "--filter", "none", "--resume")
    assert resumed.exit_code == EXIT_OK, resumed.output
    assert "--resume" in resumed.output  # says the run was kept from an earlier one
    assert result_file.read_bytes() == content
    assert result_file.stat().st_mtime_ns == mtime
    assert (folder / "seed0.mllog").read_bytes() == log_content
    assert not (folder / "history").exists()

    again = invoke("run", path, "--results-dir", results_dir, "--filter", "none")
    assert again.exit_code == EXIT_OK, again.output
    history = folder / "history"
    archived = sorted(history.glob("seed0*.json"))
    assert len(archived) == 1
    assert archived[0].read_bytes() == content  # the old result, never lost
    assert result_file.read_bytes() != content  # a new result in its place
    assert json.loads(result_file.read_text())["status"] in ("reached", "not_reached")
    archived_logs = sorted(history.glob("seed0*.mllog"))
    assert len(archived_logs) == 1 and archived_logs[0].read_bytes() == log_content


def test_resume_reruns_failed_runs(tmp_path):
    dataset = {"name": "movielens-latest-small", "path": str(broken_movielens(tmp_path / "ml"))}
    suite = tiny_suite(matrix={"dataset": [dataset]})  # fails when the ratings are read
    path = write(tmp_path / "fail.yaml", suite)
    results_dir = tmp_path / "results"
    assert invoke("run", path, "--results-dir", results_dir).exit_code == EXIT_FAILED
    (result_file,) = list((results_dir / "tiny").glob("*/seed0.json"))
    resumed = invoke("run", path, "--results-dir", results_dir, "--resume")
    assert resumed.exit_code == EXIT_FAILED
    assert "kept from an earlier run" not in resumed.output
    assert len(list((result_file.parent / "history").glob("seed0*.json"))) == 1  # the failed run was run again


# ---------------------------------------------------------------- (e) failures are isolated


def test_failing_scenarios_are_recorded_and_the_others_complete(tmp_path):
    ratings = broken_movielens(tmp_path / "bad-ratings", "ratings.csv")
    movies = broken_movielens(tmp_path / "bad-movies", "movies.csv")
    suite = tiny_suite(matrix={}, scenarios=[  # the two MovieLens folders raise when the data is read
        {},
        {"dataset": {"name": "movielens-latest-small", "path": str(ratings)}},
        {"dataset": {"name": "movielens-latest-small", "path": str(movies)}},
    ])
    path = write(tmp_path / "failing.yaml", suite)
    results_dir = tmp_path / "results"
    result = invoke("run", path, "--results-dir", results_dir)
    assert result.exit_code == EXIT_FAILED
    assert "failed" in result.output

    files = sorted((results_dir / "tiny").glob("*/seed0.json"))
    assert len(files) == 3
    results = [json.loads(f.read_text()) for f in files]
    by_status: dict[str, list[dict]] = {}
    for r in results:
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status.get("failed", [])) == 2
    (ok,) = by_status.get("reached", []) + by_status.get("not_reached", [])
    assert ok["scenario"]["compressor"]["kind"] == "none" and ok["error"] is None

    failed = {r["scenario"]["dataset"]["path"]: r for r in by_status["failed"]}
    for folder, file, message in [(ratings, "ratings.csv", "invalid literal"), (movies, "movies.csv", "expected")]:
        error = failed[str(folder)]["error"]
        assert error["type"] == "UserInputError"
        assert error["message"].startswith(f"{folder / file}:2: {message}")
    for r in by_status["failed"]:
        for key in REQUIRED:
            assert key in r
        assert r["metrics"] is None and r["target"] is None and r["eval_curve"] == []
        assert r["env"]["python"] == platform.python_version()
        log = Path(str(results_dir / "tiny" / r["scenario_id"] / "seed0.mllog")).read_text()
        assert '"run_error"' in log


# ---------------------------------------------------------------- (f) device, (g) filter


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_device_cuda_without_cuda_exits_2(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    results_dir = tmp_path / "results"
    result = invoke("run", path, "--results-dir", results_dir, "--device", "cuda")
    assert result.exit_code == EXIT_INVALID
    assert "torch.cuda.is_available() is False" in result.output
    assert "--device cpu" in result.output  # says what to do instead
    assert not results_dir.exists()  # nothing ran


def test_gpus_1_without_cuda_exits_2_unless_device_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the error raised when CUDA is missing")  # pragma: no cover
    suite = tiny_suite(matrix={"compressor": [{"kind": "none"}]})
    suite["defaults"]["gpus"] = 1
    path = write(tmp_path / "gpu.yaml", suite)
    assert invoke("run", path, "--results-dir", tmp_path / "r").exit_code == EXIT_INVALID
    ran = invoke("run", path, "--results-dir", tmp_path / "r", "--device", "cpu")
    assert ran.exit_code == EXIT_OK, ran.output
    (result_file,) = list((tmp_path / "r" / "tiny").glob("*/seed0.json"))
    assert json.loads(result_file.read_text())["device"] == "cpu"


def test_filter_restricts_the_scenarios(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    ids = {s.label: s.scenario_id for s in load_suite(path).scenarios}
    results_dir = tmp_path / "results"
    result = invoke("run", path, "--results-dir", results_dir, "--filter", "hashing")
    assert result.exit_code == EXIT_OK, result.output
    assert [p.name for p in (results_dir / "tiny").iterdir()] == [ids["hashing(ratio=4)"]]
    # by scenario id too
    result = invoke("run", path, "--results-dir", results_dir, "--filter", ids["none"][:6])
    assert result.exit_code == EXIT_OK
    assert sorted(p.name for p in (results_dir / "tiny").iterdir()) == sorted(ids.values())


def test_filter_matching_nothing_is_invalid(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    result = invoke("run", path, "--results-dir", tmp_path / "results", "--filter", "no-such-scenario")
    assert result.exit_code == EXIT_INVALID
    assert "matches no scenario" in result.output
    assert not (tmp_path / "results").exists()


def test_run_of_an_invalid_suite_exits_2(tmp_path):
    path = write(tmp_path / "bad.yaml", tiny_suite(matrix={"compressor": [{"kind": "hashing", "ratio": -4}]}))
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_INVALID
    assert re.search(rf"{re.escape(str(path))}:\d+: ", result.output)
    assert not (tmp_path / "results").exists()


def test_several_seeds_give_one_file_each(tmp_path):
    suite = tiny_suite(matrix={"compressor": [{"kind": "hashing", "ratio": 4}]})
    suite["defaults"]["seeds"] = [0, 3]
    suite["defaults"]["train"]["max_epochs"] = 0.5
    path = write(tmp_path / "seeds.yaml", suite)
    result = invoke("run", path, "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_OK, result.output
    (folder,) = list((tmp_path / "results" / "tiny").iterdir())
    files = {p.name: json.loads(p.read_text()) for p in folder.glob("seed*.json")}
    assert set(files) == {"seed0.json", "seed3.json"}
    assert files["seed0.json"]["seed"] == 0 and files["seed3.json"]["seed"] == 3
    assert files["seed0.json"]["scenario_id"] == files["seed3.json"]["scenario_id"] == folder.name
    # different seeds: different initialisation and order, so different curves
    assert files["seed0.json"]["eval_curve"][0]["auc"] != files["seed3.json"]["eval_curve"][0]["auc"]


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_run_on_cuda_records_gpu_memory(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    results_dir = tmp_path / "results"
    result = invoke("run", path, "--results-dir", results_dir, "--device", "cuda")
    assert result.exit_code == EXIT_OK, result.output
    for data in results_of(results_dir, "tiny").values():
        assert data["device"].startswith("cuda")
        assert data["status"] in ("reached", "not_reached")
        assert data["memory"]["gpu_allocator_peak_mib"] > 0
        assert data["memory"]["gpu_peak_mib"] is None or data["memory"]["gpu_peak_mib"] > 0
        assert data["env"]["gpu_count"] >= 1 and data["env"]["gpu_name"]
        iter_ms = data["timing"]["iter_ms"]
        assert 0 < iter_ms["p50"] <= iter_ms["p90"] <= iter_ms["p99"]
        assert not math.isnan(data["metrics"]["auc"])


def test_threads_and_load_are_recorded(tmp_path):
    path = write(tmp_path / "tiny.yaml", tiny_suite())
    result = invoke("run", path, "--results-dir", tmp_path / "r", "--filter", "none", "--threads", "1")
    assert result.exit_code == EXIT_OK, result.output
    (data,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "tiny").glob("*/seed0.json")]
    assert data["env"]["threads"] == 1
    assert isinstance(data["env"]["load_avg"], float) and data["env"]["load_avg"] >= 0
    refused = invoke("run", path, "--results-dir", tmp_path / "r", "--threads", "0")
    assert refused.exit_code == EXIT_INVALID and "--threads" in refused.output


def test_text_that_looks_like_rich_markup_is_printed_as_it_is(tmp_path):
    """Paths, names and messages with ``[/...]`` (gloo's timeout messages hold such paths) reach the
    terminal verbatim instead of crashing rich's markup parser."""
    missing = invoke("validate", str(tmp_path / "no[/such].yaml"))
    assert missing.exit_code == EXIT_INVALID and "no[/such].yaml" in missing.output
    assert "Traceback" not in missing.output and "MarkupError" not in missing.output
    raw = invoke("data", "prepare", "criteo-kaggle", "--raw", str(tmp_path / "[/x].tsv"), "--out",
                 str(tmp_path / "c"))
    assert raw.exit_code == EXIT_INVALID and "[/x].tsv" in raw.output
    suite = tiny_suite(matrix={}, scenarios=[
        {"name": "[/bold] odd [red]name"},
        {"name": "bad-data", "dataset": {"name": "movielens-latest-small",
                                         "path": str(broken_movielens(tmp_path / "[/criteo]"))}}])
    ran = invoke("run", write(tmp_path / "odd.yaml", suite), "--results-dir", tmp_path / "r")
    assert ran.exit_code == EXIT_FAILED, ran.output
    text = " ".join(ran.output.split())
    assert "[/bold] odd [red]name" in text and "[/criteo]" in text and "MarkupError" not in text


def test_a_run_that_diverges_is_diverged_not_reached_and_its_file_is_strict_json(tmp_path):
    suite = tiny_suite(matrix={"compressor": [{"kind": "none"}]})
    suite["defaults"]["train"].update(optimizer="sgd", lr=1e30)
    suite["defaults"]["target"]["value"] = 0.51  # NaN predictions must never count as reaching it
    path = write(tmp_path / "nan.yaml", suite)
    result = invoke("run", path, "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_FAILED, result.output
    assert "diverged" in result.output
    (file,) = (tmp_path / "r" / "tiny").glob("*/seed0.json")

    def no_nan(token: str) -> None:
        raise AssertionError(f"{token} in a result file")

    data = json.loads(file.read_text(), parse_constant=no_nan)
    assert data["status"] == "diverged" and data["target"]["reached"] is False
    assert data["diverged"]["cause"] in ("non-finite training loss", "non-finite predictions")
    assert 1 <= data["diverged"]["step"] <= data["timing"]["steps"]
    assert data["error"] is None
    compared = invoke("compare", str(tmp_path / "r"), "--baseline", str(tmp_path / "r"))
    assert compared.exit_code == EXIT_FAILED and "diverged at step" in compared.output
    resumed = invoke("run", path, "--results-dir", tmp_path / "r", "--resume")
    assert "kept from an earlier run" in resumed.output  # a diverged run ended on its own: --resume keeps it


# ---------------------------------------------------------------- validate: fast, torch-free, against the data


REPO = Path(__file__).resolve().parent.parent


def test_validate_and_ls_import_no_torch():
    """What makes ``validate`` fast: no torch (nor TorchRec, nor numpy for suites without a cache)."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dlrs_bench.cli import app\n"
            "for args in (['validate', *sys.argv[1:]], ['ls', 'models'], ['ls', 'compressors'], ['ls', 'suites']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "print(sorted(m for m in ('torch', 'torchrec', 'numpy') if m in sys.modules))")
    suites = [str(p) for p in sorted((REPO / "suites").glob("*.yaml"))
              if "criteo" not in p.name and p.name != "mlperf_dcnv2.yaml"]  # these name Criteo caches
    out = subprocess.run([sys.executable, "-c", code, *suites], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_validate_checks_a_prepared_cache_and_its_tables(tmp_path):
    """A synthetic cache written by ``data prepare``: a ratio its tables cannot reach and a truncated file are
    found by ``validate`` (exit 2, the file named); ``--portable`` checks only what holds anywhere."""
    cache = tmp_path / "syn"
    assert invoke("data", "prepare", "synthetic", "--rows", "3000", "--out", str(cache),
                  "--set", "cardinalities=[500, 40]").exit_code == EXIT_OK
    suite = tiny_suite(matrix={"compressor": [{"kind": "hashing", "ratio": 4}]})
    suite["defaults"]["dataset"] = {"name": "synthetic", "path": str(cache)}
    path = write(tmp_path / "s.yaml", suite)
    assert invoke("validate", path).exit_code == EXIT_OK
    suite["matrix"]["compressor"] = [{"kind": "hashing", "ratio": 300}]
    write(path, suite)
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID
    assert "hashing on table t1 (40 rows): cannot reach ratio 300 (it gives 40x)" in " ".join(result.output.split())
    assert invoke("validate", "--portable", path).exit_code == EXIT_OK
    labels = cache / "labels.u8"
    labels.write_bytes(labels.read_bytes()[:-10])
    result = invoke("validate", path)
    assert result.exit_code == EXIT_INVALID and str(labels) in " ".join(result.output.split())
    assert "Traceback" not in result.output
