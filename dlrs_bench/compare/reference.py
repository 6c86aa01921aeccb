"""Published reference tables (``reference_results/*.yaml``) as Pydantic models, and their loader.

A file holds one published table: its provenance (``source``, ``table``, ``url``, ``notes``,
``hardware``), the ``dataset`` it was measured on, and

- ``rows``: one published number each. Match keys (``model``, ``compressor``, ``ratio``, ``dim``,
  ``rows``, ``chunk``, ...) say which scenario it describes; a key left out matches anything.
  The measurement is a ``value`` (with an optional absolute ``tolerance``), a range
  ``low``..``high``, or ``reached`` (a yes/no fact: a target was reached, a curve saturated).
- ``claims``: qualitative findings in a checkable form: ``ordering`` (tiers of the compared key,
  best first; members of one tier are close), ``comparison`` (``better`` beats each of ``worse``),
  ``flat`` (each of ``others`` is at most ``tolerance`` worse than ``reference``) or ``phase`` (a scaling
  fit along ``where.resource`` is saturated or not). ``dlrs-bench reproduce`` judges them across seeds.

Every model forbids unknown keys; :func:`load_reference` reports problems as ``file:line: field:
message`` through :class:`~dlrs_bench.errors.UserInputError`. The format is documented in
``reference_results/README.md``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dlrs_bench.config.yaml_lines import line_of, load_yaml
from dlrs_bench.errors import UserInputError

Direction = Literal["higher", "lower"] | None

#: Known metrics and which way is better (``None``: a fitted or descriptive quantity, not ordered).
METRICS: dict[str, Direction] = {
    "auc": "higher",
    "logloss": "lower",
    "ne": "lower",
    "epochs_to_target": "lower",
    "time_to_target_s": "lower",
    "time_per_1000_iters_s": "lower",
    "iter_ms": "lower",
    "forward_ms": "lower",
    "backward_ms": "lower",
    "relative_time": "lower",
    "inference_time_s": "lower",
    "samples_per_s": "higher",
    "alpha": None,
    "beta": "higher",  # a larger exponent decays faster: better scaling
    "gamma": "lower",  # the loss floor at infinite scale
    "r2": "higher",
    "saturated": None,
    "knee_dim": None,
}
#: Metrics whose measurement may be ``reached`` (yes/no) instead of a number.
YES_NO_METRICS = frozenset({"epochs_to_target", "time_to_target_s", "saturated"})
#: Metrics that count toward a quality target, so a row must name it (``target``).
TARGET_METRICS = frozenset({"epochs_to_target", "time_to_target_s"})
#: Row fields that describe the scenario (match keys); everything else is the measurement.
MATCH_KEYS = (
    "dataset", "model", "compressor", "ratio", "dim", "rows", "chunk", "gradient",
    "fusion", "scheme", "resource", "split", "batch_size", "gpus",
)  # fmt: skip

Level = str | int  # a value of the compared key in a claim (compressor kind, fusion, chunk size, ...)


class StrictModel(BaseModel):
    """Base of every reference model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_metric(name: str) -> str:
    if name not in METRICS:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown metric {name!r}{hint}; known: {', '.join(METRICS)}")
    return name


class TargetRef(StrictModel):
    """The quality target that ``epochs_to_target`` / ``time_to_target_s`` count toward."""

    metric: Literal["auc", "logloss", "ne"] = "auc"
    value: float


