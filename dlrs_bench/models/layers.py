"""Building blocks shared by the models: MLPs, the dense-feature arch, field stacking."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedTensor

from dlrs_bench.models.base import linear_flops


def mlp(in_features: int, widths: list[int]) -> nn.Module:
    """Linear + ReLU layers of ``widths`` (identity when ``widths`` is empty)."""
    return MLP(in_features, widths, activation="relu") if widths else nn.Identity()


class Head(nn.Module):
    """A hidden MLP then a Linear to one logit: ``[B, in_features]`` → ``[B]``.

    Args:
        in_features: input width.
        hidden: hidden widths (ReLU); may be empty (a logistic regression).
    """

    def __init__(self, in_features: int, hidden: list[int]) -> None:
        super().__init__()
        self.sizes = [in_features, *hidden, 1]
        self.hidden = mlp(in_features, hidden)
        self.out = nn.Linear(self.sizes[-2], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x)).squeeze(-1)

    def flops(self) -> int:
        return linear_flops(self.sizes)


def hidden(layers: list[int]) -> list[int]:
    """The hidden widths of a suite MLP spec that ends in the logit (``[..., 1]``)."""
    return layers[:-1] if layers and layers[-1] == 1 else layers


def fields(pooled: KeyedTensor, num_fields: int, dim: int) -> torch.Tensor:
    """The pooled embeddings of a KeyedTensor as ``[B, num_fields, dim]``."""
    return pooled.values().reshape(-1, num_fields, dim)


class FieldInputs(nn.Module):
    """Dense features and pooled embeddings as fields ``[B, F + 1, d]`` (dense field first).

    Args:
        num_dense: dense input features (mapped by the bottom MLP to one d-vector).
        num_sparse: F.
        bottom: bottom MLP widths, ending in d.
    """

    def __init__(self, num_dense: int, num_sparse: int, bottom: list[int]) -> None:
        super().__init__()
        if num_dense < 1:
            raise ValueError("this model needs at least one dense feature for its bottom MLP")
        self.num_dense, self.num_sparse, self.d, self.bottom = num_dense, num_sparse, bottom[-1], bottom
        self.dense_arch = MLP(num_dense, bottom, activation="relu")

    def forward(self, dense: torch.Tensor, pooled: KeyedTensor) -> torch.Tensor:
        """``dense`` ``[B, num_dense]`` and F pooled embeddings → ``[B, F + 1, d]``."""
        return torch.cat([self.dense_arch(dense).unsqueeze(1), fields(pooled, self.num_sparse, self.d)], dim=1)

    def flops(self) -> int:
        return linear_flops([self.num_dense, *self.bottom])
