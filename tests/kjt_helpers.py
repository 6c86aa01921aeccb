"""KeyedJaggedTensor builders shared by the tests."""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature


def one_hot_kjt(ids_per_key: dict[str, list[int]]) -> KeyedJaggedTensor:
    """One id per bag; every key lists the same number of rows."""
    keys = list(ids_per_key)
    values = torch.tensor([i for k in keys for i in ids_per_key[k]], dtype=torch.int64)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=torch.ones(len(values), dtype=torch.int32))


def bags_kjt(bags_per_key: dict[str, list[list[int]]]) -> KeyedJaggedTensor:
    """Explicit bags per key; every key lists the same number of rows."""
    keys = list(bags_per_key)
    values = torch.tensor([i for k in keys for bag in bags_per_key[k] for i in bag], dtype=torch.int64)
    lengths = torch.tensor([len(bag) for k in keys for bag in bags_per_key[k]], dtype=torch.int32)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths)


def random_batch(batch: int, num_dense: int, features: list[SparseFeature], seed: int = 0):
    """Dense ``[B, num_dense]`` and a KJT with 1 id per bag (1..3 for multi-hot features)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.cat(
        [torch.randint(1, 4, (batch,), generator=g) if f.multi_hot else torch.ones(batch, dtype=torch.int64)
         for f in features]
    ).to(torch.int32)
    per_key = lengths.view(len(features), batch).sum(1).tolist()
    values = torch.cat([torch.randint(0, f.cardinality, (n,), generator=g) for f, n in zip(features, per_key)])
    kjt = KeyedJaggedTensor(keys=[f.name for f in features], values=values, lengths=lengths)
    return torch.randn(batch, num_dense, generator=g), kjt


def measured_flops_per_sample(model: torch.nn.Module, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> float:
    """FLOPs of one forward pass per sample, as counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(dense, kjt)
    return counter.get_total_flops() / len(dense)
