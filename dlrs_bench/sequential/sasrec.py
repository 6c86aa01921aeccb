"""SASRec (Kang & McAuley ICDM'18) as generative-recommenders' ``research/modeling/sequential/sasrec.py``
(the baseline of the HSTU paper's tables) over padded sequences: ``x`` ``[B, S, d]`` (item embeddings,
no positions yet), valid prefix ``lengths`` ``[B]`` → ``[B, S, d]``, padding rows zero::

    x0 = Dropout(x √d + P[i])                                        LearnedPositions, as HSTU's paper form
    per block:  q = LN(x);  z = LN(q + MHA(q, x, x, causal))         LN without affine, ε 1e-8
                x = (z + FFN(z)) ⊙ valid,  FFN = Dropout(W2 Dropout(ReLU(W1 z + b1)) + b2)

Queries are normalised, keys and values are not, and the residual adds to the normalised query, as
the reference (``_run_one_layer``). The reference's FFN is ``Conv1d(kernel_size=1)`` (a Linear per
position) and MHA's dropout is the FFN's. The reference has no final LayerNorm in the encoder (the
original SASRec's ``last_layernorm``): its model L2-normalises the output (``user_embedding_norm``),
which is the task's to do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlrs_bench.sequential.encoder_options import SASRecOptions
from dlrs_bench.sequential.hstu import LearnedPositions, attention_flops

#: The reference's LayerNorm ε.
EPS = 1e-8


class PointwiseFFN(nn.Module):
    """``z + Dropout(W2 Dropout(act(W1 z + b1)) + b2)``, ``[B, S, d]`` → ``[B, S, d]`` (``StandardAttentionFF``)."""

    def __init__(self, dim: int, hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z) + z


class SASRecBlock(nn.Module):
    """One block (``SASRec._run_one_layer``): ``h`` ``[B, S, d]``, ``valid`` ``[B, S, 1]``, ``future`` ``[S, S]``
    (True above the diagonal) → ``[B, S, d]``, padding rows zero."""

    def __init__(self, dim: int, heads: int, hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = PointwiseFFN(dim, hidden, activation, dropout)
        self.dim = dim

    def forward(self, h: torch.Tensor, valid: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        q = F.layer_norm(h, (self.dim,), eps=EPS)
        a, _ = self.attention(q, h, h, attn_mask=future, need_weights=False)
        return torch.where(valid, self.ffn(F.layer_norm(q + a, (self.dim,), eps=EPS)), 0.0)


class SASRecEncoder(nn.Module):
    """SASRec stack: ``forward(x [B, S, d], lengths [B], timestamps) → [B, S, d]`` (``timestamps`` unused).
    ``max_len`` (≥ S) rows of positions, truncated N(0, 1/d) within 2 std (the reference's
    ``truncated_normal``); every attention and FFN matrix Xavier-normal, biases PyTorch's defaults
    (``SASRec.reset_state``)."""

    def __init__(self, options: SASRecOptions, dim: int, max_len: int) -> None:
        super().__init__()
        if dim % options.num_heads:
            raise ValueError(f"SASRec: num_heads {options.num_heads} must divide dim {dim}")
        self.options, self.dim, self.max_len = options, dim, max_len
        self.inputs = LearnedPositions(max_len, dim, options.input_dropout)
        std = math.sqrt(1 / dim)
        nn.init.trunc_normal_(self.inputs.positions.weight, std=std, a=-2 * std, b=2 * std)
        self.blocks = nn.ModuleList(
            SASRecBlock(dim, options.num_heads, options.hidden_dim(dim), options.ffn_activation, options.dropout)
            for _ in range(options.num_layers))
        for p in self.blocks.parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        s = x.size(1)
        if s > self.max_len:
            raise ValueError(f"SASRec: sequences of {s} positions, built for at most {self.max_len}")
        valid = (torch.arange(s, device=x.device) < lengths.unsqueeze(1)).unsqueeze(-1)
        future = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        h = self.inputs(x, valid)
        for block in self.blocks:
            h = block(h, valid, future)
        return h

    def flops(self, lengths: torch.Tensor) -> int:
        """Forward FLOPs of the valid positions: Q, K, V, output and FFN projections and the causal attention."""
        tokens, d, f = int(lengths.sum()), self.dim, self.options.hidden_dim(self.dim)
        per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + attention_flops(lengths, 1, d, d)
        return self.options.num_layers * per_layer
