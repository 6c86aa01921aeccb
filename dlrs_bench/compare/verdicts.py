"""Comparing results with a baseline: seed aggregation and one verdict per scenario and metric.

Quality metrics are judged (``auc``: higher is better; ``ne``, ``logloss``: lower is better, on each
run's best evaluation). With at least two seeds on both sides the change is tested with Welch's
t-test: not significant (p ≥ 0.05) → NOISE. Otherwise the change is compared with the metric's
tolerance: within it → PASS, better → IMPROVED, worse → REGRESSED. A failed current run → FAILED;
no baseline, a failed baseline or a missing metric → NOT_COMPARABLE with the reason. Time metrics are
never judged (machines differ); they are reported as ratios current / baseline.

Against published reference rows the same verdicts apply, but only to runs on the data the row was
measured on: a run on a subset of its training split, or on a dataset with another row count than the
table's ``dataset_sizes`` states, is NOT_COMPARABLE, naming both row counts (:func:`data_mismatch`).

Fitted quantities (a scaling exponent, a phase) are compared with a published value or range only through
their 95% interval (:func:`interval_verdict`): the reusable :class:`Verdict` is AGREES, DIFFERS or
INCONCLUSIVE.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, NamedTuple

from scipy import stats

from dlrs_bench.results.collect import cache_identity, label, number, spec_section
from dlrs_bench.results.schema import ResultFile

#: Quality metrics: (higher is better, default tolerance as an absolute difference).
QUALITY: dict[str, tuple[bool, float]] = {"auc": (True, 0.002), "ne": (False, 0.004), "logloss": (False, 0.003)}
#: The retrieval task's judged metrics, likewise (an absolute 0.002, as AUC's).
RETRIEVAL_QUALITY: dict[str, tuple[bool, float]] = {"ndcg@10": (True, 0.002), "hr@10": (True, 0.002),
                                                    "mrr": (True, 0.002)}
#: Every judged metric's rule.
RULES = {**QUALITY, **RETRIEVAL_QUALITY}


def judged_metrics(run: ResultFile) -> tuple[str, ...]:
    """The metrics ``compare`` judges for ``run``'s task: best AUC and NE (ctr) or best NDCG@10, HR@10 and MRR
    (retrieval)."""
    dataset = (run.model_extra or {}).get("dataset")
    task = dataset.get("task") if isinstance(dataset, dict) else None
    return tuple(RETRIEVAL_QUALITY) if task == "retrieval" else ("auc", "ne")
VERDICTS = ("PASS", "IMPROVED", "REGRESSED", "NOISE", "FAILED", "NOT_COMPARABLE")
ALPHA = 0.05


@dataclass(frozen=True)
class Aggregate:
    """Seed statistics of one metric: mean, standard deviation, olympic mean (min and max dropped
    when there are at least 3 seeds, as MLPerf scores), and the values."""

    mean: float
    std: float
    olympic_mean: float
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Aggregate:
        ordered = sorted(values)
        olympic = ordered[1:-1] if len(ordered) >= 3 else ordered
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, statistics.fmean(olympic), values)


@dataclass(frozen=True)
class Comparison:
    suite: str
    scenario_id: str
    label: str
    metric: str
    verdict: str
    current: Aggregate | None
    baseline: Aggregate | None
    delta: float | None  # current mean - baseline mean
    p_value: float | None
    reason: str
    time_ratios: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quality(result: ResultFile, metric: str) -> float | None:
    """``metric`` of the best evaluation (of the final one without a best); None when it is missing
    (null, or NaN in a file written before strict JSON)."""
    best = result.best_metrics or result.metrics
    return number(getattr(best, metric, None)) if best is not None else None


def group(results: list[ResultFile]) -> dict[tuple[str, str], list[ResultFile]]:
    """Results by (suite, scenario_id)."""
    groups: dict[tuple[str, str], list[ResultFile]] = defaultdict(list)
    for r in results:
        groups[(r.suite, r.scenario_id)].append(r)
    return groups


def compare_with_baseline(current: list[ResultFile], baseline: list[ResultFile],
                          metrics: tuple[str, ...] | None = None,
                          tolerances: dict[str, float] | None = None) -> list[Comparison]:
    """One comparison per (scenario of ``current``, metric); ``metrics`` default: those of each scenario's
    task (:func:`judged_metrics`)."""
    base_groups = group(baseline)
    out = []
    for key, runs in sorted(group(current).items()):
        times = _time_ratios(runs, base_groups.get(key, []))
        for metric in metrics or judged_metrics(runs[0]):
            out.append(_judge(key, label(runs[0]), metric, runs, base_groups.get(key, []), times,
                              (tolerances or {}).get(metric, RULES[metric][1])))
    return out


#: Statuses whose metrics cannot be judged: the run raised, or it diverged (non-finite loss or predictions).
UNUSABLE = ("failed", "diverged")


def _why(run: ResultFile) -> str:
    """``<seed>: <error type>`` of a failed run, ``<seed>: diverged at step N`` of a diverged one."""
    if run.status == "diverged":
        diverged = (run.model_extra or {}).get("diverged")
        step = diverged.get("step") if isinstance(diverged, dict) else None
        return f"{run.seed}: diverged" + (f" at step {step}" if step is not None else "")
    return f"{run.seed}: {run.error.type if run.error else 'failed'}"


def _judge(key: tuple[str, str], label: str, metric: str, runs: list[ResultFile], base: list[ResultFile],
           times: dict[str, float], tolerance: float) -> Comparison:
    def verdict(v: str, reason: str, cur=None, ref=None, delta=None, p=None) -> Comparison:
        return Comparison(key[0], key[1], label, metric, v, cur, ref, delta, p, reason, times)

    if any(r.status in UNUSABLE for r in runs):
        return verdict("FAILED", f"seed {_why(next(r for r in runs if r.status in UNUSABLE))}")
    if not base:
        return verdict("NOT_COMPARABLE", "no baseline result for this scenario id")
    if any(r.status in UNUSABLE for r in base):
        return verdict("NOT_COMPARABLE", f"the baseline run {next(r.status for r in base if r.status in UNUSABLE)}")
    other_data = data_changed(runs, base)
    if other_data:
        return verdict("NOT_COMPARABLE", other_data)
    cur_values = [quality(r, metric) for r in runs]
    base_values = [quality(r, metric) for r in base]
    if None in cur_values or None in base_values:
        return verdict("NOT_COMPARABLE", f"{metric} missing")
    cur, ref = Aggregate.of(cur_values), Aggregate.of(base_values)
    delta = cur.mean - ref.mean
    better = delta if RULES[metric][0] else -delta
    p_value = None
    if len(cur_values) >= 2 and len(base_values) >= 2 and (cur.std > 0 or ref.std > 0):
        p_value = float(stats.ttest_ind(cur_values, base_values, equal_var=False).pvalue)
        if p_value >= ALPHA:
            return verdict("NOISE", f"Welch t-test p = {p_value:.3f} ≥ {ALPHA}", cur, ref, delta, p_value)
    if abs(delta) <= tolerance:
        return verdict("PASS", f"|Δ| ≤ tolerance {tolerance:g}", cur, ref, delta, p_value)
    word = "IMPROVED" if better > 0 else "REGRESSED"
    return verdict(word, f"Δ {delta:+.4f} beyond tolerance {tolerance:g}", cur, ref, delta, p_value)


def data_changed(runs: list[ResultFile], base: list[ResultFile]) -> str | None:
    """Why ``runs`` and ``base`` were trained on different data (None when they were, or cannot tell): their
    dataset caches have different identities, e.g. a cache prepared again at the same path with other rows."""
    current = {cache_identity((r.model_extra or {}).get("dataset")) for r in runs} - {None}
    baseline = {cache_identity((r.model_extra or {}).get("dataset")) for r in base} - {None}
    if not current or not baseline or current == baseline:
        return None
    return (f"trained on other data: dataset cache {', '.join(sorted(current))} here, {', '.join(sorted(baseline))} "
            "in the baseline (the data at the dataset's path changed)")


def _time_ratios(runs: list[ResultFile], base: list[ResultFile]) -> dict[str, float]:
    """current / baseline of mean iter p50 and time to target, where both exist."""
    def mean(values: list[float | None]) -> float | None:
        known = [number(v) for v in values if number(v) is not None]
        return statistics.fmean(known) if known and len(known) == len(values) else None

    pairs = {
        "iter_p50_ms": ([r.timing.iter_ms.p50 if r.timing else None for r in runs],
                        [r.timing.iter_ms.p50 if r.timing else None for r in base]),
        "time_to_target_s": ([r.target.time_to_target_s if r.target else None for r in runs],
                             [r.target.time_to_target_s if r.target else None for r in base]),
    }
    ratios = {}
    for name, (cur, ref) in pairs.items():
        c, b = mean(cur), mean(ref) if ref else None
        if c is not None and b:
            ratios[name] = c / b
    return ratios


#: Published model names that are a dlrs-bench model with an option set: name → (model, has the option).
MODEL_VARIANTS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "autoint+": ("autoint", lambda model: bool(model.get("dnn"))),  # AutoInt+ (BARS): AutoInt with a DNN
}


def model_key(model: dict[str, Any]) -> str | None:
    """The match key of a scenario's model section: its name, or the published variant it is."""
    for key, (name, has_option) in MODEL_VARIANTS.items():
        if model.get("name") == name and has_option(model):
            return key
    return model.get("name")


