"""Scaling-law fits that know which way a metric goes (seeds 001/003).

Falling metrics (NE, LogLoss: lower is better) are fitted with the power law plus constant of seed 003,

    L(x) = γ + α·x^(−β)        α ≥ 0, 0 ≤ β ≤ 5,  0 ≤ γ ≤ min observed L,

and rising metrics (AUC: higher is better) with the same law mirrored, a rising curve that saturates,

    AUC(x) = γ − α·x^(−β)      α ≥ 0, 0 ≤ β ≤ 5,  max observed AUC ≤ γ ≤ 1,

which is the falling law fitted to the AUC's distance from 1 (1 − AUC = (1 − γ) + α·x^(−β)): β is the
same number either way and γ is the metric's value at infinite x (the loss floor; the AUC it saturates
at). Where results record the best reachable value of their evaluation split (``dataset.ceiling``: the
Bayes-optimal teacher of synthetic data), γ is bounded by it too: a loss floor γ ≥ the ceiling's NE /
LogLoss, an AUC asymptote γ ≤ the ceiling's AUC; the fit states the bound it used. If the runs' best
value already passes the ceiling (sampling noise on a finite evaluation split), γ is held at that value.

The fit is a bounded robust least-squares (soft-L1 loss, so one bad point does not drag the curve) on
x normalised by its smallest value, started from several exponents; α is reported in the original units
of x. 95% intervals are percentiles of a bootstrap over the points. An interval is *uninformative* when
the data cannot pin the parameter down (:func:`interval_notes`): α's or β's reaches 0 (no decay: a
flat line fits as well) or spans more than a factor of 10, β's reaches the fit's bound 5, γ's is wider
than the spread of the observed metric. The phase says whether more x still pays: ``high-return`` when
doubling x beyond the largest measured value is predicted to improve the metric by at least
``HIGH_RETURN`` (relative), else ``saturating``; the bootstrap interval of that gain says whether the
phase is settled (:func:`phase_range` and the verdicts of :mod:`dlrs_bench.compare.verdicts`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import least_squares

from dlrs_bench.compare.verdicts import IntervalCheck, Judgement, Verdict, interval_verdict, published_range
from dlrs_bench.results.collect import number, spec_section

if TYPE_CHECKING:
    from dlrs_bench.results.schema import ResultFile

#: Relative improvement of the metric from doubling x at the largest x that counts as "high-return".
HIGH_RETURN = 0.005
#: Upper bound of the exponent β in the fit (a bootstrap interval reaching it is uninformative).
BETA_MAX = 5.0
#: A β interval whose low end is below this reaches 0 (over 6 decades of x, x^-0.001 moves by 1.4%); an α
#: interval reaches 0 when its low end is below 1e-12 of its high end (α's scale depends on β and x's units).
ZERO = 1e-3
#: An α or β interval with high / low above this spans too much to say anything (uninformative).
MAX_SPAN = 10.0


class Direction(str, Enum):
    """Which way a metric improves with more resource x."""

    FALLS = "falls"  # a loss: lower is better
    RISES = "rises"  # a score: higher is better


@dataclass(frozen=True)
class MetricLaw:
    """How a metric is fitted: its direction and the range its asymptote γ can lie in (units of the metric)."""

    name: str
    direction: Direction
    lowest: float  # the smallest value the metric can take
    highest: float  # the largest value the metric can take

    @property
    def sign(self) -> float:
        """+1 for a falling metric, −1 for a rising one: metric(x) = γ + sign·α·x^(−β)."""
        return 1.0 if self.direction is Direction.FALLS else -1.0

    def formula(self, x: str = "x") -> str:
        return f"{self.name}({x}) = γ {'+' if self.sign > 0 else '−'} α·{x}^(−β)"


#: Every metric ``fit`` knows; NE and LogLoss have no finite upper value.
METRIC_LAWS: dict[str, MetricLaw] = {
    "ne": MetricLaw("ne", Direction.FALLS, 0.0, math.inf),
    "logloss": MetricLaw("logloss", Direction.FALLS, 0.0, math.inf),
    "auc": MetricLaw("auc", Direction.RISES, 0.0, 1.0),
}


def metric_law(metric: str) -> MetricLaw:
    """The law of ``metric``: NE, LogLoss, AUC, or a retrieval metric (``hr@K``, ``ndcg@K``, ``mrr``: rising,
    within [0, 1], as AUC); ValueError naming the known ones otherwise."""
    if metric in METRIC_LAWS:
        return METRIC_LAWS[metric]
    if re.fullmatch(r"(hr|ndcg)@[1-9][0-9]*|mrr", metric):
        return MetricLaw(metric, Direction.RISES, 0.0, 1.0)
    raise ValueError(f"no scaling law for metric {metric!r}; known: {', '.join(METRIC_LAWS)}, hr@K, ndcg@K, mrr")


@dataclass(frozen=True)
class Ceiling:
    """The best value of a metric that the data allow (``dataset.ceiling.<split>.<metric>`` of results)."""

    value: float
    source: str  # where it comes from, e.g. "dataset.ceiling.val.ne of 5 results (teacher, 15,000 rows)"


@dataclass(frozen=True)
class PowerLawFit:
    """metric(x) = γ + sign·α·x^(−β) (sign +1 for a falling metric, −1 for a rising one), its 95% bootstrap
    intervals, which of them are uninformative and why, the bounds γ was held to, and the phase."""

    metric: str
    direction: str  # Direction value
    formula: str
    alpha: float
    beta: float
    gamma: float
    r2: float
    points: int
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    gamma_ci: tuple[float, float]
    gamma_bounds: tuple[float, float]  # [low, high] γ was held to (units of the metric)
    gamma_bounds_why: str
    phase: str  # "high-return" | "saturating" (point estimate)
    gain_from_doubling: float  # relative improvement of the metric from x_max to 2·x_max
    gain_ci: tuple[float, float]
    bootstrap: int  # bootstrap fits that succeeded
    uninformative: dict[str, str] = field(default_factory=dict)  # parameter -> why its interval says little

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == Direction.FALLS.value else -1.0

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted metric at ``x`` (same units as the points)."""
        return self.gamma + self.sign * self.alpha * np.asarray(x, dtype=float) ** -self.beta

    def informative(self, name: str) -> bool:
        """Whether the interval of ``name`` (alpha, beta, gamma) pins it down."""
        return name not in self.uninformative

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _fit_normalised(u: np.ndarray, z: np.ndarray, c_bounds: tuple[float, float]) -> np.ndarray:
    """(a, b, c) of z ≈ a·u^(−b) + c for u ≥ 1 (z falling), bounded a ≥ 0, 0 ≤ b ≤ BETA_MAX, c in c_bounds;
    the best of several starting exponents."""
    span = max(float(z.max() - z.min()), 1e-12)
    low, high = c_bounds
    best = None
    for b0 in (0.1, 0.5, 1.5):
        c0 = min(max(float(z.min()) - 0.1 * span, low), high)  # on a bound is fine: the solver moves inside
        a0 = max(float(z.max()) - c0, 1e-12)
        result = least_squares(
            lambda p: p[0] * u ** -p[1] + p[2] - z, [a0, b0, c0],
            bounds=([0.0, 0.0, low], [np.inf, BETA_MAX, high]), loss="soft_l1", f_scale=0.1 * span,
        )
        if best is None or result.cost < best.cost:
            best = result
    return best.x


