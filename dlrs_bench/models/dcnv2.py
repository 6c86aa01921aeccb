"""DCN-v2 (Wang et al. 2021), stacked: cross network then deep MLP, as TorchRec's DLRM_DCN.

x0 = concat(bottom_mlp(dense), e_1..e_F) ``[B, (F + 1) d]``; ``cross_layers`` layers of
x_{l+1} = x0 * (W x_l + b) + x_l with full W ``[N, N]`` or low-rank W = U V (``low_rank`` r);
then the top MLP to one logit.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops
from dlrs_bench.models.layers import Head, fields, hidden
from dlrs_bench.models.options import DCNv2Options


class DCNv2(nn.Module):
    """DCN-v2 over ``embeddings``; ``forward(dense [B, num_dense], KJT) -> logits [B]``."""

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DCNv2Options) -> None:
        super().__init__()
        self.num_sparse, self.d, self.num_dense = num_sparse, options.dim, num_dense
        self.bottom = options.bottom()
        self.width = (num_sparse + 1) * self.d
        self.cross_layers, self.rank = options.cross_layers, options.low_rank
        self.embeddings = embeddings
        self.dense_arch = DenseArch(num_dense, self.bottom)
        self.cross = (LowRankCrossNet(self.width, options.cross_layers, options.low_rank) if options.low_rank
                      else CrossNet(self.width, options.cross_layers))
        self.head = Head(self.width, hidden(options.widths(options.top_mlp, over_arch=True)))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = fields(self.embeddings(sparse), self.num_sparse, self.d)
        x0 = torch.cat([self.dense_arch(dense), pooled.flatten(1)], dim=1)
        return self.head(self.cross(x0))

    def flops_per_sample(self) -> int:
        n = self.width
        per_layer = 2 * n * self.rank * 2 if self.rank else 2 * n * n
        return linear_flops([self.num_dense, *self.bottom]) + self.cross_layers * per_layer + self.head.flops()


class DCNv2Builder:
    Options = DCNv2Options

    @staticmethod
    def build(options: DCNv2Options, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DCNv2:
        return DCNv2(num_dense, len(features), embeddings, options)
