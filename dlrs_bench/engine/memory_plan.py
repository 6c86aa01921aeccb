"""Per-GPU memory estimate of a scenario, and a refusal (with what would fit) before it runs.

Estimate per GPU, fp32: embedding parameters (sharded evenly over the GPUs) and, for them,
gradients (dense, as unsharded TorchRec and PyTorch produce them) and optimizer state (Adam 2
floats per parameter, Adagrad 1, SGD 0); the dense parameters with their gradients and optimizer
state on every GPU; activations ≈ 2 × batch × (sum of the model's layer widths + F × d) floats,
kept for the backward pass. It is a planning bound for "will this fit", not an exact profile.
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

    def per_gpu(self, gpus: int | None = None, embedding_scale: float = 1.0) -> int:
        g = gpus or self.gpus
        per_param = 4 * (2 + self.optimizer_floats)  # weight + gradient + optimizer state
        return int(math.ceil(self.embedding_params * embedding_scale / g) * per_param
                   + self.dense_params * per_param + self.activations)

    def parts(self) -> dict[str, float]:
        g, per_param = self.gpus, 4 * (2 + self.optimizer_floats)
        return {"tables": self.embedding_params * 4 / g / GIB,
                "gradients and optimizer": self.embedding_params * (per_param - 4) / g / GIB
                + self.dense_params * (per_param - 4) / GIB,
                "dense": self.dense_params * 4 / GIB, "activations": self.activations / GIB}


def estimate(spec: Scenario, dataset: CTRDataset) -> MemoryEstimate:
    """The estimate for ``spec`` on ``dataset``; the model is built on the meta device (no memory)."""
    from dlrs_bench.engine.train import build  # the same construction path as training

    model = build(spec, dataset, torch.device("meta"))
    embedding = sum(p.numel() for p in model.embeddings.parameters())
    dense = sum(p.numel() for p in model.parameters()) - embedding
    widths = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    activations = 2 * spec.train.batch_size * (widths + len(dataset.features) * spec.model.dim) * 4
    return MemoryEstimate(embedding, dense, activations, OPTIMIZER_STATE[spec.train.optimizer], max(spec.gpus, 1))


def check_fits(plan: MemoryEstimate, device_bytes: int) -> None:
    """Raise :class:`MemoryPlanError` when ``plan`` does not fit ``device_bytes`` per GPU, saying how
    much it needs and which embedding compression ratio or GPU count would fit."""
    usable = USABLE * device_bytes
    need = plan.per_gpu()
    if need <= usable:
        return
    parts = ", ".join(f"{k} {v:.1f}" for k, v in plan.parts().items())
    per_param = 4 * (2 + plan.optimizer_floats)
    fixed = plan.dense_params * per_param + plan.activations
    hints = []
    if fixed < usable:
        room = (usable - fixed) * plan.gpus / per_param  # embedding parameters that fit
        hints.append(f"an embedding compression ratio of at least {plan.embedding_params / room:.1f}x")
        gpus = math.ceil(plan.embedding_params * per_param / (usable - fixed))
        hints.append(f"{gpus} GPUs with the tables sharded")
    advice = " or ".join(hints) if hints else "a smaller dense model or batch"
    raise MemoryPlanError(
        f"needs {need / GIB:.1f} GiB per GPU ({parts} GiB) but {plan.gpus} GPU(s) of "
        f"{device_bytes / GIB:.1f} GiB give {usable / GIB:.1f} GiB usable; {advice} would fit"
    )
