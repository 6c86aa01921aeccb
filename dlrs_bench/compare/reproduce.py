"""``dlrs-bench reproduce``: a verdict for every published row and claim of ``reference_results/``.

Each verdict is one of **reproduced**, **not reproduced**, **inconclusive** or **not testable here** (naming
what is missing: the data set and its size, a model, hardware, or a number the results do not record).

Published numbers (rows) are judged only on runs of the scenario they describe, on the data they were measured
on (same data set and row count, whole training split: :func:`~dlrs_bench.compare.verdicts.data_mismatch`). The
runs' seeds give a 95% Student-t interval of the mean, compared with the published value ± tolerance or range by
:func:`~dlrs_bench.compare.verdicts.interval_verdict`: inside it → reproduced, disjoint → not reproduced, else
inconclusive; one seed gives no interval. A yes/no row (a target not reached) counts the seeds that agree with
the sign test below. Fitted rows (β, R², the phase) go through :func:`~dlrs_bench.compare.fit.compare_with_seed003`.

Claims (orderings, comparisons, ``flat``, ``phase``) are judged across seeds, never by comparing means. A claim
is split into paired comparisons ("qr beats memcom at 4x"); the two runs of one seed form a pair. A comparison
**holds** when the exact one-sided sign test over its n seeds gives P(Binomial(n, 1/2) ≥ wins) < α = 0.05, a seed
with a tie counting against the claim: this needs at least :data:`MIN_SEEDS` = 5 seeds, all agreeing (2^-5 =
0.031). It is **reversed** when the same test finds the opposite at α/m (Bonferroni over the claim's m tested
comparisons). A claim is reproduced when every comparison it makes was tested and holds (an intersection-union
test, which needs no correction), not reproduced when a comparison is reversed, inconclusive otherwise (too few
seeds, no significant difference, or parts not testable). A comparison of a fitted quantity (β) fits each seed's
runs separately; a ``phase`` counts the seeds whose interval of the gain from doubling x agrees with the published
phase (wins) or excludes it (losses).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from dlrs_bench.compare.fit import (  # noqa: E402
    SEED003_RESOURCE,
    FitError,
    compare_with_seed003,
    fit_results,
    phase_range,
)
from dlrs_bench.compare.reference import (  # noqa: E402
    FIT_METRICS,
    METRICS,
    ReferenceClaim,
    ReferenceRow,
    ReferenceTable,
)
from dlrs_bench.compare.report import FINISHED, plot_ratio, plot_scaling, save_figure, title  # noqa: E402
from dlrs_bench.compare.verdicts import (  # noqa: E402
    ALPHA,
    MODEL_VARIANTS,
    QUALITY,
    DataRows,
    Verdict,
    data_mismatch,
    group,
    interval_verdict,
    published_range,
    published_text,
    quality,
    scenario_keys,
)
from dlrs_bench.files import make_folder, write_atomic  # noqa: E402
from dlrs_bench.registry import COMPRESSORS, DATASETS, MODELS  # noqa: E402
from dlrs_bench.results.collect import label, number, spec_section  # noqa: E402
from dlrs_bench.results.schema import ResultFile  # noqa: E402


class Outcome(str, Enum):
    """The verdict on one published row or claim."""

    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not reproduced"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTABLE = "not testable here"


def min_seeds(alpha: float = ALPHA) -> int:
    """The fewest seeds with which the one-sided sign test can reject at ``alpha`` (all seeds agreeing)."""
    n = 1
    while 0.5**n >= alpha:
        n += 1
    return n


MIN_SEEDS = min_seeds()
#: Interval verdicts of a row's seed mean, as reproduce verdicts.
FROM_INTERVAL = {Verdict.AGREES: Outcome.REPRODUCED, Verdict.DIFFERS: Outcome.NOT_REPRODUCED,
                 Verdict.INCONCLUSIVE: Outcome.INCONCLUSIVE}
#: ``where.resource`` of a claim or row → x of a fit (``fit --x``).
RESOURCE_X = {resource: x for x, resource in SEED003_RESOURCE.items()}
#: Seed 003's schemes and the ``model.scale`` key each one moves.
SCHEMES = {"V": "rows", "H": "dim", "O": "over_arch", "M": "mlp"}
#: Metrics that time something: comparable only on the hardware the table names.
TIMED = frozenset({"time_to_target_s", "time_per_1000_iters_s", "iter_ms", "forward_ms", "backward_ms",
                   "inference_time_s", "samples_per_s", "relative_time"})
#: Metrics no result file records, and what measures them instead.
UNRECORDED = {
    "forward_ms": "a lookup microbenchmark's number (tools/bench_compression.py), not a suite run's",
    "backward_ms": "a lookup microbenchmark's number (tools/bench_compression.py), not a suite run's",
    "inference_time_s": "results do not time inference over a test split",
    "relative_time": "a ratio of epochs × iteration time between two runs of the paper's hardware",
    "knee_dim": "a reading of a sweep of the embedding dimension, not a fitted number",
    "alpha": "seed 003's α is in normalised NE, which results do not record",
    "gamma": "seed 003's γ is in normalised NE, which results do not record",
}


def _target_epochs(r: ResultFile) -> float | None:
    """Epochs to target; ``inf`` for a finished run that did not reach it (it ranks behind every run that did)."""
    if r.target is None:
        return None
    if r.status == "not_reached" or r.target.reached is False:
        return math.inf
    return number(r.target.epochs_to_target)


#: How a result gives each metric it records.
MEASURES: dict[str, Callable[[ResultFile], float | None]] = {
    **{metric: (lambda r, m=metric: quality(r, m)) for metric in QUALITY},
    "epochs_to_target": _target_epochs,
    "time_to_target_s": lambda r: number(r.target.time_to_target_s) if r.target else None,
    "iter_ms": lambda r: number(r.timing.iter_ms.p50) if r.timing and r.timing.iter_ms else None,
    "time_per_1000_iters_s": lambda r: number(r.timing.iter_ms.mean) if r.timing and r.timing.iter_ms else None,
    "samples_per_s": lambda r: number(r.timing.samples_per_s) if r.timing else None,
}


@dataclass(frozen=True)
class Part:
    """One paired comparison of a claim over seeds: ``wins`` seeds go the claimed way, ``losses`` the other way
    (ties count as neither), or why it could not be tested."""

    what: str
    seeds: int = 0
    wins: int = 0
    losses: int = 0
    p_holds: float | None = None
    p_reversed: float | None = None
    mean_difference: float | None = None  # the claimed way positive (a phase: None)
    untestable: str = ""

    @property
    def tested(self) -> bool:
        return not self.untestable


@dataclass(frozen=True)
class Finding:
    """The verdict on one published row or claim, on one data set, with the statistics behind it."""

    source: str  # the reference file
    table: str
    kind: str  # "row" or the claim's kind
    what: str
    verdict: Outcome
    reason: str
    test: str  # the test used, with its seeds
    dataset: str | None = None  # the data it was checked on (None: not testable on any)
    parts: list[Part] = field(default_factory=list)
    figure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


# -- runs and the match keys of reference tables --------------------------------------------------------------


def run_keys(r: ResultFile) -> dict[str, Any]:
    """A result's match keys (:func:`~dlrs_bench.compare.verdicts.scenario_keys`) with its seed 003 scheme: the one
    ``model.scale`` knob it moves (V, H, O, M); none for the base model."""
    keys = scenario_keys(r)
    scale = spec_section(r, "model").get("scale")
    moved = [s for s, knob in SCHEMES.items() if isinstance(scale, dict) and scale.get(knob) not in (None, 1, 1.0)]
    if len(moved) == 1:
        keys["scheme"] = moved[0]
    return keys


def matches(r: ResultFile, wanted: dict[str, Any]) -> bool:
    """Whether every key of ``wanted`` equals the result's; a base model (no scale) matches every scheme."""
    keys = run_keys(r)
    return all(keys.get(k) == v or (k == "scheme" and "scheme" not in keys and _is_base(r))
               for k, v in wanted.items())


