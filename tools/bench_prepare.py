"""Throughput and peak memory of ``dlrs-bench data prepare`` on Criteo-format text, against a baseline.

What it does
------------
1. Generates a Criteo-format TSV of ``--rows`` rows (default 1,000,000) at ``--file`` unless that
   file exists: label ~ Bernoulli(0.256); 13 dense counts (log-normal, I2 with a few negatives
   -1..-3); 26 categorical fields as 8-hex-digit 32-bit hashes, ids drawn Zipf(1.1)-like from a
   per-field vocabulary of min(Kaggle cardinality, rows) random hashes; every field ~10% missing
   (empty). Seeded (``--seed``), so the same arguments give the same file.
2. Measures, each in its own subprocess (so imports, memory and pool workers do not carry over):

   * ``prepare``: ``dlrs_bench.data.prepare.prepare(CriteoFormat("criteo-kaggle", "torchrec"), ...)``
     with ``numbering="torchrec", frequency_threshold=3`` (TorchRec's conventions, so the baseline
     computes the same thing), once with every core (``workers`` = ``len(sched_getaffinity)``) and
     once with one worker. The time covers parsing, writing the cache, the dense transform, the
     vocabulary/renumbering pass and the manifest (which hashes the input with SHA-256).
   * the baseline: TorchRec's own Criteo utilities when ``torchrec`` is importable
     (``BinaryCriteoUtils.tsv_to_npys``: parse + dense log(x - min + 2) into .npy files, then
     ``BinaryCriteoUtils.sparse_to_contiguous(frequency_threshold=3)``: ids from 2 in order of first
     appearance, rare ids -> 1), timed per stage and in total; otherwise (or with
     ``--baseline python``) a plain-Python loop (split, ``int(x)``, ``int(x, 16)`` into numpy
     arrays, then ``np.unique`` per column).
3. Checks that the TorchRec baseline and ``prepare`` produced the same labels, ids and (to float32
   rounding) dense values, and prints a table: wall s, rows/s, peak memory, ratio to the baseline.

Peak memory: ``tree peak`` = the largest sum of PSS (proportional set size, so pages shared by the
forked pool workers are not counted twice) over the measured process and all its descendants,
sampled every 50 ms with psutil; ``main maxrss`` = ``getrusage(RUSAGE_SELF).ru_maxrss`` of the
measured process alone (exact, no sampling). Memory-mapped cache files count once touched.

The machine may be shared: the 1-minute load average (``os.getloadavg``) is printed before and
after every measurement; compare runs only at similar load.

Run (from the repository root; 1M rows: ~16 s to generate 231 MiB in /tmp, then ~2 minutes on
2 cores with ``--baseline both``, most of it in the TorchRec baseline)::

    .venv/bin/python tools/bench_prepare.py --rows 1000000 --baseline both

``--chunk-rows`` sets the prepare runs' ``chunk_rows`` (peak memory grows with workers x chunk_rows,
not with the input). ``--json FILE`` also writes every measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KAGGLE_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
                        14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
THRESHOLD = 3


# ---------------------------------------------------------------- data


def generate(path: Path, rows: int, seed: int, chunk: int = 200_000) -> None:
    """Write ``rows`` Criteo-format lines to ``path`` (via a temporary file, renamed when complete)."""
    rng = np.random.default_rng(seed)
    vocab = []
    for card in KAGGLE_CARDINALITIES:
        size = max(2, min(card, rows))
        vocab.append(np.array([f"{v:08x}" for v in rng.integers(1, 2**32, size, dtype=np.uint64).tolist()]))
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            columns = [np.where(rng.random(n) < 0.256, "1", "0").tolist()]
            for j in range(13):
                values = np.floor(np.exp(rng.normal(1.0, 1.5, n))).astype(np.int64)
                if j == 1:
                    neg = rng.random(n) < 0.03
                    values[neg] = -rng.integers(1, 4, int(neg.sum()))
                text = values.astype(str)
                text[rng.random(n) < 0.10] = ""
                columns.append(text.tolist())
            for j in range(26):
                ids = (rng.zipf(1.1, n) - 1) % len(vocab[j])
                text = vocab[j][ids]
                text[rng.random(n) < 0.10] = ""
                columns.append(text.tolist())
            f.write("\n".join(map("\t".join, zip(*columns))))
            f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- measured work (run in a child process)


def measure_prepare(file: Path, work: Path, workers: int, chunk_rows: int | None) -> dict[str, Any]:
    from dlrs_bench.data.criteo import CriteoFormat
    from dlrs_bench.data.prepare import PrepareOptions, prepare

    out = work / f"cache-w{workers}"
    options = PrepareOptions(numbering="torchrec", frequency_threshold=THRESHOLD, workers=workers,
                             **({"chunk_rows": chunk_rows} if chunk_rows else {}))
    imported_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    manifest = prepare(CriteoFormat("criteo-kaggle", "torchrec"), [file], out, options)
    return {"wall_s": time.perf_counter() - started, "rows": manifest.rows, "out": str(out),
            "import_maxrss_mib": imported_mib}


def measure_torchrec(file: Path, work: Path) -> dict[str, Any]:
    from torchrec.datasets.criteo import BinaryCriteoUtils

    out = work / "torchrec"
    out.mkdir()
    names = {k: str(out / f"day_0_{k}.npy") for k in ("dense", "sparse", "labels")}
    imported_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    BinaryCriteoUtils.tsv_to_npys(str(file), names["dense"], names["sparse"], names["labels"], "criteo_kaggle")
    parsed = time.perf_counter()
    BinaryCriteoUtils.sparse_to_contiguous([names["sparse"]], str(out), frequency_threshold=THRESHOLD)
    done = time.perf_counter()
    rows = int(np.load(names["labels"], mmap_mode="r").shape[0])
    stages = {"tsv_to_npys": parsed - started, "sparse_to_contiguous": done - parsed}
    return {"wall_s": done - started, "stages": stages,
            "rows": rows, "out": str(out), "import_maxrss_mib": imported_mib}


def measure_python(file: Path, work: Path) -> dict[str, Any]:
    """Plain-Python baseline: a line loop into preallocated numpy arrays, then np.unique renumbering."""
    imported_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with file.open("r", encoding="utf-8") as f:
        rows = sum(1 for _ in f)
    labels = np.empty(rows, np.int32)
    dense = np.empty((rows, 13), np.int64)
    sparse = np.empty((rows, 26), np.int64)
    with file.open("r", encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            labels[i] = int(parts[0])
            dense[i] = [int(v) if v else 0 for v in parts[1:14]]
            sparse[i] = [int(v, 16) if v else 0 for v in parts[14:40]]
    dense_f = np.log((dense - (dense.min() - 2)).astype(np.float32))
    for j in range(26):
        _, sparse[:, j] = np.unique(sparse[:, j], return_inverse=True)
    out = work / "python"
    out.mkdir()
    for name, arr in (("labels", labels), ("dense", dense_f), ("sparse", sparse)):
        np.save(out / f"{name}.npy", arr)
    return {"wall_s": time.perf_counter() - started, "rows": rows, "out": str(out),
            "import_maxrss_mib": imported_mib}


def child_main(args: argparse.Namespace) -> None:
    sys.stdout = open(os.devnull, "w")  # TorchRec prints a line per column and file
    file = Path(args.file)
    if args.measure == "generate":
        generate(file, args.rows, args.seed)
        return
    work = Path(args.work)
    if args.measure == "prepare":
        result = measure_prepare(file, work, args.workers, args.chunk_rows)
    elif args.measure == "torchrec":
        result = measure_torchrec(file, work)
    else:
        result = measure_python(file, work)
    result["main_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------- parent: run, sample memory, report


def tree_memory_mib(proc: Any) -> float:
    """Sum of PSS (falls back to RSS) of ``proc`` and its descendants, MiB."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def run_child(kind: str, file: Path, work: Path, workers: int = 1, chunk_rows: int | None = None) -> dict[str, Any]:
    import psutil

    result_path = work / f"result-{kind}-{workers}.json"
    cmd = [sys.executable, __file__, "--measure", kind, "--file", str(file), "--work", str(work),
           "--workers", str(workers), "--result", str(result_path)]
    if chunk_rows:
        cmd += ["--chunk-rows", str(chunk_rows)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT)
    proc, peak = psutil.Process(child.pid), 0.0
    while child.poll() is None:
        try:
            peak = max(peak, tree_memory_mib(proc))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if child.wait() != 0:
        raise SystemExit(f"measurement {kind} (workers={workers}) failed with exit code {child.returncode}")
    result = json.loads(result_path.read_text())
    result.update(kind=kind, workers=workers, tree_peak_mib=peak, process_wall_s=time.perf_counter() - started,
                  load_before=load_before, load_after=os.getloadavg()[0])
    return result


