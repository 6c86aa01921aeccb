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
                               "test_row_checks_alone[none]", "test_row_checks_alone[permutation]",
                               "test_train_batches[typical]", "test_train_batches[long]"}
    info = benchmarks["test_one_hot_batches[none]"]
    assert info["samples_per_s"] > 0 and info["ratio_vs_plain_warm"] == pytest.approx(
        info["samples_per_s"] / info["plain_warm_samples_per_s"], rel=0.01)
    assert 0 < info["ratio_vs_unchecked"]  # the pipeline with its row checks against itself without them


def fuxictr_result(folder: Path, name: str, structure: str | None, auc: float, status: str = "reached",
                   dim: int = 16, **scenario: dict) -> None:
    """A dlrs-bench result of the FuxiCTR match suite as ``table`` reads it (protocol d, batch 512, lr 1e-3,
    2 epochs; ``scenario`` sections merged in)."""
    import json

    folder.mkdir(parents=True)
    model = {"name": name, "embedding_dim": dim, **({"structure": structure} if structure else {})}
    spec = {"model": model, "train": {"batch_size": 512, "lr": 0.001, "max_epochs": 2}, "dataset": {}}
    for section, values in scenario.items():
        spec[section].update(values)
    (folder / "seed0.json").write_text(json.dumps({
        "status": status, "scenario": spec, "best_metrics": {"auc": auc},
        "model": {"total_params": 2000}, "embedding": {"params": 700}}))