def gamma_bounds(law: MetricLaw, y: np.ndarray, ceiling: Ceiling | None) -> tuple[tuple[float, float], str]:
    """The range γ may take (units of the metric) and a sentence saying why.

    Falling: [max(lowest possible, ceiling), min observed]; rising: [max observed, min(highest possible,
    ceiling)]. A ceiling the observed values already pass is replaced by the observed best (γ held there).
    """
    best = float(y.min()) if law.sign > 0 else float(y.max())
    possible = law.lowest if law.sign > 0 else law.highest
    why = (f"γ ≤ the lowest observed {law.name} {best:.4g}" if law.sign > 0
           else f"γ ≥ the highest observed {law.name} {best:.4g}")
    bound = possible
    if ceiling is None:
        why += f" and {'≥' if law.sign > 0 else '≤'} {possible:g} (no {law.name} can pass it)"
    elif (ceiling.value - best) * law.sign > 0:  # the runs' best already passes the ceiling
        bound = best
        side = "above" if law.sign > 0 else "below"
        why += (f"; the recorded ceiling {ceiling.value:.4g} ({ceiling.source}) is {side} it (sampling noise of a "
                "finite evaluation split), so γ is held at the observed best")
    else:
        bound = ceiling.value
        why += f" and {'≥' if law.sign > 0 else '≤'} the ceiling {ceiling.value:.4g} ({ceiling.source})"
    return ((bound, best) if law.sign > 0 else (best, bound)), why


