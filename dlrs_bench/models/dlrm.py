"""DLRM (Naumov et al. 2019) built from TorchRec's DLRM arches over any embedding module.

bottom MLP: dense ``[B, num_dense]`` -> ``[B, d]``; interaction: pairwise dot products of the
dense vector and the F pooled embeddings (``[B, d + (F + 1) F / 2]``); top MLP -> logit ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops
from dlrs_bench.models.layers import fields
from dlrs_bench.models.options import DLRMOptions


class DLRM(nn.Module):
    """DLRM over ``embeddings`` (KJT -> KeyedTensor of F blocks of size d).

    Args:
        num_dense: dense input features.
        num_sparse: F, sparse features.
        embeddings: the embedding module (full or compressed).
        options: layer sizes and scaling.
    """

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DLRMOptions) -> None:
        super().__init__()
        if num_dense < 1:
            raise ValueError("DLRM needs at least one dense feature for its bottom MLP")
        self.num_dense, self.num_sparse, self.d = num_dense, num_sparse, options.dim
        self.bottom, self.top = options.bottom(), options.top()
        self.embeddings = embeddings
        self.dense_arch = DenseArch(num_dense, self.bottom)
        self.interaction = InteractionArch(num_sparse)
        self.over_arch = OverArch(self.d + (num_sparse + 1) * num_sparse // 2, self.top)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Logits ``[B]`` for dense ``[B, num_dense]`` and sparse KJT with F keys."""
        embedded_dense = self.dense_arch(dense)
        pooled = fields(self.embeddings(sparse), self.num_sparse, self.d)
        return self.over_arch(self.interaction(embedded_dense, pooled)).squeeze(-1)

    def flops_per_sample(self) -> int:
        d, f = self.d, self.num_sparse
        return (
            linear_flops([self.num_dense, *self.bottom])
            + 2 * (f + 1) * (f + 1) * d  # the (F+1) x (F+1) batched Gram matrix TorchRec computes
            + linear_flops([d + (f + 1) * f // 2, *self.top])
        )


class DLRMBuilder:
    Options = DLRMOptions

    @staticmethod
    def build(options: DLRMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DLRM:
        return DLRM(num_dense, len(features), embeddings, options)
