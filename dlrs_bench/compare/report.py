"""``dlrs-bench report``: PNG plots of a set of results and a markdown page embedding them.

Plots (each only when the results hold what it needs), every one titled with its suites and datasets,
every point the mean over seeds with error bars of one standard deviation where a scenario has several:
- ``auc_vs_ratio.png``: best AUC against the compression ratio *of the compressed tables* — the papers'
  axis (seed 000's 4×–1024× sweep): tables a threshold leaves full do not dilute it; full-table runs sit at
  1×. The caption states each scenario's ratio over all tables too;
- ``time_to_target_vs_ratio.png``: time to target against the same ratio, per method;
- ``pareto.png``: best AUC against embedding memory, each scenario labelled, with the Pareto front;
- ``scaling_<x>.png``: best NE against samples / parameters / FLOPs with the fitted law
  (:mod:`dlrs_bench.compare.fit`), drawn only where the suite varies that axis by design: scenarios that
  differ only in the knobs of x (``AXIS_KNOBS``: data size and epochs for samples, the model's size for
  params) form one curve, fitted when it has 3 distinct x. A compression suite, whose parameter count
  moves only because the compressor changes, gets no fit, and the report says why;
- ``throughput_vs_ranks.png``: training samples/s against the number of ranks (GPUs or gloo
  processes), per method, with ideal linear scaling from each method's fewest ranks.

An axis is logarithmic when its values span a factor of 10 or more. Any number of a result may be missing
(null in the file, or NaN in one written before strict JSON): a run without the numbers a plot needs is
left out of it, and the plot's caption names it with what it lacks; the table of runs, sorted by suite,
method and ratio, shows a missing number as ``–``.
"""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from dlrs_bench.compare.fit import fit_power_law, recorded_ceiling, resource  # noqa: E402
from dlrs_bench.files import make_folder, write_atomic  # noqa: E402
from dlrs_bench.results.collect import label, method, number  # noqa: E402
from dlrs_bench.results.schema import ResultFile  # noqa: E402

#: Statuses of runs whose numbers are plotted (a failed or diverged run's are not).
FINISHED = ("reached", "not_reached")
#: How a missing number is shown in the table.
MISSING = "–"
#: Runs named in a caption's "left out" note before "and N more".
NAMED = 6
#: Scenario keys (dotted) whose change moves x of a scaling fit; ``model.*`` is every model key but its name.
AXIS_KNOBS: dict[str, tuple[str, ...]] = {
    "samples": ("dataset.num_samples", "dataset.fraction", "train.max_epochs", "train.max_time_s"),
    "params": ("model.*",),
    "flops": ("dataset.num_samples", "dataset.fraction", "train.max_epochs", "train.max_time_s", "model.*"),
}
#: Scenario keys that never make two scenarios differ in kind (the scenario's name, its seed list).
NOT_SPEC = ("name", "seeds")

Getter = Callable[[ResultFile], Any]
#: A plotted run: its numbers (in the order asked for) and the run.
Point = tuple[list[float], ResultFile]
#: A written plot: its file name, its caption, and a note naming the runs left out of it (or "").
Figure = tuple[str, str, str]


def _best(metric: str) -> Getter:
    return lambda r: getattr(r.best_metrics, metric) if r.best_metrics else None


def _ratio(r: ResultFile) -> Any:
    """Compression ratio over all tables (DESIGN.md's definition)."""
    return r.embedding.compression_ratio if r.embedding else None


def compressed_ratio(r: ResultFile) -> float | None:
    """Compression ratio of the compressed tables only (Σ rows·dim ÷ Σ params over the tables whose
    ``per_table`` entry says ``compressed``): the papers' axis. 1.0 when no table is compressed; None when
    the result has no per-table account."""
    if r.embedding is None or not r.embedding.per_table:
        return None
    full = params = 0.0
    for table in r.embedding.per_table:
        if not table.get("compressed"):
            continue
        rows, dim, used = (number(table.get(k)) for k in ("rows", "dim", "params"))
        if rows is None or dim is None or not used:
            return None
        full, params = full + rows * dim, params + used
    return full / params if params else 1.0


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