class ReferenceRow(StrictModel):
    """One published number (or range, or yes/no fact) and the scenario it describes."""

    # -- match keys (unset = any) -----------------------------------------------------------
    dataset: str | None = Field(None, description="defaults to the table's dataset")
    model: str | None = None
    compressor: str | None = Field(None, description="compressor kind (none, hashing, qr, robe, ...)")
    ratio: PositiveFloat | None = Field(None, description="compression ratio (1 = uncompressed)")
    dim: PositiveInt | None = Field(None, description="embedding dimension d")
    rows: PositiveInt | None = Field(None, description="table size n (rows)")
    chunk: PositiveInt | None = Field(None, description="ROBE-Z chunk size Z")
    gradient: Literal["dense", "sparse"] | None = None
    fusion: str | None = None
    scheme: str | None = Field(None, description="scaling scheme (seed 003: V, H, O, M)")
    resource: Literal["data", "parameters", "compute"] | None = Field(None, description="x of a scaling fit")
    split: Literal["train", "val", "test"] | None = None
    batch_size: PositiveInt | None = None
    gpus: PositiveInt | None = None
    # -- measurement --------------------------------------------------------------------------
    metric: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    reached: bool | None = None
    units: str = Field(min_length=1)
    tolerance: NonNegativeFloat | None = Field(None, description="absolute; widens value or range")
    target: TargetRef | None = None
    notes: str = ""

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _known_metric(v)

    @model_validator(mode="after")
    def _one_measurement(self) -> ReferenceRow:
        ranged = self.low is not None or self.high is not None
        if self.dataset is None:
            raise ValueError("no dataset: give one in the row or at the top of the file")
        if self.value is not None and ranged:
            raise ValueError("give value or low/high, not both")
        if self.value is None and not ranged and self.reached is None:
            raise ValueError("missing measurement: give value, low/high, or reached")
        if self.reached is not None and self.metric not in YES_NO_METRICS:
            raise ValueError(f"reached is for {', '.join(sorted(YES_NO_METRICS))}, not {self.metric}")
        if self.reached is not None and ranged:
            raise ValueError("reached goes with a value or alone, not with low/high")
        if self.reached is False and self.value is not None:
            raise ValueError("reached: false means there is no value; drop the value")
        if self.metric == "saturated" and (self.value is not None or ranged):
            raise ValueError("saturated is yes/no: use reached: true or false")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.tolerance is not None and self.value is None and not ranged:
            raise ValueError("tolerance needs a value or a range")
        if self.metric in TARGET_METRICS and self.target is None:
            raise ValueError(f"{self.metric} needs the target it counts toward (target: {{metric, value}})")
        return self

    def keys(self) -> dict[str, Any]:
        """The match keys this row sets (unset keys match any scenario)."""
        return {k: getattr(self, k) for k in MATCH_KEYS if getattr(self, k) is not None}

    def accepts(self, measured: float) -> bool:
        """Whether ``measured`` agrees with the published value or range, within ``tolerance``."""
        tol = self.tolerance or 0.0
        if self.value is not None:
            return abs(measured - self.value) <= tol + 1e-12
        if self.low is None and self.high is None:
            raise ValueError(f"row for {self.metric} is yes/no (reached), not a number")
        return (self.low is None or measured >= self.low - tol) and (self.high is None or measured <= self.high + tol)


#: Metrics a claim measures through a scaling fit per seed (``where.resource`` names x).
FIT_METRICS = frozenset({"alpha", "beta", "gamma", "r2", "saturated", "knee_dim"})
#: Metrics a ``phase`` claim may fit (those with a scaling law in :mod:`dlrs_bench.compare.fit`).
PHASE_METRICS = ("ne", "logloss", "auc")

#: Per claim kind: the fields it needs and the fields it takes (besides statement, metric, where, ratios, levels,
#: notes).
CLAIM_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "ordering": ({"over", "order"}, {"over", "order", "tolerance"}),
    "comparison": ({"over", "better", "worse"}, {"over", "better", "worse"}),
    "flat": ({"over", "reference", "others", "tolerance"}, {"over", "reference", "others", "tolerance"}),
    "phase": ({"saturated"}, {"saturated"}),
}


