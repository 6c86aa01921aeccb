"""DLRM (Naumov et al. 2019) built from TorchRec's DLRM arches over any embedding module.

bottom MLP: dense ``[B, num_dense]`` -> ``[B, d]``; interaction: pairwise dot products of the
dense vector and the F pooled embeddings (``[B, d + (F + 1) F / 2]``); top MLP -> logit ``[B]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.config.schema import ModelOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops


class DLRMOptions(ModelOptions):
    name: Literal["dlrm"] = "dlrm"
    bottom_mlp: list[PositiveInt] = Field(default_factory=lambda: [64, 16], min_length=1)
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [64, 32, 1], min_length=2)

    @model_validator(mode="after")
    def _shapes(self) -> DLRMOptions:
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(
                f"bottom_mlp must end in embedding_dim ({self.embedding_dim}), got {self.bottom_mlp}"
            )
        if self.top_mlp[-1] != 1:
            raise ValueError(f"top_mlp must end in 1 (the logit), got {self.top_mlp}")
        return self


class DLRM(nn.Module):
    """DLRM over ``embeddings`` (KJT -> KeyedTensor of F blocks of size d).

    Args:
        num_dense: dense input features.
        num_sparse: F, sparse features.
        embeddings: the embedding module (full or compressed).
        options: layer sizes.
    """

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DLRMOptions) -> None:
        super().__init__()
        if num_dense < 1:
            raise ValueError("DLRM needs at least one dense feature for its bottom MLP")
        d = options.embedding_dim
        self.num_dense, self.num_sparse, self.options = num_dense, num_sparse, options
        self.embeddings = embeddings
        self.dense_arch = DenseArch(num_dense, options.bottom_mlp)
        self.interaction = InteractionArch(num_sparse)
        self.over_arch = OverArch(d + (num_sparse + 1) * num_sparse // 2, options.top_mlp)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Logits ``[B]`` for dense ``[B, num_dense]`` and sparse KJT with F keys."""
        embedded_dense = self.dense_arch(dense)
        pooled = self.embeddings(sparse).values().reshape(-1, self.num_sparse, self.options.embedding_dim)
        return self.over_arch(self.interaction(embedded_dense, pooled)).squeeze(-1)

    def flops_per_sample(self) -> int:
        d, f = self.options.embedding_dim, self.num_sparse
        interaction_in = d + (f + 1) * f // 2
        return (
            linear_flops([self.num_dense, *self.options.bottom_mlp])
            + 2 * (f + 1) * (f + 1) * d  # the (F+1) x (F+1) batched Gram matrix TorchRec computes
            + linear_flops([interaction_in, *self.options.top_mlp])
        )


class DLRMBuilder:
    Options = DLRMOptions

    @staticmethod
    def build(options: DLRMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DLRM:
        return DLRM(num_dense, len(features), embeddings, options)
