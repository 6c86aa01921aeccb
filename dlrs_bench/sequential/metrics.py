"""Retrieval metrics over the whole catalogue: ``hr@K``, ``ndcg@K`` (K = 10, 50, 200) and ``mrr``.

Every evaluation sample has one held-out target item. Its 0-based position in the catalogue ranked by
score is counted after removing the padding id 0 and the items of the user's history (the target
itself is never removed: a re-consumed item stays rankable). Ties are broken uniformly at random and
the metrics are their exact expectation over that tie-break: with h items scored above the target and
t others scored equal, the target's position is uniform on {h, ..., h + t}, so

- ``hr@K``   = P(position < K)
- ``ndcg@K`` = E[1 / log2(position + 2) if position < K else 0]   (one relevant item: IDCG = 1)
- ``mrr``    = E[1 / (position + 1)]

(a popularity ranker's many equal counts neither help nor hurt it). :class:`RankAccumulator` sums them
batch by batch; :func:`retrieval_metrics` is the result.
"""

from __future__ import annotations

import re

import torch

#: The cut-offs reported (as ``hr@K`` and ``ndcg@K``).
CUTOFFS = (10, 50, 200)
#: Every retrieval metric name, in the order results list them.
RETRIEVAL_METRICS = tuple(f"{m}@{k}" for k in CUTOFFS for m in ("hr", "ndcg")) + ("mrr",)
_NAME = re.compile(r"^(hr|ndcg)@([1-9][0-9]*)$|^mrr$")


def is_retrieval_metric(name: str) -> bool:
    """Whether ``name`` is ``hr@K``, ``ndcg@K`` (any K ≥ 1) or ``mrr``."""
    return bool(_NAME.match(name))


def tie_aware_counts(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Items above and tied with each target.

    Args:
        scores: ``[B, N]`` float, one score per catalogue item (column i = item id i).
        targets: ``[B]`` int64 item ids in [1, N).
        excluded: ``[B, N]`` bool, items removed from the ranking (padding, history); the target's own
            column is ignored.

    Returns:
        (higher, ties): int64 ``[B]``, items scored strictly above the target and the *other* items
        scored equal to it, among those not excluded.
    """
    target_score = scores.gather(1, targets[:, None])
    keep = ~excluded
    keep[torch.arange(len(targets)), targets] = False  # the target is not its own tie
    higher = ((scores > target_score) & keep).sum(1)
    ties = ((scores == target_score) & keep).sum(1)
    return higher, ties


class RankAccumulator:
    """Sums of the expected metrics over evaluation batches (exact under a random tie-break).

    Args:
        catalogue: N, item ids 0..N-1 (positions never exceed N).
        cutoffs: the K of ``hr@K`` / ``ndcg@K``.
    """

    def __init__(self, catalogue: int, cutoffs: tuple[int, ...] = CUTOFFS) -> None:
        positions = torch.arange(catalogue + 1, dtype=torch.float64)
        # prefix sums over positions p = 0, 1, ...: gains[k] = Σ_{p<k} 1/log2(p + 2), recip[k] = Σ_{p<k} 1/(p + 1)
        self._gains = torch.cat([positions.new_zeros(1), torch.cumsum(1.0 / torch.log2(positions + 2), 0)])
        self._recip = torch.cat([positions.new_zeros(1), torch.cumsum(1.0 / (positions + 1), 0)])
        self.cutoffs = cutoffs
        self.sums = {name: 0.0 for name in self.names}
        self.count = 0

    @property
    def names(self) -> list[str]:
        return [f"{m}@{k}" for k in self.cutoffs for m in ("hr", "ndcg")] + ["mrr"]

    def add(self, higher: torch.Tensor, ties: torch.Tensor) -> None:
        """Add samples with ``higher`` items above and ``ties`` others tied (``[B]`` each)."""
        lo, hi = higher.double().cpu(), (higher + ties + 1).double().cpu()  # positions lo .. hi - 1
        span = hi - lo
        for k in self.cutoffs:
            a, b = lo.clamp(max=k), hi.clamp(max=k)
            self.sums[f"hr@{k}"] += float(((b - a) / span).sum())
            self.sums[f"ndcg@{k}"] += float(((self._gains[b.long()] - self._gains[a.long()]) / span).sum())
        self.sums["mrr"] += float(((self._recip[hi.long()] - self._recip[lo.long()]) / span).sum())
        self.count += len(higher)

    def all_reduce(self, device: torch.device) -> None:
        """Sum every rank's sums and counts (each rank scored its share of the samples)."""
        totals = torch.tensor([*self.sums.values(), float(self.count)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        *sums, count = totals.tolist()
        self.sums = dict(zip(self.sums, sums))
        self.count = int(count)

    def result(self) -> dict[str, float]:
        """Mean of every metric over the samples added (NaN without samples)."""
        return {name: (total / self.count if self.count else float("nan")) for name, total in self.sums.items()}


def retrieval_metrics(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor,
                      cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """``hr@K``, ``ndcg@K`` and ``mrr`` of one batch (see the module docstring; arguments as
    :func:`tie_aware_counts`)."""
    acc = RankAccumulator(scores.shape[1], cutoffs)
    acc.add(*tie_aware_counts(scores, targets, excluded))
    return acc.result()
