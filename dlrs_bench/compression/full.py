"""``none``: full tables in a TorchRec EmbeddingBagCollection (the uncompressed baseline)."""

from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

from dlrs_bench.compression.base import TableAccount
from dlrs_bench.compression.options import FullOptions
from dlrs_bench.config.schema import CompressorOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable

POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def table_configs(
    features: list[SparseFeature], rows: list[int], dim: int, pooling: str
) -> list[EmbeddingBagConfig]:
    """One TorchRec table per feature (table ``t_<feature>``) with the given row counts."""
    return [
        EmbeddingBagConfig(
            name=f"t_{f.name}", embedding_dim=dim, num_embeddings=n, feature_names=[f.name], pooling=POOLING[pooling]
        )
        for f, n in zip(features, rows)
    ]


#: Row width fbgemm's table-batched kernels need (floats), on CPU and CUDA alike.
TBE_ALIGNMENT = 4


class FullEmbedding(EmbeddingBagCollection):
    """An ``EmbeddingBagCollection`` that reports its accounting (every table at full size).

    ``width`` is the floats of a row the model reads (``None``: the whole row). Tables built for
    sharding store rows padded to a multiple of 4 (:func:`full_for_sharding`); the padding is
    allocated, so it counts in ``params`` (ratio width / stored below 1), and is never read."""

    width: int | None = None

    def table_accounts(self) -> list[TableAccount]:
        accounts = []
        for c in self.embedding_bag_configs():
            width = self.width or c.embedding_dim
            detail = {"padding": c.embedding_dim - width} if c.embedding_dim != width else {}
            accounts.append(TableAccount(c.feature_names[0], c.num_embeddings, width,
                                         params=c.num_embeddings * c.embedding_dim, compressed=False, detail=detail))
        return accounts

    def init_tables(self) -> list[InitTable]:
        """Every table [n, d] (row i: id i) for ``model.embedding_init``."""
        return [InitTable(name, bag.weight, ids_are_rows=True) for name, bag in self.embedding_bags.items()]


class Full:
    Options = FullOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: FullOptions, device: torch.device) -> FullEmbedding:
        configs = table_configs(features, [f.cardinality for f in features], dim, options.pooling)
        return FullEmbedding(tables=configs, device=device)


def full_for_sharding(features: list[SparseFeature], width: int, options: CompressorOptions,
                      device: torch.device) -> FullEmbedding:
    """Full tables (``options``: kind ``none``) for DMP's fused fbgemm kernels, whose rows must be a
    multiple of 4 floats: ``width`` rounded up (d + 1 with a per-id first-order weight: 17 → 20)."""
    if options.kind != "none":
        raise ValueError(f"only full tables are sharded, not {options.kind!r} ones")
    stored = -(-width // TBE_ALIGNMENT) * TBE_ALIGNMENT
    module = FullEmbedding(tables=table_configs(features, [f.cardinality for f in features], stored, options.pooling),
                           device=device)
    module.width = width
    return module
