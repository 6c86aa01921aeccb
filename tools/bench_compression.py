"""Microbenchmark of one embedding lookup per compressor, in the shape of seed 002, Table 2.

What it measures
----------------
One table of ``n`` rows and dimension ``d`` (default 128), one id per sample, a batch of
``B`` samples (default 10240) drawn uniformly from ``[0, n)``. For every table size, method and
ratio it builds the module with ``dlrs_bench.compression.base.build_embeddings`` and times

* ``fwd``: ``out = module(kjt)`` (autograd enabled, as in training), and
* ``fwd+bwd``: ``out = module(kjt); out.values().sum().backward()``; gradients are set to
  ``None`` before each iteration (outside the timed region), so a dense gradient is allocated
  and filled inside it, as after ``optimizer.zero_grad(set_to_none=True)``.

Warm-up iterations are excluded; the median (p50) and p90 of ``--iters`` timed iterations
are reported in ms (a phase that has spent ``--budget-s`` wall seconds stops early, after at
least one warm-up and two timed calls; the ``iters`` column gives the counts actually timed),
and each configuration's p50 is divided by the p50 of the full table (``none``) of the same
``n`` measured in the same run (``/none``). On CUDA every iteration is bracketed
by a ``torch.cuda.Event`` pair (read after one synchronize); on CPU by ``time.perf_counter``.
Eight distinct batches are generated up front and cycled; before the first configuration a few
untimed calls on a small full table warm the process up.

Methods: ``none`` is TorchRec's *unsharded* ``EmbeddingBagCollection``, i.e. ``nn.EmbeddingBag``
kernels with a dense gradient (what single-process dlrs-bench runs train with; the ``/none``
baseline). ``tbe`` is fbgemm's fused table-batched embedding (``SplitTableBatchedEmbeddingBagsCodegen``,
what sharded tables run as) with SGD fused into the backward: its ``fwd+bwd`` includes the update of
the touched rows and allocates no gradient (on CUDA it needs the CUDA ``fbgemm-gpu`` wheel; with
``fbgemm-gpu-cpu`` it is reported as unavailable). ``robe`` (ROBE-Z) runs at every
``--ratios`` x ``--chunks`` x {dense, sparse} gradient; hashing / qr / memcom / bch / tt / md
run at ``--other-ratios`` (default 10). A configuration whose options or build raise
``ValueError`` is reported as "unreachable" (with the reason); one that runs out of memory as
"out of memory" (forward and backward separately, e.g. the dense gradient of a full table that
only fits once; on CUDA a configuration whose parameters cannot fit in the free memory is
skipped before it is built).

Run (from the repository root)
------------------------------
CPU (defaults n = 1e5, 1e6, 2 warm-up + 10 timed iterations, 1.5 s budget per phase; a few
minutes on 2 cores, most of it in ROBE's dense backward and TT; add ``--methods`` without
``tt`` to save a minute)::

    .venv/bin/python tools/bench_compression.py --device cpu --json results/bench_cpu.json

On a CPU shared with other work, add ``--threads 1``: with 2 OpenMP threads an intra-op
barrier waits for a descheduled thread, which shows up as ~150 ms steps in the timings.

GPU (defaults n = 4e6, 3.2e7, 1.28e8, 10 warm-up + 50 timed iterations, 20 s budget; about
two minutes on one H100; the full table of 1.28e8 rows fits for the forward only, its dense
gradient does not)::

    python tools/bench_compression.py --device cuda --json results/bench_gpu.json

Narrower runs: ``--methods none robe --rows 1000000 --ratios 10 1000 --chunks 1 32``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.registry import COMPRESSORS

ALL_METHODS = ["none", "tbe", "hashing", "qr", "memcom", "bch", "tt", "md", "robe"]
CPU_ROWS = [100_000, 1_000_000]
GPU_ROWS = [4_000_000, 32_000_000, 128_000_000]
NUM_BATCHES = 8
FEATURE = "f0"


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration."""

    rows: int
    method: str
    ratio: float | None = None
    chunk: int | None = None
    gradient: str | None = None

    def options(self) -> Any:
        extra: dict[str, Any] = {}
        if self.ratio is not None:
            extra["ratio"] = self.ratio
        if self.chunk is not None:
            extra.update(chunk=self.chunk, gradient=self.gradient)
        return COMPRESSORS.get(self.method).Options(kind=self.method, **extra)

    def label(self) -> str:
        if self.method != "robe":
            return self.method
        return f"robe Z={self.chunk} {self.gradient}"


