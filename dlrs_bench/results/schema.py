"""The result-file contract of DESIGN.md as a Pydantic model (one file per scenario and seed).

Sections a failed run could not measure are null. Extra keys are allowed (``extra="allow"``)
so that later versions can add fields without breaking readers. What no run can produce is refused:
a schema version this dlrs-bench does not know, an AUC outside [0, 1], a negative LogLoss or NE,
an evaluation curve longer than :data:`MAX_EVAL_POINTS`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1.0"
#: Schema versions this dlrs-bench reads.
KNOWN_VERSIONS = (SCHEMA_VERSION,)
#: Most a result file may hold: its size (bytes, checked before it is read) and its evaluations.
MAX_RESULT_BYTES = 16 * 2**20
MAX_EVAL_POINTS = 100_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorInfo(_Section):
    type: str
    message: str


class _Quality(_Section):
    """Quality metrics: where finite, AUC in [0, 1] and LogLoss, NE ≥ 0 (NaN or an infinity in an older
    file means not measured and is left to readers)."""

    @field_validator("auc", check_fields=False)
    @classmethod
    def _auc(cls, value: float | None) -> float | None:
        if value is not None and math.isfinite(value) and not 0 <= value <= 1:
            raise ValueError(f"AUC {value} is impossible (an AUC lies in [0, 1])")
        return value

    @field_validator("logloss", "ne", check_fields=False)
    @classmethod
    def _loss(cls, value: float | None) -> float | None:
        if value is not None and math.isfinite(value) and value < 0:
            raise ValueError(f"{value} is impossible (LogLoss and NE are never negative)")
        return value


class Metrics(_Quality):
    """One evaluation: ``auc``, ``logloss``, ``ne`` (the ctr task; absent in retrieval results) and, as extra
    keys, ``hr@K``, ``ndcg@K``, ``mrr`` (the retrieval task)."""

    auc: float | None = None
    logloss: float | None = None
    ne: float | None = None


class BestMetrics(Metrics):
    epoch: float
    samples: int


class TargetResult(_Section):
    metric: str
    value: float
    reached: bool
    time_to_target_s: float | None
    epochs_to_target: float | None
    samples_to_target: int | None


class IterMs(_Section):
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


class Timing(_Section):
    train_time_s: float
    eval_time_s: float
    wall_time_s: float
    samples_per_s: float | None
    iter_ms: IterMs
    warmup_iters: int
    samples: int | None = None  # training samples consumed


class Memory(_Section):
    gpu_peak_mib: float | None
    gpu_allocator_peak_mib: float | None
    host_peak_rss_mib: float | None


class Embedding(_Section):
    uncompressed_params: int
    params: int
    bytes: int
    compression_ratio: float
    per_table: list[dict[str, Any]]


class ModelInfo(_Section):
    dense_params: int
    total_params: int
    flops_per_sample: int


class EvalPoint(_Quality):
    epoch: float
    samples: int
    time_s: float
    auc: float | None = None
    logloss: float | None = None
    ne: float | None = None


class Env(_Section):
    dlrs_bench: str
    git_sha: str | None
    git_dirty: bool | None
    python: str
    torch: str
    torchrec: str | None
    fbgemm_gpu: str | None
    cuda: str | None
    gpu_name: str | None
    gpu_count: int
    driver: str | None
    cpu: str
    hostname: str
    started_at: str
    threads: int | None = None  # torch CPU threads (of rank 0 on several ranks); absent before 0.1 runs
    load_avg: float | None = None  # 1-minute load average when the run started


class TablePlacement(_Section):
    sharding_type: str
    compute_kernel: str
    ranks: list[int]


class Distributed(_Section):
    """Present when the run trained on a process group (``gpus > 1`` or ``processes > 1``)."""

    world_size: int
    backend: str
    placement: dict[str, TablePlacement]  # full table -> where the planner put it ({} if none are sharded)
    per_rank: list[dict[str, Any]]  # [{memory, iter_ms_p50}] in rank order


class ResultFile(_Section):
    schema_version: str
    suite: str
    scenario_id: str
    scenario: dict[str, Any]
    seed: int
    status: Literal["reached", "not_reached", "diverged", "failed"]
    error: ErrorInfo | None
    metrics: Metrics | None
    best_metrics: BestMetrics | None = None  # the evaluation with the best target metric
    target: TargetResult | None
    timing: Timing | None
    memory: Memory | None
    embedding: Embedding | None
    model: ModelInfo | None
    eval_curve: list[EvalPoint] = Field(max_length=MAX_EVAL_POINTS)
    env: Env
    distributed: Distributed | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value not in KNOWN_VERSIONS:
            raise ValueError(f"version {value!r} is not one this dlrs-bench reads ({', '.join(KNOWN_VERSIONS)})")
        return value
