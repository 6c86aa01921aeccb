"""The ``dlrs-bench`` command line.

Exit codes: 0 success · 1 a scenario failed or diverged · 2 invalid input (one readable line per problem).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from dlrs_bench.errors import UserInputError
from dlrs_bench.files import cannot_write
from dlrs_bench.lifecycle import Interrupted, interruptible
from dlrs_bench.ui import cells, say

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Declarative benchmarks for recommendation models and embedding compression.")
console = Console()
if not console.is_terminal:  # logs and CI: keep the summary table's columns readable
    console.width = max(console.width, 180)
err_console = Console(stderr=True)

EXIT_FAILED, EXIT_INVALID = 1, 2

# torch.fx warns on import of TorchRec about a renamed API; it is noise for users.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Listable(str, Enum):
    datasets = "datasets"
    models = "models"
    compressors = "compressors"
    suites = "suites"


def _invalid(e: UserInputError) -> typer.Exit:
    for line in e.lines:
        say(err_console, ("error:", "red"), f" {line}")
    return typer.Exit(EXIT_INVALID)


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML file")],
    results_dir: Annotated[str, typer.Option("--results-dir", help="where result files go")] = "results",
    filter: Annotated[str | None, typer.Option("--filter", help="scenarios whose label or id contains TEXT")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="skip (scenario, seed) pairs that already finished")] = False,
    device: Annotated[Device | None, typer.Option("--device", help="run every scenario on this device")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch CPU threads (default: the cores this process may use; 1 per gloo rank)")
    ] = None,
) -> None:
    """Run every scenario of SUITE and print a summary table. Ctrl-C or SIGTERM stops the whole
    suite (exit 130 or 143); the run in flight is not recorded (README, "Ctrl-C, SIGTERM and kill -9").
    A results folder the disk refuses to write stops it with exit 2; earlier results stay in place."""
    try:
        folder = _folder_option(results_dir, "--results-dir")
    except UserInputError as e:
        raise _invalid(e) from None
    with _on_signal(lambda e: _suite_stopped(e, folder)):
        _run(suite, folder, filter, resume, device, threads)


def _run(suite: Path, results_dir: Path, filter: str | None, resume: bool, device: Device | None,
         threads: int | None) -> None:
    import os

    import torch

    from dlrs_bench.config.expand import load_suite
    from dlrs_bench.engine.distributed import DistributedRunError, is_main_process
    from dlrs_bench.engine.runner import plan, run_jobs
    from dlrs_bench.results.store import ResultStore
    from dlrs_bench.ui import LiveDisplay, summary_table

    if not is_main_process():  # under torchrun rank 0 alone reports
        console.quiet = err_console.quiet = True
    cores = len(os.sched_getaffinity(0))
    try:
        _check_threads(threads, cores)
        _check_folder(results_dir, "--results-dir")
        loaded = load_suite(suite)
        jobs = plan(loaded, filter, device.value if device else None, threads)
    except UserInputError as e:
        raise _invalid(e) from None
    if not jobs:
        say(err_console, ("error:", "red"), f" --filter {filter!r} matches no scenario of {suite}")
        raise typer.Exit(EXIT_INVALID)
    torch.set_num_threads(threads or cores)
    load = os.getloadavg()[0]
    if load > cores:
        say(err_console, ("warning:", "yellow"), f" the load average ({load:.1f}) exceeds the {cores} core(s) this run "
            "may use: timings will be slow and noisy (results record env.load_avg)")
    say(console, (loaded.name, "bold"), f": {len(jobs)} run(s) → {results_dir / loaded.name}")
    try:
        with LiveDisplay(console, len(jobs)) as display:
            results = run_jobs(jobs, ResultStore(results_dir), display, resume,
                               lambda text: say(console, ("note:", "yellow"), f" {text}"))
    except DistributedRunError as e:  # under torchrun a failed scenario stops every rank
        say(err_console, ("error:", "red"), f" {e}")
        raise typer.Exit(EXIT_FAILED) from None
    except UserInputError as e:  # the disk refused a result: stop, earlier results stay in place
        raise _invalid(e) from None
    console.print(summary_table(results, f"{loaded.name} ({results_dir / loaded.name})"))
    if any(r.status in ("failed", "diverged") for r in results):
        raise typer.Exit(EXIT_FAILED)


def _suite_stopped(e: Interrupted, results_dir: Path) -> str:
    """What a signal stopped in ``run``, and what was kept (``e``: a ``runner.SuiteInterrupted`` once the
    runs began; not imported here, torch may be half-imported)."""
    suite, job = getattr(e, "suite", None), getattr(e, "job", None)
    if suite is None:
        return "stopped before any scenario ran"
    where = (f"at scenario {job.scenario.label} ({job.scenario.scenario_id}) seed {job.seed}, which is not "
             "recorded" if job is not None else "between runs")
    return (f"stopped suite {suite} {where}; {getattr(e, 'done', 0)} result(s) of this run kept in "
            f"{results_dir / suite}; rerun with --resume to continue")


@contextmanager
def _on_signal(stopped: Callable[[Interrupted], str]) -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM stops the command (:mod:`dlrs_bench.lifecycle`): one
    line, ``interrupted by SIGNAL: <stopped(e)>``, then exit 128 + the signal number (130, 143)."""
    with interruptible():
        try:
            yield
        except Interrupted as e:
            say(err_console, ("interrupted", "yellow"), f" by {e.name}: {stopped(e)}")
            raise typer.Exit(e.exit_code) from None


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="suite YAML files")],
    portable: Annotated[bool, typer.Option(
        "--portable", help="check only what holds on any machine: not the datasets' files, table sizes against "
        "compression ratios, or the cores gloo ranks need (for a suite meant for another machine)")] = False,
) -> None:
    """Check suite files without running them (nor importing torch)."""
    from dlrs_bench.config.expand import load_suite

    problems: list[str] = []
    for path in files:
        try:
            loaded = load_suite(path, machine_checks=not portable)
        except UserInputError as e:
            problems.extend(e.lines)
            continue
        say(console, ("ok", "green"), f" {path}: suite {loaded.name!r}, {len(loaded.scenarios)} scenario(s)")
        for s in loaded.scenarios:
            say(console, f"   {s.scenario_id}  {s.label}  seeds {s.spec.seeds}")
    if problems:
        raise _invalid(UserInputError(problems[0], problems))