def compare_outputs(prepared: str, baseline: str, kind: str) -> str:
    """Do ``prepare``'s cache and the baseline's arrays hold the same rows?"""
    from dlrs_bench.data.cache import open_cache

    _, labels, dense, sparse = open_cache(Path(prepared)).columns()
    base = Path(baseline)
    if kind == "torchrec":
        b_labels = np.load(base / "day_0_labels.npy").reshape(-1)
        b_dense = np.load(base / "day_0_dense.npy")
        b_sparse = np.load(base / "day_0_sparse_contig_freq.npy")
    else:
        b_labels, b_dense, b_sparse = (np.load(base / f"{n}.npy") for n in ("labels", "dense", "sparse"))
    same_labels = np.array_equal(labels, b_labels)
    dense_diff = float(np.abs(dense - b_dense).max())
    if kind == "torchrec":
        same_ids = np.array_equal(sparse, b_sparse)
        what = "ids identical" if same_ids else "ids DIFFER"
    else:  # the python baseline numbers by sorted value, without a threshold: compare the partitions
        what = "ids not compared (different numbering)"
    return (f"labels {'identical' if same_labels else 'DIFFER'}, {what}, "
            f"dense max |difference| {dense_diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file", type=Path, default=None,
                        help="Criteo-format TSV (generated if missing; default "
                        "/tmp/dlrs-bench-prepare/criteo_ROWS_sSEED.tsv)")
    parser.add_argument("--baseline", choices=["auto", "torchrec", "python", "both"], default="auto",
                        help="auto: TorchRec if importable, else the plain-Python loop; both: TorchRec and the loop")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    # internal: one measurement in a child process
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="PrepareOptions.chunk_rows for the prepare runs (default: its default)")
    parser.add_argument("--measure", choices=["generate", "prepare", "torchrec", "python"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        child_main(args)
        return

    file = args.file or Path(tempfile.gettempdir()) / "dlrs-bench-prepare" / f"criteo_{args.rows}_s{args.seed}.tsv"
    cores = len(os.sched_getaffinity(0))
    print(f"cores {cores}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if file.exists():
        print(f"using {file} ({file.stat().st_size / 2**20:.0f} MiB)")
    else:  # in a child, so that this process stays small (a child's ru_maxrss starts from its parent's size)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--measure", "generate", "--file", str(file),
                        "--rows", str(args.rows), "--seed", str(args.seed)], check=True)
        print(f"generated {file}: {args.rows:,} rows, {file.stat().st_size / 2**20:.0f} MiB "
              f"in {time.perf_counter() - started:.1f} s")

    # only look for torchrec here: importing it (and torch) would grow this process, and a child's
    # ru_maxrss starts from its parent's size at fork
    have_torchrec = importlib.util.find_spec("torchrec") is not None
    if args.baseline == "torchrec" and not have_torchrec:
        raise SystemExit("--baseline torchrec: torchrec is not importable")
    baselines = {"auto": ["torchrec"] if have_torchrec else ["python"], "torchrec": ["torchrec"],
                 "python": ["python"], "both": ["torchrec", "python"] if have_torchrec else ["python"]}[args.baseline]
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        results = []
        for kind, workers in (("prepare", cores), ("prepare", 1), *((b, 1) for b in baselines)):
            r = run_child(kind, file, work, workers, args.chunk_rows)
            results.append(r)
            print(f"  done {kind} workers={workers}: {r['wall_s']:.1f} s "
                  f"(load {r['load_before']:.2f} -> {r['load_after']:.2f})", flush=True)
        base = results[2]
        checks = [f"vs {r['kind']}: " + compare_outputs(results[0]["out"], r["out"], r["kind"]) for r in results[2:]]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    label = {"torchrec": "TorchRec tsv_to_npys + sparse_to_contiguous", "python": "plain-Python loop + np.unique"}
    from dlrs_bench.data.prepare import PrepareOptions

    chunk_rows = args.chunk_rows or PrepareOptions.model_fields["chunk_rows"].default
    print(f"\n{base['rows']:,} rows of {file} ({file.stat().st_size / 2**20:.0f} MiB); baseline: "
          f"{label[baselines[0]]}; conventions: torchrec numbering, frequency threshold {THRESHOLD}, "
          f"torchrec dense transform; prepare chunk_rows {chunk_rows:,}")
    print(f"{'run':46} {'wall s':>7} {'rows/s':>9} {'tree peak':>10} {'main maxrss':>12} {'after import':>13} "
          f"{'speed vs base':>14} {'load 1m':>11}")
    print(f"{'':46} {'':>7} {'':>9} {'MiB':>10} {'MiB':>12} {'MiB':>13}")
    for r in results:
        name = (f"dlrs-bench prepare, workers={r['workers']}" if r["kind"] == "prepare" else label[r["kind"]])
        print(f"{name:46} {r['wall_s']:7.1f} {r['rows'] / r['wall_s']:9,.0f} {r['tree_peak_mib']:10.0f} "
              f"{r['main_maxrss_mib']:12.0f} {r['import_maxrss_mib']:13.0f} {base['wall_s'] / r['wall_s']:13.2f}x "
              f"{r['load_before']:5.2f}->{r['load_after']:4.2f}")
    for r in results[2:]:
        if "stages" in r:
            print(f"{r['kind']} stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items()))
    for check in checks:
        print(f"output check, prepare workers={cores} {check}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"file": str(file), "rows": base["rows"], "baselines": baselines,
                                         "cores": cores, "results": results, "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