def scenario_keys(result: ResultFile) -> dict[str, Any]:
    """The reference-table match keys of a result's scenario."""
    compressor, model, train = (spec_section(result, k) for k in ("compressor", "model", "train"))
    ratio = compressor.get("ratio", 1.0 if "kind" in compressor else None)
    keys = {
        "dataset": spec_section(result, "dataset").get("name"),
        "model": model_key(model),
        "compressor": compressor.get("kind"),
        "ratio": number(ratio),
        "dim": model.get("embedding_dim"),
        "chunk": compressor.get("chunk"),
        "gradient": compressor.get("gradient"),
        "fusion": compressor.get("fusion"),
        "split": train.get("eval_split"),
        "batch_size": train.get("batch_size"),
        "gpus": result.scenario.get("gpus") or None,
    }
    return {k: v for k, v in keys.items() if v is not None}


def compare_with_reference(current: list[ResultFile], tables: list[Any]) -> list[Comparison]:
    """Quality verdicts of ``current`` against published rows (``auc``, ``ne``, ``logloss``) whose
    every match key equals the scenario's; a scenario no row matches is NOT_COMPARABLE."""
    out = []
    for key, runs in sorted(group(current).items()):
        keys = scenario_keys(runs[0])
        matched = [(t, row) for t in tables for row in t.rows
                   if row.metric in QUALITY and all(keys.get(k) == v for k, v in row.keys().items())]
        if not matched:
            wanted = ", ".join(f"{k}={keys.get(k, '?')}" for k in ("dataset", "model", "compressor", "ratio"))
            out.append(Comparison(key[0], key[1], label(runs[0]), "-", "NOT_COMPARABLE", None, None, None, None,
                                  f"no published row for {wanted}", {}))
            continue
        for table, row in matched:
            mismatch = None if any(r.status in UNUSABLE for r in runs) else data_mismatch(runs, table, row.dataset)
            if mismatch:
                out.append(Comparison(key[0], key[1], label(runs[0]), row.metric, "NOT_COMPARABLE", None, None, None,
                                      None, f"{_where(table)}: {mismatch}", {}))
            else:
                out.append(_judge_reference(key, label(runs[0]), runs, table, row))
    return out