@app.command("ls")
def list_(what: Annotated[Listable, typer.Argument(help="what to list")]) -> None:
    """List registered datasets, models, compressors, or the ready-made suites."""
    from dlrs_bench.registry import COMPRESSORS, DATASETS, MODELS

    if what is Listable.suites:
        for path in sorted(_suites_dir().glob("*.yaml")):
            say(console, f"{str(path):40} {_suite_description(path)}")
        return
    registry = {"datasets": DATASETS, "models": MODELS, "compressors": COMPRESSORS}[what.value]
    for entry in registry.entries():
        say(console, f"{entry.name:24} {entry.help}")


@app.command()
def compare(
    results: Annotated[list[Path], typer.Argument(help="result files or folders")],
    baseline: Annotated[Path | None, typer.Option("--baseline", help="folder of baseline results")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="reference table file or folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    rcp: Annotated[bool, typer.Option("--rcp", help="check convergence against MLPerf DLRM-DCNv2's RCPs")] = False,
) -> None:
    """Compare results with a baseline or with published reference tables: a verdict per scenario
    and quality metric (exit 1 on REGRESSED or FAILED). --rcp: epochs to target against MLPerf's
    reference convergence points (exit 1 on FASTER)."""
    import json

    from rich.table import Table

    if rcp:
        _compare_rcp(results, as_json, baseline is not None or reference is not None)
        return

    from dlrs_bench.compare.reference import load_references
    from dlrs_bench.compare.verdicts import compare_with_baseline, compare_with_reference
    from dlrs_bench.results.collect import load_results

    if (baseline is None) == (reference is None):
        raise _invalid(UserInputError("compare needs exactly one of --baseline DIR or --reference FILE|DIR"))
    try:
        current = load_results(results)
        comparisons = (compare_with_baseline(current, load_results([baseline])) if baseline
                       else compare_with_reference(current, load_references(reference)))
    except UserInputError as e:
        raise _invalid(e) from None
    if as_json:
        console.print_json(json.dumps([c.to_json() for c in comparisons]))
    else:
        table = Table(title=Text(f"compare with {'baseline' if baseline else 'reference'} {baseline or reference}"))
        for column in ("scenario", "metric", "verdict", "current", "baseline", "Δ", "p", "iter p50 ×", "reason"):
            table.add_column(column)
        styles = {"PASS": "green", "IMPROVED": "green", "NOISE": "yellow", "NOT_COMPARABLE": "yellow"}
        for c in comparisons:
            table.add_row(
                *cells(c.label, c.metric), Text(c.verdict, style=styles.get(c.verdict, "red")),
                *cells(f"{c.current.mean:.4f} ± {c.current.std:.4f}" if c.current else "–",
                       f"{c.baseline.mean:.4f} ± {c.baseline.std:.4f}" if c.baseline else "–",
                       f"{c.delta:+.4f}" if c.delta is not None else "–",
                       f"{c.p_value:.3f}" if c.p_value is not None else "–",
                       f"{c.time_ratios['iter_p50_ms']:.2f}" if "iter_p50_ms" in c.time_ratios else "–",
                       c.reason),
            )
        console.print(table)
    if any(c.verdict in ("REGRESSED", "FAILED") for c in comparisons):
        raise typer.Exit(EXIT_FAILED)


def _compare_rcp(results: list[Path], as_json: bool, other: bool) -> None:
    """``compare --rcp``: a verdict per scenario against MLPerf's RCPs (dlrs_bench/compare/rcp.py)."""
    import json

    from dlrs_bench.compare.rcp import Rcps, compare_with_rcps, load_rcps, rcp_table
    from dlrs_bench.results.collect import load_results

    try:
        if other:
            raise UserInputError("compare --rcp takes no --baseline or --reference (the RCPs are the reference)")
        rcps = Rcps(load_rcps())
        comparisons = compare_with_rcps(load_results(results), rcps)
    except UserInputError as e:
        raise _invalid(e) from None
    if as_json:
        console.print_json(json.dumps([c.to_json() for c in comparisons]))
    else:
        console.print(rcp_table(comparisons, rcps))
    if any(c.verdict == "FASTER" for c in comparisons):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="result files or folders")],
    out: Annotated[str, typer.Option("--out", help="folder for the PNG plots and report.md")],
) -> None:
    """Plot results (AUC vs ratio, time to target, AUC–memory Pareto front, scaling fits) and write
    a markdown summary."""
    from dlrs_bench.compare.report import write_report
    from dlrs_bench.results.collect import load_results

    try:
        folder = _folder_option(out, "--out")
        _check_folder(folder, "--out")
        path = write_report(load_results(results), folder)
    except UserInputError as e:
        raise _invalid(e) from None
    except OSError as e:  # the disk refused a file (written whole or not at all)
        raise _invalid(cannot_write(Path(out), e)) from None
    say(console, ("wrote", "green"), f" {path} and {len(list(folder.glob('*.png')))} plot(s)")


REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference_results"


@app.command()
def reproduce(
    results: Annotated[list[Path], typer.Argument(help="result files or folders")],
    out: Annotated[str, typer.Option("--out", help="folder for reproduce.md, reproduce.json and plots")] = "reproduce",
    reference: Annotated[Path, typer.Option("--reference", help="reference table file or folder")] = REFERENCE_DIR,
) -> None:
    """A verdict for every published row and claim (reproduced, not reproduced, inconclusive, not testable here)
    with its statistics, written as markdown with plots; orderings by a sign test over seeds (README,
    "Reproducing the papers"). Exit 0 whatever the verdicts; 2 on bad input."""
    from rich.table import Table

    from dlrs_bench.compare.reference import load_references
    from dlrs_bench.compare.reproduce import Outcome, write_reproduce
    from dlrs_bench.results.collect import load_results

    try:
        folder = _folder_option(out, "--out")
        _check_folder(folder, "--out")
        path, findings = write_reproduce(load_results(results), load_references(reference), folder)
    except UserInputError as e:
        raise _invalid(e) from None
    except OSError as e:  # the disk refused a file (written whole or not at all)
        raise _invalid(cannot_write(Path(out), e)) from None
    styles = {Outcome.REPRODUCED: "green", Outcome.NOT_REPRODUCED: "red", Outcome.INCONCLUSIVE: "yellow"}
    table = Table(title=Text(f"reproduce: {path}"))
    for column in ("source", "claim or published number", "data", "verdict", "why"):
        table.add_column(column, overflow="fold")
    for f in findings:
        if f.verdict is not Outcome.NOT_TESTABLE:
            table.add_row(*cells(f.source, f.what, f.dataset or "–"), Text(f.verdict.value, style=styles[f.verdict]),
                          *cells(f.reason))
    console.print(table)
    untestable = sum(f.verdict is Outcome.NOT_TESTABLE for f in findings)
    say(console, ("wrote", "green"), f" {path}: " + ", ".join(
        f"{sum(f.verdict is o for f in findings)} {o.value}" for o in Outcome) +
        (f" ({untestable} not testable here: the data, scale or hardware they need is listed in {path.name})"
         if untestable else ""))