def fit_power_law(x: list[float] | np.ndarray, y: list[float] | np.ndarray, metric: str = "ne",
                  ceiling: Ceiling | None = None, bootstrap: int = 200, seed: int = 0) -> PowerLawFit:
    """Fit ``metric``'s law (module docstring) to points (x > 0, y the metric); needs at least 4 points at
    3 distinct x. ``ceiling``: the best value the data allow, bounding γ."""
    law = metric_law(metric)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 4 or len(np.unique(x)) < 3:
        raise ValueError(f"a power law plus constant needs at least 4 points at 3 distinct x, got {len(x)} point(s) "
                         f"at {len(np.unique(x))} distinct x")
    if (x <= 0).any():
        raise ValueError("x must be positive")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite numbers")
    outside = y[(y < law.lowest) | (y > law.highest)]
    if len(outside):
        raise ValueError(f"{metric} {outside[0]:g} is outside its possible range [{law.lowest:g}, {law.highest:g}]")
    (g_low, g_high), why = gamma_bounds(law, y, ceiling)
    # the fit works on z = sign·y, which falls; its constant c = sign·γ
    s = law.sign
    c_bounds = (g_low, g_high) if s > 0 else (-g_high, -g_low)
    if c_bounds[1] - c_bounds[0] < 1e-12:  # held at one value: the solver needs an open box
        c_bounds = (c_bounds[0] - 1e-12, c_bounds[1])
    x0 = float(x.min())
    z = s * y

    def fit(xs: np.ndarray, zs: np.ndarray) -> tuple[float, float, float]:
        a, b, c = _fit_normalised(xs / x0, zs, c_bounds)
        return a * x0**b, b, s * c  # alpha in units of x, beta, gamma in units of the metric

    alpha, beta, gamma = fit(x, z)
    predicted = gamma + s * alpha * x**-beta
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - predicted) ** 2).sum()) / total if total > 0 else math.nan

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(x), len(x))
        if len(np.unique(x[pick])) < 3:
            continue
        ab, bb, gb = fit(x[pick], z[pick])
        samples.append((ab, bb, gb, _gain(ab, bb, gb, s, float(x.max()))))
    boot = np.array(samples) if samples else np.full((1, 4), np.nan)
    low, high = np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)
    intervals = {"alpha": (float(low[0]), float(high[0])), "beta": (float(low[1]), float(high[1])),
                 "gamma": (float(low[2]), float(high[2]))}
    gain = _gain(alpha, beta, gamma, s, float(x.max()))
    return PowerLawFit(
        metric=metric, direction=law.direction.value, formula=law.formula(), alpha=float(alpha), beta=float(beta),
        gamma=float(gamma), r2=r2, points=len(x), alpha_ci=intervals["alpha"], beta_ci=intervals["beta"],
        gamma_ci=intervals["gamma"], gamma_bounds=(float(g_low), float(g_high)), gamma_bounds_why=why,
        phase="high-return" if gain >= HIGH_RETURN else "saturating", gain_from_doubling=float(gain),
        gain_ci=(float(low[3]), float(high[3])), bootstrap=len(samples),
        uninformative=interval_notes(intervals, float(y.max() - y.min())),
    )


def _gain(alpha: float, beta: float, gamma: float, sign: float, x_max: float) -> float:
    """Relative improvement of the metric from x_max to 2·x_max (positive when it improves)."""
    at_max = gamma + sign * alpha * x_max**-beta
    at_double = gamma + sign * alpha * (2 * x_max) ** -beta
    return float(sign * (at_max - at_double) / abs(at_max)) if at_max else 0.0


def interval_notes(intervals: dict[str, tuple[float, float]], observed_spread: float) -> dict[str, str]:
    """Why each uninformative interval says little (parameters with informative intervals are absent).

    α, β: the low end reaches 0 (β below ``ZERO``; α below 1e-12 of its high end) — a flat line fits as
    well; the high end is more than ``MAX_SPAN`` times the low end; β reaches its bound ``BETA_MAX``.
    γ: wider than ``observed_spread`` (max − min of the fitted metric). Any NaN end (no bootstrap fit).
    """
    notes: dict[str, str] = {}
    for name, (low, high) in intervals.items():
        if not (math.isfinite(low) and math.isfinite(high)):
            notes[name] = "no bootstrap fit succeeded"
        elif name in ("alpha", "beta") and (low < ZERO if name == "beta" else low <= 1e-12 * high):
            notes[name] = f"reaches 0 (low end {low:.2g}): no decay fits the data as well"
        elif name == "beta" and high >= BETA_MAX - 1e-9:
            notes[name] = f"reaches the fit's bound {BETA_MAX:g}"
        elif name in ("alpha", "beta") and high > MAX_SPAN * low:
            notes[name] = f"spans a factor of {high / low:.3g} (more than {MAX_SPAN:g})"
        elif name == "gamma" and high - low > observed_spread:
            notes[name] = f"width {high - low:.3g} exceeds the observed spread of the metric {observed_spread:.3g}"
    return notes