@dataclass
class Phase:
    """Timing of one phase (``fwd`` or ``fwd+bwd``): ms statistics, or why there is none."""

    p50_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    iters: int = 0
    vs_none: float | None = None
    error: str | None = None


@dataclass
class Result:
    config: Config
    status: str = "ok"  # ok | unreachable | out of memory
    reason: str | None = None
    achieved_ratio: float | None = None
    params: int | None = None
    param_mb: float | None = None
    fwd: Phase = field(default_factory=Phase)
    fwd_bwd: Phase = field(default_factory=Phase)


# ----------------------------------------------------------------------------- configurations


def configurations(args: argparse.Namespace) -> Iterator[Config]:
    """Every configuration, ``none`` first for each table size (it is the baseline)."""
    for rows in args.rows:
        for method in args.methods:
            if method in ("none", "tbe"):
                yield Config(rows, method)
            elif method == "robe":
                for ratio in args.ratios:
                    for chunk in args.chunks:
                        for gradient in ("dense", "sparse"):
                            yield Config(rows, "robe", ratio, chunk, gradient)
            else:
                for ratio in args.other_ratios:
                    yield Config(rows, method, ratio)


class FusedTable(nn.Module):
    """One table in fbgemm's fused TBE kernel, SGD applied inside the backward; KJT -> KeyedTensor."""

    def __init__(self, rows: int, dim: int, device: torch.device) -> None:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import ComputeDevice, EmbeddingLocation
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen

        super().__init__()
        cuda = device.type == "cuda"
        location, compute = (EmbeddingLocation.DEVICE, ComputeDevice.CUDA) if cuda else (
            EmbeddingLocation.HOST, ComputeDevice.CPU)
        self.dim = dim
        self.tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(rows, dim, location, compute)], optimizer=EmbOptimType.EXACT_SGD,
            learning_rate=0.01, device=device)

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        out = self.tbe(indices=kjt.values(), offsets=kjt.offsets())
        return KeyedTensor(keys=kjt.keys(), length_per_key=[self.dim], values=out)


def build(config: Config, dim: int, device: torch.device) -> nn.Module:
    """The module of ``config``; ``ValueError`` when the method cannot reach the configuration."""
    if config.method == "tbe":
        return FusedTable(config.rows, dim, device)
    options = config.options()
    options.check_dim(dim)
    return build_embeddings([SparseFeature(FEATURE, config.rows)], dim, options, device)


def param_bytes(config: Config, dim: int) -> int:
    """Rough fp32 size of the parameters (full size / requested ratio), for the CUDA pre-check."""
    return math.ceil(config.rows * dim * 4 / (config.ratio or 1.0))


def batches(rows: int, batch: int, device: torch.device) -> list[KeyedJaggedTensor]:
    """``NUM_BATCHES`` KJTs of ``batch`` samples with one uniform id in ``[0, rows)`` each."""
    lengths = torch.ones(batch, dtype=torch.int32, device=device)
    return [
        KeyedJaggedTensor(keys=[FEATURE], values=torch.randint(0, rows, (batch,), device=device), lengths=lengths,
                          length_per_key=[batch])  # as dlrs-bench's batches carry it: no device sync
        for _ in range(NUM_BATCHES)
    ]


# ----------------------------------------------------------------------------- timing


def forward(module: nn.Module, kjt: KeyedJaggedTensor) -> None:
    module(kjt)


def forward_backward(module: nn.Module, kjt: KeyedJaggedTensor) -> None:
    loss = module(kjt).values().sum()
    loss.backward()


def clear_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def time_ms(step: Callable[[KeyedJaggedTensor], None], inputs: list[KeyedJaggedTensor], module: nn.Module,
            args: argparse.Namespace, device: torch.device) -> list[float]:
    """Duration (ms) of each timed call of ``step``, after the untimed warm-up calls.

    ``args.iters`` calls are timed after ``args.warmup``, unless the phase has spent
    ``args.budget_s`` seconds of wall time: then warm-up stops after one call and timing after
    two (a slow configuration reports fewer iterations instead of stalling the run).
    """
    cuda = device.type == "cuda"
    events, host = [], []
    began, i, timed = time.perf_counter(), 0, 0
    while timed < args.iters:
        over = time.perf_counter() - began > args.budget_s
        if over and timed >= 2:
            break
        warm = i < args.warmup and not (over and i >= 1)
        clear_grads(module)
        kjt = inputs[i % len(inputs)]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(kjt)
            end.record()
            if not warm:
                events.append((start, end))
        else:
            t0 = time.perf_counter()
            step(kjt)
            if not warm:
                host.append((time.perf_counter() - t0) * 1e3)
        i, timed = i + 1, timed + (not warm)
    if cuda:
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]
    return host