class FitX(str, Enum):
    samples = "samples"
    params = "params"
    flops = "flops"


@app.command()
def fit(
    results: Annotated[list[Path], typer.Argument(help="result files or folders")],
    x: Annotated[FitX, typer.Option("--x", help="samples consumed | total params | training FLOPs")] = FitX.samples,
    y: Annotated[str, typer.Option("--y", help="metric of the best evaluation: ne, logloss, auc (ctr); hr@K, "
                                    "ndcg@K, mrr (retrieval)")] = "ne",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    seed003: Annotated[bool, typer.Option("--compare-seed003", help="check β, R², phase against seed 003")] = False,
) -> None:
    """Fit a scaling law to finished results (seeds 001/003) with bootstrap intervals: L(x) = γ + α·x^(−β) for
    NE and LogLoss, AUC(x) = γ − α·x^(−β) for AUC, γ bounded by what is possible (README, "fit")."""
    import json

    from dlrs_bench.compare.fit import FitError, compare_with_seed003, describe, fit_results, metric_law
    from dlrs_bench.compare.reference import load_reference
    from dlrs_bench.results.collect import load_results

    try:
        metric_law(y)
    except ValueError as e:
        raise _invalid(UserInputError(f"--y: {e}")) from None
    try:
        result, left_out = fit_results(load_results(results), x.value, y)
        checks = compare_with_seed003(result, x.value, load_reference(SEED003_TABLE)) if seed003 else []
    except UserInputError as e:
        raise _invalid(e) from None
    except FitError as e:
        raise _invalid(UserInputError(f"cannot fit: {e}{_left_out(e.left_out)}")) from None
    if as_json:
        console.print_json(json.dumps({"x": x.value, "y": y, **result.to_json(),
                                       "seed003": [c.to_json() for c in checks], "left_out": left_out}))
        return
    if left_out:
        say(err_console, ("note:", "yellow"), _left_out(left_out))
    for line in describe(result, x.value, checks):
        say(console, *line)


SEED003_TABLE = Path(__file__).resolve().parent.parent / "reference_results" / "seed003_table1_scaling_laws.yaml"


def _folder_option(text: str, flag: str) -> Path:
    """The folder a ``flag`` names; a user error for an empty or blank name (which would write into
    the working directory, or into a folder named by spaces)."""
    if not text.strip() or any(not part.strip() for part in Path(text).parts):
        raise UserInputError(f"{flag} {text!r}: a folder name cannot be empty or blank")
    return Path(text)


def _check_threads(threads: int | None, cores: int) -> None:
    """``--threads``: at most the ``cores`` this process may use (more only slow every step down)."""
    if threads is not None and threads > cores:
        raise UserInputError(f"--threads {threads}: this process may use {cores} core(s) "
                             "(os.sched_getaffinity); give at most that many")