def _is_base(r: ResultFile) -> bool:
    scale = spec_section(r, "model").get("scale")
    return not isinstance(scale, dict) or all(scale.get(k) in (None, 1, 1.0) for k in SCHEMES.values())


def _text(keys: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in keys.items())


def held_datasets(results: list[ResultFile]) -> str:
    """``movielens-latest-small (100,836 rows), synthetic (1,250,000 rows)``: the data sets of ``results``."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for r in results:
        total = DataRows.of(r).total
        sizes[str(run_keys(r).get("dataset", "?"))].update([total] if total is not None else [])
    return ", ".join(f"{name} ({' / '.join(f'{n:,}' for n in sorted(rows))} rows)" if rows else name
                     for name, rows in sorted(sizes.items()))


def missing(table: ReferenceTable, wanted: dict[str, Any], results: list[ResultFile]) -> str:
    """What the results lack for a row or claim selecting ``wanted``: the data set (with its published size), a
    model or compressor dlrs-bench does not implement, else each key no run has (with the values they hold)."""
    needs = []
    dataset = wanted.get("dataset")
    if dataset is not None and not any(run_keys(r).get("dataset") == dataset for r in results):
        size = table.dataset_sizes.get(dataset)
        about = ([f"{size.rows:,} rows"] if size else []) + ([] if dataset in DATASETS else ["no dlrs-bench reader"])
        needs.append(f"needs {dataset}" + (f" ({', '.join(about)})" if about else ""))
    for key, known in (("model", [*MODELS.names(), *MODEL_VARIANTS]), ("compressor", COMPRESSORS.names())):
        if wanted.get(key) is not None and wanted[key] not in known:
            needs.append(f"needs {key} {wanted[key]}, which dlrs-bench does not implement")
    if needs:
        return "; ".join(needs) + f"; the results hold {held_datasets(results)}"
    scope = [r for r in results if dataset is None or run_keys(r).get("dataset") == dataset]
    for key, value in wanted.items():
        if not any(matches(r, {key: value}) for r in scope):
            held = sorted({str(run_keys(r)[key]) for r in scope if key in run_keys(r)}, key=_natural)
            return f"no run with {key}={value}" + (f" (the results hold {key} {', '.join(held)})" if held else "")
    return f"no run with {_text(wanted)} together"


def _natural(text: str) -> tuple[float, str]:
    try:
        return float(text), text
    except ValueError:
        return math.inf, text


def hardware_missing(table: ReferenceTable, results: list[ResultFile]) -> str | None:
    """Why times of ``results`` cannot be compared with ``table``'s (None when they ran on its hardware)."""
    ran = sorted({(r.env.gpu_name if r.env else None) or "CPU" for r in results})
    if not table.hardware:
        return (f"the table does not state the hardware its times were measured on; the results ran on "
                f"{', '.join(ran)}")
    if any(name != "CPU" and name.lower() in table.hardware.lower() for name in ran):
        return None
    return f"needs {table.hardware}; the results ran on {', '.join(ran)}"


