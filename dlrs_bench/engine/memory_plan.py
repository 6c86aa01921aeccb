"""Per-GPU memory estimate of a scenario, and a refusal (with what would fit) before it runs.

Estimate per GPU, fp32: embedding parameters (spread evenly over the GPUs) with their optimizer
state (Adam 2 floats per parameter, Adagrad 1, SGD 0) and, unless the tables are sharded, their
gradients (dense, as unsharded TorchRec and PyTorch produce them; sharded tables update inside the
backward pass with fbgemm's fused optimizers and hold no gradient); the dense parameters with their
gradients and optimizer state on every GPU; activations ≈ 2 × batch × (sum of the model's layer
widths + F × d) floats, kept for the backward pass. It is a planning bound for "will this fit",
not an exact profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlrs_bench.config.schema import Scenario
from dlrs_bench.data.base import CTRDataset

GIB = 2**30
OPTIMIZER_STATE = {"adam": 2, "adagrad": 1, "sgd": 0}
#: Fraction of the device memory a plan may use (the CUDA context, allocator slack and kernels).
USABLE = 0.9


class MemoryPlanError(RuntimeError):
    """A scenario that cannot fit the devices it asks for."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU by part."""

    embedding_params: int  # all tables, before sharding
    dense_params: int
    activations: int
    optimizer_floats: int  # optimizer state floats per parameter
    gpus: int
    sharded: bool = False  # full tables sharded under DMP (fused optimizer, no table gradients)

    def table_bytes_per_param(self, sharded: bool | None = None) -> int:
        """Weight + optimizer state (+ gradient unless sharded), bytes per embedding parameter."""
        sharded = self.sharded if sharded is None else sharded
        return 4 * (1 + self.optimizer_floats + (0 if sharded else 1))

    @property
    def dense_bytes_per_param(self) -> int:
        return 4 * (2 + self.optimizer_floats)  # weight + gradient + optimizer state

    def per_gpu(self, gpus: int | None = None, embedding_scale: float = 1.0, sharded: bool | None = None) -> int:
        g = gpus or self.gpus
        return int(math.ceil(self.embedding_params * embedding_scale / g) * self.table_bytes_per_param(sharded)
                   + self.fixed_bytes)

    @property
    def fixed_bytes(self) -> int:
        """What every GPU holds whatever the tables: dense model with its state, activations."""
        return self.dense_params * self.dense_bytes_per_param + self.activations

    def parts(self) -> dict[str, float]:
        g = self.gpus
        return {"tables": self.embedding_params * 4 / g / GIB,
                "gradients and optimizer": self.embedding_params * (self.table_bytes_per_param() - 4) / g / GIB
                + self.dense_params * (self.dense_bytes_per_param - 4) / GIB,
                "dense": self.dense_params * 4 / GIB, "activations": self.activations / GIB}


def estimate(spec: Scenario, dataset: CTRDataset) -> MemoryEstimate:
    """The estimate for ``spec`` on ``dataset``; the model is built on the meta device (no memory)."""
    from dlrs_bench.engine.train import build  # the same construction path as training

    model = build(spec, dataset, torch.device("meta"), for_sharding=spec.shards_tables("cuda"))
    embedding = sum(p.numel() for p in model.embeddings.parameters())
    dense = sum(p.numel() for p in model.parameters()) - embedding
    widths = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    activations = 2 * spec.train.batch_size * (widths + len(dataset.features) * spec.model.table_width()) * 4
    return MemoryEstimate(embedding, dense, activations, OPTIMIZER_STATE[spec.train.optimizer], max(spec.gpus, 1),
                          spec.shards_tables("cuda"))


def check_fits(plan: MemoryEstimate, device_bytes: int) -> None:
    """Raise :class:`MemoryPlanError` when ``plan`` does not fit ``device_bytes`` per GPU, saying how
    much it needs and which embedding compression ratio or GPU count would fit."""
    usable = USABLE * device_bytes
    need = plan.per_gpu()
    if need <= usable:
        return
    parts = ", ".join(f"{k} {v:.1f}" for k, v in plan.parts().items())
    fixed = plan.fixed_bytes
    hints = []
    if fixed < usable:
        room = (usable - fixed) * plan.gpus / plan.table_bytes_per_param()  # embedding parameters that fit
        hints.append(f"an embedding compression ratio of at least {plan.embedding_params / room:.1f}x")
        gpus = math.ceil(plan.embedding_params * plan.table_bytes_per_param(sharded=True) / (usable - fixed))
        hints.append(f"{gpus} GPUs with the tables sharded")
    advice = " or ".join(hints) if hints else "a smaller dense model or batch"
    raise MemoryPlanError(
        f"needs {need / GIB:.1f} GiB per GPU ({parts} GiB) but {plan.gpus} GPU(s) of "
        f"{device_bytes / GIB:.1f} GiB give {usable / GIB:.1f} GiB usable; {advice} would fit"
    )


def check_memory(spec: Scenario, dataset: CTRDataset, device: torch.device) -> None:
    """Refuse (:class:`MemoryPlanError`) a CUDA run of ``spec`` that cannot fit ``device``; CPU runs
    and the retrieval task are not planned."""
    if device.type == "cuda" and spec.dataset.task == "ctr":
        check_fits(estimate(spec, dataset), torch.cuda.get_device_properties(device).total_memory)
