"""Pydantic models of a suite file and of one resolved scenario.

Every model forbids unknown keys. The dataset, model and compressor blocks are plugin
options: their class is looked up in the registries by ``name`` (``kind`` for compressors)
and validated by that plugin's own options model (see :func:`validate_scenario`).
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    model_validator,
)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, numbers are finite (``.inf`` and
    ``.nan`` would only fail, or loop, once a run starts), instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


#: A seed: torch and numpy take non-negative 64-bit seeds.
Seed = Annotated[int, Field(ge=0, lt=2**63)]


#: Training-order protocols of a dataset (see dlrs_bench.data.order).
Shuffle = Literal["auto", "permutation", "blocks", "none"]
#: DatasetOptions fields that select or order the rows when they are read, not what the rows are.
READ_FIELDS = frozenset({"num_samples", "fraction", "subset_seed", "shuffle", "shuffle_block_rows",
                         "shuffle_window_rows"})


@dataclass(frozen=True)
class DataFacts:
    """What a dataset's options and files tell of its data without reading rows (``None``: only a run can tell)."""

    tables: list[tuple[str, int]] | None = None  # (name, rows) of every table
    train_rows: int | None = None  # rows of the train split, before num_samples / fraction


class DatasetOptions(StrictModel):
    """Options common to every dataset plugin; plugins subclass it.

    ``num_samples`` / ``fraction`` keep a subset of the train split (val and test are untouched):
    the first rows of one fixed permutation (``subset_seed``), so a smaller subset is always
    contained in a larger one (data-scaling sweeps).
    """

    #: The task family of the data (dlrs_bench/engine/task.py): "ctr" or "retrieval".
    task: ClassVar[str] = "ctr"

    name: str
    num_samples: PositiveInt | None = Field(None, description="train rows to keep (nested subsets)")
    fraction: float | None = Field(None, gt=0, le=1, description="fraction of the train rows to keep")
    subset_seed: Seed = 0
    shuffle: Shuffle = Field(
        "auto", description="training order: permutation (a random permutation every epoch), blocks (random "
        "blocks, rows shuffled within a window; bounded memory), none (in order: for a cache shuffled when "
        "prepared), auto (none for a shuffled cache, permutation up to 8M train rows, else blocks)")
    shuffle_block_rows: PositiveInt = Field(4096, description="shuffle 'blocks': consecutive rows per block")
    shuffle_window_rows: PositiveInt = Field(1 << 20, description="shuffle 'blocks': rows permuted together")

    def check_data(self) -> DataFacts:
        """What can be known of the data without reading its rows. Raises ``UserInputError`` naming the
        file when the data cannot be used (missing, damaged, another dataset's) or this machine cannot make
        it. Plugins override it (data/options.py)."""
        return DataFacts()

    def subset_rows(self, train_rows: int) -> int:
        """Rows trained on out of a train split of ``train_rows``: the ``num_samples`` / ``fraction``
        subset (as data/base.py takes it), or all of them."""
        if self.num_samples is not None:
            return self.num_samples
        if self.fraction is not None:
            return max(1, round(self.fraction * train_rows))
        return train_rows

    @model_validator(mode="after")
    def _one_subset_size(self) -> DatasetOptions:
        if self.num_samples is not None and self.fraction is not None:
            raise ValueError("give num_samples or fraction, not both")
        return self


class ScaleSpec(StrictModel):
    """Scaling schemes of the DLRM scaling-law study (seed 003), as multipliers of the base model.

    ``rows`` (V) sizes every table at ``rows`` x its vocabulary and hashes ids into it (universal
    hash, so collisions fall as it grows; unset = one row per id, no hashing); ``dim`` (H)
    multiplies the embedding dimension; ``over_arch`` (O) the widths of the top MLP; ``mlp`` (M)
    the widths of every MLP. Output layers (the logit) are never scaled.
    """

    rows: PositiveFloat | None = None
    dim: PositiveFloat = 1.0
    over_arch: PositiveFloat = 1.0
    mlp: PositiveFloat = 1.0