# -- statistics -----------------------------------------------------------------------------------------------


def sign_test(wins: int, seeds: int) -> float:
    """P(Binomial(seeds, 1/2) ≥ wins): the exact one-sided sign test (1.0 without seeds)."""
    return float(stats.binomtest(wins, seeds, 0.5, alternative="greater").pvalue) if seeds else 1.0


def paired_part(what: str, a: dict[int, float], b: dict[int, float], sign: float, low: float,
                high: float = math.inf) -> Part:
    """``low < sign·(a − b) < high`` for the seeds ``a`` and ``b`` share, by the sign test (a finite ``high`` too:
    then a win is a seed inside both bounds, a loss one outside either)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return Part(what, untestable=f"no seed has both sides (seeds {sorted(a)} against {sorted(b)})")
    diffs = [0.0 if a[s] == b[s] else sign * (a[s] - b[s]) for s in seeds]
    wins = sum(low < d < high for d in diffs)
    losses = sum(d < low or d > high for d in diffs)
    finite = [d for d in diffs if math.isfinite(d)]
    return Part(what, len(seeds), wins, losses, sign_test(wins, len(seeds)), sign_test(losses, len(seeds)),
                statistics.fmean(finite) if finite else None)


def combine(parts: list[Part]) -> tuple[Outcome, str]:
    """A claim's verdict from its parts (module docstring) and why."""
    tested = [p for p in parts if p.tested]
    untested = [f"{p.what}: {p.untestable}" for p in parts if not p.tested]
    if not parts:
        return Outcome.NOT_TESTABLE, "the claim makes no comparison that can be tested (members alike, no tolerance)"
    if not tested:
        return Outcome.NOT_TESTABLE, "; ".join(dict.fromkeys(w for p in parts for w in p.untestable.split("; ")))
    cut = ALPHA / len(tested)
    reversed_ = [p for p in tested if (p.p_reversed or 1.0) < cut]
    if reversed_:
        shown = "; ".join(f"{p.what}: reversed in {p.losses} of {p.seeds} seeds (p = {p.p_reversed:.3g} < "
                          f"{cut:.3g})" for p in reversed_)
        return Outcome.NOT_REPRODUCED, shown
    holding = [p for p in tested if (p.p_holds or 1.0) < ALPHA]
    if len(holding) == len(parts):
        return Outcome.REPRODUCED, f"all {len(parts)} comparison(s) hold (p < {ALPHA:g} each)"
    few = max(p.seeds for p in tested) < MIN_SEEDS
    why = [f"{len(holding)} of {len(tested)} tested comparison(s) hold"]
    if few:
        why.append(f"{max(p.seeds for p in tested)} seed(s): the sign test needs at least {MIN_SEEDS} seeds, all "
                   "agreeing")
    if untested:
        why.append(f"{len(untested)} not testable (e.g. {untested[0]})")
    return Outcome.INCONCLUSIVE, "; ".join(why)


