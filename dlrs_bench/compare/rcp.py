"""``compare --rcp``: convergence against MLPerf's reference convergence points (RCPs).

MLPerf Training accepts a submission's runs only if they do not converge significantly faster than
the reference: the olympic mean of their epochs to target (fastest and slowest run dropped) must not
lie below the fewest epochs a one-sided t-test (α 0.05) still accepts against the RCP of their global
batch size, interpolated between neighbouring RCPs. This module does what mlperf_logging's
``rcp_checker`` (4.1.68, ruleset 6.0.0) does, on dlrs-bench result files, with the RCPs of
``dlrm_dcnv2`` stored in ``reference_results/mlperf/`` (provenance inside the file):

- RCP statistics: olympic mean of the reference runs' epochs, population standard deviation (numpy's
  ``std``) of all of them; the RCP set is pruned as the checker prunes it (points with a smaller batch
  than the fastest-converging one, and points slower than the interpolation of their neighbours);
- between two RCPs the mean and standard deviation are interpolated linearly in the batch size;
- the fewest accepted epochs come from the checker's binary search over the pooled two-sample t-test
  (``scipy.stats.ttest_ind_from_stats``, equal variances, the RCP's deviation on both sides), with the
  number of runs actually given (MLPerf's package assumes its 10);
- one run that missed the target counts as infinitely slow (the olympic mean drops it); two or more,
  fewer than 3 runs, another model, dataset, target or evaluation cadence: ``NOT_COMPARABLE``, with why.

Verdicts: ``PASS`` (no faster than the reference allows), ``FASTER`` (converges faster than the
reference: MLPerf would reject the runs; exit 1), ``NOT_COMPARABLE``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlrs_bench.errors import UserInputError

#: The stored RCPs of MLPerf DLRM-DCNv2 (ruleset 6.0.0), with their provenance.
RCP_FILE = Path(__file__).resolve().parent.parent.parent / "reference_results" / "mlperf" / \
    "rcps_dlrm_dcnv2_training_6.0.0.json"
#: Closed rules (dlrs_bench.measure.mllog.CLOSED_RULES) a result must keep to be compared with the
#: RCPs: same data, model, optimizer, budget, evaluation cadence and target. The multi-hot source and
#: the optimizer's fixed constants are the event log's business (they are not in result files).
RCP_RULES = ("data.dataset", "data.train_samples", "data.eval_samples", "data.tables", "model.reference",
             "model.compressor", "opt_name", "train.max_epochs", "eval.cadence", "eval.target")
#: Fewest runs an olympic mean (one dropped at each end) can be taken of.
MIN_RUNS = 3


class RcpRecord(BaseModel):
    """One reference convergence point as mlperf_logging stores it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    benchmark: str = Field(alias="Benchmark")
    batch_size: int = Field(alias="BS", gt=0)
    hyperparams: dict[str, Any] = Field(alias="Hyperparams")
    epochs: list[float] = Field(alias="Epochs to converge", min_length=3)


class RcpSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str
    version: str
    file: str
    sha256: str
    url: str
    repository: str


class RcpFile(BaseModel):
    """``reference_results/mlperf/rcps_<benchmark>_training_<ruleset>.json``."""

    model_config = ConfigDict(extra="forbid")

    source: RcpSource
    ruleset: str
    benchmark: str
    notes: str
    submission_runs: int = Field(gt=2)
    alpha: float = Field(gt=0, lt=1)
    tolerance: float = Field(gt=0)
    rcps: dict[str, RcpRecord] = Field(min_length=1)


@dataclass(frozen=True)
class RcpPoint:
    """An RCP at one global batch size: epochs to target, mean (olympic) and standard deviation."""

    batch_size: int
    mean: float
    stdev: float
    reference_runs: int  # runs behind the mean (after the olympic cut), for the t-test
    name: str  # the record's name, or "interpolated between A and B"


