"""``none``: full tables in a TorchRec EmbeddingBagCollection (the uncompressed baseline)."""

from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

from dlrs_bench.compression.base import TableAccount
from dlrs_bench.compression.options import FullOptions
from dlrs_bench.data.base import SparseFeature

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


class FullEmbedding(EmbeddingBagCollection):
    """An ``EmbeddingBagCollection`` that reports its accounting (every table at full size)."""

    def table_accounts(self) -> list[TableAccount]:
        return [
            TableAccount(c.feature_names[0], c.num_embeddings, c.embedding_dim,
                         params=c.num_embeddings * c.embedding_dim, compressed=False)
            for c in self.embedding_bag_configs()
        ]


class Full:
    Options = FullOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: FullOptions, device: torch.device) -> FullEmbedding:
        configs = table_configs(features, [f.cardinality for f in features], dim, options.pooling)
        return FullEmbedding(tables=configs, device=device)
