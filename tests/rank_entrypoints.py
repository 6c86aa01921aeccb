"""Entry points for ranks launched by tests (importable by spawned processes)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from dlrs_bench.engine.distributed import all_ranks_agree, gather_objects, gather_rows, init


@record
def collectives(timeout_s: float) -> dict:
    """Every helper collective once; returns what rank 0 saw."""
    ranks, device = init("cpu", timeout_s)
    local = torch.arange(ranks.rank + 1, dtype=torch.float32) + 10 * ranks.rank  # lengths differ by rank
    return {"rank": ranks.rank, "world": ranks.world, "rows": [t.tolist() for t in gather_rows(local, device)],
            "objects": gather_objects({"r": ranks.rank}), "any": all_ranks_agree(ranks.rank == 1, device),
            "none": all_ranks_agree(False, device)}


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
