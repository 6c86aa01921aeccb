"""Time ``dlrs-bench validate`` on every bundled suite against ``python -c "import torch"``.

Each command runs in a fresh process, alternating, ``--repeat`` times; reported are the medians and
their ratio (issue 12 asks for validate < 0.5 x import torch). Suites whose data is not on this
machine are validated with ``--portable``.

Run (from the repository root)::

    .venv/bin/python tools/bench_validate.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seconds(command: list[str]) -> float:
    """Wall-clock seconds of one run of ``command`` (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch_cmd = [sys.executable, "-c", "import torch"]
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {args.repeat} runs each, medians")
    for suite in sorted((ROOT / "suites").glob("*.yaml")):
        validate = [sys.executable, "-m", "dlrs_bench", "validate", str(suite)]
        if subprocess.run(validate, cwd=ROOT, capture_output=True).returncode != 0:
            validate.append("--portable")  # its data is not on this machine
        times: dict[str, list[float]] = {"validate": [], "torch": []}
        for _ in range(args.repeat):
            times["validate"].append(seconds(validate))
            times["torch"].append(seconds(torch_cmd))
        v, t = statistics.median(times["validate"]), statistics.median(times["torch"])
        flag = " --portable" if validate[-1] == "--portable" else ""
        print(f"{suite.name:32} validate{flag:11} {v:5.2f} s   import torch {t:5.2f} s   ratio {v / t:.2f}")


if __name__ == "__main__":
    main()