def summarize(ms: list[float]) -> Phase:
    p50, p90 = np.percentile(ms, [50, 90])
    return Phase(p50_ms=float(p50), p90_ms=float(p90), mean_ms=float(np.mean(ms)), iters=len(ms))


def measure_phase(step: Callable[[nn.Module, KeyedJaggedTensor], None], module: nn.Module,
                  inputs: list[KeyedJaggedTensor], args: argparse.Namespace, device: torch.device) -> Phase:
    try:
        return summarize(time_ms(lambda kjt: step(module, kjt), inputs, module, args, device))
    except torch.OutOfMemoryError as e:
        return Phase(error=f"out of memory: {str(e).splitlines()[0][:120]}")
    finally:
        clear_grads(module)
        release(device)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_bytes(device: torch.device) -> int | None:
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def run_config(config: Config, inputs: list[KeyedJaggedTensor], args: argparse.Namespace,
               device: torch.device) -> Result:
    """Build, account and time one configuration; failures become a status, not an exception."""
    result = Result(config)
    free = free_bytes(device)
    if free is not None and param_bytes(config, args.dim) > 0.9 * free:
        result.status, result.reason = "out of memory", "parameters do not fit in free GPU memory; not built"
        return result
    try:
        module = build(config, args.dim, device)
    except ValueError as e:
        result.status, result.reason = "unreachable", str(e)
        return result
    except (RuntimeError, NotImplementedError) as e:  # e.g. TBE on CUDA with fbgemm-gpu-cpu
        release(device)
        result.status, result.reason = "unavailable", str(e).splitlines()[0][:200]
        return result
    except torch.OutOfMemoryError:
        release(device)
        result.status, result.reason = "out of memory", "building the module"
        return result
    if isinstance(module, FusedTable):  # its weights are not autograd parameters: a full table
        result.achieved_ratio, result.params = 1.0, config.rows * args.dim
        result.param_mb = result.params * 4 / 2**20
    else:
        acc = account(module)
        result.achieved_ratio, result.params, result.param_mb = acc.compression_ratio, acc.params, acc.bytes / 2**20
    result.fwd = measure_phase(forward, module, inputs, args, device)
    result.fwd_bwd = measure_phase(forward_backward, module, inputs, args, device)
    del module
    release(device)
    return result


