"""``dlrs-bench report``: PNG plots of a set of results and a markdown page embedding them.

Plots (each only when the results hold what it needs):
- ``auc_vs_ratio.png``: best AUC against achieved compression ratio, one line per method;
- ``time_to_target_vs_ratio.png``: time to target against ratio, per method;
- ``pareto.png``: best AUC against embedding memory, with the Pareto front (less memory, higher AUC);
- ``scaling_<x>.png``: best NE against samples / parameters / FLOPs on log axes, with the fitted
  L(x) = α·x^(−β) + γ when a fit is possible;
- ``throughput_vs_ranks.png``: training samples/s against the number of ranks (GPUs or gloo
  processes), per method, with ideal linear scaling from each method's fewest ranks.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlrs_bench.compare.fit import fit_power_law  # noqa: E402
from dlrs_bench.results.schema import ResultFile  # noqa: E402


def _finished(results: list[ResultFile]) -> list[ResultFile]:
    return [r for r in results if r.status in ("reached", "not_reached") and r.best_metrics and r.embedding]


def _by_method(results: list[ResultFile]) -> dict[str, list[tuple[float, ResultFile]]]:
    methods: dict[str, list[tuple[float, ResultFile]]] = defaultdict(list)
    for r in results:
        methods[str(r.scenario["compressor"]["kind"])].append((r.embedding.compression_ratio, r))
    return {m: sorted(points, key=lambda p: p[0]) for m, points in methods.items()}


def _mean_by_ratio(points: list[tuple[float, ResultFile]], value) -> tuple[list[float], list[float]]:
    grouped: dict[float, list[float]] = defaultdict(list)
    for ratio, r in points:
        v = value(r)
        if v is not None:
            grouped[round(ratio, 6)].append(v)
    xs = sorted(grouped)
    return xs, [statistics.fmean(grouped[x]) for x in xs]


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name


def plot_ratio(results: list[ResultFile], out: Path, name: str, value, ylabel: str) -> str | None:
    curves = {m: _mean_by_ratio(points, value) for m, points in sorted(_by_method(results).items())}
    curves = {m: (xs, ys) for m, (xs, ys) in curves.items() if xs}
    if not any(len(xs) > 1 for xs, _ in curves.values()):
        return None  # no method measured at two ratios
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("achieved compression ratio (all tables)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, name)


def plot_pareto(results: list[ResultFile], out: Path) -> str | None:
    points = sorted(((r.embedding.bytes / 2**20, r.best_metrics.auc, r) for r in results), key=lambda p: p[0])
    if len(points) < 2:
        return None
    front, best = [], -np.inf
    for mib, auc, _ in points:
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
    return _save(fig, out, "pareto.png")


def plot_scaling(results: list[ResultFile], out: Path, x: str) -> tuple[str, str] | None:
    def resource(r: ResultFile) -> float:
        samples = r.timing.samples or 0
        return {"samples": samples, "params": r.model.total_params, "flops": r.model.flops_per_sample * samples}[x]

    pts = [(resource(r), r.best_metrics.ne) for r in results if r.timing and r.model]
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
    except ValueError:
        pass
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("best NE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, f"scaling_{x}.png"), caption


def world_size(r: ResultFile) -> int:
    """Ranks that trained ``r`` (1 for a single process)."""
    return r.distributed.world_size if r.distributed else 1


def scaling_efficiency(results: list[ResultFile]) -> dict[str, list[tuple[int, float, float]]]:
    """Per method: ``[(ranks, mean samples/s, efficiency)]`` by rank count, where efficiency is the
    throughput divided by (ranks / fewest ranks) x the throughput at the fewest ranks."""
    grouped: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.timing and r.timing.samples_per_s:
            grouped[str(r.scenario["compressor"]["kind"])][world_size(r)].append(r.timing.samples_per_s)
    out = {}
    for method, by_ranks in grouped.items():
        ranks = sorted(by_ranks)
        base_ranks, base = ranks[0], statistics.fmean(by_ranks[ranks[0]])
        out[method] = [(n, statistics.fmean(by_ranks[n]), statistics.fmean(by_ranks[n]) / (base * n / base_ranks))
                       for n in ranks]
    return out


def plot_ranks(results: list[ResultFile], out: Path) -> tuple[str, str] | None:
    curves = {m: points for m, points in sorted(scaling_efficiency(results).items()) if len(points) > 1}
    if not curves:
        return None  # no method measured at two rank counts
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, points) in enumerate(curves.items()):
        ranks = [p[0] for p in points]
        ax.plot(ranks, [p[1] for p in points], marker="o", color=f"C{i}", label=method)
        ax.plot(ranks, [points[0][1] * n / ranks[0] for n in ranks], ls=":", color=f"C{i}", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("ranks (GPUs or processes)")
    ax.set_ylabel("training samples/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="dotted: linear scaling")
    caption = "Training samples/s against ranks; scaling efficiency at the most ranks: " + ", ".join(
        f"{m} {p[-1][2]:.0%} at {p[-1][0]}" for m, p in curves.items())
    return _save(fig, out, "throughput_vs_ranks.png"), caption


def write_report(results: list[ResultFile], out: Path) -> Path:
    """Write the plots and ``report.md`` into ``out``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    finished = _finished(results)
    sections = [f"# dlrs-bench report\n\n{len(results)} result(s), {len(finished)} finished "
                f"({len(results) - len(finished)} failed or diverged).\n"]
    figures = [
        (plot_ratio(finished, out, "auc_vs_ratio.png", lambda r: r.best_metrics.auc, "best AUC"),
         "Best AUC against compression ratio, per method (mean over seeds)."),
        (plot_ratio(finished, out, "time_to_target_vs_ratio.png",
                    lambda r: r.target.time_to_target_s if r.target else None, "time to target (s)"),
         "Time to target against compression ratio (runs that reached it)."),
        (plot_pareto(finished, out), "Best AUC against embedding memory, with the Pareto front."),
    ]
    for x in ("samples", "params", "flops"):
        scaling = plot_scaling(finished, out, x)
        if scaling:
            figures.append(scaling)
    ranks = plot_ranks(finished, out)
    if ranks:
        figures.append(ranks)
    for name, caption in figures:
        if name:
            sections.append(f"![{caption}]({name})\n\n{caption}\n")
    rows = ["| scenario | seed | status | best AUC | best NE | ratio | params | time → target s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = (r.model_extra or {}).get("label", r.scenario_id)
        b = r.best_metrics
        rows.append(f"| {label} | {r.seed} | {r.status} | {b.auc:.4f} | {b.ne:.4f} | "
                    f"{r.embedding.compression_ratio:.1f} | {r.model.total_params:,} | "
                    f"{r.target.time_to_target_s if r.target and r.target.time_to_target_s else '–'} |"
                    if b and r.embedding and r.model else f"| {label} | {r.seed} | {r.status} | – | – | – | – | – |")
    sections.append("\n".join(rows) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(sections), encoding="utf-8")
    return path
