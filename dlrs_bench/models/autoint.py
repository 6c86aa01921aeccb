"""AutoInt (Song et al. 2019) and AutoInt+ (with a DNN) over fields ``[B, m, d]``: m = F + num_dense
(``dense_features: per_feature``, e_m = v_m x_m as the paper's eq. 4, the default) or F + 1 (``field``).

``attention_layers`` layers of multi-head self-attention over the fields (``heads`` heads of
``attention_dim`` each, no scaling, as the paper) with a linear residual and ReLU; a Linear on
the flattened result gives the logit. A non-empty ``dnn`` adds an MLP on the flattened input
fields (AutoInt+).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, hidden, init_weights
from dlrs_bench.models.options import AutoIntOptions


class SelfAttention(nn.Module):
    """One interacting layer: ``[B, m, d_in]`` → ``[B, m, heads * attention_dim]``."""

    def __init__(self, d_in: int, heads: int, attention_dim: int) -> None:
        super().__init__()
        self.heads, self.attention_dim, self.d_in = heads, attention_dim, d_in
        d_out = heads * attention_dim
        self.query, self.key, self.value = (nn.Linear(d_in, d_out, bias=False) for _ in range(3))
        self.residual = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, m, h * a] -> [B * h, m, a]
            return t.view(b, m, self.heads, self.attention_dim).transpose(1, 2).reshape(-1, m, self.attention_dim)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attention = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        out = torch.bmm(attention, v).view(b, self.heads, m, self.attention_dim).transpose(1, 2).reshape(b, m, -1)
        return torch.relu(out + self.residual(x))

    def flops(self, m: int) -> int:
        d_out = self.heads * self.attention_dim
        return 4 * 2 * m * self.d_in * d_out + 2 * 2 * self.heads * m * m * self.attention_dim


class AutoInt(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: AutoIntOptions) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.inputs = FieldInputs.from_options(num_dense, num_sparse, options)
        self.m = self.inputs.num_fields
        layers, d_in = [], options.dim
        for _ in range(options.attention_layers):
            layers.append(SelfAttention(d_in, options.heads, options.attention_dim))
            d_in = options.heads * options.attention_dim
        self.attention = nn.Sequential(*layers)
        self.out = Head(self.m * d_in, [])
        self.dnn = Head(self.m * options.dim, hidden(options.widths(options.dnn, over_arch=True))) \
            if options.dnn else None
        init_weights(self, options.init, skip=embeddings)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, self.embeddings(sparse))
        logit = self.out(self.attention(x).flatten(1))
        return logit + self.dnn(x.flatten(1)) if self.dnn is not None else logit

    def flops_per_sample(self) -> int:
        return (self.inputs.flops() + sum(layer.flops(self.m) for layer in self.attention) + self.out.flops()
                + (self.dnn.flops() if self.dnn is not None else 0))


class AutoIntBuilder:
    Options = AutoIntOptions

    @staticmethod
    def build(options: AutoIntOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> AutoInt:
        return AutoInt(num_dense, len(features), embeddings, options)
