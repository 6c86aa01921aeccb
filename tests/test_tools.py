"""The measurement scripts under tools/ run end to end (tiny sizes; their numbers are not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_bench_throughput_measures_unsharded_and_fused_tables_in_both_precisions():
    out = run_tool("bench_throughput.py", "--device", "cpu", "--cardinality-scale", "0.0001", "--batch", "256",
                   "--steps", "8")
    cell = r"\s*│\s*"
    number = r"([\d.,]+)"
    rows = re.findall(rf"│\s*(unsharded|fused){cell}(fp32|bf16)" + f"{cell}{number}" * 4, out)
    assert {(r[0], r[1]) for r in rows} == {(e, p) for e in ("unsharded", "fused") for p in ("fp32", "bf16")}, out
    bare = re.findall(rf"│\s*bare{cell}(fp32|bf16){cell}-{cell}{number}{cell}-{cell}{number}{cell}1\.00", out)
    assert {r[0] for r in bare} == {"fp32", "bf16"}, out  # the bare TorchRec loop, its own baseline
    baseline = next(r for r in rows if r[:2] == ("unsharded", "fp32"))
    assert baseline[5] == "1.00"
    assert all(float(r[2]) > 0 and float(r[3].replace(",", "")) > 0 for r in rows)
    assert "26 tables" in out and "failed" not in out


def test_bench_compression_times_the_fused_tbe_table():
    out = run_tool("bench_compression.py", "--device", "cpu", "--methods", "none", "tbe", "--rows", "1000",
                   "--batch", "256", "--iters", "2", "--warmup", "1", "--threads", "1")
    tbe = next(line for line in out.splitlines() if "│ tbe" in line)
    assert "unavailable" not in tbe and "×" in tbe


def test_the_benchmarks_run_and_record_their_ratios(tmp_path):
    """`make bench`'s benchmarks at a tiny size, each run once (their numbers are not asserted)."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
                           "--benchmark-enable", "--benchmark-only", "--benchmark-min-rounds=1",
                           f"--benchmark-json={out}"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "BENCH_ROWS": "20000", "BENCH_BATCH": "1024"})
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    benchmarks = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    assert set(benchmarks) == {"test_plain_contiguous_read", "test_one_hot_batches[none]",
                               "test_one_hot_batches[blocks]", "test_one_hot_batches[permutation]",
                               "test_one_hot_batches_from_disk",
                               "test_mlperf_multi_hot_batches[0]", "test_mlperf_multi_hot_batches[2]",
                               "test_row_checks_alone[none]", "test_row_checks_alone[permutation]"}
    info = benchmarks["test_one_hot_batches[none]"]
    assert info["samples_per_s"] > 0 and info["ratio_vs_plain_warm"] == pytest.approx(
        info["samples_per_s"] / info["plain_warm_samples_per_s"], rel=0.01)
    assert 0 < info["ratio_vs_unchecked"]  # the pipeline with its row checks against itself without them


def test_fuxictr_side_by_side_pairs_each_variant_with_its_dlrs_bench_runs(tmp_path):
    """``tools/fuxictr_compare.py table``: FuxiCTR's summary against dlrs-bench's finished runs of the same
    model (failed runs left out), mean ± std over seeds, the difference and the 0.002 verdict; the variants
    of several ``run`` files (one per ``--models`` subset) side by side, a variant in two files refused."""
    import json

    def summary(auc: float) -> dict:
        return {"summary": {"valid_auc": {"mean": auc, "std": 0.001}},
                "params": {"total": 1000, "embedding": 600, "first_order": 10, "dense": 390}}

    protocol = {"embedding_dim": 16, "seeds": [0, 1, 2]}
    fuxictr, wukong = tmp_path / "fuxictr.json", tmp_path / "fuxictr_wukong.json"
    fuxictr.write_text(json.dumps({"protocol": protocol, "models": {
        "DCNv2 stacked": summary(0.8080), "DeepFM": summary(0.8000), "FiBiNET": summary(0.8)}}))
    wukong.write_text(json.dumps({"protocol": protocol, "models": {"WuKong": summary(0.8050)}}))
    runs = [("dcnv2", "stacked", 0.8070, "not_reached"), ("dcnv2", "stacked", 0.8076, "reached"),
            ("dcnv2", "parallel", 0.9, "reached"), ("deepfm", None, 0.7950, "reached"),
            ("deepfm", None, 0.99, "failed"), ("wukong", None, 0.8060, "reached")]
    for i, (name, structure, auc, status) in enumerate(runs):
        folder = tmp_path / "r" / "s" / f"id{i}"
        folder.mkdir(parents=True)
        model = {"name": name, **({"structure": structure} if structure else {})}
        (folder / "seed0.json").write_text(json.dumps({
            "status": status, "scenario": {"model": model}, "best_metrics": {"auc": auc},
            "model": {"total_params": 2000}, "embedding": {"params": 700}}))
    out = run_tool("fuxictr_compare.py", "table", "--fuxictr", str(fuxictr), str(wukong),
                   "--results", str(tmp_path / "r"))
    assert ("| DCNv2 stacked | 0.8080 ± 0.0010 | 0.8073 ± 0.0004 (2) | -0.0007 | yes | 1,000 (610) "
            "| 2,000 (700) |") in out
    assert "| DeepFM | 0.8000 ± 0.0010 | 0.7950 ± 0.0000 (1) | -0.0050 | no |" in out
    assert "| FiBiNET | 0.8000 | – |" in out
    assert "| WuKong | 0.8050 ± 0.0010 | 0.8060 ± 0.0000 (1) | +0.0010 | yes |" in out
    assert [line.split(" |")[0] for line in out.splitlines()[2:]] == [
        "| DCNv2 stacked", "| DeepFM", "| FiBiNET", "| WuKong"]  # the files' order
    twice = subprocess.run([sys.executable, str(ROOT / "tools" / "fuxictr_compare.py"), "table", "--fuxictr",
                            str(fuxictr), str(wukong), str(wukong), "--results", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert twice.returncode != 0 and "WuKong is also in an earlier --fuxictr file" in twice.stderr
