"""``robe``: ROBE-Z / parameter sharing with chunks (Desai et al.; seed 002).

One learnable 1-D array W of M floats serves every compressed table. Element j of id x (global
id g = x + offset of its table) reads W[(h(g, floor(j / Z)) mod (M - Z + 1)) + j mod Z] with
h(a, b) = (a R3 + b R2 + R1) mod P, P = 2038074743 and R1..R3 drawn from ``hash_seed``:
chunks of Z = ``chunk`` consecutive floats are read together (Z = 1 is HashedNets).
M = sum of n d over compressed tables / ratio. ``gradient: dense`` back-propagates into a
dense gradient of W; ``sparse`` gives a sparse one (only touched entries), which the engine
steps with the sparse variant of the optimizer (SparseAdam for adam).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlrs_bench.compression.base import TableAccount, tables
from dlrs_bench.compression.options import ROBEOptions, init_refusal
from dlrs_bench.compression.pooled import FullTable, PooledEmbedding, uniform
from dlrs_bench.data.base import SparseFeature

PRIME = 2038074743


class ROBEEmbedding(PooledEmbedding):
    """ROBE-Z over the compressed tables; tables under the threshold stay full.

    Args:
        features: all tables (KJT key order).
        dim: d.
        size: M, floats in the shared array.
        compressed: per table, whether it reads from the shared array.
        options: chunk, gradient, hash seed, pooling.
    """

    def __init__(self, features: list[SparseFeature], dim: int, size: int, compressed: list[bool],
                 options: ROBEOptions, device: torch.device) -> None:
        super().__init__(features, dim, options.pooling)
        self.chunk, self.sparse, self.size = options.chunk, options.gradient == "sparse", size
        largest = max(f.cardinality for f, c in zip(features, compressed) if c)
        self.array = nn.Parameter(uniform((size, 1), math.sqrt(1 / largest), device))  # [M, 1]
        self.full = nn.ModuleList(
            nn.Identity() if c else FullTable(f.cardinality, dim, device) for f, c in zip(features, compressed)
        )
        self.compressed = compressed
        offsets, total = [], 0
        for f, c in zip(features, compressed):
            offsets.append(total)
            total += f.cardinality if c else 0
        g = torch.Generator().manual_seed(options.hash_seed)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64, device=device))
        self.register_buffer("coefficients", torch.randint(0, PRIME, (3,), generator=g).to(device))
        element = torch.arange(dim, device=device)
        self.register_buffer("chunk_of", element // options.chunk)  # [d]
        self.register_buffer("within", element % options.chunk)  # [d]
        self.register_buffer("chunks", torch.arange(math.ceil(dim / options.chunk), device=device))  # [d / Z]

    def locations(self, global_ids: torch.Tensor) -> torch.Tensor:
        """Indexes into the array ``[nnz, d]`` of every element of every id (one hash per chunk)."""
        r1, r2, r3 = self.coefficients
        start = (global_ids.unsqueeze(1) * r3 + self.chunks * r2 + r1) % PRIME % (self.size - self.chunk + 1)
        return start[:, self.chunk_of] + self.within

    def embed(self, values: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        parts = []
        for t, ids in enumerate(torch.split(values, sizes)):
            if not self.compressed[t]:
                parts.append(self.full[t](ids))
                continue
            where = self.locations(ids + self.offsets[t])
            parts.append(F.embedding(where, self.array, sparse=self.sparse).squeeze(-1))
        return torch.cat(parts)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (stepped by a sparse optimizer)."""
        return [self.array] if self.sparse else []

    def init_tables(self) -> list:
        """None: the shared array is not rows of tables (``model.embedding_init`` is refused at validate)."""
        raise ValueError(init_refusal("robe", "other than uniform"))

    def table_accounts(self) -> list[TableAccount]:
        """Full tables at full size; the shared array split over compressed tables in proportion
        to their n d (largest remainder, so the shares add up to M exactly)."""
        weights = [f.cardinality * self.dim if c else 0 for f, c in zip(self.features, self.compressed)]
        shares = [self.size * w // sum(weights) for w in weights]
        remainders = sorted(range(len(weights)), key=lambda i: -(self.size * weights[i] % sum(weights)))
        for i in remainders[: self.size - sum(shares)]:
            shares[i] += 1
        return [
            TableAccount(f.name, f.cardinality, self.dim, share if c else f.cardinality * self.dim, compressed=c,
                         detail={"shared_array": self.size, "chunk": self.chunk} if c else {})
            for f, c, share in zip(self.features, self.compressed, shares)
        ]


class ROBE:
    Options = ROBEOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: ROBEOptions, device: torch.device) -> ROBEEmbedding:
        plan = options.plan(tables(features), dim)
        size = next(m for m in plan if m is not None)
        return ROBEEmbedding(features, dim, size, [m is not None for m in plan], options, device)
