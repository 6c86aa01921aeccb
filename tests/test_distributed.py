"""N ranks training one model: rank slicing, launch and failure handling, and 2-process gloo runs
(sharded full tables, a replicated compressor) against the single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rank_entrypoints
import torch
from conftest import tiny_suite, train_one_rank
from test_cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, invoke, results_of, write

from dlrs_bench.data.batching import global_batch_rows, iter_batches, merge_rank_rows, rank_slice
from dlrs_bench.data.synthetic import Synthetic, SyntheticOptions
from dlrs_bench.engine.distributed import DistributedRunError, launch

# ---------------------------------------------------------------- slicing global batches over ranks


@pytest.mark.parametrize("rows,world", [(10, 2), (11, 2), (7, 3), (128, 4), (3, 3)])
def test_rank_slices_partition_a_batch_evenly(rows, world):
    slices = [rank_slice(rows, r, world) for r in range(world)]
    assert slices[0][0] == 0 and slices[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    sizes = [e - s for s, e in slices]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.fixture(scope="module")
def split():
    dataset = Synthetic.build(SyntheticOptions(name="synthetic", rows=1000, cardinalities=[50, 20], num_dense=2))
    return dataset.splits["train"], dataset.feature_names


@pytest.mark.parametrize("world", [2, 3])
def test_rank_batches_cover_every_training_row_once(split, world):
    train, keys = split
    batch = 64
    per_rank = [list(iter_batches(train, batch, keys, 5, r, world))
                for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1, "every rank must take the same number of steps"
    assert len(per_rank[0]) == len(global_batch_rows(len(train), batch, world))
    whole = list(iter_batches(train, batch, keys, 5))
    for step, rows in enumerate(global_batch_rows(len(train), batch, world)):
        parts = [per_rank[r][step] for r in range(world)]
        assert sum(len(p.labels) for p in parts) == rows
        # the ranks' shares, in rank order, are the single-process batch
        assert torch.equal(torch.cat([p.dense_features for p in parts]), whole[step].dense_features)


def test_a_last_batch_smaller_than_the_world_is_dropped_in_training(split):
    train, keys = split
    batch = len(train) - 1  # leaves a last global batch of 1 row
    assert global_batch_rows(len(train), batch, 2) == [batch]
    assert global_batch_rows(len(train), batch, 1) == [batch, 1]
    assert len(list(iter_batches(train, batch, keys, rank=1, world=2))) == 1


@pytest.mark.parametrize("world,batch", [(2, 64), (3, 64), (4, 10), (2, 799)])
def test_evaluation_shares_merge_back_in_row_order(split, world, batch):
    train, keys = split
    parts = [torch.cat([b.dense_features[:, 0] for b in iter_batches(train, batch, keys, rank=r, world=world,
                                                                       pad=True)]) for r in range(world)]
    assert torch.equal(merge_rank_rows(parts, len(train), batch, world), train.to_memory().dense[:, 0])


# ---------------------------------------------------------------- launch, collectives, failing ranks


def test_launch_returns_rank_zero_and_collectives_work(tmp_path):
    out = launch(rank_entrypoints.collectives, 30.0, 2, tmp_path / "logs")
    assert out["rank"] == 0 and out["world"] == 2
    assert out["rows"] == [[0.0], [10.0, 11.0]]
    assert out["objects"] == [{"r": 0}, {"r": 1}]
    assert out["any"] is True and out["none"] is False


def test_sparse_gradients_are_averaged_over_ranks(tmp_path):
    averaged, expected = launch(rank_entrypoints.sparse_average, 30.0, 2, tmp_path / "logs")
    assert averaged == expected
    assert expected[2] == [1.5] * 3 and expected[3] == [0.0] * 3


@pytest.mark.parametrize("kind,needle", [
    ("raise", "rank 1 of 2 failed: ValueError: rank one cannot go on"),
    ("die", "rank 1 of 2 failed: exit code 3"),
])
def test_a_failing_rank_ends_the_run_with_its_error_not_a_hang(tmp_path, kind, needle):
    t0 = time.perf_counter()
    with pytest.raises(DistributedRunError) as info:  # a long collective timeout: the launcher must not wait it out
        launch(rank_entrypoints.rank_one_fails, (kind, 600.0), 2, tmp_path / "logs")
    assert needle in str(info.value)
    assert str(tmp_path / "logs") in str(info.value)
    assert time.perf_counter() - t0 < 60


def test_the_rank_that_failed_first_is_named_not_a_peer_that_lost_it(tmp_path):
    """torch orders failures by whole seconds (rank 0's "connection closed" can tie with rank 1's error);
    the root failure is the earliest to the nanosecond, and a rank that died without a word comes first."""
    from types import SimpleNamespace

    from dlrs_bench.engine.distributed import _failure_message, _root_failure

    first, later = tmp_path / "first.json", tmp_path / "later.json"
    first.write_text("{}")
    later.write_text("{}")
    os.utime(first, ns=(10**18, 10**18))
    os.utime(later, ns=(10**18 + 1000, 10**18 + 1000))
    raised = SimpleNamespace(error_file=str(first), timestamp=10**9, message="ValueError: x", exitcode=1)
    lost = SimpleNamespace(error_file=str(later), timestamp=10**9, message="RuntimeError: closed", exitcode=1)
    assert _root_failure({0: lost, 1: raised})[0] == 1
    died = SimpleNamespace(error_file="<N/A>", timestamp=10**9 + 5, message="", exitcode=3)
    assert _root_failure({0: lost, 1: died})[0] == 1
    assert _failure_message(died) == "exit code 3"
    killed = SimpleNamespace(error_file="<N/A>", timestamp=0, message="Signal 9 (SIGKILL) received by PID 1",
                             exitcode=-9)
    assert _failure_message(killed) == "killed by SIGKILL"


def test_a_lost_rank_times_out_the_collective(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DistributedRunError) as info:
        launch(rank_entrypoints.rank_one_fails, ("hang", 3.0), 2, tmp_path / "logs")
    assert "rank 0 of 2 failed" in str(info.value)
    assert time.perf_counter() - t0 < 60


# ---------------------------------------------------------------- 2-process gloo runs through the CLI

#: Sharded tables use fbgemm's fused adagrad instead of torch.optim.Adagrad (and their own
#: initialisation): measured 0.8472 vs 0.8478 (seed 0), 0.8479 vs 0.8494 (seed 1).
AUC_TOLERANCE = 0.01
#: Replicated modules are plain data parallelism: the same math as one process up to float sums.
DATA_PARALLEL_TOLERANCE = 1e-3


def keys_of(result: dict, depth: int = 2, prefix: str = "") -> set[str]:
    """Dotted key paths of ``result`` down to ``depth`` levels (lists: their first element)."""
    out = set()
    for key, value in result.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0]
        if depth > 1 and isinstance(value, dict) and key not in ("scenario", "env"):
            out |= keys_of(value, depth - 1, path + ".")
    return out


ROBE = {"kind": "robe", "ratio": 8, "chunk": 2, "gradient": "sparse"}
ROBE_LABEL = "robe(ratio=8,chunk=2,gradient=sparse)"


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory):
    """Synthetic data (20k rows, whole budget, no early stop: a single early evaluation of a tiny run
    varies by ±0.03 AUC between seeds) on 1 and on 2 gloo ranks: full tables (sharded, fused adagrad),
    hashing 4x (replicated, data-parallel) and ROBE-Z with sparse gradients (averaged outside DDP)."""
    tmp = tmp_path_factory.mktemp("gloo")
    suite = tiny_suite("gloo")
    suite["defaults"]["dataset"]["rows"] = 20_000
    suite["defaults"]["train"].update(optimizer="adagrad", lr=0.05, batch_size=256, max_epochs=2, eval_every=1,
                                      stop_at_target=False)
    suite["matrix"]["processes"] = [1, 2]
    suite["matrix"]["compressor"].append(ROBE)
    suite["scenarios"] = [{"name": "one-rank-dmp", "compressor": {"kind": "none"},
                           "distributed": {"one_rank_dmp": True}}]
    result = invoke("run", write(tmp / "gloo.yaml", suite), "--results-dir", tmp / "results")
    return result, results_of(tmp / "results", "gloo"), tmp


def test_two_process_runs_finish(gloo_results):
    result, results, _ = gloo_results
    assert result.exit_code == EXIT_OK, result.output
    assert set(results) == {f"{c} processes={p}" for p in (1, 2) for c in ("none", "hashing(ratio=4)", ROBE_LABEL)
                            } | {"one-rank-dmp"}
    assert all(r["status"] == "reached" for r in results.values())
    assert all(r["timing"]["epochs"] == pytest.approx(2, abs=0.01) for r in results.values())


@pytest.mark.parametrize("compressor", ["none", "hashing(ratio=4)", ROBE_LABEL])
def test_two_process_result_matches_single_process(gloo_results, compressor):
    _, results, _ = gloo_results
    one, two = results[f"{compressor} processes=1"], results[f"{compressor} processes=2"]
    assert keys_of(one) <= keys_of(two), "the single-process schema, every key"
    assert keys_of(two) - keys_of(one) == {"distributed", "distributed.world_size", "distributed.backend",
                                           "distributed.placement", "distributed.per_rank"}
    tolerance = AUC_TOLERANCE if compressor == "none" else DATA_PARALLEL_TOLERANCE
    assert abs(two["best_metrics"]["auc"] - one["best_metrics"]["auc"]) <= tolerance
    assert abs(two["metrics"]["auc"] - one["metrics"]["auc"]) <= tolerance
    assert two["metrics"]["auc"] > 0.7 and two["timing"]["samples"] == one["timing"]["samples"]
    assert two["embedding"] == one["embedding"]  # the same tables, the same accounting
    assert two["model"] == one["model"]
    assert [p["epoch"] for p in two["eval_curve"]] == pytest.approx([p["epoch"] for p in one["eval_curve"]], abs=0.01)
    assert two["distributed"]["world_size"] == 2 and two["distributed"]["backend"] == "gloo"
    assert two["env"]["threads"] == 1  # one torch thread per gloo rank
    assert len(two["distributed"]["per_rank"]) == 2
    assert two["memory"]["host_peak_rss_mib"] == max(r["memory"]["host_peak_rss_mib"]
                                                       for r in two["distributed"]["per_rank"])
    assert "distributed" not in one


def test_one_rank_dmp_trains_fused_tables_in_this_process(gloo_results):
    _, results, _ = gloo_results
    fused, plain = results["one-rank-dmp"], results["none processes=1"]
    assert fused["distributed"]["world_size"] == 1 and fused["distributed"]["backend"] == "gloo"
    assert {p["compute_kernel"] for p in fused["distributed"]["placement"].values()} == {"fused"}
    assert {r for p in fused["distributed"]["placement"].values() for r in p["ranks"]} == {0}
    assert abs(fused["best_metrics"]["auc"] - plain["best_metrics"]["auc"]) <= AUC_TOLERANCE
    assert fused["timing"]["samples"] == plain["timing"]["samples"]
    assert not list((gloo_results[2] / "results" / "gloo" / fused["scenario_id"]).glob("*.ranks")), "not launched"


def test_full_tables_are_sharded_and_compressed_ones_replicated(gloo_results):
    _, results, _ = gloo_results
    placement = results["none processes=2"]["distributed"]["placement"]
    assert set(placement) == {"t_t0", "t_t1", "t_t2"}
    assert {p["compute_kernel"] for p in placement.values()} == {"fused"}
    assert all(p["sharding_type"] != "data_parallel" for p in placement.values())
    assert {r for p in placement.values() for r in p["ranks"]} == {0, 1}, "tables spread over both ranks"
    assert results["hashing(ratio=4) processes=2"]["distributed"]["placement"] == {}
    assert results[f"{ROBE_LABEL} processes=2"]["distributed"]["placement"] == {}


def test_rank_zero_writes_the_event_log_and_rank_logs_are_kept(gloo_results):
    _, results, tmp = gloo_results
    two = results["none processes=2"]
    base = tmp / "results" / "gloo" / two["scenario_id"]
    log = (base / "seed0.mllog").read_text()
    assert log.count('"key": "run_start"') == 1 and '"key": "world_size", "value": 2' in log
    assert log.count('"key": "eval_accuracy"') == len(two["eval_curve"])
    assert len(list((base / "seed0.ranks").rglob("stderr.log"))) == 2


def test_a_scenario_failing_on_its_ranks_is_recorded_and_the_suite_goes_on(tmp_path):
    suite = tiny_suite("failing", matrix={}, scenarios=[  # the ranks' first collective times out at once
        {"name": "broken", "distributed": {"timeout_s": 1e-6}}, {"name": "none"}])
    suite["defaults"]["processes"] = 2
    suite["defaults"]["train"]["optimizer"] = "adagrad"
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_FAILED
    results = results_of(tmp_path / "r", "failing")
    failed = results["broken"]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "DistributedRunError"
    assert "of 2 failed:" in failed["error"]["message"]
    assert results["none"]["status"] == "reached"


@pytest.mark.gpu
def test_more_gpus_than_the_machine_has_is_refused(tmp_path):
    suite = tiny_suite("gpus")
    suite["defaults"]["gpus"] = torch.cuda.device_count() + 1
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_INVALID
    assert f"needs {torch.cuda.device_count() + 1} GPUs (one per rank)" in result.output and "torchrun" in result.output


def test_gpus_on_a_machine_without_cuda_is_refused_before_running(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    suite = tiny_suite("gpus")
    suite["defaults"]["gpus"] = 2
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_INVALID
    assert "torch.cuda.is_available() is False" in result.output and "--device cpu" in result.output


def test_device_cpu_runs_a_gpus_scenario_on_gloo_ranks(tmp_path):
    suite = tiny_suite("gpus-on-cpu")
    suite["defaults"].update(gpus=2)
    suite["defaults"]["train"].update(optimizer="adagrad", lr=0.05, max_epochs=0.5)
    suite["matrix"]["compressor"] = [{"kind": "none"}]
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r", "--device", "cpu")
    assert result.exit_code == EXIT_OK, result.output
    (only,) = results_of(tmp_path / "r", "gpus-on-cpu").values()
    assert only["device"] == "cpu" and only["distributed"]["world_size"] == 2
    assert only["distributed"]["backend"] == "gloo"


# ---------------------------------------------------------------- under torchrun (how multi-node runs work)


def torchrun(tmp_path: Path, suite: dict, *extra: str) -> subprocess.CompletedProcess:
    path = write(tmp_path / "s.yaml", suite)
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "dlrs_bench", "run", str(path), "--results-dir", str(tmp_path / "r"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_dlrs_bench_under_torchrun_runs_scenarios_on_its_ranks(tmp_path):
    suite = tiny_suite("launched")
    suite["defaults"]["processes"] = 2
    suite["defaults"]["train"].update(optimizer="adagrad", lr=0.05)
    suite["matrix"]["compressor"] = [{"kind": "none"}]
    done = torchrun(tmp_path, suite)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    files = list((tmp_path / "r" / "launched").glob("*/seed0.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert result["status"] == "reached" and result["distributed"]["world_size"] == 2
    assert done.stdout.count("reached") >= 1 and done.stdout.count("launched:") == 1  # rank 0 alone reports


def test_torchrun_world_must_match_the_scenarios(tmp_path):
    done = torchrun(tmp_path, tiny_suite("mismatch"))
    assert done.returncode != EXIT_OK  # every rank exits 2; torchrun itself then exits 1
    assert "exitcode  : 2" in done.stderr
    assert "trains on 1 rank(s) but torchrun started 2" in done.stdout + done.stderr
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr


@pytest.mark.parametrize("ranks", [{"processes": 2}, {"distributed": {"one_rank_dmp": True}}])
def test_adam_with_sharded_tables_on_cpu_is_refused_before_running(tmp_path, ranks):
    suite = tiny_suite("adam")
    suite["defaults"].update(ranks)
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_INVALID
    assert "implement adagrad and sgd but not adam" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
def test_two_gpus_train_with_nccl_and_sharded_tables(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    suite = tiny_suite("nccl")
    suite["defaults"]["gpus"] = 2
    suite["matrix"]["compressor"] = [{"kind": "none"}, ROBE]
    result = invoke("run", write(tmp_path / "s.yaml", suite), "--results-dir", tmp_path / "r")
    assert result.exit_code == EXIT_OK, result.output
    for run in results_of(tmp_path / "r", "nccl").values():
        assert run["distributed"]["backend"] == "nccl" and run["distributed"]["world_size"] == 2
        assert run["memory"]["gpu_peak_mib"] > 0
    placement = results_of(tmp_path / "r", "nccl")["none"]["distributed"]["placement"]
    assert {p["compute_kernel"] for p in placement.values()} == {"fused"}


@pytest.mark.parametrize("compressor,pipeline", [({"kind": "none"}, "ShardedPipeline"),
                                                 ({"kind": "hashing", "ratio": 4}, "LocalPipeline")])
def test_sharded_full_tables_train_through_torchrecs_sparse_dist_pipeline(compressor, pipeline):
    """Full tables under DMP go through TrainPipelineSparseDist (the batch's KJT feeds the sharded
    tables); replicated compressed embeddings take the plain loop."""
    prepared, losses = train_one_rank({"compressor": compressor})
    assert type(prepared.pipeline).__name__ == pipeline
    assert all(0 < loss < 2 for loss in losses)