def resource(result: ResultFile, x: str) -> float | None:
    """x of ``result`` for a fit: ``samples`` (training samples consumed), ``params`` (total parameters) or
    ``flops`` (forward FLOPs per sample x samples); None when the result lacks it."""
    samples = number(result.timing.samples) if result.timing else None
    if x == "samples":
        return samples
    if result.model is None:
        return None
    if x == "params":
        return number(result.model.total_params)
    per_sample = number(result.model.flops_per_sample)
    return number(per_sample * samples) if per_sample is not None and samples is not None else None


def quality(result: ResultFile, y: str) -> float | None:
    """Metric ``y`` of the best evaluation (of the final one in results without a best), None if missing."""
    best = result.best_metrics or result.metrics
    return number(getattr(best, y, None)) if best is not None else None


#: Where each x comes from in a result file (for the note on a result left out of a fit).
RESOURCE_FIELDS = {"samples": "timing.samples", "params": "model.total_params",
                   "flops": "model.flops_per_sample x timing.samples"}


def fit_points(results: list[ResultFile], x: str, y: str) -> tuple[list[float], list[float], list[str]]:
    """The (x, y) points of ``results`` to fit, and one note per result left out: failed or diverged runs,
    and finished ones without a positive x or without y."""
    xs: list[float] = []
    ys: list[float] = []
    left: list[str] = []
    for r in results:
        which = f"{r.suite}/{r.scenario_id} seed {r.seed}"
        if r.status not in ("reached", "not_reached"):
            left.append(f"{which}: {r.status}")
            continue
        rx, ry = resource(r, x), quality(r, y)
        missing = ([f"no {x} ({RESOURCE_FIELDS[x]})" if rx is None else f"{x} {rx:g} ≤ 0"]
                   if rx is None or rx <= 0 else []) + ([f"no {y}"] if ry is None else [])
        if missing:
            left.append(f"{which}: {', '.join(missing)}")
            continue
        xs.append(rx)
        ys.append(ry)
    return xs, ys, left


def recorded_ceiling(results: list[ResultFile], metric: str) -> Ceiling | None:
    """The best value of ``metric`` the data of ``results`` allow, from ``dataset.ceiling.<eval split>``
    (synthetic data record it); None when no result records one. Results with different ceilings give
    the loosest (lowest loss floor, highest AUC), and the source says so."""
    law = metric_law(metric)
    found: list[tuple[float, int | None, str]] = []
    for r in results:
        dataset = (r.model_extra or {}).get("dataset")
        ceilings = dataset.get("ceiling") if isinstance(dataset, dict) else None
        split = spec_section(r, "train").get("eval_split") or "val"
        entry = ceilings.get(split) if isinstance(ceilings, dict) else None
        value = number(entry.get(metric)) if isinstance(entry, dict) else None
        if value is not None:
            rows = entry.get("rows")
            found.append((value, rows if isinstance(rows, int) else None, split))
    if not found:
        return None
    value, rows, split = (min if law.sign > 0 else max)(found, key=lambda f: f[0])
    differ = max(f[0] for f in found) - min(f[0] for f in found) > 1e-9
    on = f", {rows:,} rows" if rows else ""
    source = (f"dataset.ceiling.{split}.{metric} of {len(found)} result(s){on}"
              + ("; they differ, the loosest is used" if differ else ""))
    return Ceiling(value, source)


#: ``--x`` of ``dlrs-bench fit`` → the seed 003 resource it corresponds to.
SEED003_RESOURCE = {"samples": "data", "params": "parameters", "flops": "compute"}
#: Seed 003's α and γ are in normalised NE, so only the scale-free numbers are compared.
SEED003_METRICS = ("beta", "r2", "saturated")


def phase_range(saturated: bool) -> tuple[float, float]:
    """The gains from doubling x (relative) that a published phase means: saturated → below
    ``HIGH_RETURN``, not saturated → at or above it."""
    return (-math.inf, HIGH_RETURN) if saturated else (HIGH_RETURN, math.inf)


