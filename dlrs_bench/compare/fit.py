"""Scaling-law fits: L(x) = α·x^(−β) + γ (power law plus constant, seeds 001/003).

The fit is a bounded robust least-squares (soft-L1 loss, so one bad point does not drag the
curve) on x normalised by its smallest value, with α reported in the original units of x;
95% intervals come from a bootstrap over the points. The phase says whether more of x still
pays: ``high-return`` when doubling x beyond the largest measured value is predicted to lower L
by at least ``HIGH_RETURN`` (relative), else ``saturating``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import least_squares

from dlrs_bench.results.collect import number

if TYPE_CHECKING:
    from dlrs_bench.results.schema import ResultFile

#: Relative improvement of L from doubling x at the largest x that counts as "high-return".
HIGH_RETURN = 0.005


@dataclass(frozen=True)
class PowerLawFit:
    """Parameters of L(x) = alpha * x^-beta + gamma, their 95% bootstrap intervals, and quality."""

    alpha: float
    beta: float
    gamma: float
    r2: float
    points: int
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    gamma_ci: tuple[float, float]
    phase: str  # "high-return" | "saturating"
    gain_from_doubling: float  # (L(x_max) - L(2 x_max)) / L(x_max)

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return self.alpha * np.asarray(x, dtype=float) ** -self.beta + self.gamma

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _fit_normalised(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, b, c) of y ≈ a·u^(−b) + c for u ≥ 1, bounded a ≥ 0, 0 ≤ b ≤ 5."""
    span = max(float(y.max() - y.min()), 1e-12)
    start = np.array([span, 0.3, float(y.min()) - 0.1 * span])
    result = least_squares(
        lambda p: p[0] * u ** -p[1] + p[2] - y, start, bounds=([0.0, 0.0, -np.inf], [np.inf, 5.0, np.inf]),
        loss="soft_l1", f_scale=0.1 * span,
    )
    return result.x


def fit_power_law(x: list[float] | np.ndarray, y: list[float] | np.ndarray, bootstrap: int = 200,
                  seed: int = 0) -> PowerLawFit:
    """Fit L(x) = α·x^(−β) + γ to points (x > 0); needs at least 4 points with 3 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 4 or len(np.unique(x)) < 3:
        raise ValueError(f"a power law plus constant needs at least 4 points at 3 distinct x, got {len(x)}")
    if (x <= 0).any():
        raise ValueError("x must be positive")
    x0 = float(x.min())
    a, b, c = _fit_normalised(x / x0, y)
    residual = y - (a * (x / x0) ** -b + c)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((residual**2).sum()) / total if total > 0 else math.nan

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(x), len(x))
        if len(np.unique(x[pick])) < 3:
            continue
        ab, bb, cb = _fit_normalised(x[pick] / x0, y[pick])
        samples.append((ab * x0**bb, bb, cb))
    boot = np.array(samples) if samples else np.full((1, 3), np.nan)
    low, high = np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)

    alpha = a * x0**b
    x_max = float(x.max())
    at_max = alpha * x_max**-b + c
    gain = (at_max - (alpha * (2 * x_max) ** -b + c)) / at_max if at_max else 0.0
    return PowerLawFit(
        alpha=float(alpha), beta=float(b), gamma=float(c), r2=r2, points=len(x),
        alpha_ci=(float(low[0]), float(high[0])), beta_ci=(float(low[1]), float(high[1])),
        gamma_ci=(float(low[2]), float(high[2])),
        phase="high-return" if gain >= HIGH_RETURN else "saturating", gain_from_doubling=float(gain),
    )


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


#: ``--x`` of ``dlrs-bench fit`` → the seed 003 resource it corresponds to.
SEED003_RESOURCE = {"samples": "data", "params": "parameters", "flops": "compute"}
#: Seed 003's α and γ are in normalised NE, so only the scale-free numbers are compared.
SEED003_METRICS = ("beta", "r2", "saturated")


def compare_with_seed003(fit: PowerLawFit, x: str, table: object) -> list[dict[str, object]]:
    """This fit against seed 003 Table 1 (DLRM) for the resource of ``x``: β, R² and saturation."""
    resource = SEED003_RESOURCE[x]
    out = []
    for row in table.rows:  # type: ignore[attr-defined]
        if row.resource != resource or row.split is not None or row.metric not in SEED003_METRICS:
            continue
        if row.metric == "saturated":
            measured, within = fit.phase == "saturating", (fit.phase == "saturating") == row.reached
            published = "saturated" if row.reached else "not saturated"
        else:
            measured = getattr(fit, row.metric)
            within = row.accepts(measured) if row.metric == "beta" else measured >= (row.value or 0)
            published = f"{row.value:g}" if row.value is not None else f"{row.low:g}–{row.high:g}"
        out.append({"metric": row.metric, "resource": resource, "published": published,
                    "measured": measured, "agrees": bool(within)})
    return out