class ReferenceClaim(StrictModel):
    """A qualitative finding, checkable on measurements of ``metric`` at each value of ``over``.

    ``ordering``: ``order`` lists tiers, best first; every member of a tier beats every member of
    the next, and members of one tier are close (within ``tolerance`` when given; no order claimed).
    ``comparison``: ``better`` beats each of ``worse``. ``flat``: each of ``others`` is at most
    ``tolerance`` worse than ``reference`` (better is allowed). ``phase``: the fit of ``metric`` along
    ``where.resource`` is ``saturated`` (doubling x gains < 0.5%) or not (it gains more); no ``over``.
    ``where`` fixes other match keys (``where.dataset`` limits the claim to that data set); with
    ``ratios`` the claim holds separately at each compression ratio listed. ``levels`` adds match keys
    to single members (``{qr: {fusion: mult}}``; ``{none: {ratio: 1}}`` keeps the uncompressed
    reference at 1x while ``ratios`` moves the others).
    """

    kind: Literal["ordering", "comparison", "flat", "phase"]
    statement: str = Field(min_length=1, description="the claim in words, as published")
    metric: str
    over: str | None = Field(None, description="the match key whose values are compared (compressor, fusion, ...)")
    order: list[list[Level]] | None = None
    better: Level | None = None
    worse: list[Level] | None = None
    reference: Level | None = Field(None, description="flat: the member the others are measured against")
    others: list[Level] | None = Field(None, description="flat: the members that stay within tolerance of it")
    saturated: bool | None = Field(None, description="phase: whether the published fit has saturated")
    levels: dict[Level, dict[str, Level | float]] = Field(
        default_factory=dict, description="more match keys for single members, e.g. {qr: {fusion: mult}}")
    where: dict[str, Level | float] = Field(default_factory=dict)
    ratios: list[PositiveFloat] | None = None
    tolerance: NonNegativeFloat | None = None
    notes: str = ""

    @field_validator("metric")
    @classmethod
    def _directional_metric(cls, v: str) -> str:
        _known_metric(v)
        if METRICS[v] is None:
            raise ValueError(f"metric {v!r} has no better direction; a claim needs one (e.g. auc, ne, beta)")
        return v

    @field_validator("over")
    @classmethod
    def _over_is_key(cls, v: str | None) -> str | None:
        if v is not None and v not in MATCH_KEYS:
            raise ValueError(f"must be a match key: {', '.join(MATCH_KEYS)}")
        return v

    @field_validator("where")
    @classmethod
    def _where_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(MATCH_KEYS))
        if unknown:
            raise ValueError(f"unknown match key(s) {', '.join(unknown)}; known: {', '.join(MATCH_KEYS)}")
        return v

    @field_validator("levels")
    @classmethod
    def _level_keys(cls, v: dict[Level, dict[str, Any]]) -> dict[Level, dict[str, Any]]:
        for member, keys in v.items():
            unknown = sorted(set(keys) - set(MATCH_KEYS))
            if unknown:
                raise ValueError(f"{member}: unknown match key(s) {', '.join(unknown)}; known: {', '.join(MATCH_KEYS)}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ReferenceClaim:
        optional = {"over", "order", "better", "worse", "reference", "others", "saturated", "tolerance"}
        given = {f for f in optional if getattr(self, f) not in (None, [])}
        missing = sorted(CLAIM_FIELDS[self.kind][0] - given)
        if missing:
            raise ValueError(f"a {self.kind} claim needs {', '.join(missing)}")
        extra = sorted(given - CLAIM_FIELDS[self.kind][1])
        if extra:
            raise ValueError(f"a {self.kind} claim takes no {', '.join(extra)} "
                             f"(it takes {', '.join(sorted(CLAIM_FIELDS[self.kind][1]))})")
        if self.over is not None and self.over in self.where:
            raise ValueError(f"{self.over!r} is compared (over); it cannot also be fixed in where")
        if self.ratios is not None and ("ratio" in self.where or self.over == "ratio"):
            raise ValueError("give ratios, where.ratio or over: ratio, one of them")
        needs_x = self.kind == "phase" or self.metric in FIT_METRICS
        if needs_x and self.where.get("resource") not in ("data", "parameters", "compute"):
            raise ValueError(f"a {self.kind} claim on {self.metric} is measured by a scaling fit: where.resource "
                             "must say its x (data, parameters or compute)")
        if self.kind == "phase" and self.metric not in PHASE_METRICS:
            raise ValueError(f"a phase claim fits {', '.join(PHASE_METRICS)}, not {self.metric}")
        if self.kind == "ordering" and (len(self.members()) < 2 or any(not tier for tier in self.order or [])):
            raise ValueError("order needs at least two members and no empty tier")
        members = self.members()
        if len(set(members)) != len(members):
            raise ValueError(f"a value is listed twice: {members}")
        strangers = [m for m in self.levels if m not in members]
        if strangers:
            raise ValueError(f"levels names {', '.join(map(str, strangers))}, which the claim does not compare")
        return self

    def members(self) -> list[Level]:
        """Every value of ``over`` the claim mentions (none for a phase)."""
        if self.kind == "ordering":
            return [m for tier in self.order or [] for m in tier]
        if self.kind == "flat":
            return [self.reference, *(self.others or [])]  # type: ignore[list-item]
        if self.kind == "phase":
            return []
        return [self.better, *(self.worse or [])]  # type: ignore[list-item]

    def violations(self, measured: Mapping[Level, float]) -> list[str]:
        """What in ``measured`` (metric per value of ``over``, at one ratio) contradicts the claim."""
        missing = [m for m in self.members() if m not in measured]
        if missing:
            return [f"no measurement for {self.over}={m}" for m in missing]
        sign = 1.0 if METRICS[self.metric] == "higher" else -1.0
        beats = [(self.better, w) for w in self.worse or []]
        tiers = self.order or []
        beats += [(a, b) for upper, lower in zip(tiers, tiers[1:]) for a in upper for b in lower]
        out = [
            f"{self.over}={a} ({measured[a]:.6g}) does not beat {self.over}={b} ({measured[b]:.6g}) on {self.metric}"
            for a, b in beats
            if not sign * (measured[a] - measured[b]) > 0
        ]
        for tier in tiers if self.tolerance is not None else []:
            spread = max(measured[m] for m in tier) - min(measured[m] for m in tier)
            if len(tier) > 1 and spread > self.tolerance + 1e-12:
                out.append(f"{self.over} in {tier} differ by {spread:.6g} > {self.tolerance} on {self.metric}")
        return out


class DatasetSize(StrictModel):
    """How many rows the published numbers were measured on: the whole dataset (all splits together),
    with where that count comes from. A run is compared with a row only when its dataset has as many
    rows and it trained on its whole training split."""

    rows: PositiveInt = Field(description="rows of the whole dataset, all splits together")
    source: str = Field(min_length=1, description="where the count comes from")


class ReferenceTable(StrictModel):
    """One published table (one file): provenance, dataset, hardware, rows and claims."""

    source: str = Field(min_length=1, description="citation: authors, title, venue/year")
    table: str = Field(min_length=1, description="which table or figure of the source, e.g. 'Table 3'")
    url: str | None = None
    notes: str = ""
    dataset: str | None = Field(None, description="default dataset of every row")
    hardware: str | None = None
    dataset_sizes: dict[str, DatasetSize] = Field(
        default_factory=dict, description="dataset name -> its row count; quality rows are compared only with it")
    rows: list[ReferenceRow] = Field(default_factory=list)
    claims: list[ReferenceClaim] = Field(default_factory=list)
    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _rows_inherit_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("dataset"), str) and isinstance(data.get("rows"), list):
            rows = [{"dataset": data["dataset"], **r} if isinstance(r, dict) else r for r in data["rows"]]
            data = {**data, "rows": rows}
        return data

    @field_validator("rows")
    @classmethod
    def _distinct_rows(cls, rows: list[ReferenceRow]) -> list[ReferenceRow]:
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            key = repr((sorted(row.keys().items()), row.metric, row.target))
            if key in seen:
                raise ValueError(f"rows[{i}] repeats rows[{seen[key]}] (same match keys, metric and target)")
            seen[key] = i
        return rows

    @model_validator(mode="after")
    def _not_empty(self) -> ReferenceTable:
        if not self.rows and not self.claims:
            raise ValueError("a reference table needs rows, claims or both")
        return self

    @model_validator(mode="after")
    def _sizes_of_used_datasets(self) -> ReferenceTable:
        unused = sorted(set(self.dataset_sizes) - {r.dataset for r in self.rows})
        if unused:
            raise ValueError(f"dataset_sizes names {', '.join(unused)}, which no row uses")
        return self

    def size_of(self, row: ReferenceRow) -> DatasetSize | None:
        """The row count ``row`` was measured on (None when the table does not state it)."""
        return self.dataset_sizes.get(row.dataset or "")

    @property
    def path(self) -> Path | None:
        """The file this table was loaded from (``None`` when built in code)."""
        return self._path

    def find(self, metric: str | None = None, **keys: Any) -> list[ReferenceRow]:
        """Rows with ``metric`` (any when ``None``) whose match keys equal every given key."""
        return [
            r
            for r in self.rows
            if (metric is None or r.metric == metric) and all(getattr(r, k) == v for k, v in keys.items())
        ]