class ModelOptions(StrictModel):
    """Options common to every model plugin; plugins subclass it."""

    #: The task families the model serves (dlrs_bench/engine/task.py).
    tasks: ClassVar[tuple[str, ...]] = ("ctr",)

    name: str
    embedding_dim: PositiveInt = Field(16, description="embedding dimension d of every table (before scale.dim)")
    scale: ScaleSpec = ScaleSpec()

    @property
    def dim(self) -> int:
        """The embedding dimension after ``scale.dim``."""
        return max(1, round(self.embedding_dim * self.scale.dim))

    def table_width(self) -> int:
        """Floats per id in every embedding table: d, plus what a model keeps beside the embedding
        (a per-id first-order weight: ``first_order: per_id``). Compressors compress the whole row."""
        return self.dim

    def table_width_note(self) -> str:
        """Why tables are wider than d (for messages about the width); empty when they are not."""
        return ""

    def init_scheme(self) -> str:
        """How the embedding tables start (``embedding_init.kind`` of the models that have it)."""
        return "uniform"

    def widths(self, layers: list[int], over_arch: bool = False) -> list[int]:
        """MLP ``layers`` after ``scale.mlp``; with ``over_arch`` (the top MLP, which ends in the
        logit) also after ``scale.over_arch``, its final width 1 kept as is."""
        factor = self.scale.mlp * (self.scale.over_arch if over_arch else 1.0)
        scaled = [max(1, round(w * factor)) for w in layers]
        return scaled[:-1] + [1] if over_arch and layers and layers[-1] == 1 else scaled


class CompressorOptions(StrictModel):
    """Options common to every compressor plugin; plugins subclass it."""

    kind: str = "none"
    threshold: NonNegativeInt = Field(
        0, description="only tables with more rows than this are compressed; the others stay full"
    )
    pooling: Literal["sum", "mean"] = Field("sum", description="how the ids of one bag are pooled")

    def check_dim(self, dim: int) -> None:
        """Raise ``ValueError`` when the method cannot work at embedding dimension ``dim``."""

    def check_init(self, scheme: str) -> None:
        """Raise ``ValueError`` when the method's parameters cannot start from ``model.embedding_init``
        ``scheme`` (dlrs_bench/models/init.py)."""

    def plan(self, tables: Sequence[tuple[str, int]], dim: int) -> list[Any]:
        """What the method allocates for each table [(name, rows)] at dimension ``dim`` (``None``: the
        table stays full), by arithmetic alone; ``ValueError`` naming the table when ``ratio`` is out
        of its reach. Each method's options implement it (dlrs_bench/compression/options.py)."""
        raise NotImplementedError(f"compressor {self.kind!r} has no plan")


def _metric_name(name: str) -> str:
    if name in ("auc", "logloss", "ne") or re.fullmatch(r"(hr|ndcg)@[1-9][0-9]*|mrr", name):
        return name
    raise ValueError(f"unknown metric {name!r}: auc, logloss, ne (ctr); hr@K, ndcg@K, mrr (retrieval; K >= 1)")


