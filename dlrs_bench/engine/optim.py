"""Optimizers by name, with sparse-gradient parameters stepped by the matching sparse optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
#: Optimizers that accept sparse gradients, for the same algorithm.
SPARSE_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.SparseAdam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


#: Settings that differ from torch's defaults. Adagrad's ε 1e-8 is fbgemm's fused table kernels' value
#: and MLPerf DLRM-DCNv2's closed rule (torch's default is 1e-10): dense parameters and tables step alike.
SETTINGS: dict[str, dict[str, Any]] = {"adagrad": {"eps": 1e-8}}


def optimizer_kwargs(name: str, lr: float) -> dict[str, Any]:
    """Keyword arguments of optimizer ``name`` at learning rate ``lr`` (dense, sparse and fused alike)."""
    return {"lr": lr, **SETTINGS.get(name, {})}


class OptimizerGroup:
    """Several optimizers stepped together (dense parameters and sparse-gradient ones)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def build_optimizer(model: nn.Module, name: str, lr: float) -> OptimizerGroup:
    """``name`` over the model's parameters; those listed by ``model.embeddings.sparse_parameters()``
    (sparse gradients) get the sparse variant of the same algorithm."""
    sparse_fn = getattr(model.embeddings, "sparse_parameters", None)
    sparse = list(sparse_fn()) if sparse_fn else []
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    optimizers = [OPTIMIZERS[name](dense, **optimizer_kwargs(name, lr))]
    if sparse:
        optimizers.append(SPARSE_OPTIMIZERS[name](sparse, **optimizer_kwargs(name, lr)))
    return OptimizerGroup(optimizers)
