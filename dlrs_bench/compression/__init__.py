"""Embedding compressors: every method is a module taking a KJT and returning a KeyedTensor."""

from dlrs_bench.compression.base import EmbeddingAccount, TableAccount, build_embeddings

__all__ = ["EmbeddingAccount", "TableAccount", "build_embeddings"]