def load_rcps(path: Path = RCP_FILE) -> RcpFile:
    """The RCP file at ``path``; a bad file is a :class:`UserInputError` naming the file and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise UserInputError(f"{path}: not JSON: {e}") from None
    try:
        rcps = RcpFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise UserInputError(f"{path}: {'.'.join(map(str, err['loc'])) or '(file)'}: {err['msg']}") from None
    wrong = sorted({r.benchmark for r in rcps.rcps.values()} - {rcps.benchmark})
    if wrong:
        raise UserInputError(f"{path}: rcps: records of {', '.join(wrong)} in a file of {rcps.benchmark!r}")
    return rcps


def olympic_mean(values: list[float]) -> float:
    """Mean without the smallest and the largest value (needs at least 3 values)."""
    ordered = sorted(values)
    return float(np.mean(ordered[1:-1]))


def one_sided_p(mean: float, stdev: float, runs: int, ref_mean: float, ref_stdev: float, ref_runs: int) -> float:
    """p of "these runs converge faster than the reference" being due to chance, as mlperf_logging's
    ``_find_p_value``: a pooled two-sample t-test from statistics, made one-sided."""
    t_stat, p_two = scipy.stats.ttest_ind_from_stats(mean, stdev, runs, ref_mean, ref_stdev, ref_runs, equal_var=True)
    return float(p_two / 2 if t_stat < 0 else 1 - p_two / 2)


class Rcps:
    """The RCPs of one benchmark with the checker's statistics, pruning and interpolation."""

    def __init__(self, rcp_file: RcpFile) -> None:
        self.file = rcp_file
        self.points = sorted((RcpPoint(r.batch_size, olympic_mean(r.epochs), float(np.std(r.epochs)),
                                       len(r.epochs) - 2, name) for name, r in rcp_file.rcps.items()),
                             key=lambda p: p.batch_size)
        self.pruned = self._prune()

    def _prune(self) -> list[RcpPoint]:
        """The checker's ``_prune_rcps``: drop points with a smaller batch than the fastest-converging
        one, then every point slower than the interpolation of its two neighbours."""
        fastest = min(self.points, key=lambda p: p.mean)
        kept = [p for p in self.points if p.batch_size >= fastest.batch_size]
        i = 1
        while i < len(kept) - 1:
            if kept[i].mean > self._between(kept[i].batch_size, kept[i - 1], kept[i + 1]).mean:
                del kept[i]
                i -= 1
            i += 1
        return kept

    def _between(self, batch_size: int, low: RcpPoint, high: RcpPoint) -> RcpPoint:
        """The checker's ``_create_interp_rcp``: mean and deviation linear in the batch size; its t-test
        takes twice the submission runs as the reference count."""
        mean = float(np.interp(batch_size, [low.batch_size, high.batch_size], [low.mean, high.mean]))
        stdev = float(np.interp(batch_size, [low.batch_size, high.batch_size], [low.stdev, high.stdev]))
        return RcpPoint(batch_size, mean, stdev, 2 * self.file.submission_runs,
                        f"interpolated between {low.batch_size:,} and {high.batch_size:,}")

    def at(self, batch_size: int) -> tuple[RcpPoint | None, str]:
        """The RCP for ``batch_size`` among the pruned points (found, interpolated, or the smallest when
        ``batch_size`` is below every RCP), or None with why."""
        for point in self.pruned:
            if point.batch_size == batch_size:
                return point, "RCP found"
        below = [p for p in self.pruned if p.batch_size < batch_size]
        above = [p for p in self.pruned if p.batch_size > batch_size]
        if below and above:
            return self._between(batch_size, below[-1], above[0]), "RCP interpolated"
        if above:
            return above[0], f"below every RCP: the smallest ({above[0].batch_size:,}) is the reference"
        return None, (f"no RCP at or above global batch {batch_size:,} (the largest is {below[-1].batch_size:,}); "
                      "MLPerf asks for a new RCP")

    def min_epochs(self, point: RcpPoint, runs: int) -> float:
        """The fewest epochs (olympic mean of ``runs`` runs) the one-sided t-test at α still accepts:
        the checker's binary search ``_find_min_acceptable_mean``, with ``runs - 2`` runs behind the mean."""
        if point.stdev == 0:
            return point.mean
        low, high = 0.0, point.mean
        mid = (low + high) / 2
        while high - low > self.file.tolerance:
            # as the checker: the candidate mean with the reference's count, the reference with the runs'
            p = one_sided_p(mid, point.stdev, point.reference_runs, point.mean, point.stdev, runs - 2)
            if p > self.file.alpha:
                high = mid
            else:
                low = mid
            mid = (low + high) / 2
        return mid


@dataclass
class RcpComparison:
    """The verdict on the runs (seeds) of one scenario against the RCPs."""

    scenario_id: str
    label: str
    verdict: str  # PASS | FASTER | NOT_COMPARABLE
    reason: str
    runs: int
    converged: int
    batch_size: int | None = None
    epochs: list[float] | None = None  # epochs to target per run (inf: not reached)
    mean_epochs: float | None = None  # olympic mean
    rcp_mean: float | None = None
    rcp_stdev: float | None = None
    rcp_source: str | None = None
    min_epochs: float | None = None  # fewest accepted
    p_value: float | None = None  # one-sided, "faster than the reference"
    score_scale: float | None = None  # MLPerf's normalisation of a faster-than-mean but accepted score

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epochs"] = None if self.epochs is None else [e if math.isfinite(e) else None for e in self.epochs]
        return out