Loc = tuple[str | int, ...]


def load_reference(path: str | Path) -> ReferenceTable:
    """Load and validate one reference file; raise :class:`UserInputError` with file:line: field."""
    path = Path(path)
    data, lines = load_yaml(path)

    def line(loc: Loc) -> int:
        return line_of(lines, loc)

    if not isinstance(data, dict):
        raise UserInputError(f"{path}:{line(())}: a reference file must be a mapping (source, table, rows, ...)")
    try:
        table = ReferenceTable.model_validate(data)
    except ValidationError as e:
        problems: list[str] = []
        for err in e.errors():
            loc = tuple(err["loc"])
            if err["type"] != "missing":  # drop pydantic's union/validator tags past the document path
                while loc and loc not in lines:
                    loc = loc[:-1]
            problem = f"{path}:{line(loc)}: {_dotted(loc)}: {_message(err)}"
            if problem not in problems:
                problems.append(problem)
        raise UserInputError(problems[0], problems) from None
    table._path = path
    return table


def load_references(path: str | Path) -> list[ReferenceTable]:
    """Every ``*.yaml`` / ``*.yml`` file of a directory (sorted by name), or one file.

    Problems of every file are collected and raised together as one :class:`UserInputError`.
    """
    path = Path(path)
    if path.is_file():
        return [load_reference(path)]
    if not path.is_dir():
        raise UserInputError(f"{path}: no such reference file or directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    if not files:
        raise UserInputError(f"{path}: no reference tables (*.yaml) in this directory")
    tables: list[ReferenceTable] = []
    problems: list[str] = []
    for file in files:
        try:
            tables.append(load_reference(file))
        except UserInputError as e:
            problems.extend(e.lines)
    if problems:
        raise UserInputError(problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)",
                             problems)
    return tables


def _dotted(loc: Loc) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top)"


def _message(err: Any) -> str:
    """A pydantic error as one readable phrase, with the offending input where useful."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return msg
