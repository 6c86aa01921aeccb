"""Entry points for ranks launched by tests (importable by spawned processes)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from dlrs_bench.engine.distributed import (
    all_ranks_agree,
    average_sparse_gradients,
    gather_objects,
    gather_rows,
    init,
)


@record
def collectives(timeout_s: float) -> dict:
    """Every helper collective once; returns what rank 0 saw."""
    ranks, device = init("cpu", timeout_s)
    local = torch.arange(ranks.rank + 1, dtype=torch.float32) + 10 * ranks.rank  # lengths differ by rank
    return {"rank": ranks.rank, "world": ranks.world, "rows": [t.tolist() for t in gather_rows(local, device)],
            "objects": gather_objects({"r": ranks.rank}), "any": all_ranks_agree(ranks.rank == 1, device),
            "none": all_ranks_agree(False, device)}


@record
def sparse_average(timeout_s: float) -> tuple[list, list]:
    """Rank r's sparse gradient touches rows {r, 2}: returns (averaged, expected) dense gradients."""
    ranks, device = init("cpu", timeout_s)
    weight = torch.nn.Parameter(torch.zeros(4, 3))
    ids = torch.tensor([ranks.rank, 2])
    (torch.nn.functional.embedding(ids, weight, sparse=True) * (ranks.rank + 1)).sum().backward()
    average_sparse_gradients([weight], device)
    expected = torch.zeros(4, 3)
    for r in range(ranks.world):
        expected[r] += (r + 1) / ranks.world
        expected[2] += (r + 1) / ranks.world
    return weight.grad.to_dense().tolist(), expected.tolist()


@record
def rank_one_fails(how: tuple[str, float]) -> None:
    """Rank 1 ``raise``s, ``die``s (exit code 3) or ``hang``s instead of joining rank 0's collective
    (``how`` = (that word, collective timeout in seconds))."""
    kind, timeout_s = how
    ranks, device = init("cpu", timeout_s)
    if ranks.rank == 1:
        if kind == "raise":
            raise ValueError("rank one cannot go on")
        if kind == "die":
            os._exit(3)
        time.sleep(120)
    dist.all_reduce(torch.ones(1))