def compare_with_rcps(results: list[Any], rcps: Rcps) -> list[RcpComparison]:
    """One :class:`RcpComparison` per scenario among ``results`` (ResultFile objects), in first-seen order."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        groups[r.scenario_id].append(r)
    return [_compare_group(runs, rcps) for runs in groups.values()]


def _compare_group(runs: list[Any], rcps: Rcps) -> RcpComparison:
    from dlrs_bench.results.collect import label

    first = runs[0]
    converged = [r for r in runs if r.status == "reached"]
    base = RcpComparison(first.scenario_id, label(first), "NOT_COMPARABLE", "", len(runs), len(converged))
    broken = _rules_broken(first)
    if broken:
        base.reason = "not the MLPerf configuration: " + "; ".join(broken)
        return base
    if len(runs) < MIN_RUNS:
        base.reason = (f"{len(runs)} run(s): an olympic mean needs at least {MIN_RUNS} "
                       f"(MLPerf submits {rcps.file.submission_runs})")
        return base
    if len(runs) - len(converged) > 1:
        base.reason = (f"{len(runs) - len(converged)} of {len(runs)} runs did not reach the target "
                       "(MLPerf allows one)")
        return base
    base.batch_size = batch = int(first.scenario["train"]["batch_size"])
    point, how = rcps.at(batch)
    if point is None:
        base.reason = how
        return base
    epochs = [round(float(r.target.epochs_to_target), 3) if r.status == "reached" and r.target is not None
              and r.target.epochs_to_target is not None else math.inf for r in runs]
    mean = olympic_mean(epochs)
    minimum = rcps.min_epochs(point, len(runs))
    p = one_sided_p(mean, point.stdev, len(runs) - 2, point.mean, point.stdev, point.reference_runs)
    base.epochs, base.mean_epochs, base.min_epochs, base.p_value = epochs, mean, minimum, p
    base.rcp_mean, base.rcp_stdev, base.rcp_source = point.mean, point.stdev, point.name
    note = "" if len(runs) == rcps.file.submission_runs else f"; {len(runs)} runs (MLPerf submits " \
        f"{rcps.file.submission_runs}), the test sized for them"
    if mean >= minimum:
        base.verdict = "PASS"
        if mean < point.mean:
            base.score_scale = point.mean / mean
            base.reason = (f"{how}; faster than the RCP mean but within its spread: MLPerf scales the time "
                           f"by {base.score_scale:.3f}{note}")
        else:
            base.reason = f"{how}; no faster than the reference{note}"
        return base
    base.verdict = "FASTER"
    base.reason = (f"{how}; converges faster than the reference: olympic mean {mean:.3f} epochs < {minimum:.3f}, "
                   f"the fewest a one-sided t-test (α {rcps.file.alpha}) accepts against "
                   f"{point.mean:.3f} ± {point.stdev:.3f}{note}")
    return base


def _rules_broken(result: Any) -> list[str]:
    """The :data:`RCP_RULES` that ``result``'s scenario and data break (from the result file alone)."""
    from dlrs_bench.config.schema import validate_scenario
    from dlrs_bench.measure.mllog import CLOSED_RULES, RunFacts

    spec, errors = validate_scenario(result.scenario)  # the resolved spec as the run had it
    if spec is None:
        return [f"its scenario no longer validates ({errors[0][1]})"]
    dataset = (result.model_extra or {}).get("dataset")
    dataset = dataset if isinstance(dataset, dict) else {}
    rows = dataset.get("rows") or {}
    steps = math.ceil(int(rows.get("train", 0)) / spec.train.batch_size)
    facts = RunFacts(spec=spec, dataset=spec.dataset.name, train_rows=int(rows.get("train", 0)),
                     eval_rows=int(rows.get(spec.train.eval_split, 0)),
                     cardinalities=list((dataset.get("features") or {}).values()), stored_bags=[],
                     synthesised_bags=None, hyperparameters={},
                     eval_interval_steps=max(1, round(spec.train.eval_every * steps)))
    return [f"{rule.name}: {why}" for rule in CLOSED_RULES["dlrm_dcnv2"]
            if rule.name in RCP_RULES and (why := rule.check(facts)) is not None]


def rcp_table(comparisons: list[RcpComparison], rcps: Rcps) -> Any:
    """A rich table of ``comparisons`` (title: the RCPs' provenance)."""
    from rich.table import Table
    from rich.text import Text

    source = rcps.file.source
    table = Table(title=Text(f"compare with MLPerf {rcps.file.benchmark} RCPs (training {rcps.file.ruleset}; "
                             f"{source.package} {source.version})"))
    for column in ("scenario", "verdict", "runs reached", "batch", "epochs (olympic)", "RCP epochs", "min accepted",
                   "p (faster)", "reason"):
        table.add_column(column)
    styles = {"PASS": "green", "NOT_COMPARABLE": "yellow"}
    for c in comparisons:
        table.add_row(
            c.label, Text(c.verdict, style=styles.get(c.verdict, "red")), f"{c.converged}/{c.runs}",
            f"{c.batch_size:,}" if c.batch_size else "–",
            f"{c.mean_epochs:.3f}" if c.mean_epochs is not None and math.isfinite(c.mean_epochs) else "–",
            f"{c.rcp_mean:.3f} ± {c.rcp_stdev:.3f}" if c.rcp_mean is not None else "–",
            f"{c.min_epochs:.3f}" if c.min_epochs is not None else "–",
            f"{c.p_value:.3f}" if c.p_value is not None else "–", c.reason)
    return table
