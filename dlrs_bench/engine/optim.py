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


class GradClip:
    """Clips the gradients of ``params`` to a global L2 norm of ``max_norm`` (torch's
    ``clip_grad_norm_`` rule: scaled by max_norm / (norm + 1e-6) where that is below 1, no host sync).
    Sparse gradients count too: they are coalesced (duplicate rows summed, as the update applies them)
    and their values scaled, which torch's ``clip_grad_norm_`` cannot do (no norm of a sparse tensor).
    ``unclipped_params``: parameters of the run updated without a gradient (fused optimizers), recorded."""

    def __init__(self, params: list[nn.Parameter], max_norm: float, unclipped_params: int = 0) -> None:
        self.params = params
        self.max_norm = max_norm
        self.unclipped_params = unclipped_params

    def __call__(self) -> torch.Tensor:
        """Clip the gradients present now; returns their global norm before clipping."""
        grads = []
        for p in self.params:
            if p.grad is not None and p.grad.is_sparse:
                p.grad = p.grad.coalesce()
            if p.grad is not None:
                grads.append(p.grad)
        if not grads:
            return torch.zeros(())
        norm = torch.nn.utils.get_total_norm([g.values() if g.is_sparse else g for g in grads])
        scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.to(g.device))
        return norm

    def record(self) -> dict[str, Any]:
        """What is clipped: the bound, the parameter counts clipped and not (and why not)."""
        out: dict[str, Any] = {"max_norm": self.max_norm, "clipped_params": sum(p.numel() for p in self.params),
                               "unclipped_params": self.unclipped_params}
        if self.unclipped_params:
            out["unclipped"] = ("full tables under DistributedModelParallel: fbgemm's fused optimizer updates them "
                                "inside the backward, so their gradients never exist")
        return out


class OptimizerGroup:
    """Several optimizers stepped together (dense parameters and sparse-gradient ones), after clipping
    the gradients by ``clip`` where given."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], clip: GradClip | None = None) -> None:
        self.optimizers = optimizers
        self.clip = clip

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if self.clip is not None:
            self.clip()
        for o in self.optimizers:
            o.step()

    def param_groups(self) -> list[dict[str, Any]]:
        """Every parameter group of every optimizer (TorchRec's combined optimizers list their members',
        fused table kernels' included): where the learning rate is set."""
        return [g for o in self.optimizers for g in o.param_groups]


def grad_clip(params: list[nn.Parameter], max_norm: float | None, unclipped_params: int = 0) -> GradClip | None:
    """A :class:`GradClip` of ``params`` at ``max_norm``; None without a bound."""
    return None if max_norm is None else GradClip(params, max_norm, unclipped_params)


def build_optimizer(model: nn.Module, name: str, lr: float, clip_grad_norm: float | None = None) -> OptimizerGroup:
    """``name`` over the model's parameters; those listed by ``model.embeddings.sparse_parameters()``
    (sparse gradients) get the sparse variant of the same algorithm. ``clip_grad_norm``: the global
    norm every gradient is clipped to before each step (None: no clipping)."""
    sparse_fn = getattr(model.embeddings, "sparse_parameters", None)
    sparse = list(sparse_fn()) if sparse_fn else []
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    optimizers = [OPTIMIZERS[name](dense, **optimizer_kwargs(name, lr))]
    if sparse:
        optimizers.append(SPARSE_OPTIMIZERS[name](sparse, **optimizer_kwargs(name, lr)))
    trained = [p for p in model.parameters() if p.requires_grad]
    return OptimizerGroup(optimizers, grad_clip(trained, clip_grad_norm))