@dataclass(frozen=True)
class Mean:
    """One scenario's point: x and y as means over its seeds, y's standard deviation (0 for one seed)."""

    x: float
    y: float
    y_std: float
    seeds: int
    run: ResultFile  # one of its runs (for its label, method, spec)


def seed_means(points: list[Point]) -> list[Mean]:
    """``points`` ((x, y), run) averaged per (suite, scenario): one :class:`Mean` each, sorted by x."""
    grouped: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for point in points:
        grouped[(point[1].suite, point[1].scenario_id)].append(point)
    out = []
    for runs in grouped.values():
        xs, ys = [p[0][0] for p in runs], [p[0][1] for p in runs]
        out.append(Mean(statistics.fmean(xs), statistics.fmean(ys), statistics.stdev(ys) if len(ys) > 1 else 0.0,
                        len(ys), runs[0][1]))
    return sorted(out, key=lambda m: (m.x, m.y))


def _left_out_note(left: list[str]) -> str:
    """`` Left out, missing a number: a seed 0 (best AUC), ...`` (empty when nothing was left out)."""
    if not left:
        return ""
    more = f" and {len(left) - NAMED} more" if len(left) > NAMED else ""
    return f" Left out, missing a number: {'; '.join(left[:NAMED])}{more}."


def title(results: list[ResultFile], what: str) -> str:
    """``<what> — <suites> (<datasets>)`` for a plot of ``results``."""
    suites = sorted({r.suite for r in results})
    datasets = sorted({str((r.scenario.get("dataset") or {}).get("name", "?")) if isinstance(
        r.scenario.get("dataset"), dict) else "?" for r in results})
    return f"{what}\n{', '.join(suites[:3])}{' …' if len(suites) > 3 else ''} ({', '.join(datasets[:3])})"


def _axis(ax, which: str, values: list[float]) -> None:
    """Log scale (ticks 1-2-5 within up to 3 decades, decades beyond; labels as plain numbers, none on minor
    ticks) when ``values`` span a factor of 10 or more, else linear."""
    positive = [v for v in values if v > 0]
    if not positive or len(positive) < len(values) or max(positive) / min(positive) < 10:
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    decades = np.log10(max(positive) / min(positive))
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _errorbar(ax, means: list[Mean], **style: Any) -> None:
    ax.errorbar([m.x for m in means], [m.y for m in means], yerr=[m.y_std for m in means], capsize=3, **style)


def _label_points(ax, points: list[tuple[float, float, str]], fontsize: float = 7.0) -> None:
    """Write each text beside its point, trying positions around it until its box overlaps no text written
    before (boxes estimated from the text length, in display pixels)."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the axes' limits and transforms
    scale = fig.dpi / 72.0
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        px, py = ax.transData.transform((x, y))
        width, height = 0.55 * fontsize * len(text) * scale, 1.3 * fontsize * scale
        chosen = None
        for dx, dy in ((5, 4), (5, -12), (-5, 4), (-5, -12), (5, 14), (5, -22), (-5, 14), (-5, -22), (5, 24)):
            left = px + dx * scale - (width if dx < 0 else 0)
            bottom = py + dy * scale
            box = (left, bottom, left + width, bottom + height)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
                chosen = (dx, dy, box)
                break
        dx, dy, box = chosen or (5, 4, (px, py, px + width, py + height))
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha="right" if dx < 0 else "left", va="bottom")


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    save_figure(fig, out / name, dpi=120)
    return name


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write ``fig`` as a PNG at ``path`` (``dpi``: dots per inch) whole or not at all, and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getvalue())


def _short(r: ResultFile) -> str:
    """A point's label: method and requested ratio (``hashing 64×``, ``qr 4× add``), else the scenario label."""
    compressor = r.scenario.get("compressor")
    if not isinstance(compressor, dict) or "kind" not in compressor:
        return label(r)
    ratio = number(compressor.get("ratio"))
    extra = [str(compressor[k]) for k in ("fusion", "chunk") if compressor.get(k) is not None]
    return " ".join([str(compressor["kind"]), *([f"{ratio:g}×"] if ratio else []), *extra])