def test_fuxictr_side_by_side_judges_parity_in_both_directions(tmp_path):
    """``tools/fuxictr_compare.py table``: FuxiCTR's summary against dlrs-bench's finished runs of the same
    model (failed runs left out), mean ± std over seeds and the difference, judged two-sided: within 0.002 a
    match; beyond it and beyond twice the standard error of the difference a mismatch, higher or lower; else
    inconclusive. The variants of several ``run`` files side by side, more seeds of a variant pooled, a seed in
    two files refused, runs of another protocol refused."""
    import json

    def summary(auc: float, std: float = 0.001, aucs: tuple[float, ...] = (), seeds: tuple[int, ...] = (0, 1, 2)
                ) -> dict:
        runs = [{"seed": s, "valid": {"AUC": a, "logloss": 0.5}, "test": {"AUC": a, "logloss": 0.5}}
                for s, a in zip(seeds, aucs or [auc] * len(seeds))]
        return {"summary": {"valid_auc": {"mean": auc, "std": std}}, "runs": runs, "model_args": {}, "training": {},
                "params": {"total": 1000, "embedding": 600, "first_order": 10, "dense": 390}}

    protocol = {"embedding_dim": 16, "batch_size": 512, "lr": 0.001, "epochs": 2, "seeds": [0, 1, 2]}
    fuxictr, wukong = tmp_path / "fuxictr.json", tmp_path / "fuxictr_wukong.json"
    fuxictr.write_text(json.dumps({"protocol": protocol, "models": {
        "DCNv2 stacked": summary(0.8080), "DeepFM": summary(0.8000), "xDeepFM": summary(0.8000, std=0.004),
        "FiBiNET": summary(0.8), "AutoInt+": summary(0.8000)}}))
    wukong.write_text(json.dumps({"protocol": protocol, "models": {"WuKong": summary(0.8050)}}))
    more = tmp_path / "fuxictr_wukong_more.json"
    more.write_text(json.dumps({"protocol": {**protocol, "seeds": [3, 4]},
                                "models": {"WuKong": summary(0.805, aucs=(0.8070, 0.8030), seeds=(3, 4))}}))
    runs = [("dcnv2", "stacked", 0.8070, "not_reached"), ("dcnv2", "stacked", 0.8076, "reached"),
            ("dcnv2", "parallel", 0.9, "reached"), ("deepfm", None, 0.7950, "reached"),
            ("deepfm", None, 0.99, "failed"), ("wukong", None, 0.8060, "reached"), ("autoint", None, 0.8060, "reached"),
            ("xdeepfm", None, 0.8030, "reached"), ("xdeepfm", None, 0.8050, "reached"),
            ("xdeepfm", None, 0.8070, "reached")]
    for i, (name, structure, auc, status) in enumerate(runs):
        fuxictr_result(tmp_path / "r" / "s" / f"id{i}", name, structure, auc, status,
                       train={"lr_schedule": {"kind": "plateau"}}, dataset={"vocabulary": "train"})
    out = run_tool("fuxictr_compare.py", "table", "--fuxictr", str(fuxictr), str(wukong), str(more),
                   "--results", str(tmp_path / "r"))
    pooled = {**protocol, "seeds": [0, 1, 2, 3, 4]}
    assert out.splitlines()[0] == f"protocol {pooled}; dlrs-bench with FuxiCTR's schedule, vocabulary"
    # 2 SE = 2 sqrt(0.001² / 3 + 0.000424² / 2) = 0.0013
    assert ("| DCNv2 stacked | 0.8080 ± 0.0010 | 0.8073 ± 0.0004 (2) | -0.0007 | 0.0013 | match | 1,000 (610) "
            "| 2,000 (700) |") in out
    assert "| DeepFM | 0.8000 ± 0.0010 | 0.7950 ± 0.0000 (1) | -0.0050 | 0.0012 | mismatch (lower) |" in out
    assert "| AutoInt+ | 0.8000 ± 0.0010 | 0.8060 ± 0.0000 (1) | +0.0060 | 0.0012 | mismatch (higher) |" in out
    # 2 SE = 2 sqrt(0.004² / 3 + 0.002² / 3) = 0.0052 > |Δ| 0.0050 > 0.002: the seeds spread too much to tell
    assert "| xDeepFM | 0.8000 ± 0.0040 | 0.8050 ± 0.0020 (3) | +0.0050 | 0.0052 | inconclusive |" in out
    assert "| FiBiNET | 0.8000 ± 0.0010 | – |" in out
    # WuKong's 5 pooled seeds: 0.805 × 3, 0.807, 0.803 → std sqrt(2 × 0.002² / 4) = 0.0014; 2 SE = 2 × 0.0014 / √5
    assert "| WuKong | 0.8050 ± 0.0014 | 0.8060 ± 0.0000 (1) | +0.0010 | 0.0013 | match |" in out
    assert [line.split(" |")[0] for line in out.splitlines()[4:]] == [
        "| DCNv2 stacked", "| DeepFM", "| xDeepFM", "| FiBiNET", "| AutoInt+", "| WuKong"]  # the files' order
    twice = subprocess.run([sys.executable, str(ROOT / "tools" / "fuxictr_compare.py"), "table", "--fuxictr",
                            str(fuxictr), str(wukong), str(wukong), "--results", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert twice.returncode != 0 and "WuKong seed(s) [0, 1, 2] also in an earlier --fuxictr file" in twice.stderr
    fuxictr_result(tmp_path / "r" / "s" / "d32", "deepfm", None, 0.80, dim=32)
    other = subprocess.run([sys.executable, str(ROOT / "tools" / "fuxictr_compare.py"), "table", "--fuxictr",
                            str(fuxictr), "--results", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert other.returncode != 0 and "run under another protocol than FuxiCTR's: {'embedding_dim': (32, 16)}" in (
        other.stderr)


def test_fuxictr_dlrs_side_is_the_match_suite_under_the_protocol():
    """``tools/fuxictr_compare.py dlrs``: suites/fuxictr_match.yaml with the protocol's d (every model), batch,
    lr, epochs and seeds; ``--without`` leaves a FuxiCTR training option at dlrs-bench's default."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuxictr_compare", ROOT / "tools" / "fuxictr_compare.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(tool)
    protocol = tool.Protocol(embedding_dim=32, batch_size=1024, lr=2e-3, epochs=3, seeds=(0, 1, 2))
    suite = tool.dlrs_suite(protocol, [])
    train = suite["defaults"]["train"]
    assert (train["batch_size"], train["lr"], train["max_epochs"]) == (1024, 2e-3, 3)
    assert {m["embedding_dim"] for m in suite["matrix"]["model"]} == {32}
    for section, key in tool.MATCHED.values():  # match mode: every FuxiCTR training option switched on
        blocks = suite["matrix"]["model"] if section == "model" else [suite["defaults"][section]]
        assert all(key in block for block in blocks), (section, key)
    plain = tool.dlrs_suite(protocol, ["schedule", "init"])
    assert "lr_schedule" not in plain["defaults"]["train"] and "clip_grad_norm" in plain["defaults"]["train"]
    assert not any("embedding_init" in m for m in plain["matrix"]["model"])