def _t_interval(values: list[float]) -> tuple[float, float]:
    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    return mean - half, mean + half


# -- rows -----------------------------------------------------------------------------------------------------


def describe_row(row: ReferenceRow) -> str:
    """``auc of model=dlrm, compressor=robe, ratio=1000 on criteo-kaggle: 0.8048 ± 0.002 AUC``."""
    keys = {k: v for k, v in row.keys().items() if k != "dataset"}
    if row.value is None and row.low is None and row.high is None:
        published = "reached" if row.reached else "not reached"
    else:
        published = f"{published_text(row)} {row.units}"
    target = f" (target {row.target.metric} {row.target.value:g})" if row.target else ""
    return f"{row.metric}{target} of {_text(keys)} on {row.dataset}: {published}"


def judge_row(table: ReferenceTable, row: ReferenceRow, results: list[ResultFile]) -> list[Finding]:
    """One finding per scenario that the row describes (one "not testable" finding when none does)."""
    def finding(verdict: Outcome, reason: str, test: str = "–", dataset: str | None = None) -> Finding:
        return Finding(_name(table), table.table, "row", describe_row(row), verdict, reason, test, dataset)

    wanted = row.keys()
    matched = [r for r in results if matches(r, {k: v for k, v in wanted.items() if k != "resource"})]
    if not matched:
        return [finding(Outcome.NOT_TESTABLE, missing(table, wanted, results))]
    if row.metric in TIMED and (why := hardware_missing(table, matched)):
        return [finding(Outcome.NOT_TESTABLE, why)]
    if row.metric in UNRECORDED:
        return [finding(Outcome.NOT_TESTABLE, f"dlrs-bench results do not record {row.metric}: "
                        f"{UNRECORDED[row.metric]}")]
    if row.metric in QUALITY and (why := data_mismatch(matched, table, row.dataset)):
        return [finding(Outcome.NOT_TESTABLE, why, dataset=row.dataset)]
    if row.metric in FIT_METRICS:
        return [_judge_fitted_row(table, row, matched, finding)]
    out = []
    for runs in group(matched).values():
        verdict, reason, test = _judge_values(row, runs)
        out.append(finding(verdict, f"{label(runs[0])}: {reason}", test, row.dataset))
    return out


def _judge_values(row: ReferenceRow, runs: list[ResultFile]) -> tuple[Outcome, str, str]:
    """A row against its scenario's finished runs: the t-interval of the seed mean, or the sign test of a yes/no."""
    done = [r for r in runs if r.status in FINISHED]
    if not done:
        return Outcome.INCONCLUSIVE, f"no finished run ({', '.join(sorted({r.status for r in runs}))})", "–"
    if row.target is not None:
        targets = {(r.target.metric, r.target.value) for r in done if r.target}
        if targets != {(row.target.metric, row.target.value)}:
            shown = ", ".join(f"{m} {v:g}" for m, v in sorted(targets))
            return (Outcome.NOT_TESTABLE, f"the runs count toward {shown or 'no target'}, the row toward "
                    f"{row.target.metric} {row.target.value:g}", "–")
    values = [MEASURES[row.metric](r) for r in done]
    if any(v is None for v in values):
        return Outcome.INCONCLUSIVE, f"{row.metric} missing in some runs", "–"
    seeds = len(values)
    reached = [math.isfinite(v) for v in values]
    if row.reached is not None or not all(reached):
        claimed = row.reached if row.reached is not None else True
        wins = sum(r == claimed for r in reached)
        p_holds, p_reversed = sign_test(wins, seeds), sign_test(seeds - wins, seeds)
        test = f"sign test over {seeds} seed(s): {wins} agree (p = {p_holds:.3g}), {seeds - wins} do not"
        verdict = (Outcome.REPRODUCED if p_holds < ALPHA else Outcome.NOT_REPRODUCED if p_reversed < ALPHA
                   else Outcome.INCONCLUSIVE)
        return verdict, f"target {'reached' if claimed else 'not reached'} published; reached in {sum(reached)} of " \
                        f"{seeds} seed(s)", test
    mean = statistics.fmean(values)
    if seeds < 2:
        return Outcome.INCONCLUSIVE, f"measured {mean:.4g} in one seed: no interval (2 or more seeds needed)", \
            "95% t-interval: needs 2 seeds"
    interval = _t_interval(values)
    verdict, reason = interval_verdict(interval, published_range(row), what=f"the mean {row.metric}")
    return FROM_INTERVAL[verdict], f"mean {mean:.4g} over {seeds} seeds; {reason}", \
        f"95% t-interval of the mean over {seeds} seeds"


