"""``dlrs-bench report``: PNG plots of a set of results and a markdown page embedding them.

Plots (each only when the results hold what it needs):
- ``auc_vs_ratio.png``: best AUC against achieved compression ratio, one line per method;
- ``time_to_target_vs_ratio.png``: time to target against ratio, per method;
- ``pareto.png``: best AUC against embedding memory, with the Pareto front (less memory, higher AUC);
- ``scaling_<x>.png``: best NE against samples / parameters / FLOPs on log axes, with the fitted
  L(x) = α·x^(−β) + γ when a fit is possible;
- ``throughput_vs_ranks.png``: training samples/s against the number of ranks (GPUs or gloo
  processes), per method, with ideal linear scaling from each method's fewest ranks.

Any number of a result may be missing (null in the file, or NaN in one written before strict JSON):
a run without the numbers a plot needs is left out of it, and the plot's caption names it with
what it lacks; the table of runs shows a missing number as ``–``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlrs_bench.compare.fit import fit_power_law, resource  # noqa: E402
from dlrs_bench.results.collect import label, method, number  # noqa: E402
from dlrs_bench.results.schema import ResultFile  # noqa: E402

#: Statuses of runs whose numbers are plotted (a failed or diverged run's are not).
FINISHED = ("reached", "not_reached")
#: How a missing number is shown in the table.
MISSING = "–"
#: Runs named in a caption's "left out" note before "and N more".
NAMED = 6

Getter = Callable[[ResultFile], Any]
#: A plotted run: its numbers (in the order asked for) and the run.
Point = tuple[list[float], ResultFile]
#: A written plot: its file name, its caption, and a note naming the runs left out of it (or "").
Figure = tuple[str, str, str]


def _best(metric: str) -> Getter:
    return lambda r: getattr(r.best_metrics, metric) if r.best_metrics else None


def _ratio(r: ResultFile) -> Any:
    return r.embedding.compression_ratio if r.embedding else None


def _mib(r: ResultFile) -> float | None:
    size = number(r.embedding.bytes) if r.embedding else None
    return size / 2**20 if size is not None else None


def _time_to_target(r: ResultFile) -> Any:
    return r.target.time_to_target_s if r.target else None


def _samples_per_s(r: ResultFile) -> Any:
    return r.timing.samples_per_s if r.timing else None


def _numbers(results: list[ResultFile], getters: dict[str, Getter],
             positive: tuple[str, ...] = ()) -> tuple[list[Point], list[str]]:
    """The runs that have every number of ``getters`` (those named in ``positive`` above 0: they go on
    a log axis), with the numbers; and for every other run ``"<label> seed <k> (<what it lacks>)"``."""
    kept: list[Point] = []
    left: list[str] = []
    for r in results:
        values, missing = [], []
        for name, get in getters.items():
            value = number(get(r))
            if value is None or (name in positive and value <= 0):
                missing.append(name if value is None else f"{name} ≤ 0")
            values.append(value)
        if missing:
            left.append(f"{label(r)} seed {r.seed} ({', '.join(missing)})")
        else:
            kept.append((values, r))
    return kept, left


def _left_out_note(left: list[str]) -> str:
    """`` Left out, missing a number: a seed 0 (best AUC), ...`` (empty when nothing was left out)."""
    if not left:
        return ""
    more = f" and {len(left) - NAMED} more" if len(left) > NAMED else ""
    return f" Left out, missing a number: {'; '.join(left[:NAMED])}{more}."


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name


def plot_ratio(results: list[ResultFile], out: Path, name: str, value: Getter, what: str, ylabel: str,
               caption: str) -> Figure | None:
    """``value`` (``what``, for the note on runs without it) against the achieved compression ratio,
    one line per method (mean over seeds); None unless some method was measured at two ratios."""
    points, left = _numbers(results, {"compression ratio": _ratio, what: value}, positive=("compression ratio",))
    grouped: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (ratio, v), r in points:
        grouped[method(r)][round(ratio, 6)].append(v)
    curves = {m: (sorted(by_ratio), [statistics.fmean(by_ratio[x]) for x in sorted(by_ratio)])
              for m, by_ratio in sorted(grouped.items())}
    if not any(len(xs) > 1 for xs, _ in curves.values()):
        return None  # no method measured at two ratios
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("achieved compression ratio (all tables)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, name), caption, _left_out_note(left)


def plot_pareto(results: list[ResultFile], out: Path) -> Figure | None:
    kept, left = _numbers(results, {"embedding bytes": _mib, "best AUC": _best("auc")}, positive=("embedding bytes",))
    points = sorted(((mib, auc) for (mib, auc), _ in kept), key=lambda p: p[0])
    if len(points) < 2:
        return None
    front, best = [], -np.inf
    for mib, auc in points:
        if auc > best:
            front.append((mib, auc))
            best = auc
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.6, label="runs")
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("embedding memory (MiB)")
    ax.set_ylabel("best AUC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    caption = "Best AUC against embedding memory, with the Pareto front."
    return _save(fig, out, "pareto.png"), caption, _left_out_note(left)


def plot_scaling(results: list[ResultFile], out: Path, x: str) -> Figure | None:
    kept, left = _numbers(results, {x: lambda r: resource(r, x), "best NE": _best("ne")}, positive=(x,))
    pts = [(rx, ne) for (rx, ne), _ in kept]
    if len({p[0] for p in pts}) < 3:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, label="runs")
    caption = f"NE against {x}"
    try:
        fit = fit_power_law([p[0] for p in pts], [p[1] for p in pts], bootstrap=50)
        grid = np.logspace(np.log10(min(p[0] for p in pts)), np.log10(max(p[0] for p in pts)), 100)
        ax.plot(grid, fit.predict(grid), color="C3",
                label=f"{fit.alpha:.3g}·x^-{fit.beta:.3f} + {fit.gamma:.3f} (R² {fit.r2:.3f})")
        caption += f": fit α = {fit.alpha:.3g}, β = {fit.beta:.3f}, γ = {fit.gamma:.3f}, R² = {fit.r2:.3f}, {fit.phase}"
    except ValueError as e:
        caption += f" (no fit: {e})"
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("best NE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, f"scaling_{x}.png"), caption + ".", _left_out_note(left)


def world_size(r: ResultFile) -> int:
    """Ranks that trained ``r`` (1 for a single process)."""
    return r.distributed.world_size if r.distributed else 1


def scaling_efficiency(results: list[ResultFile]) -> dict[str, list[tuple[int, float, float]]]:
    """Per method: ``[(ranks, mean samples/s, efficiency)]`` by rank count, where efficiency is the
    throughput divided by (ranks / fewest ranks) x the throughput at the fewest ranks (runs without
    a positive samples/s are left out)."""
    grouped: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (samples_per_s,), r in _numbers(results, {"samples/s": _samples_per_s}, positive=("samples/s",))[0]:
        grouped[method(r)][world_size(r)].append(samples_per_s)
    out = {}
    for m, by_ranks in grouped.items():
        ranks = sorted(by_ranks)
        base_ranks, base = ranks[0], statistics.fmean(by_ranks[ranks[0]])
        out[m] = [(n, statistics.fmean(by_ranks[n]), statistics.fmean(by_ranks[n]) / (base * n / base_ranks))
                  for n in ranks]
    return out


def plot_ranks(results: list[ResultFile], out: Path) -> Figure | None:
    curves = {m: points for m, points in sorted(scaling_efficiency(results).items()) if len(points) > 1}
    if not curves:
        return None  # no method measured at two rank counts
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (m, points) in enumerate(curves.items()):
        ranks = [p[0] for p in points]
        ax.plot(ranks, [p[1] for p in points], marker="o", color=f"C{i}", label=m)
        ax.plot(ranks, [points[0][1] * n / ranks[0] for n in ranks], ls=":", color=f"C{i}", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("ranks (GPUs or processes)")
    ax.set_ylabel("training samples/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="dotted: linear scaling")
    caption = "Training samples/s against ranks; scaling efficiency at the most ranks: " + ", ".join(
        f"{m} {p[-1][2]:.0%} at {p[-1][0]}" for m, p in curves.items())
    left = _numbers(results, {"samples/s": _samples_per_s}, positive=("samples/s",))[1]
    return _save(fig, out, "throughput_vs_ranks.png"), caption + ".", _left_out_note(left)


def _cell(value: Any, spec: str) -> str:
    number_ = number(value)
    return MISSING if number_ is None else format(number_, spec)


def _text(value: str) -> str:
    """``value`` safe in a markdown table cell."""
    return " ".join(value.split()).replace("|", "\\|")


def _status(r: ResultFile) -> str:
    diverged = (r.model_extra or {}).get("diverged")
    step = diverged.get("step") if isinstance(diverged, dict) else None
    return f"diverged at step {step}" if r.status == "diverged" and isinstance(step, int) else r.status


def table_row(r: ResultFile) -> str:
    """One markdown row of the table of runs; a missing number is ``–``."""
    best = r.best_metrics
    cells = [
        _text(label(r)), str(r.seed), _status(r),
        _cell(best.auc if best else None, ".4f"),
        _cell(best.ne if best else None, ".4f"),
        _cell(_ratio(r), ".1f"),
        _cell(r.model.total_params if r.model else None, ",.0f"),
        _cell(_time_to_target(r), ".1f"),
    ]
    return f"| {' | '.join(cells)} |"


def write_report(results: list[ResultFile], out: Path) -> Path:
    """Write the plots and ``report.md`` into ``out``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    finished = [r for r in results if r.status in FINISHED]
    counts = ", ".join(f"{sum(r.status == s for r in results)} {s.replace('_', ' ')}"
                       for s in ("reached", "not_reached", "diverged", "failed"))
    sections = [f"# dlrs-bench report\n\n{len(results)} result(s): {counts}. Plots show the reached and "
                "not reached runs.\n"]
    reached = [r for r in finished if r.status == "reached"]
    figures = [
        plot_ratio(finished, out, "auc_vs_ratio.png", _best("auc"), "best AUC", "best AUC",
                   "Best AUC against compression ratio, per method (mean over seeds)."),
        plot_ratio(reached, out, "time_to_target_vs_ratio.png", _time_to_target, "time to target",
                   "time to target (s)",
                   "Time to target against compression ratio (runs that reached it)."),
        plot_pareto(finished, out),
        *(plot_scaling(finished, out, x) for x in ("samples", "params", "flops")),
        plot_ranks(finished, out),
    ]
    for figure in figures:
        if figure:
            name, caption, note = figure
            sections.append(f"![{caption}]({name})\n\n{caption}{note}\n")
    rows = ["| scenario | seed | status | best AUC | best NE | ratio | params | time → target s |",
            "|---|---|---|---|---|---|---|---|"]
    rows += [table_row(r) for r in results]
    sections.append("\n".join(rows) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(sections), encoding="utf-8")
    return path
