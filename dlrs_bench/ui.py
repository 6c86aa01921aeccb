"""Terminal output: a live progress display while a suite runs, the summary table after, and the
one way text reaches the terminal: :func:`say` and :func:`cells` build rich ``Text`` objects, so a
``[`` in a path, a scenario name or an error message is printed as it is, never read as rich markup.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from dlrs_bench.config.expand import ResolvedScenario
    from dlrs_bench.results.schema import ResultFile

STATUS_STYLE = {"reached": "green", "not_reached": "yellow", "diverged": "magenta", "failed": "red"}


def say(console: Console, *parts: str | tuple[str, str]) -> None:
    """Print one line of ``parts``: plain strings verbatim, ``(text, style)`` pairs styled; nothing
    in them is read as markup."""
    console.print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def cells(*values: str) -> list[Text]:
    """Table cells shown verbatim (rich would read a plain string as markup)."""
    return [Text(v) for v in values]


class LiveDisplay:
    """A rich progress display: one bar for the suite, one for the run in progress."""

    def __init__(self, console: Console, total_runs: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=True,
        )
        self.suite_task = self.progress.add_task("suite", total=total_runs, info="")
        self.run_task = None

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(self, scenario: ResolvedScenario, seed: int):
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
        self.run_task = self.progress.add_task(escape(f"{scenario.label} seed {seed}"), total=None, info="")

        metric = scenario.spec.target.metric

        def update(step: int, max_steps: int, last: dict[str, float] | None) -> None:
            info = f"{metric} {last[metric]:.4f}" if last else ""
            self.progress.update(self.run_task, completed=step, total=max_steps, info=info)

        return update

    def run_finished(self, scenario: ResolvedScenario, seed: int, result: ResultFile, skipped: bool) -> None:
        self.progress.advance(self.suite_task)
        style = STATUS_STYLE[result.status]
        note = " (kept from an earlier run: --resume)" if skipped else ""
        detail = f": {result.error.type}: {result.error.message}" if result.error else ""
        say(self.console, (f"{result.status:>11}", style), f" {scenario.label} seed {seed}{note}{detail}")


def summary_table(results: list[ResultFile], title: str) -> Table:
    """One row per result: quality (the target's metric: last and best evaluation; NE where the task reports
    it), time to target, speed, memory, compression."""
    table = Table(title=Text(title))
    for column in ("scenario", "id", "seed", "status", "metric", "last", "best", "NE", "time→target s",
                   "epochs→target",
                   "iter p50 ms", "samples/s", "peak mem MiB", "ratio"):
        table.add_column(column, justify="left" if column in ("scenario", "id", "status") else "right")
    for r in results:
        extra: dict[str, Any] = r.model_extra or {}
        memory = r.memory
        peak = (memory.gpu_peak_mib if memory and memory.gpu_peak_mib is not None
                else memory.host_peak_rss_mib if memory else None)
        table.add_row(
            *cells(str(extra.get("label", r.scenario_id)), r.scenario_id, str(r.seed)),
            Text(r.status, style=STATUS_STYLE[r.status]),
            r.target.metric if r.target else "–",
            _fmt(metric_value(r.metrics, r.target.metric) if r.target else None, ".4f"),
            _fmt(metric_value(r.best_metrics, r.target.metric) if r.target else None, ".4f"),
            _fmt(metric_value(r.metrics, "ne"), ".4f"),
            _fmt(r.target.time_to_target_s if r.target else None, ".1f"),
            _fmt(r.target.epochs_to_target if r.target else None, ".2f"),
            _fmt(r.timing.iter_ms.p50 if r.timing else None, ".2f"),
            _fmt(r.timing.samples_per_s if r.timing else None, ",.0f"),
            _fmt(peak, ",.0f"),
            _fmt(r.embedding.compression_ratio if r.embedding else None, ".2f"),
        )
    return table


def metric_value(metrics: Any, name: str) -> float | None:
    """``name`` (``auc``, ``ndcg@10``, ...) of a result's metrics section, None where absent."""
    return None if metrics is None else getattr(metrics, name, None) if name.isidentifier() else (
        (metrics.model_extra or {}).get(name))


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or "–" for a missing one (null, or NaN in a file written before strict JSON)."""
    return "–" if value is None or not math.isfinite(value) else format(value, spec)