#: A metric of an evaluation: auc, logloss, ne (the ctr task); hr@K, ndcg@K, mrr (retrieval).
MetricName = Annotated[str, AfterValidator(_metric_name)]


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better (all but LogLoss and NE)."""
    return metric not in ("logloss", "ne")


def metric_task(metric: str) -> str:
    """The task family whose evaluations report ``metric``."""
    return "ctr" if metric in ("auc", "logloss", "ne") else "retrieval"


class ConstantSchedule(StrictModel):
    """The learning rate stays at ``train.lr``."""

    kind: Literal["constant"] = "constant"


class WarmupSchedule(StrictModel):
    """Linear warm-up from 0: training step s (1 = the first) trains at ``lr * min(s, warmup_steps) /
    warmup_steps`` (MLPerf's convention: the first step trains at lr / warmup_steps, never at 0)."""

    kind: Literal["warmup"]
    warmup_steps: PositiveInt = Field(description="steps to reach train.lr")


class PlateauSchedule(StrictModel):
    """Reduce on plateau as FuxiCTR does: after an evaluation whose ``metric`` does not improve on the
    best so far by at least ``min_delta``, lr = max(lr * factor, min_lr) once ``patience`` such
    evaluations in a row were tolerated (FuxiCTR: patience 0, every one reduces)."""

    kind: Literal["plateau"]
    factor: float = Field(0.1, gt=0, lt=1, description="multiplier of each reduction")
    patience: NonNegativeInt = Field(0, description="evaluations without improvement tolerated before a reduction")
    min_lr: float = Field(1e-6, ge=0, description="floor of the reduced learning rate")
    min_delta: float = Field(1e-6, ge=0, description="smallest change of the metric that counts as improvement")
    metric: MetricName | None = Field(None, description="metric watched (default: target.metric)")


class MLPerfDLRMSchedule(StrictModel):
    """MLPerf DLRM-DCNv2's reference schedule (torchrec_dlrm/lr_scheduler.py LRPolicyScheduler), step s
    (1 = the first): lr * s / warmup_steps while s < warmup_steps; lr * ((decay_steps - (s -
    decay_start_step)) / decay_steps) ** 2, at least 1e-7, while decay_start_step <= s < decay_start_step +
    decay_steps; in between and after, the last rate is kept (train.lr when decay_steps is 0)."""

    kind: Literal["mlperf_dlrm"]
    warmup_steps: NonNegativeInt = Field(0, description="linear warm-up steps (0: none)")
    decay_start_step: NonNegativeInt = Field(0, description="step where the polynomial decay starts")
    decay_steps: NonNegativeInt = Field(0, description="steps of the decay (0: none)")

    @model_validator(mode="after")
    def _decay_after_warmup(self) -> MLPerfDLRMSchedule:
        if self.decay_start_step < self.warmup_steps:
            raise ValueError(f"decay_start_step {self.decay_start_step} is before the end of the warm-up "
                             f"({self.warmup_steps} steps); the warm-up must finish before the decay starts")
        return self


#: A learning-rate schedule, chosen by ``kind`` (dlrs_bench/engine/schedules.py runs each).
LrSchedule = Annotated[ConstantSchedule | WarmupSchedule | PlateauSchedule | MLPerfDLRMSchedule,
                       Field(discriminator="kind")]


class TrainSpec(StrictModel):
    """How to train: optimizer, batch size, evaluation cadence and budgets."""

    batch_size: PositiveInt = 512
    eval_batch_size: PositiveInt | None = Field(None, description="default: 4 x batch_size")
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    max_epochs: PositiveFloat = Field(1.0, description="training budget in epochs of the train split")
    max_time_s: PositiveFloat | None = Field(None, description="training budget in seconds (time-to-target clock)")
    eval_every: PositiveFloat = Field(0.5, description="evaluation cadence in epochs")
    eval_split: Literal["val", "test"] = "val"
    warmup_iters: NonNegativeInt = Field(10, description="first iterations excluded from latency statistics")
    stop_at_target: bool = Field(
        True, description="stop at the first evaluation that reaches the target (MLPerf); false: train the whole budget"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: mixed precision, the forward under torch.autocast to bfloat16 (parameters, "
        "tables and optimizer state stay fp32; bf16 needs no loss scaling, which fused in-backward optimizers "
        "could not undo)")
    lr_schedule: LrSchedule = Field(
        ConstantSchedule(), description="learning-rate schedule over the run: constant, warmup, plateau (FuxiCTR's "
        "reduce on plateau) or mlperf_dlrm (MLPerf DLRM-DCNv2's warm-up and polynomial decay)")
    clip_grad_norm: PositiveFloat | None = Field(
        None, description="clip the gradients to this global L2 norm before each optimizer step (FuxiCTR: 10); "
        "tables updated inside the backward by fused optimizers have no gradients and are not clipped")

    @model_validator(mode="after")
    def _min_lr_below_lr(self) -> TrainSpec:
        if isinstance(self.lr_schedule, PlateauSchedule) and self.lr_schedule.min_lr > self.lr:
            raise ValueError(f"lr_schedule.min_lr {self.lr_schedule.min_lr} is above train.lr {self.lr}: a "
                             "reduction would raise the learning rate")
        return self

    def check_batch(self, train_rows: int) -> None:
        """Raise ``ValueError`` when a batch is larger than the ``train_rows`` rows trained on (every step
        would take the whole split, so a fraction of an epoch could not be trained)."""
        if self.batch_size > train_rows:
            raise ValueError(f"batch_size {self.batch_size:,} is larger than the {train_rows:,} rows trained on "
                             "(the train split, after num_samples / fraction)")


ShardingType = Literal["table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise"]


class DistributedSpec(StrictModel):
    """How N ranks train (``gpus > 1`` or ``processes > 1``), and whether one rank trains like them."""

    timeout_s: PositiveFloat = Field(
        300, description="a collective waiting longer than this fails the run (a lost or failed rank)")
    sharding_types: list[ShardingType] | None = Field(
        None, min_length=1, description="sharding types the TorchRec planner may use for full tables "
        "(default: all the device supports; never data_parallel)")
    one_rank_dmp: bool | None = Field(
        None, description="on one rank (gpus: 1, or one CPU process) train under DistributedModelParallel: full "
        "tables as fused TBE kernels with the optimizer in the backward, as every rank of a sharded run does. "
        "Default: true on a GPU (the unsharded collection's dense table gradients do not fit one GPU at MLPerf "
        "size), false on CPU; false keeps TorchRec's unsharded EmbeddingBagCollection with dense gradients")


class TargetSpec(StrictModel):
    """Quality target: AUC, HR@K, NDCG@K and MRR must rise to ``value``; LogLoss and NE must fall to it."""

    metric: MetricName = "auc"
    value: float

    @model_validator(mode="after")
    def _value_in_range(self) -> TargetSpec:
        if self.metric == "auc" and not 0.5 < self.value < 1.0:
            raise ValueError(f"target AUC must lie in (0.5, 1), got {self.value}")
        if self.metric in ("logloss", "ne") and self.value <= 0:
            raise ValueError(f"target {self.metric} must be > 0, got {self.value}")
        if self.metric not in ("auc", "logloss", "ne") and not 0 < self.value <= 1:
            raise ValueError(f"target {self.metric} must lie in (0, 1], got {self.value}")
        return self

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def reached_by(self, value: float) -> bool:
        return value >= self.value if self.higher_is_better else value <= self.value


class Scenario(StrictModel):
    """One fully resolved scenario: what to train, how, on what hardware, with which seeds."""

    name: str | None = Field(None, description="display label; not part of the scenario id")
    dataset: SerializeAsAny[DatasetOptions]
    model: SerializeAsAny[ModelOptions]
    compressor: SerializeAsAny[CompressorOptions] = CompressorOptions()
    train: TrainSpec = TrainSpec()
    target: TargetSpec
    gpus: NonNegativeInt = Field(0, description="0 = CPU; N = N CUDA devices")
    processes: PositiveInt = Field(1, description="CPU only: N gloo ranks")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    distributed: DistributedSpec = DistributedSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.gpus > 0 and self.processes != 1:
            raise ValueError("processes is for CPU runs only; with gpus > 0 the rank count is gpus")
        if getattr(self.model, "first_order_pooling", "embedding") == "sum" and self.compressor.pooling != "mean":
            raise ValueError("model.first_order_pooling: sum needs compressor.pooling: mean (under sum pooling "
                             "the first-order weights of a bag are summed already)")
        if self.dataset.task not in self.model.tasks:
            raise ValueError(f"model {self.model.name!r} serves the {' and '.join(self.model.tasks)} task, dataset "
                             f"{self.dataset.name!r} is {self.dataset.task} data")
        watched = [("target.metric", self.target.metric)]
        if isinstance(self.train.lr_schedule, PlateauSchedule) and self.train.lr_schedule.metric:
            watched.append(("train.lr_schedule.metric", self.train.lr_schedule.metric))
        for where, metric in watched:
            if metric_task(metric) != self.dataset.task:
                raise ValueError(f"{where} {metric!r} is not reported by {self.dataset.task} evaluations (dataset "
                                 f"{self.dataset.name!r}): " + ("auc, logloss or ne" if self.dataset.task == "ctr"
                                                                else "hr@K, ndcg@K or mrr"))
        if self.train.batch_size < self.world_size:
            raise ValueError(f"train.batch_size {self.train.batch_size} is smaller than the {self.world_size} "
                             "ranks it is split over")
        return self

    @property
    def world_size(self) -> int:
        """Ranks training the model: ``gpus`` on GPUs, ``processes`` on CPU."""
        return self.gpus if self.gpus > 0 else self.processes

    def in_process_group(self, device: str) -> bool:
        """Whether the run on ``device`` ("cpu" or "cuda") trains in a process group: several ranks, or
        one under ``distributed.one_rank_dmp`` (default: on a GPU)."""
        one_rank_dmp = self.distributed.one_rank_dmp
        return self.world_size > 1 or (device == "cuda" if one_rank_dmp is None else one_rank_dmp)

    def shards_tables(self, device: str) -> bool:
        """Whether full tables go under DMP on ``device`` (fused TBE kernels, optimizer in the backward): CTR
        models' full tables in a process group (the retrieval task replicates its item table)."""
        return self.in_process_group(device) and self.compressor.kind == "none" and self.dataset.task == "ctr"


#: MLPerf Training ruleset whose compliance checker the event logs are written for.
MLPERF_RULESET = "6.0.0"


class MLPerfSpec(StrictModel):
    """How a suite's event logs present themselves to MLPerf's compliance checker (``mlperf:`` at the top
    of a suite; README "MLPerf compatibility"). Every run is logged in the open division unless
    ``division: closed`` is asked for, and even then only scenarios that keep every closed rule claim it."""

    org: str = Field("dlrs-bench", min_length=1, description="submission_org")
    platform: str | None = Field(
        None, min_length=1, description="submission_platform; default: '<ranks>x<GPU or CPU model>' of the run")
    division: Literal["open", "closed"] = Field(
        "open", description="closed: claimed by scenarios that keep every closed rule of the benchmark; the others "
        "are logged open with the rules they break")
    benchmark: Literal["dlrm_dcnv2"] = Field(
        "dlrm_dcnv2", description=f"submission_benchmark: MLPerf Training {MLPERF_RULESET}'s recommendation benchmark "
        "(the checker loads its rules by this name; open runs of other CTR models use it too)")


class SuiteFile(StrictModel):
    """The top level of a suite YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)  # a folder name of results
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    scenarios: list[dict[str, Any]] = Field(default_factory=list)
    mlperf: MLPerfSpec = MLPerfSpec()

    @model_validator(mode="after")
    def _non_empty_axes(self) -> SuiteFile:
        for axis, values in self.matrix.items():
            if not values:
                raise ValueError(f"matrix axis {axis!r} lists no alternatives")
        return self


Loc = tuple[str | int, ...]
PLUGIN_BLOCKS: dict[str, str] = {"dataset": "name", "model": "name", "compressor": "kind"}


def validate_scenario(raw: dict[str, Any]) -> tuple[Scenario | None, list[tuple[Loc, str]]]:
    """Validate a merged scenario dict; returns the scenario or the errors as (loc, message)."""
    from dlrs_bench.errors import UserInputError
    from dlrs_bench.registry import COMPRESSORS, DATASETS, MODELS

    registries = {"dataset": DATASETS, "model": MODELS, "compressor": COMPRESSORS}
    errors: list[tuple[Loc, str]] = []
    values = dict(raw)
    for block, key in PLUGIN_BLOCKS.items():
        if block not in raw and block != "compressor":
            continue
        options = raw.get(block, {})
        if not isinstance(options, dict):
            errors.append(((block,), f"must be a mapping with a {key!r} key"))
            continue
        if key not in options and block == "compressor":
            options = {**options, key: "none"}
        if key not in options:
            errors.append(((block,), f"missing {key!r}"))
            continue
        try:
            plugin_options = registries[block].options(str(options[key]))
        except UserInputError as e:
            errors.append(((block, key), str(e)))
            continue
        try:
            values[block] = plugin_options.model_validate(options)
        except ValidationError as e:
            errors.extend(((block, *err["loc"]), _message(err, plugin_options)) for err in e.errors())
    failed = {loc[0] for loc, _ in errors}  # plugin blocks already reported: their raw dicts fail again below
    try:
        scenario = Scenario.model_validate(values)
    except ValidationError as e:  # every other problem of the scenario too, in the same pass
        errors.extend((_input_loc(tuple(err["loc"]), values), _message(err, Scenario)) for err in e.errors()
                      if not err["loc"] or err["loc"][0] not in failed)
        return None, errors
    if errors:
        return None, errors
    try:
        scenario.compressor.check_dim(scenario.model.table_width())
    except ValueError as e:
        return None, [(("compressor",), str(e) + scenario.model.table_width_note())]
    try:
        scenario.compressor.check_init(scenario.model.init_scheme())
    except ValueError as e:
        return None, [(("model", "embedding_init"), str(e))]
    return scenario, []


def _input_loc(loc: Loc, raw: Any) -> Loc:
    """``loc`` without the tags pydantic inserts after a discriminated union's field (the chosen
    ``kind``, as in ``train.lr_schedule.warmup.warmup_steps``): the path of the value in ``raw``."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(out)


def _union_tag(model: type[BaseModel]) -> Any:
    """The ``kind`` a member of a discriminated union is chosen by (None: not a tagged model)."""
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if len(args) == 1 else None


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model nested at ``loc`` inside ``model`` accepts ([] where that is not a model;
    a discriminated union's member is chosen by the tag that follows its field in ``loc``)."""
    members: dict[Any, type[BaseModel]] = {}
    for key in loc:
        if key in members:
            model, members = members[key], {}
            continue
        field = model.model_fields.get(str(key))
        nested = [t for t in (field.annotation, *typing.get_args(field.annotation)) if isinstance(t, type)
                  and issubclass(t, BaseModel)] if field else []
        if not nested:
            return []
        model = nested[0]
        members = {_union_tag(m): m for m in nested} if len(nested) > 1 else {}
    return list(model.model_fields)


def _message(err: Any, model: type[BaseModel] | None = None) -> str:
    """A pydantic error as one readable phrase, with the offending input where useful; an unknown
    key of ``model`` (or of a model nested in it) gets the closest known keys as a hint."""
    if err["type"] == "extra_forbidden":
        known = _keys_at(model, tuple(err["loc"][:-1])) if model else []
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=2, cutoff=0.6)
        return "unknown key" + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("missing",) and "input" in err and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return msg
