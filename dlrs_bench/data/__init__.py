"""Datasets as in-memory CTR splits, batched into TorchRec ``Batch`` objects."""

from dlrs_bench.data.base import CTRDataset, CTRSplit, SparseFeature, build_dataset
from dlrs_bench.data.batching import iter_batches

__all__ = ["CTRDataset", "CTRSplit", "SparseFeature", "build_dataset", "iter_batches"]
