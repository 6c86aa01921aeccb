"""HSTU (Zhai et al. ICML'24, "Actions Speak Louder than Words") over padded sequences: ``x`` ``[B, S, d]``
(item embeddings, no positions yet), valid prefix ``lengths`` ``[B]``, ``timestamps`` ``[B, S]`` in
seconds → ``[B, S, d]``, padding rows zero. Attention is causal: query i sees keys j ≤ i < length.

Two forms, each the reference code's function (tools/gr_layers.py checks them against
meta-recsys/generative-recommenders with copied weights):

``paper`` (``research/modeling/sequential/hstu.py``: ``LearnablePositionalEmbeddingInputFeaturesPreprocessor``,
``SequentialTransductionUnitJagged`` with ``rel_bias`` / ``uvqk`` / ``silu``,
``RelativeBucketedTimeAndPositionBasedBias``)::

    x0 = Dropout(x √d + P[i])
    U, V, Q, K = split(SiLU(LN(x) W))                      LN without affine, ε 1e-6; W without bias
    A_ij = SiLU(Q_i·K_j + rab_ij) / n  (j ≤ i)           n = max_len, the reference's padded width
    out = W_o Dropout(U ⊙ LN(A V)) + b_o + x
    rab_ij = w_pos[n - 1 + j - i] + w_time[bucket(t_{i+1} - t_j)],  bucket(Δ) = ⌊ln(max(|Δ|, 1)) / 0.301⌋ ≤ 128

The paper writes LN-free ``SiLU(xW + b)``; the code normalises the input and has no bias (followed).
The query time of position i is ``t_{i+1}``, the time of the item it predicts: the reference puts the
target's timestamp at position ``length`` (research/modeling/sequential/features.py), so
``timestamps[b, lengths[b]]`` is read when ``lengths[b] < S``; a full row uses its last timestamp.

``dlrmv4`` (``modules/stu.py`` ``STULayer`` through ``ops/pytorch/pt_hstu_linear.py`` and
``pt_hstu_attention.py``; input ``modules/positional_encoder.py`` ``HSTUPositionalEncoder``)::

    x0 = Dropout(x √d + P[min(L - i, 8191)] + T[bucket(t_{L-1} - t_i)]),  bucket(Δ) = ⌊√(max(Δ, 0) / 60)⌋ ≤ 2048
    U, V, Q, K = split(LN(x) W + b);  U = SiLU(U)             LN with affine, ε 1e-6
    A_ij = SiLU(Q_i·K_j / √d_qk) / N  (j ≤ i)              N = max(lengths), the batch's longest
    a = A V;  y = U ⊙ LN(a)
    out = Dropout([U, a, y]) W_o + x                         W_o without bias

The concatenation is ``[U, a, y]`` with the raw attention output ``a`` (pt_hstu_linear.py's
``torch.cat([u, x, y])`` names ``a`` ``x``), not the layer input. The input encoding counts positions
from the end and times from the last item (the ranking candidate in DLRM-v4), so each position's
input depends on the length and on ``t_{L-1}``; the attention stays causal. The time buckets clip at
the table's rows - 1 (2048) as the Triton kernel that trains the reference on GPUs
(ops/triton/triton_position.py); its PyTorch fallback (pt_position.py) clips at
``ts_embeddings.size(1) - 1`` = d - 1, the embedding width, which reads as a slip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlrs_bench.sequential.encoder_options import HSTUOptions

#: Both references' LayerNorm ε.
EPS = 1e-6


def paper_time_bucket(delta: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """The paper form's bucket of a time difference ``delta`` (int64 seconds): ⌊ln(max(|Δ|, 1)) / 0.301⌋
    clipped to [0, num_buckets] (hstu.py's ``bucketization_fn``: natural log, 0.301 ≈ log10 2)."""
    return (torch.log(torch.abs(delta).clamp(min=1)) / 0.301).long().clamp(min=0, max=num_buckets)


def dlrmv4_time_bucket(delta: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """The dlrmv4 form's bucket of ``delta`` (int64 seconds before the query): ⌊√(Δ / 60)⌋ clipped to
    [0, num_buckets], Δ < 0 → 0 (pt_position.py with ``time_bucket_fn="sqrt"``, the default)."""
    return torch.sqrt(delta.clamp(min=1e-6) / 60.0).long().clamp(min=0, max=num_buckets)


def causal_silu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int, alpha: float,
                          bias: torch.Tensor | None, dropout: float, training: bool) -> torch.Tensor:
    """``q``, ``k`` ``[B, S, H, d_qk]``, ``v`` ``[B, S, H, d_v]``, ``bias`` ``[B, S, S]`` (every head) →
    ``[B, S, H d_v]``: a_i = Σ_{j ≤ i} SiLU(α q_i·k_j + bias_ij) / n · v_j."""
    s = q.size(1)
    scores = torch.einsum("bihd,bjhd->bhij", q, k)
    if alpha != 1.0:
        scores = scores * alpha
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    future = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
    weights = F.dropout((F.silu(scores) / n).masked_fill(future, 0.0), p=dropout, training=training)
    return torch.einsum("bhij,bjhd->bihd", weights, v).flatten(2)


def attention_flops(lengths: torch.Tensor, heads: int, dqk: int, dv: int) -> int:
    """QKᵀ and AV over the causal pairs (j ≤ i < L: L(L + 1)/2 per sequence), 2 per multiply-add."""
    pairs = int((lengths * (lengths + 1) // 2).sum())
    return 2 * pairs * heads * (dqk + dv)


class LearnedPositions(nn.Module):
    """``Dropout(x √d + P[i])`` with padding rows zero (generative-recommenders'
    ``LearnablePositionalEmbeddingInputFeaturesPreprocessor``, shared by HSTU's paper form and SASRec;
    the owner initialises ``positions``)."""

    def __init__(self, max_len: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        self.dim, self.dropout = dim, dropout

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, S, d]``, ``valid`` ``[B, S, 1]`` bool → ``[B, S, d]``."""
        out = x * self.dim ** 0.5 + self.positions.weight[: x.size(1)]
        return torch.where(valid, F.dropout(out, p=self.dropout, training=self.training), 0.0)


class TimePositionEncoding(nn.Module):
    """The dlrmv4 input encoding (``HSTUPositionalEncoder`` with ``add_timestamp_positional_embeddings``,
    no contextual tokens, no targets): ``Dropout(x √d + T[bucket(t_{L-1} - t_i)] + P[min(L - i, P - 1)])``;
    tables U(±√(1/rows)) as the reference (the time table over its bucket count). ``time_buckets`` None:
    positions only (dlrs-bench's ``relative_bias: false``)."""

    def __init__(self, dim: int, position_buckets: int, time_buckets: int | None, dropout: float) -> None:
        super().__init__()
        self.positions = nn.Embedding(position_buckets, dim)
        nn.init.uniform_(self.positions.weight, -math.sqrt(1 / position_buckets), math.sqrt(1 / position_buckets))
        self.times = nn.Embedding(time_buckets + 1, dim) if time_buckets is not None else None
        if self.times is not None:
            nn.init.uniform_(self.times.weight, -math.sqrt(1 / time_buckets), math.sqrt(1 / time_buckets))
        self.dim, self.time_buckets, self.dropout = dim, time_buckets, dropout

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor | None,
                valid: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, S, d]``, ``lengths`` ``[B]``, ``timestamps`` ``[B, S]``, ``valid`` ``[B, S, 1]`` →
        ``[B, S, d]``."""
        i = torch.arange(x.size(1), device=x.device)
        encoding = self.positions((lengths.unsqueeze(1) - i).clamp(min=0, max=self.positions.num_embeddings - 1))
        if self.times is not None:
            query = timestamps.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1))
            encoding = self.times(dlrmv4_time_bucket(query - timestamps, self.time_buckets)) + encoding
        out = x * self.dim ** 0.5 + encoding
        return torch.where(valid, F.dropout(out, p=self.dropout, training=self.training), 0.0)


class RelativeBias(nn.Module):
    """The paper form's ``RelativeBucketedTimeAndPositionBasedBias``: ``timestamps`` ``[B, S]`` → ``[B, S, S]``,
    rab_ij = w_pos[max_len - 1 + j - i] + w_time[bucket(t_{i+1} - t_j)] (the last position's t_{i+1} is its
    own). Weights N(0, 0.02²), 2 max_len - 1 positions and time_buckets + 1 buckets, as the reference."""

    def __init__(self, max_len: int, time_buckets: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.empty(2 * max_len - 1).normal_(std=0.02))
        self.time = nn.Parameter(torch.empty(time_buckets + 1).normal_(std=0.02))
        self.max_len, self.time_buckets = max_len, time_buckets

    def forward(self, timestamps: torch.Tensor) -> torch.Tensor:
        i = torch.arange(timestamps.size(1), device=timestamps.device)
        position = self.position[self.max_len - 1 + i.unsqueeze(0) - i.unsqueeze(1)]
        query = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1)
        bucket = paper_time_bucket(query.unsqueeze(2) - timestamps.unsqueeze(1), self.time_buckets)
        return position + self.time[bucket]


class PaperLayer(nn.Module):
    """One paper-form layer (``SequentialTransductionUnitJagged``): ``[B, S, d]`` → ``[B, S, d]``. Init as the
    reference: W N(0, 0.02²), W_o Xavier-uniform, b_o PyTorch's default."""

    def __init__(self, dim: int, heads: int, dqk: int, dv: int, max_len: int, time_buckets: int | None,
                 dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.uvqk = nn.Linear(dim, 2 * heads * (dv + dqk), bias=False)
        nn.init.normal_(self.uvqk.weight, std=0.02)
        self.out = nn.Linear(heads * dv, dim)
        nn.init.xavier_uniform_(self.out.weight)
        self.bias = RelativeBias(max_len, time_buckets) if time_buckets is not None else None
        self.heads, self.dqk, self.dv, self.n = heads, dqk, dv, max_len
        self.dropout, self.attn_dropout = dropout, attn_dropout

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None) -> torch.Tensor:
        b, s, d = x.shape
        h, dqk, dv = self.heads, self.dqk, self.dv
        u, v, q, k = F.silu(self.uvqk(F.layer_norm(x, (d,), eps=EPS))).split([h * dv, h * dv, h * dqk, h * dqk], -1)
        bias = self.bias(timestamps) if self.bias is not None else None
        a = causal_silu_attention(q.view(b, s, h, dqk), k.view(b, s, h, dqk), v.view(b, s, h, dv), self.n, 1.0,
                                  bias, self.attn_dropout, self.training)
        o = u * F.layer_norm(a, (h * dv,), eps=EPS)
        return self.out(F.dropout(o, p=self.dropout, training=self.training)) + x

    def flops(self, lengths: torch.Tensor) -> int:
        tokens, d = int(lengths.sum()), self.out.out_features
        return (2 * tokens * (d * self.uvqk.out_features + self.out.in_features * d)
                + attention_flops(lengths, self.heads, self.dqk, self.dv))


class DLRMv4Layer(nn.Module):
    """One dlrmv4-form layer (``STULayer``, causal, no targets): ``[B, S, d]`` and N → ``[B, S, d]``. Init as
    the reference: W and W_o Xavier-uniform, b zeros, LayerNorms ones / zeros."""

    def __init__(self, dim: int, heads: int, dqk: int, dv: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim, eps=EPS)
        self.uvqk = nn.Linear(dim, 2 * heads * (dv + dqk))
        nn.init.xavier_uniform_(self.uvqk.weight)
        nn.init.zeros_(self.uvqk.bias)
        self.output_norm = nn.LayerNorm(heads * dv, eps=EPS)
        self.out = nn.Linear(3 * heads * dv, dim, bias=False)
        nn.init.xavier_uniform_(self.out.weight)
        self.heads, self.dqk, self.dv = heads, dqk, dv
        self.dropout, self.attn_dropout = dropout, attn_dropout

    def forward(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, s, _ = x.shape
        h, dqk, dv = self.heads, self.dqk, self.dv
        u, v, q, k = self.uvqk(self.input_norm(x)).split([h * dv, h * dv, h * dqk, h * dqk], -1)
        u = F.silu(u)
        a = causal_silu_attention(q.reshape(b, s, h, dqk), k.reshape(b, s, h, dqk), v.reshape(b, s, h, dv), n,
                                  dqk ** -0.5, None, self.attn_dropout, self.training)
        y = torch.cat([u, a, u * self.output_norm(a)], dim=-1)
        return self.out(F.dropout(y, p=self.dropout, training=self.training)) + x

    def flops(self, lengths: torch.Tensor) -> int:
        tokens, d = int(lengths.sum()), self.out.out_features
        return (2 * tokens * (d * self.uvqk.out_features + self.out.in_features * d)
                + attention_flops(lengths, self.heads, self.dqk, self.dv))


class HSTUEncoder(nn.Module):
    """HSTU stack: ``forward(x [B, S, d], lengths [B], timestamps [B, S] | None) → [B, S, d]`` (module
    docstring). ``max_len`` bounds S; in the paper form it also sizes the position tables and is the
    attention's divisor n (the reference's padded width, ``max_sequence_length + gr_output_length + 1``:
    211 on ML-1M). The paper form's input positions are Xavier-normal (``HSTU.reset_params`` re-draws the
    preprocessor's table), the dlrmv4 form's as ``TimePositionEncoding``."""

    def __init__(self, options: HSTUOptions, dim: int, max_len: int) -> None:
        super().__init__()
        heads, dqk, dv = options.num_heads, options.qk_dim(dim), options.v_dim(dim)
        if min(dqk, dv) < 1:
            raise ValueError(f"HSTU: dim {dim} over {heads} heads leaves no width; set dqk and dv")
        time_buckets = options.num_time_buckets() if options.relative_bias else None
        self.options, self.dim, self.max_len = options, dim, max_len
        self.inputs: LearnedPositions | TimePositionEncoding
        if options.form == "paper":
            self.inputs = LearnedPositions(max_len, dim, options.input_dropout)
            nn.init.xavier_normal_(self.inputs.positions.weight)
            self.layers = nn.ModuleList(
                PaperLayer(dim, heads, dqk, dv, max_len, time_buckets, options.linear_dropout, options.attn_dropout)
                for _ in range(options.num_layers))
        else:
            self.inputs = TimePositionEncoding(dim, options.num_position_buckets(), time_buckets,
                                               options.input_dropout)
            self.layers = nn.ModuleList(
                DLRMv4Layer(dim, heads, dqk, dv, options.linear_dropout, options.attn_dropout)
                for _ in range(options.num_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor | None) -> torch.Tensor:
        s = x.size(1)
        if s > self.max_len:
            raise ValueError(f"HSTU: sequences of {s} positions, built for at most {self.max_len}")
        if timestamps is None and self.options.relative_bias:
            raise ValueError("HSTU with relative_bias needs timestamps")
        valid = (torch.arange(s, device=x.device) < lengths.unsqueeze(1)).unsqueeze(-1)
        if isinstance(self.inputs, LearnedPositions):
            h = self.inputs(x, valid)
            for layer in self.layers:
                h = torch.where(valid, layer(h, timestamps), 0.0)
        else:
            h = self.inputs(x, lengths, timestamps, valid)
            n = max(int(lengths.max()), 1)
            for layer in self.layers:
                h = torch.where(valid, layer(h, n), 0.0)
        return h

    def flops(self, lengths: torch.Tensor) -> int:
        """Forward FLOPs of the sequences' valid positions: the projections and the causal attention (the
        input encoding, norms and activations are elementwise, not counted)."""
        return sum(layer.flops(lengths) for layer in self.layers)