def warm_process(args: argparse.Namespace, device: torch.device, calls: int = 10) -> None:
    """Untimed forward + backward calls of a small full table, so one-off costs of the first
    calls in the process (lazy initialisation, allocator growth) do not land on the first
    configuration measured."""
    module = build(Config(1000, "none"), args.dim, device)
    for kjt in batches(1000, args.batch, device)[:2] * (calls // 2):
        forward_backward(module, kjt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    del module
    release(device)


def add_baseline_ratios(results: list[Result]) -> None:
    """Divide each time by the ``none`` time of the same table size (same run)."""
    base = {r.config.rows: r for r in results if r.config.method == "none"}
    for r in results:
        ref = base.get(r.config.rows)
        if ref is None:
            continue
        for phase, ref_phase in ((r.fwd, ref.fwd), (r.fwd_bwd, ref.fwd_bwd)):
            if phase.p50_ms is not None and ref_phase.p50_ms:
                phase.vs_none = phase.p50_ms / ref_phase.p50_ms


# ----------------------------------------------------------------------------- output


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def phase_cells(p: Phase) -> list[str]:
    if p.error:
        return ["OOM", "", ""]
    return [fmt(p.p50_ms), fmt(p.p90_ms), fmt(p.vs_none, ".2f") + ("×" if p.vs_none is not None else "")]


def rows_label(rows: int) -> str:
    """``1e5``, ``3.2e7``, ... for round table sizes."""
    mantissa, exponent = f"{rows:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


COLUMNS = ["n", "method", "Z", "grad", "ratio", "achieved", "params MiB",
           "fwd p50", "fwd p90", "fwd /none", "f+b p50", "f+b p90", "f+b /none", "iters"]


def render(results: list[Result], title: str) -> Table:
    table = Table(title=title)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("method", "grad") else "right")
    previous = None
    for r in results:
        c = r.config
        if previous is not None and c.rows != previous:
            table.add_section()
        previous = c.rows
        ratio = fmt(c.ratio, "g") if c.ratio else "1"
        head = [rows_label(c.rows), c.method, fmt(c.chunk, "d"), c.gradient or "dense", ratio]
        if r.status != "ok":
            table.add_row(*head, f"[yellow]{r.status}[/]", *[""] * (len(COLUMNS) - len(head) - 1))
            continue
        table.add_row(*head, fmt(r.achieved_ratio, ".3g"), fmt(r.param_mb, ".1f"),
                      *phase_cells(r.fwd), *phase_cells(r.fwd_bwd), f"{r.fwd.iters}/{r.fwd_bwd.iters}")
    return table


def print_skipped(console: Console, results: list[Result]) -> None:
    for r in results:
        if r.status != "ok":
            console.print(f"[yellow]{r.status}[/]: n={r.config.rows:,} {r.config.label()} ratio {r.config.ratio:g} "
                          f"— {r.reason}")
        for name, p in (("fwd", r.fwd), ("fwd+bwd", r.fwd_bwd)):
            if p.error:
                console.print(f"[yellow]{name} {p.error}[/] (n={r.config.rows:,} {r.config.label()})")


def environment(device: torch.device) -> dict[str, Any]:
    try:
        from dlrs_bench.measure.env import capture

        return capture()
    except Exception as e:  # metadata only: never fail the benchmark over it
        return {"torch": torch.__version__, "device": str(device), "env_error": repr(e)}


def write_json(path: Path, results: list[Result], args: argparse.Namespace, env: dict[str, Any]) -> None:
    payload = {
        "benchmark": "one embedding lookup (seed 002, Table 2 shape)",
        "baseline": "none = TorchRec unsharded EmbeddingBagCollection (nn.EmbeddingBag, dense gradient; not fused TBE)",
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "threads": torch.get_num_threads(),
        "env": env,
        "results": [asdict(r) for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=10240)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rows", type=lambda s: int(float(s)), nargs="+", default=None,
                        help=f"table sizes (default CPU {CPU_ROWS}, CUDA {GPU_ROWS}); 1e6 style accepted")
    parser.add_argument("--ratios", type=float, nargs="+", default=[10, 100, 1000, 10000], help="robe ratios")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 16, 32], help="robe chunk sizes Z")
    parser.add_argument("--other-ratios", type=float, nargs="+", default=[10],
                        help="ratios of hashing, qr, memcom, bch, tt, md")
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default CPU 10, CUDA 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default CPU 2, CUDA 10)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="wall seconds per phase after which warm-up stops and timing ends at >= 2 "
                             "iterations (default CPU 1.5, CUDA 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.rows = args.rows or (GPU_ROWS if cuda else CPU_ROWS)
    args.iters = args.iters or (50 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.budget_s = args.budget_s or (20.0 if cuda else 1.5)
    if "none" in args.methods:  # the baseline first
        args.methods = ["none"] + [m for m in args.methods if m != "none"]
    if args.iters < 2:
        parser.error("--iters must be at least 2")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device)  # captured before the run: ``started_at`` is the start
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 150))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    console.print(f"[bold]one lookup[/]: batch {args.batch}, d {args.dim}, one table, one id per sample; "
                  f"{args.warmup} warm-up + {args.iters} timed iterations on {name}; torch {torch.__version__}")
    warm_process(args, device)
    results: list[Result] = []
    inputs: dict[int, list[KeyedJaggedTensor]] = {}
    for config in configurations(args):
        if config.rows not in inputs:
            inputs = {config.rows: batches(config.rows, args.batch, device)}
        t0 = time.perf_counter()
        results.append(run_config(config, inputs[config.rows], args, device))
        r = results[-1]
        console.log(f"n={rows_label(config.rows)} {config.label()} ratio {fmt(config.ratio, 'g')}: {r.status}; "
                    f"fwd p50 {fmt(r.fwd.p50_ms)} ms, fwd+bwd p50 {fmt(r.fwd_bwd.p50_ms)} ms "
                    f"({time.perf_counter() - t0:.1f} s)", highlight=False)
    add_baseline_ratios(results)
    title = (f"one embedding lookup, ms (p50 / p90 of {args.iters}); /none = p50 over the full table of the same n "
             f"(TorchRec unsharded EmbeddingBagCollection, nn.EmbeddingBag kernels, not fused TBE)")
    console.print(render(results, title))
    print_skipped(console, results)
    if args.json:
        write_json(args.json, results, args, env)
        console.print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