def _judge_fitted_row(table: ReferenceTable, row: ReferenceRow, runs: list[ResultFile],
                      finding: Callable[..., Finding]) -> Finding:
    """A fitted row (β, R², saturated) against one fit of NE over ``runs`` along its resource."""
    x = RESOURCE_X.get(row.resource or "")
    if x is None:
        return finding(Outcome.NOT_TESTABLE, f"{row.metric} without a resource (data, parameters, compute) "
                       f"is not a fit dlrs-bench makes")
    try:
        fit, _ = fit_results(runs, x, "ne")
    except FitError as e:
        return finding(Outcome.NOT_TESTABLE, f"no fit of NE against {x}: {e}", dataset=row.dataset)
    checks = [c for c in compare_with_seed003(fit, x, table) if c.metric == row.metric]
    if not checks:
        return finding(Outcome.NOT_TESTABLE, f"{row.metric} is not compared by fit", dataset=row.dataset)
    return finding(FROM_INTERVAL[checks[0].verdict], checks[0].reason,
                   f"one fit over {fit.points} runs, {fit.bootstrap} bootstrap fits", row.dataset)


# -- claims ---------------------------------------------------------------------------------------------------


def claim_pairs(claim: ReferenceClaim) -> list[tuple[Any, Any, float, float, str]]:
    """The paired comparisons a claim makes: (a, b, low, high, text) for ``low < better-way(a − b) < high``."""
    tol = claim.tolerance or 0.0
    if claim.kind == "comparison":
        return [(claim.better, w, 0.0, math.inf, f"{claim.better} > {w}") for w in claim.worse or []]
    if claim.kind == "flat":
        return [(o, claim.reference, -tol, math.inf, f"{o} ≥ {claim.reference} − {tol:g}") for o in claim.others or []]
    tiers = claim.order or []
    pairs = [(a, b, 0.0, math.inf, f"{a} > {b}") for upper, lower in zip(tiers, tiers[1:]) for a in upper
             for b in lower]
    if claim.tolerance is not None:
        pairs += [(a, b, -tol, tol, f"{a} ≈ {b} (± {tol:g})") for tier in tiers for i, a in enumerate(tier)
                  for b in tier[i + 1:]]
    return pairs


def member_keys(claim: ReferenceClaim, member: Any, ratio: float | None) -> dict[str, Any]:
    """The match keys selecting ``member``'s runs at ``ratio`` (where, over, its levels, the ratio)."""
    keys = {k: v for k, v in claim.where.items() if k != "resource"}
    if claim.over is not None:
        keys[claim.over] = member
    keys.update(claim.levels.get(member, {}))
    if ratio is not None and "ratio" not in keys:
        keys["ratio"] = ratio
    return keys


def member_values(claim: ReferenceClaim, runs: list[ResultFile], keys: dict[str, Any]) -> tuple[dict[int, float], str]:
    """The claim's metric per seed for the runs matching ``keys`` (one fit per seed for a fitted metric), or why
    there is none."""
    picked = [r for r in runs if matches(r, keys)]
    if "scheme" in keys:  # the base model alone does not make a scheme
        picked = picked if any(run_keys(r).get("scheme") == keys["scheme"] for r in picked) else []
    if not picked:
        return {}, f"no run with {_text(keys)}"
    if claim.metric in FIT_METRICS:
        return _fitted_per_seed(claim, picked)
    scenarios = group(picked)
    if len(scenarios) > 1:
        names = "; ".join(sorted(label(g[0]) for g in scenarios.values()))
        return {}, f"{len(scenarios)} scenarios match {_text(keys)} ({names}): the claim's where or levels must pick"
    values = {r.seed: MEASURES[claim.metric](r) for r in picked if r.status in FINISHED}
    values = {s: v for s, v in values.items() if v is not None}
    return values, "" if values else f"no finished run with {claim.metric} for {_text(keys)}"