def _check_folder(path: Path, flag: str) -> None:
    """A folder to write into: it and every existing parent must be folders, not files."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserInputError(f"{flag} {path}: {folder} is a file, not a folder")
            return


def _left_out(notes: list[str], named: int = 10) -> str:
    """`` (N result(s) left out: a; b; ...)`` for the results a fit could not use; empty when none."""
    more = [f"and {len(notes) - named} more"] if len(notes) > named else []
    return f" ({len(notes)} result(s) left out: {'; '.join(notes[:named] + more)})" if notes else ""


data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets into the binary cache.")
app.add_typer(data_app, name="data")


class PreparedDataset(str, Enum):
    criteo_kaggle = "criteo-kaggle"
    criteo_tb = "criteo-tb"
    avazu = "avazu"
    movielens = "movielens"
    synthetic = "synthetic"
    yambda = "yambda"


class PrepareFormat(str, Enum):
    text = "text"
    mlperf_multihot = "mlperf-multihot"


@data_app.command("prepare")
def data_prepare(
    name: Annotated[PreparedDataset, typer.Argument(help="a raw format, or synthetic (generated)")],
    out: Annotated[Path, typer.Option("--out", help="cache folder to create (must not exist)")],
    raw: Annotated[list[Path] | None, typer.Option(
        "--raw", help="raw file(s), in order (Terabyte: day_0 ... day_23); not for synthetic; with --format "
        "mlperf-multihot the folder of day_{i}_labels.npy, day_{i}_dense.npy, day_{i}_sparse_multi_hot.npz")] = None,
    format_: Annotated[PrepareFormat, typer.Option(
        "--format", help="text: the dataset's raw text files | mlperf-multihot (criteo-tb): MLPerf DLRM-DCNv2's "
        "materialised multi-hot Criteo 1TB, bags copied as MLPerf made them")] = PrepareFormat.text,
    table_sizes: Annotated[str | None, typer.Option(
        help="mlperf-multihot: rows per table, comma-separated (default: the Terabyte sizes with MLPerf's 40M cap, "
        "as the materialise script's --num_embeddings_per_feature)")] = None,
    shuffle_seed: Annotated[int | None, typer.Option(
        help="shuffle the training rows once with this seed (MLPerf protocol; the evaluation rows keep their "
        "order); needs free disk for one more copy")] = None,
    rows: Annotated[int | None, typer.Option(help="synthetic: rows to generate, all splits together")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="synthetic: KEY=VALUE, any option of the synthetic dataset (value in YAML: "
        "cardinalities=criteo-kaggle, multi_hot_sizes=mlperf, num_dense=13, ...)")] = None,
    numbering: Annotated[str, typer.Option(help="dlrm | torchrec | modulo (id = value mod max_rows)")] = "dlrm",
    max_rows: Annotated[int | None, typer.Option(help="cap per table: value mod max_rows (MLPerf: 40000000)")] = None,
    frequency_threshold: Annotated[int, typer.Option(help="values seen fewer times share one 'rare' id")] = 0,
    dense_transform: Annotated[str, typer.Option(help="Criteo: dlrm (log(max(x,0)+1)) | torchrec")] = "dlrm",
    movielens_variant: Annotated[str, typer.Option(help="ml-1m | ml-20m | ml-25m | ml-latest")] = "ml-20m",
    on_error: Annotated[str, typer.Option(help="error: stop at the first bad line | skip: drop and count")] = "error",
    workers: Annotated[int | None, typer.Option(help="parser processes / generator threads (default: all cores)")
                       ] = None,
    events: Annotated[str | None, typer.Option(
        help="yambda: event types kept, comma-separated, of listen, like, dislike, unlike, undislike (default: "
        "listen,like)")] = None,
) -> None:
    """Convert raw dataset files (or generate synthetic rows) into a memory-mappable cache with a JSON manifest."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    stopped = f"stopped preparing {out}; nothing was written there (its partial folder is removed)"
    with _on_signal(lambda _: stopped), \
            Progress(TextColumn("{task.description}"), TextColumn("{task.fields[rows]:,} rows"),
                     TextColumn("{task.fields[rate]:,.0f} rows/s"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"prepare {name.value}", rows=0, rate=0.0)
        started = time.perf_counter()

        def progress(done: int, *_: object) -> None:
            bar.update(task, rows=done, rate=done / max(time.perf_counter() - started, 1e-9))

        try:
            if events is not None and name is not PreparedDataset.yambda:
                raise UserInputError("--events: only for yambda")
            if name is PreparedDataset.yambda:
                flags = {"--format": format_ is not PrepareFormat.text, "--table-sizes": table_sizes,
                         "--shuffle-seed": shuffle_seed, "--rows": rows, "--set": set_, "--max-rows": max_rows,
                         "--numbering": numbering != "dlrm", "--frequency-threshold": frequency_threshold,
                         "--dense-transform": dense_transform != "dlrm", "--on-error": on_error != "error",
                         "--movielens-variant": movielens_variant != "ml-20m", "--workers": workers}
                sequences = _prepare_yambda(raw or [], out, progress, events,
                                            [flag for flag, given in flags.items() if given])
            elif format_ is PrepareFormat.mlperf_multihot:
                text_only = {"--shuffle-seed": shuffle_seed, "--rows": rows, "--set": set_, "--max-rows": max_rows,
                             "--numbering": numbering != "dlrm", "--frequency-threshold": frequency_threshold,
                             "--dense-transform": dense_transform != "dlrm", "--on-error": on_error != "error",
                             "--movielens-variant": movielens_variant != "ml-20m"}
                manifest = _prepare_mlperf_multihot(name.value, raw or [], out, progress, table_sizes, workers,
                                                    [flag for flag, given in text_only.items() if given])
            elif table_sizes is not None:
                raise UserInputError("--table-sizes: only with --format mlperf-multihot")
            elif name is PreparedDataset.synthetic:
                if raw or shuffle_seed is not None:
                    raise UserInputError("--raw" if raw else
                                         "--shuffle-seed: synthetic rows are independent draws, already in random "
                                         "order; there is nothing to shuffle")
                manifest = _prepare_synthetic(rows, set_ or [], out, progress, workers)
            else:
                if rows is not None or set_:
                    raise UserInputError(f"--{'rows' if rows is not None else 'set'}: only for synthetic")
                if not raw:
                    raise UserInputError(f"--raw: {name.value} needs its raw file(s)")
                manifest = _prepare_raw(name.value, raw, out, progress, numbering=numbering, max_rows=max_rows,
                                        frequency_threshold=frequency_threshold, on_error=on_error, workers=workers,
                                        shuffle_seed=shuffle_seed, dense_transform=dense_transform,
                                        movielens_variant=movielens_variant)
        except UserInputError as e:
            raise _invalid(e) from None
        except OSError as e:  # a full or read-only disk: the partial cache folder is already removed
            raise _invalid(UserInputError(f"cannot prepare {out}: {e.filename or out}: {e.strerror or e}")) from None
    if name is PreparedDataset.yambda:
        say(console, ("prepared", "green"), f" {out}: {sequences.users:,} users, {sequences.events:,} events, "
            f"{sequences.items - 1:,} items")
        return
    shuffled = (f"; the first {manifest.shuffle.rows:,} rows in random order ({manifest.shuffle.method}, seed "
                f"{manifest.shuffle.seed})" if manifest.shuffle else "")
    say(console, ("prepared", "green"), f" {out}: {manifest.rows:,} rows, CTR {manifest.ctr:.4f}, "
        f"{len(manifest.features)} sparse features ({sum(manifest.features.values()):,} ids), "
        f"{manifest.skipped['count']} bad line(s) skipped{shuffled}")


def _prepare_raw(name: str, raw: list[Path], out: Path, progress: Any, dense_transform: str,
                 movielens_variant: str, **flags: Any) -> Any:
    """``data prepare`` of raw files; ``flags`` are the PrepareOptions given on the command line."""
    from pydantic import ValidationError

    from dlrs_bench.data.formats import raw_format
    from dlrs_bench.data.prepare import PrepareOptions, prepare

    try:
        options = PrepareOptions.model_validate({k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise _flag_errors(e, "numbering") from None
    fmt = raw_format(name, dense_transform=dense_transform, movielens_variant=movielens_variant)
    return prepare(fmt, raw, out, options, progress)


def _prepare_mlperf_multihot(name: str, raw: list[Path], out: Path, progress: Any, table_sizes: str | None,
                             workers: int | None, text_flags: list[str]) -> Any:
    """``data prepare criteo-tb --format mlperf-multihot --raw DIR``: MLPerf's materialised multi-hot days."""
    from pydantic import ValidationError

    from dlrs_bench.data.mlperf_multihot import MultiHotPrepareOptions, prepare_mlperf_multihot

    if name != "criteo-tb":
        raise UserInputError(f"--format mlperf-multihot: MLPerf's multi-hot dataset is Criteo 1TB (criteo-tb), "
                             f"not {name}")
    if text_flags:
        raise UserInputError(f"{text_flags[0]}: not with --format mlperf-multihot (ids, dense values and row order "
                             "are taken as MLPerf's files hold them)")
    if len(raw) != 1:
        raise UserInputError("--raw: --format mlperf-multihot takes one folder (the one holding MLPerf's day files)")
    values: dict[str, Any] = {"workers": workers} if workers is not None else {}
    if table_sizes is not None:
        try:
            values["table_sizes"] = [int(v) for v in table_sizes.split(",")]
        except ValueError:
            raise UserInputError(f"--table-sizes: expected comma-separated integers, got {table_sizes!r}") from None
    try:
        options = MultiHotPrepareOptions.model_validate(values)
    except ValidationError as e:
        raise _flag_errors(e, "table_sizes") from None
    return prepare_mlperf_multihot(raw[0], out, options, progress)


def _prepare_yambda(raw: list[Path], out: Path, progress: Any, events: str | None, other_flags: list[str]) -> Any:
    """``data prepare yambda --raw DIR``: Yambda's multi_event.parquet into a sequence cache; returns its
    manifest."""
    from dlrs_bench.sequential.cache import SequenceCache
    from dlrs_bench.sequential.yambda import DEFAULT_EVENTS, check_events, prepare_yambda

    if other_flags:
        raise UserInputError(f"{other_flags[0]}: not for yambda (its events are written as Yambda's file holds them)")
    if len(raw) != 1:
        raise UserInputError("--raw: yambda takes one folder (the one holding multi_event.parquet) or that file")
    try:
        kept = check_events(DEFAULT_EVENTS if events is None else tuple(e.strip() for e in events.split(",")))
    except UserInputError as e:
        raise UserInputError(f"--{e}") from None
    return SequenceCache.open(prepare_yambda(raw[0], out, kept, progress)).manifest


def _flag_errors(error: Any, fallback: str) -> UserInputError:
    """The pydantic ``error`` of options built from command-line flags, each problem named by its flag
    (``fallback`` for a whole-model check, which has no field)."""
    problems = [f"--{str((x['loc'] or (fallback,))[0]).replace('_', '-')}: {x['msg'].removeprefix('Value error, ')}"
                for x in error.errors()]
    return UserInputError(problems[0], problems)


def _prepare_synthetic(rows: int | None, settings: list[str], out: Path, progress: Any, workers: int | None) -> Any:
    """``data prepare synthetic``: the dataset's options from ``--rows`` and ``--set KEY=VALUE``."""
    import os

    import yaml
    from pydantic import ValidationError

    from dlrs_bench.data.cache import CacheWriter
    from dlrs_bench.data.options import READ_OPTIONS, SyntheticOptions
    from dlrs_bench.data.synthetic import write_synthetic

    values: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserInputError(f"--set {key}: {text!r} is not a YAML value") from None
    if rows is not None:
        values["rows"] = rows
    forbidden = sorted(set(values) & READ_OPTIONS)
    if forbidden:
        raise UserInputError(f"--set {forbidden[0]}: chosen when the dataset is read (in the suite), not prepared")
    try:
        options = SyntheticOptions.model_validate(values)
    except ValidationError as e:
        problems = [f"--{'set ' if x['loc'] and x['loc'][0] != 'rows' else ''}"
                    f"{'.'.join(map(str, x['loc'])) or 'set'}: {_pydantic_message(x)}" for x in e.errors()]
        raise UserInputError(problems[0], problems) from None
    CacheWriter.check_out(out)
    return write_synthetic(options, out, progress, workers or len(os.sched_getaffinity(0)))


def _pydantic_message(err: Any) -> str:
    from dlrs_bench.config.schema import _message

    return "unknown option" if err["type"] == "extra_forbidden" else _message(err)


def _suites_dir() -> Path:
    local = Path("suites")
    return local if local.is_dir() else Path(__file__).resolve().parent.parent / "suites"


def _suite_description(path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return str(data.get("description", "")) if isinstance(data, dict) else ""
    except (OSError, yaml.YAMLError):
        return "(unreadable)"