def plot_ratio(results: list[ResultFile], out: Path, name: str, value: Getter, what: str, ylabel: str,
               caption: str) -> Figure | None:
    """``value`` (``what``, for the note on runs without it) against the compression ratio of the compressed
    tables, one line per method, mean ± std over seeds; None unless some method was measured at two ratios."""
    points, left = _numbers(results, {"compression ratio": compressed_ratio, what: value},
                            positive=("compression ratio",))
    curves: dict[str, list[Mean]] = defaultdict(list)
    for m in seed_means(points):
        curves[method(m.run)].append(m)
    full = curves.pop("none", [])
    if not any(len({round(m.x, 6) for m in c}) > 1 for c in curves.values()):
        return None  # no method measured at two ratios
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for i, (m, means) in enumerate(sorted(curves.items())):
        _errorbar(ax, means, marker="o", color=f"C{i}", label=m)
    if full:
        ax.axhline(statistics.fmean(f.y for f in full), color="0.4", ls="--", lw=1, label="full tables (1×)")
    xs = [m.x for c in curves.values() for m in c] + [1.0] * bool(full)
    _axis(ax, "x", xs)
    ax.set_xlabel("compression ratio of the compressed tables (×)")
    ax.set_ylabel(ylabel)
    ax.set_title(title(results, ylabel + " against compression ratio"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    alls = "; ".join(f"{_short(m.run)}: {m.x:.3g}× → {number(_ratio(m.run)) or 0:.3g}×"
                     for c in sorted(curves.values(), key=lambda c: method(c[0].run)) for m in c)
    caption += f" Ratio of the compressed tables → ratio over all tables: {alls}."
    if any(m.seeds > 1 for c in curves.values() for m in c):
        caption += " Error bars: ± one standard deviation over seeds."
    return _save(fig, out, name), caption, _left_out_note(left)


def plot_pareto(results: list[ResultFile], out: Path) -> Figure | None:
    kept, left = _numbers(results, {"embedding bytes": _mib, "best AUC": _best("auc")}, positive=("embedding bytes",))
    means = seed_means(kept)
    if len({round(m.x, 9) for m in means}) < 2:
        return None  # memory does not vary: no trade-off to draw
    front, best = [], -np.inf
    for m in sorted(means, key=lambda m: (m.x, -m.y)):  # by memory, the best first at equal memory
        if m.y > best:
            front.append(m)
            best = m.y
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    _errorbar(ax, means, fmt="o", ms=4, alpha=0.8, label="scenarios (mean ± std over seeds)")
    ax.step([m.x for m in front], [m.y for m in front], where="post", color="C3", label="Pareto front")
    _axis(ax, "x", [m.x for m in means])
    ax.set_xlabel("embedding memory (MiB)")
    ax.set_ylabel("best AUC")
    ax.set_title(title(results, "Best AUC against embedding memory"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _label_points(ax, [(m.x, m.y, _short(m.run)) for m in means])
    on_front = ", ".join(f"{_short(m.run)} ({m.x:.3g} MiB, AUC {m.y:.4f})" for m in front)
    caption = f"Best AUC against embedding memory, with the Pareto front: {on_front}."
    return _save(fig, out, "pareto.png"), caption, _left_out_note(left)


def _flat(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_knob(key: str, x: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1]) and key != "model.name")
               for k in AXIS_KNOBS[x])


def scaling_families(results: list[ResultFile], x: str) -> tuple[dict[str, list[ResultFile]], str]:
    """Results grouped into families that differ only in the knobs of ``x`` (``AXIS_KNOBS``), keeping those
    whose knobs take at least 3 values; and, when none does, why (which keys the scenarios differ in)."""
    families: dict[str, list[ResultFile]] = defaultdict(list)
    knobs: dict[str, set[str]] = defaultdict(set)
    varied: set[str] = set()
    specs = {id(r): _flat({k: v for k, v in r.scenario.items() if k not in NOT_SPEC}) for r in results}
    for r in results:
        spec = specs[id(r)]
        rest = {k: v for k, v in spec.items() if not _is_knob(k, x)}
        key = repr(sorted(rest.items(), key=lambda kv: kv[0]))
        families[key].append(r)
        knobs[key].add(repr(sorted((k, v) for k, v in spec.items() if _is_knob(k, x))))
    for r in results:
        for k, v in specs[id(r)].items():
            if any(specs[id(o)].get(k) != v for o in results):
                varied.add(k)
    kept = {key: runs for key, runs in families.items() if len(knobs[key]) >= 3}
    if kept:
        return {_family_name(runs, x): runs for runs in kept.values()}, ""
    moved = _sections(k for k in varied if _is_knob(k, x))
    others = _sections(k for k in varied if not _is_knob(k, x))
    why = (f"the suite does not vary {x} by design: its scenarios differ only in {others or 'nothing'}"
           + (f", and in {moved} at fewer than 3 values per family" if moved else "")
           + f" (the knobs of {x}: {', '.join(AXIS_KNOBS[x])})")
    return {}, why


def _sections(keys: Any) -> str:
    """Dotted keys grouped by section: ``compressor (kind, ratio), model (embedding_dim)``."""
    by: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        section, _, rest = key.partition(".")
        by[section].append(rest)
    return ", ".join(f"{s} ({', '.join(r)})" if any(r) else s for s, r in by.items())


def _family_name(runs: list[ResultFile], x: str) -> str:
    """A family's name: its model and compressor kind (``dlrm, none``)."""
    model = runs[0].scenario.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return f"{name}, {method(runs[0])}" if name else method(runs[0])


def plot_scaling(results: list[ResultFile], out: Path, x: str) -> tuple[Figure | None, str]:
    """Best NE against ``x`` per family that varies ``x`` (mean ± std over seeds), each with its fitted law; the
    figure (None when no family varies x) and, then, why not."""
    families, why = scaling_families(results, x)
    if not families:
        return None, why
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    captions, left_all, all_x = [], [], []
    for i, (name, runs) in enumerate(sorted(families.items())):
        kept, left = _numbers(runs, {x: lambda r: resource(r, x), "best NE": _best("ne")}, positive=(x,))
        left_all += left
        means = seed_means(kept)
        if not means:
            continue
        all_x += [m.x for m in means]
        _errorbar(ax, means, fmt="o", ms=4, color=f"C{i}", label=f"{name} (mean ± std)")
        try:
            fit = fit_power_law([p[0][0] for p in kept], [p[0][1] for p in kept], metric="ne",
                                ceiling=recorded_ceiling(runs, "ne"), bootstrap=50)
        except ValueError as e:
            captions.append(f"{name}: no fit ({e})")
            continue
        grid = np.logspace(np.log10(min(m.x for m in means)), np.log10(max(m.x for m in means)), 100)
        ax.plot(grid, fit.predict(grid), color=f"C{i}", lw=1,
                label=f"{fit.gamma:.3f} + {fit.alpha:.3g}·x^-{fit.beta:.3f} (R² {fit.r2:.3f})")
        notes = "; ".join(f"{k} interval uninformative ({v})" for k, v in fit.uninformative.items())
        captions.append(f"{name}: α = {fit.alpha:.3g}, β = {fit.beta:.3f} [{fit.beta_ci[0]:.3f}, "
                        f"{fit.beta_ci[1]:.3f}], γ = {fit.gamma:.3f} [{fit.gamma_ci[0]:.3f}, "
                        f"{fit.gamma_ci[1]:.3f}] (bounded: {fit.gamma_bounds_why}), R² = {fit.r2:.3f}, {fit.phase}"
                        + (f"; {notes}" if notes else ""))
    _axis(ax, "x", all_x)
    ax.set_xlabel({"samples": "training samples", "params": "parameters", "flops": "training FLOPs"}[x])
    ax.set_ylabel("best NE")
    ax.set_title(title(results, f"NE against {x}"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    caption = f"Best NE against {x}, mean ± std over seeds, fitted NE(x) = γ + α·x^(−β) (95% intervals): " + \
        "; ".join(captions)
    return (_save(fig, out, f"scaling_{x}.png"), caption + ".", _left_out_note(left_all)), ""


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
    ax.set_title(title(results, "Training throughput against ranks"), fontsize=10)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
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
        _text(r.suite), _text(label(r)), str(r.seed), _status(r),
        _cell(best.auc if best else None, ".4f"),
        _cell(best.ne if best else None, ".4f"),
        _cell(compressed_ratio(r), ".3g"),
        _cell(_ratio(r), ".3g"),
        _cell(r.model.total_params if r.model else None, ",.0f"),
        _cell(_time_to_target(r), ".1f"),
    ]
    return f"| {' | '.join(cells)} |"


def row_order(r: ResultFile) -> tuple[Any, ...]:
    """Sort key of the table of runs: suite, method, ratio of the compressed tables, label, seed."""
    ratio = compressed_ratio(r)
    return (r.suite, method(r) != "none", method(r), ratio if ratio is not None else float("inf"), label(r), r.seed)


def write_report(results: list[ResultFile], out: Path) -> Path:
    """Write the plots and ``report.md`` into ``out``, each file whole or not at all; returns the markdown
    path (a user error naming a file the disk refuses)."""
    make_folder(out)
    finished = [r for r in results if r.status in FINISHED]
    counts = ", ".join(f"{sum(r.status == s for r in results)} {s.replace('_', ' ')}"
                       for s in ("reached", "not_reached", "diverged", "failed"))
    suites = ", ".join(sorted({r.suite for r in results}))
    sections = [f"# dlrs-bench report: {suites}\n\n{len(results)} result(s): {counts}. Plots show the reached and "
                "not reached runs, one point per scenario (the mean over its seeds).\n"]
    reached = [r for r in finished if r.status == "reached"]
    scaling = {x: plot_scaling(finished, out, x) for x in ("samples", "params", "flops")}
    figures = [
        plot_ratio(finished, out, "auc_vs_ratio.png", _best("auc"), "best AUC", "best AUC",
                   "Best AUC against the compression ratio of the compressed tables, per method."),
        plot_ratio(reached, out, "time_to_target_vs_ratio.png", _time_to_target, "time to target",
                   "time to target (s)",
                   "Time to target against the compression ratio of the compressed tables (runs that reached it)."),
        plot_pareto(finished, out),
        *(figure for figure, _ in scaling.values()),
        plot_ranks(finished, out),
    ]
    for figure in figures:
        if figure:
            name, caption, note = figure
            sections.append(f"![{caption}]({name})\n\n{caption}{note}\n")
    unfitted = [f"- {x}: {why}." for x, (figure, why) in scaling.items() if figure is None and why]
    if finished and unfitted:
        sections.append("No scaling fit where the suite does not vary the axis:\n\n" + "\n".join(unfitted) + "\n")
    rows = ["| suite | scenario | seed | status | best AUC | best NE | ratio (compressed tables) | ratio (all tables) "
            "| params | time → target s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    rows += [table_row(r) for r in sorted(results, key=row_order)]
    sections.append("\n".join(rows) + "\n")
    return write_atomic(out / "report.md", "\n".join(sections))