def _fitted_per_seed(claim: ReferenceClaim, runs: list[ResultFile]) -> tuple[dict[int, float], str]:
    """β (the claim's fitted metric) of one NE fit per seed along the claim's resource."""
    x = RESOURCE_X[str(claim.where["resource"])]
    by_seed: dict[int, list[ResultFile]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    values: dict[int, float] = {}
    why = ""
    for seed, seed_runs in sorted(by_seed.items()):
        fit, reason = _seed_fit(seed_runs, x, "ne")
        if fit is None:
            why = f"seed {seed}: {reason}"
            continue
        value = number(getattr(fit, claim.metric, None))
        if value is not None:
            values[seed] = value
    return values, "" if values else why


def _seed_fit(runs: list[ResultFile], x: str, metric: str) -> tuple[Any, str]:
    """One fit of ``metric`` against ``x`` over one seed's runs, if they vary x by design (one family)."""
    from dlrs_bench.compare.report import scaling_families

    families, why = scaling_families(runs, x)
    if len(families) != 1:
        return None, why or f"{len(families)} families vary {x} ({', '.join(sorted(families))}); one is needed"
    try:
        fit, _ = fit_results(next(iter(families.values())), x, metric)
    except FitError as e:
        return None, f"no fit of {metric} against {x}: {e}"
    return fit, ""


def claim_parts(claim: ReferenceClaim, runs: list[ResultFile]) -> list[Part]:
    """The claim's paired comparisons on ``runs``, each judged by the sign test over seeds."""
    if claim.kind == "phase":
        return [_phase_part(claim, runs)]
    if claim.metric == "epochs_to_target":
        targets = {(r.target.metric, r.target.value) for r in runs if r.target}
        if len(targets) > 1:
            shown = ", ".join(f"{m} {v:g}" for m, v in sorted(targets))
            return [Part("every comparison", untestable=f"the runs count toward different targets ({shown})")]
    sign = 1.0 if METRICS[claim.metric] == "higher" else -1.0
    parts = []
    for ratio in claim.ratios or [None]:
        at = f" at {ratio:g}×" if ratio is not None else ""
        cells = {m: member_values(claim, runs, member_keys(claim, m, ratio)) for m in claim.members()}
        for a, b, low, high, text in claim_pairs(claim):
            (va, why_a), (vb, why_b) = cells[a], cells[b]
            if why_a or why_b:
                parts.append(Part(text + at, untestable="; ".join(w for w in (why_a, why_b) if w)))
            else:
                parts.append(paired_part(text + at, va, vb, sign, low, high))
    return parts


def _phase_part(claim: ReferenceClaim, runs: list[ResultFile]) -> Part:
    x = RESOURCE_X[str(claim.where["resource"])]
    phase = "saturated" if claim.saturated else "not saturated"
    by_seed: dict[int, list[ResultFile]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    wins = losses = seeds = 0
    why = ""
    for seed_runs in by_seed.values():
        fit, reason = _seed_fit(seed_runs, x, claim.metric)
        if fit is None:
            why = reason
            continue
        verdict, _ = interval_verdict(fit.gain_ci, phase_range(bool(claim.saturated)), what="gain from doubling x")
        seeds += 1
        wins += verdict is Verdict.AGREES
        losses += verdict is Verdict.DIFFERS
    what = f"{phase} along {x}"
    if not seeds:
        return Part(what, untestable=why)
    return Part(what, seeds, wins, losses, sign_test(wins, seeds), sign_test(losses, seeds))


def judge_claim(table: ReferenceTable, claim: ReferenceClaim, results: list[ResultFile]) -> list[Finding]:
    """One finding per data set the claim can be checked on (the one of ``where.dataset``, else each data set of
    the results separately); one "not testable" finding when no run fits the claim's ``where``."""
    where = {k: v for k, v in claim.where.items() if k != "resource"}
    scoped = [r for r in results if matches(r, where)]

    def finding(verdict: Outcome, reason: str, dataset: str | None = None, parts: list[Part] | None = None
                ) -> Finding:
        seeds = max((p.seeds for p in parts or [] if p.tested), default=0)
        test = f"sign test over {seeds} seed(s) per comparison" if seeds else "sign test over seeds"
        return Finding(_name(table), table.table, claim.kind, " ".join(claim.statement.split()), verdict, reason,
                       test, dataset, parts or [])

    if not scoped:
        return [finding(Outcome.NOT_TESTABLE, missing(table, where, results))]
    by_dataset: dict[str, list[ResultFile]] = defaultdict(list)
    for r in scoped:
        by_dataset[str(run_keys(r).get("dataset"))].append(r)
    out = []
    for dataset, runs in sorted(by_dataset.items()):
        if "dataset" in where and (why := data_mismatch(runs, table, dataset)):
            out.append(finding(Outcome.NOT_TESTABLE, why, dataset))
            continue
        parts = claim_parts(claim, runs)
        verdict, reason = combine(parts)
        out.append(finding(verdict, reason, dataset, parts))
    return out


def _name(table: ReferenceTable) -> str:
    return table.path.name if table.path else table.source[:40]


# -- everything, and the markdown -----------------------------------------------------------------------------


def reproduce(results: list[ResultFile], tables: list[ReferenceTable]) -> list[Finding]:
    """A finding for every row and claim of ``tables`` on ``results``."""
    out: list[Finding] = []
    for table in tables:
        for row in table.rows:
            out += judge_row(table, row, results)
        for claim in table.claims:
            out += judge_claim(table, claim, results)
    return out


def _claim_runs(claim: ReferenceClaim, results: list[ResultFile], dataset: str | None) -> list[ResultFile]:
    where = {k: v for k, v in claim.where.items() if k != "resource"}
    return [r for r in results if matches(r, where) and run_keys(r).get("dataset") == dataset]


def plot_claim(finding: Finding, claim: ReferenceClaim, results: list[ResultFile], out: Path, name: str) -> str | None:
    """The plot behind a claim: each seed's metric for every member (one line per seed, one panel per ratio), or,
    for a fitted claim, the scaling fit (:func:`~dlrs_bench.compare.report.plot_scaling`); None without data."""
    runs = _claim_runs(claim, results, finding.dataset)
    if claim.kind == "phase" or claim.metric in FIT_METRICS:
        figure, _ = plot_scaling(runs, out, RESOURCE_X[str(claim.where["resource"])])
        if figure is None:
            return None
        target = out / f"{name}.png"
        (out / figure[0]).rename(target)
        return target.name
    if claim.over == "compressor" and claim.ratios and claim.metric == "auc":
        figure = plot_ratio([r for r in runs if any(matches(r, member_keys(claim, m, ratio)) for m in claim.members()
                                                    for ratio in claim.ratios)],
                            out, f"{name}.png", lambda r: quality(r, "auc"), "best AUC", "best AUC", "")
        if figure is not None:
            return figure[0]
    return _plot_pairs(claim, runs, out, f"{name}.png")


def _plot_pairs(claim: ReferenceClaim, runs: list[ResultFile], out: Path, name: str) -> str | None:
    """Each seed's metric at every member, one line per seed (what the sign test pairs), one panel per ratio."""
    panels = []
    for ratio in claim.ratios or [None]:
        cells = {m: member_values(claim, runs, member_keys(claim, m, ratio))[0] for m in claim.members()}
        if sum(bool(v) for v in cells.values()) >= 2:
            panels.append((ratio, cells))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.5, 3.8), squeeze=False)
    for ax, (ratio, cells) in zip(axes[0], panels):
        members = [m for m in claim.members() if cells[m]]
        seeds = sorted({s for m in members for s in cells[m]})
        for i, seed in enumerate(seeds):
            ys = [cells[m].get(seed, math.nan) for m in members]
            ax.plot(range(len(members)), [y if math.isfinite(y) else math.nan for y in ys], marker="o",
                    color=f"C{i % 10}", alpha=0.8, label=f"seed {seed}")
        ax.set_xticks(range(len(members)), [str(m) for m in members])
        ax.set_xlabel(claim.over or "")
        ax.set_title(f"{ratio:g}×" if ratio is not None else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(claim.metric)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title(runs, f"{claim.metric} by {claim.over}, per seed"), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / name, dpi=110)
    return name


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def write_reproduce(results: list[ResultFile], tables: list[ReferenceTable], out: Path) -> tuple[Path, list[Finding]]:
    """Write ``reproduce.md`` (and ``reproduce.json``, the plots) into ``out``, each file whole or not at all;
    the markdown path and findings (a user error naming a file the disk refuses)."""
    make_folder(out)
    findings = reproduce(results, tables)
    claims = {(_name(t), " ".join(c.statement.split())): c for t in tables for c in t.claims}
    figures = 0
    for i, f in enumerate(findings):
        claim = claims.get((f.source, f.what))
        if claim is not None and f.verdict is not Outcome.NOT_TESTABLE:
            figure = plot_claim(f, claim, results, out, f"claim_{i:02d}")
            if figure:
                figures += 1
                findings[i] = replace(f, figure=figure)
    counts = {o: sum(f.verdict is o for f in findings) for o in Outcome}
    suites = ", ".join(sorted({r.suite for r in results}))
    seeds = ", ".join(f"{s}: {n}" for s, n in sorted(_seed_counts(results).items()))
    lines = [
        f"# dlrs-bench reproduce: {suites}\n",
        f"{len(results)} result(s) of {suites} (seeds per scenario: {seeds}) on {held_datasets(results)}, against "
        f"{sum(len(t.rows) for t in tables)} published rows and {sum(len(t.claims) for t in tables)} claims of "
        f"{len(tables)} reference table(s): " + ", ".join(f"{n} {o.value}" for o, n in counts.items()) + ".\n",
        "How it judges: a published number only on runs of its scenario on its data (same data set and row count, "
        "whole training split), the 95% t-interval of the seed mean against the published value ± tolerance or "
        "range (inside → reproduced, disjoint → not reproduced, else inconclusive; one seed gives no interval). A "
        "claim (an ordering, a comparison, a flat curve, a phase) is split into paired comparisons, the runs of one "
        f"seed forming a pair, each judged by the exact one-sided sign test over seeds at α = {ALPHA:g}: it holds "
        f"when P(Binomial(n, ½) ≥ wins) < {ALPHA:g} (ties count against it), which needs at least {MIN_SEEDS} "
        "seeds all agreeing; it is reversed when the test finds the opposite at α/m (m comparisons, Bonferroni). "
        "The claim is reproduced when every comparison holds, not reproduced when one is reversed, inconclusive "
        "otherwise. Fitted quantities (β, a phase) are fitted per seed.\n",
        "| source | kind | claim or published number | data checked | verdict | why | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for rows in _grouped(findings):
        f = rows[0]
        what = f.what if len(rows) == 1 else f"{len(rows)} rows, e.g. {f.what}"
        lines.append(f"| {f.source} | {f.kind} | {_cell(what)} | {f.dataset or '–'} | **{f.verdict.value}** | "
                     f"{_cell(f.reason)} | {_cell(f.test)} |")
    details = [f for f in findings if f.parts and any(p.tested for p in f.parts)]
    for f in details:
        lines += ["", f"## {f.source}: {f.what}", "", f"On {f.dataset}: **{f.verdict.value}** — {f.reason}.", "",
                  "| comparison | seeds | as claimed | against | p (holds) | p (reversed) | mean difference |",
                  "|---|---|---|---|---|---|---|"]
        for p in f.parts:
            if p.tested:
                diff = "–" if p.mean_difference is None else f"{p.mean_difference:+.4g}"
                lines.append(f"| {_cell(p.what)} | {p.seeds} | {p.wins} | {p.losses} | {_p(p.p_holds)} | "
                             f"{_p(p.p_reversed)} | {diff} |")
            else:
                lines.append(f"| {_cell(p.what)} | – | – | – | – | – | not testable: {_cell(p.untestable)} |")
        if f.figure:
            lines += ["", f"![{f.what}]({f.figure})"]
    path = write_atomic(out / "reproduce.md", "\n".join(lines) + "\n")
    write_atomic(out / "reproduce.json", json.dumps([f.to_json() for f in findings], indent=1))
    return path, findings


def _seed_counts(results: list[ResultFile]) -> dict[str, int]:
    """Per suite, the most seeds any of its scenarios has."""
    counts: dict[str, int] = defaultdict(int)
    for (suite, _), runs in group(results).items():
        counts[suite] = max(counts[suite], len({r.seed for r in runs}))
    return counts


def _grouped(findings: list[Finding]) -> list[list[Finding]]:
    """Findings in order, the rows of one table with the same verdict and reason merged into the first."""
    out: dict[tuple[str, ...], list[Finding]] = {}
    for i, f in enumerate(findings):
        key = (f.source, f.verdict.value, f.reason) if f.kind == "row" else (str(i),)
        out.setdefault(key, []).append(f)
    return list(out.values())