@dataclass(frozen=True)
class DataRows:
    """The rows a run was measured on (from its result's ``dataset`` section)."""

    total: int | None  # rows of the whole dataset, all splits (``dataset.cache.rows``, else the splits' sum)
    train: int | None  # training rows it used
    train_of: int | None  # rows of its full training split (differs from ``train`` for a subset)

    @classmethod
    def of(cls, result: ResultFile) -> DataRows:
        dataset = (result.model_extra or {}).get("dataset")
        dataset = dataset if isinstance(dataset, dict) else {}
        splits = dataset.get("rows") if isinstance(dataset.get("rows"), dict) else {}
        subset = dataset.get("subset") if isinstance(dataset.get("subset"), dict) else {}
        cache = dataset.get("cache") if isinstance(dataset.get("cache"), dict) else {}
        train = _count(splits.get("train"))
        train_of = _count(subset.get("of")) if subset else train
        total = _count(cache.get("rows"))
        if total is None and splits and all(_count(v) is not None for v in splits.values()):
            total = sum(splits.values()) - (train or 0) + (train_of or 0)
        spec = spec_section(result, "dataset")
        if not subset and (spec.get("num_samples") is not None or spec.get("fraction") not in (None, 1, 1.0)):
            train_of = None  # a subset was asked for but the result does not say of how many rows
        return cls(total, train, train_of)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def data_mismatch(runs: list[ResultFile], table: Any, dataset: str) -> str | None:
    """Why ``runs`` cannot be compared with ``table``'s numbers on ``dataset`` for the data they were measured on
    (None when they can): the table states no size for the dataset; a run does not record its row counts; it
    trained on a subset of its training split; its dataset has another row count than the published one."""
    size = table.dataset_sizes.get(dataset)
    if size is None:
        return (f"the table states no dataset size for {dataset} (dataset_sizes), so a run on the same data "
                "cannot be told from one on a sample")
    for run in runs:
        rows = DataRows.of(run)
        if rows.total is None:
            return f"seed {run.seed} does not record how many rows its dataset has (dataset.cache.rows, dataset.rows)"
        if rows.train_of is None or rows.train is None:
            return f"seed {run.seed} trained on a subset of unrecorded size; the published row used all the data"
        if rows.train < rows.train_of:
            return (f"seed {run.seed} trained on a subset: {rows.train:,} of its {rows.train_of:,} training rows; "
                    f"the published row used all {size.rows:,} rows of {dataset} ({size.source})")
        if rows.total != size.rows:
            return (f"seed {run.seed} ran on {rows.total:,} rows of {dataset} ({rows.train:,} for training), "
                    f"the published row on {size.rows:,} ({size.source})")
    return None


