"""``hashing``: the hashing trick, e(x) = E[h(x)] with E of ceil(n / ratio) rows per table.

h(x) = x mod m (``hash: modulo``) or ((a x + b) mod P) mod m with P = 2^31 - 1 and
per-table a, b drawn from ``hash_seed`` (``hash: universal``). The hashed tables are a
TorchRec EmbeddingBagCollection, so they use the same kernels as full tables.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlrs_bench.compression.base import TableAccount, check_keys, tables
from dlrs_bench.compression.full import table_configs
from dlrs_bench.compression.options import HashingOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable

MERSENNE_31 = 2**31 - 1


class IdHasher(nn.Module):
    """Maps each feature's ids into ``buckets[t]`` rows: x mod m, or ((a x + b) mod P) mod m.

    Args:
        keys: KJT keys, in order.
        buckets: rows m_t of each target table.
        universal: universal hashing instead of modulo.
        hash_seed: seed of the universal hash coefficients a_t, b_t.
        identity: tables whose ids pass through unchanged (x < m_t already).
    """

    def __init__(self, keys: list[str], buckets: list[int], universal: bool, hash_seed: int,
                 identity: list[bool], device: torch.device) -> None:
        super().__init__()
        self.keys = keys
        g = torch.Generator().manual_seed(hash_seed)
        a = torch.randint(1, MERSENNE_31, (len(keys),), generator=g)
        b = torch.randint(0, MERSENNE_31, (len(keys),), generator=g)
        keep = torch.tensor(identity, dtype=torch.bool)
        a[keep], b[keep] = 1, 0
        self.universal = universal
        self.register_buffer("buckets", torch.tensor(buckets, dtype=torch.int64, device=device))
        self.register_buffer("a", a.to(device))
        self.register_buffer("b", b.to(device))

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The same KJT with every id replaced by its row in the target table."""
        check_keys(features, self.keys)
        ids = features.values()
        table = torch.repeat_interleave(
            torch.arange(len(self.keys), device=ids.device), features.lengths().view(len(self.keys), -1).sum(1),
            output_size=ids.numel(),  # known on the host: no device sync
        )
        if self.universal:
            ids = (self.a[table] * ids + self.b[table]) % MERSENNE_31
        return KeyedJaggedTensor(keys=self.keys, values=ids % self.buckets[table], lengths=features.lengths(),
                                 length_per_key=features.length_per_key_or_none())


class HashedEmbedding(nn.Module):
    """Hashes each feature's ids into its reduced table, then pools with an EmbeddingBagCollection.

    Args:
        features: the full tables' features (names and cardinalities n_t).
        buckets: rows m_t of each hashed table (tables with m_t >= n_t keep x -> x).
        dim: embedding dimension d.
        universal: universal hashing instead of modulo.
        hash_seed: seed of the universal hash coefficients.
        pooling: "sum" or "mean" over each bag.
    """

    def __init__(self, features: list[SparseFeature], buckets: list[int], dim: int, universal: bool,
                 hash_seed: int, pooling: str, device: torch.device) -> None:
        super().__init__()
        self.features = features
        full = [m >= f.cardinality for f, m in zip(features, buckets)]
        self.hasher = IdHasher([f.name for f in features], buckets, universal, hash_seed, full, device)
        self.ebc = EmbeddingBagCollection(tables=table_configs(features, buckets, dim, pooling), device=device)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings ``[B, F * d]`` keyed like the full collection."""
        return self.ebc(self.hasher(features))

    def table_accounts(self) -> list[TableAccount]:
        return [
            TableAccount(f.name, f.cardinality, c.embedding_dim, c.num_embeddings * c.embedding_dim,
                         c.num_embeddings < f.cardinality, {"buckets": c.num_embeddings})
            for f, c in zip(self.features, self.ebc.embedding_bag_configs())
        ]

    def init_tables(self) -> list[InitTable]:
        """Every table [m, d] for ``model.embedding_init``; a hashed one's row 0 is shared by the ids
        ≡ 0 mod m, a table left full (m >= n) has a row per id."""
        bags = self.ebc.embedding_bags
        return [InitTable(c.name, bags[c.name].weight, ids_are_rows=c.num_embeddings >= f.cardinality)
                for f, c in zip(self.features, self.ebc.embedding_bag_configs())]


class Hashing:
    Options = HashingOptions

    @staticmethod
    def build(
        features: list[SparseFeature], dim: int, options: HashingOptions, device: torch.device
    ) -> HashedEmbedding:
        plan = options.plan(tables(features), dim)
        buckets = [f.cardinality if m is None else m for f, m in zip(features, plan)]
        return HashedEmbedding(
            features, buckets, dim, options.hash == "universal", options.hash_seed, options.pooling, device
        )