def compare_with_seed003(fit: PowerLawFit, x: str, table: Any) -> list[IntervalCheck]:
    """This fit against seed 003 Table 1 (DLRM) for the resource of ``x``, through intervals only:

    - β: its 95% interval against the published range (:func:`~dlrs_bench.compare.verdicts.interval_verdict`);
    - saturated: the interval of the gain from doubling x against the gains the published phase means
      (:func:`phase_range`);
    - R²: a goodness of fit without an interval, so a threshold: at least the published R² agrees, less differs.
    """
    resource_ = SEED003_RESOURCE[x]
    out = []
    for row in table.rows:
        if row.resource != resource_ or row.split is not None or row.metric not in SEED003_METRICS:
            continue
        if row.metric == "saturated":
            published = "saturated" if row.reached else "not saturated"
            check = interval_verdict(fit.gain_ci, phase_range(bool(row.reached)),
                                     what="gain from doubling x")
            measured: float | str = f"{fit.phase} (gain {100 * fit.gain_from_doubling:.2f}%)"
            interval = fit.gain_ci
        elif row.metric == "beta":
            published = _shown(row)
            check = interval_verdict(fit.beta_ci, published_range(row), what="β",
                                     uninformative=fit.uninformative.get("beta"))
            measured, interval = fit.beta, fit.beta_ci
        else:  # r2
            published = _shown(row)
            agrees = not math.isnan(fit.r2) and fit.r2 >= (row.value or 0.0)
            check = Judgement(Verdict.AGREES if agrees else Verdict.DIFFERS,
                              f"R² {fit.r2:.4f} {'≥' if agrees else '<'} published {row.value:g} "
                              "(a threshold: R² has no interval)")
            measured, interval = fit.r2, None
        verdict, reason = check
        out.append(IntervalCheck(metric=row.metric, resource=resource_, published=published, measured=measured,
                                 interval=interval, verdict=verdict, reason=reason))
    return out


def _shown(row: Any) -> str:
    if row.value is not None:
        return f"{row.value:g}" + (f" ± {row.tolerance:g}" if row.tolerance else "")
    return f"{row.low:g}–{row.high:g}" if row.low is not None and row.high is not None else str(row.low or row.high)


def fit_results(results: list[ResultFile], x: str, y: str, bootstrap: int = 200) -> tuple[PowerLawFit, list[str]]:
    """Fit ``y``'s law against ``x`` over ``results`` (γ bounded by their recorded ceiling, if any), and the
    notes on the results left out. ValueError when the points cannot be fitted."""
    xs, ys, left = fit_points(results, x, y)
    try:
        return fit_power_law(xs, ys, metric=y, ceiling=recorded_ceiling(results, y), bootstrap=bootstrap), left
    except ValueError as e:
        raise FitError(str(e), left) from None


class FitError(ValueError):
    """The points cannot be fitted; ``left_out`` names the results that gave no point."""

    def __init__(self, message: str, left_out: list[str]) -> None:
        super().__init__(message)
        self.left_out = left_out


#: A line of ``fit``'s output: text pieces, a (text, style) pair for a coloured one.
Line = list[str | tuple[str, str]]
VERDICT_STYLES = {Verdict.AGREES: "green", Verdict.DIFFERS: "red", Verdict.INCONCLUSIVE: "yellow"}


def describe(fit: PowerLawFit, x: str, checks: list[IntervalCheck]) -> list[Line]:
    """``fit``'s human-readable report: the law, each parameter with its interval (and whether it is
    informative), the bound on γ, R², the phase, and each check against a publication with its reason."""
    lines: list[Line] = [[f"{metric_law(fit.metric).formula(x)} over {fit.points} results ({fit.metric} of the best "
                          f"evaluation; it {fit.direction} with {x})"]]
    for name, symbol in (("alpha", "α"), ("beta", "β"), ("gamma", "γ")):
        low, high = getattr(fit, f"{name}_ci")
        note = fit.uninformative.get(name)
        lines.append([f"  {symbol} = {getattr(fit, name):.4g}   95% interval [{low:.4g}, {high:.4g}] ",
                      ("uninformative", "yellow") if note else ("informative", "green"),
                      f" ({note})" if note else ""])
    low, high = fit.gamma_bounds
    lines.append([f"  γ bounded to [{low:.4g}, {high:.4g}]: {fit.gamma_bounds_why}"])
    lines.append([f"  R² = {fit.r2:.4f}   ({fit.bootstrap} bootstrap fits)"])
    better = "lower" if fit.direction == Direction.FALLS.value else "higher"
    lines.append([f"  phase = {fit.phase} (doubling x at the largest point: {100 * fit.gain_from_doubling:.2f}% "
                  f"{better} {fit.metric}, 95% interval [{100 * fit.gain_ci[0]:.2f}%, {100 * fit.gain_ci[1]:.2f}%])"])
    for c in checks:
        measured = c.measured if isinstance(c.measured, str) else f"{c.measured:.4g}"
        lines.append([f"  seed 003 ({c.resource}): {c.metric} published {c.published}, measured {measured} → ",
                      (c.verdict.value, VERDICT_STYLES[c.verdict]), f" ({c.reason})"])
    return lines