def _where(table: Any) -> str:
    return f"{table.table} ({table.path.name if table.path else table.source[:30]})"


def _judge_reference(key: tuple[str, str], label: str, runs: list[ResultFile], table: Any, row: Any) -> Comparison:
    where = _where(table)

    def verdict(v: str, reason: str, cur=None, delta=None, p=None) -> Comparison:
        return Comparison(key[0], key[1], label, row.metric, v, cur, None, delta, p, f"{where}: {reason}", {})

    if any(r.status in UNUSABLE for r in runs):
        return verdict("FAILED", f"seed {_why(next(r for r in runs if r.status in UNUSABLE))}")
    values = [quality(r, row.metric) for r in runs]
    if None in values:
        return verdict("NOT_COMPARABLE", f"{row.metric} missing")
    if row.value is None and row.low is None and row.high is None:
        return verdict("NOT_COMPARABLE", "the published row is yes/no, not a number")
    cur = Aggregate.of(values)
    bounds = [b for b in (row.low, row.high) if b is not None]
    reference = row.value if row.value is not None else sum(bounds) / len(bounds)
    delta = cur.mean - reference
    p_value = None
    if len(values) >= 2 and cur.std > 0 and row.value is not None:
        p_value = float(stats.ttest_1samp(values, row.value).pvalue)
        if p_value >= ALPHA:
            reason = f"published {row.value:g}; one-sample t-test p = {p_value:.3f}"
            return verdict("NOISE", reason, cur, delta, p_value)
    if row.accepts(cur.mean):
        return verdict("PASS", f"published {published_text(row)} {row.units}", cur, delta, p_value)
    better = (delta > 0) == QUALITY[row.metric][0]
    return verdict("IMPROVED" if better else "REGRESSED", f"published {published_text(row)} {row.units}",
                   cur, delta, p_value)


