"""Retrieval metrics against rankings worked out by hand (module docstring of
dlrs_bench/sequential/metrics.py: positions after exclusions, exact expectation over tie-breaks)."""

from __future__ import annotations

import math

import pytest
import torch

from dlrs_bench.sequential.metrics import (
    RETRIEVAL_METRICS,
    RankAccumulator,
    is_retrieval_metric,
    retrieval_metrics,
    tie_aware_counts,
)


def excluded(rows: int, n: int, *items: list[int]) -> torch.Tensor:
    mask = torch.zeros(rows, n, dtype=torch.bool)
    mask[:, 0] = True  # padding
    for r, seen in enumerate(items):
        mask[r, seen] = True
    return mask


def test_positions_without_ties():
    # items 1..5; target 3 scored 0.5; above it: 1 (0.9), 5 (0.7) → position 2
    scores = torch.tensor([[9.0, 0.9, 0.1, 0.5, 0.2, 0.7]])
    m = retrieval_metrics(scores, torch.tensor([3]), excluded(1, 6), cutoffs=(1, 2, 3))
    assert m["hr@1"] == 0 and m["hr@2"] == 0 and m["hr@3"] == 1
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4))
    assert m["mrr"] == pytest.approx(1 / 3)


def test_history_items_are_removed_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.2, 0.7]])
    # history [1, 3, 5]: 1 and 5 leave the ranking; the target 3 (re-consumed) stays → position 0
    m = retrieval_metrics(scores, torch.tensor([3]), excluded(1, 6, [1, 3, 5]), cutoffs=(1,))
    assert m["hr@1"] == 1 and m["mrr"] == 1 and m["ndcg@1"] == 1


def test_ties_are_the_expectation_over_a_random_tie_break():
    # target 2 tied with 3 others (1, 3, 4), one item above (5): position uniform on {1, 2, 3, 4}
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.5, 0.9]])
    higher, ties = tie_aware_counts(scores, torch.tensor([2]), excluded(1, 6))
    assert higher.tolist() == [1] and ties.tolist() == [3]
    m = retrieval_metrics(scores, torch.tensor([2]), excluded(1, 6), cutoffs=(2, 3))
    assert m["hr@2"] == pytest.approx(1 / 4)  # only position 1 is < 2
    assert m["hr@3"] == pytest.approx(2 / 4)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4)


def test_a_constant_scorer_is_a_uniform_random_ranking():
    n = 101  # 100 rankable items
    scores = torch.zeros(3, n)
    m = retrieval_metrics(scores, torch.tensor([5, 50, 99]), excluded(3, n), cutoffs=(10,))
    assert m["hr@10"] == pytest.approx(10 / 100)
    assert m["mrr"] == pytest.approx(sum(1 / (p + 1) for p in range(100)) / 100)


def test_batches_accumulate_to_the_mean_over_samples():
    torch.manual_seed(0)
    scores = torch.randn(7, 30)
    targets = torch.randint(1, 30, (7,))
    mask = excluded(7, 30)
    whole = retrieval_metrics(scores, targets, mask)
    acc = RankAccumulator(30)
    for part in (slice(0, 3), slice(3, 7)):
        acc.add(*tie_aware_counts(scores[part], targets[part], mask[part].clone()))
    assert acc.count == 7
    for name, value in acc.result().items():
        assert value == pytest.approx(whole[name])


def test_metric_names():
    assert RETRIEVAL_METRICS == ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr")
    assert all(is_retrieval_metric(n) for n in (*RETRIEVAL_METRICS, "hr@1", "ndcg@500"))
    assert not any(is_retrieval_metric(n) for n in ("hr@0", "hr@", "auc", "ndcg10", "mrr@10"))
    assert math.isnan(RankAccumulator(5).result()["mrr"])