def published_text(row: Any) -> str:
    """A published row's value as text: ``0.8031 ± 0.002``, or its range."""
    tol = f" ± {row.tolerance:g}" if row.tolerance else ""
    if row.value is not None:
        return f"{row.value:g}{tol}"
    return f"[{row.low if row.low is not None else '-inf'}, {row.high if row.high is not None else 'inf'}]{tol}"


# -- fitted quantities against published values, through intervals -------------------------------------------


class Verdict(str, Enum):
    """A measured interval against a published value or range."""

    AGREES = "agrees"  # the whole interval lies within the published range (widened by its tolerance)
    DIFFERS = "differs"  # the interval and the published range do not meet
    INCONCLUSIVE = "inconclusive"  # they overlap, but the interval also reaches outside the published range


class Judgement(NamedTuple):
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class IntervalCheck:
    """One fitted quantity against one published row: what was compared, and the verdict with its reason."""

    metric: str
    resource: str
    published: str
    measured: float | str
    interval: tuple[float, float] | None
    verdict: Verdict
    reason: str

    @property
    def agrees(self) -> bool:
        return self.verdict is Verdict.AGREES

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def published_range(row: Any) -> tuple[float, float]:
    """The values a published row accepts: value ± tolerance, or [low − tolerance, high + tolerance] with an
    open end as ∓inf. ValueError for a yes/no row."""
    tol = row.tolerance or 0.0
    if row.value is not None:
        return row.value - tol, row.value + tol
    if row.low is None and row.high is None:
        raise ValueError(f"row for {row.metric} is yes/no (reached), not a number")
    return (row.low - tol if row.low is not None else -math.inf, row.high + tol if row.high is not None else math.inf)


def _range(low: float, high: float) -> str:
    return f"[{low:.4g}, {high:.4g}]"


def interval_verdict(interval: tuple[float, float], published: tuple[float, float], what: str = "the value",
                     uninformative: str | None = None) -> Judgement:
    """The 95% interval of a measured quantity against the published range ``[low, high]`` (both ends
    inclusive; ∓inf for an open end; a point value is ``[v − tol, v + tol]``):

    - DIFFERS when they do not meet (the interval excludes every published value);
    - AGREES when the interval lies wholly inside the published range: every value the measurement allows is
      a published one. A point value without tolerance can therefore only be contradicted, never confirmed;
    - INCONCLUSIVE otherwise: the interval reaches past the published range (too wide to tell, or only
      partly inside). ``uninformative``, a note on why the interval says little, is added to the reason.
    """
    low, high = interval
    p_low, p_high = published
    shown = f"95% interval of {what} {_range(low, high)}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return Judgement(Verdict.INCONCLUSIVE, f"no interval of {what} (too few bootstrap fits)")
    if high < p_low or low > p_high:
        return Judgement(Verdict.DIFFERS, f"{shown} excludes the published {_range(p_low, p_high)}")
    if p_low <= low and high <= p_high:
        return Judgement(Verdict.AGREES, f"{shown} lies inside the published {_range(p_low, p_high)}")
    how = "covers the published" if low <= p_low and high >= p_high else "overlaps only part of the published"
    note = f"; the interval is uninformative ({uninformative})" if uninformative else ""
    return Judgement(Verdict.INCONCLUSIVE, f"{shown} {how} {_range(p_low, p_high)}{note}")
