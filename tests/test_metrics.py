"""AUC, LogLoss, entropy and NE against hand-computed values and a brute-force AUC."""

from __future__ import annotations

import math

import pytest
import torch

from dlrs_bench.measure import metrics


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def brute_force_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2: O(n^2)."""
    pos = scores[labels == 1].double()
    neg = scores[labels == 0].double()
    diff = pos[:, None] - neg[None, :]
    wins = (diff > 0).double().sum() + 0.5 * (diff == 0).double().sum()
    return float(wins / (len(pos) * len(neg)))


# ---------------------------------------------------------------- AUC


def test_auc_hand_computed_example():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert metrics.auc(t([0.1, 0.4, 0.35, 0.8]), t([0, 0, 1, 1])) == pytest.approx(0.75, abs=1e-12)


def test_auc_all_tied_scores_is_one_half():
    assert metrics.auc(t([0.3] * 6), t([0, 1, 0, 1, 1, 0])) == pytest.approx(0.5, abs=1e-12)


def test_auc_partial_ties_by_hand():
    # positives: 0.5, 0.9; negatives: 0.2, 0.5, 0.5
    # 0.5 vs (0.2, 0.5, 0.5) = 1 + 1/2 + 1/2 = 2;  0.9 vs all three = 3;  (2 + 3) / (2 * 3) = 5/6
    scores = t([0.2, 0.5, 0.5, 0.5, 0.9])
    labels = t([0, 1, 0, 0, 1])
    assert metrics.auc(scores, labels) == pytest.approx(5 / 6, abs=1e-12)


def test_auc_ties_between_positives_only_do_not_matter():
    # positives tied with each other above every negative: still perfect
    assert metrics.auc(t([0.1, 0.2, 0.9, 0.9, 0.9]), t([0, 0, 1, 1, 1])) == pytest.approx(1.0)


def test_auc_unsorted_input_and_order_invariance():
    scores = t([0.8, 0.1, 0.35, 0.4])
    labels = t([1, 0, 1, 0])
    assert metrics.auc(scores, labels) == pytest.approx(0.75)
    perm = torch.tensor([2, 0, 3, 1])
    assert metrics.auc(scores[perm], labels[perm]) == pytest.approx(0.75)


def test_auc_perfect_and_inverted_ranking():
    scores = t([-3.0, -1.0, 0.5, 2.0, 4.0])
    labels = t([0, 0, 1, 1, 1])
    assert metrics.auc(scores, labels) == 1.0
    assert metrics.auc(-scores, labels) == 0.0


def test_auc_is_invariant_to_monotone_transforms():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(200, generator=g)
    labels = (torch.rand(200, generator=g) < 0.4).float()
    a = metrics.auc(logits, labels)
    assert metrics.auc(torch.sigmoid(logits), labels) == pytest.approx(a, abs=1e-12)
    assert metrics.auc(3 * logits + 7, labels) == pytest.approx(a, abs=1e-12)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_auc_single_class_is_nan(labels):
    assert math.isnan(metrics.auc(t([0.1, 0.5, 0.9]), t(labels)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_matches_brute_force_with_many_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n = 400 + 37 * seed
    scores = torch.randint(0, 7, (n,), generator=g).float()  # only 7 distinct values: heavy ties
    labels = torch.randint(0, 2, (n,), generator=g).float()
    assert metrics.auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_auc_matches_brute_force_with_continuous_scores():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(300, generator=g)
    labels = (torch.rand(300, generator=g) < 0.2).float()
    assert metrics.auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_auc_accepts_2d_and_double_inputs():
    scores = torch.tensor([[0.1], [0.4], [0.35], [0.8]], dtype=torch.float64)
    labels = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    assert metrics.auc(scores, labels) == pytest.approx(0.75)


# ---------------------------------------------------------------- LogLoss, entropy, NE


def test_logloss_from_logits_by_hand():
    logits = t([0.0, 2.0, -1.0, 3.0])
    labels = t([1, 0, 0, 1])
    # -log(sigmoid(z)) for y=1 is log(1 + e^-z); -log(1 - sigmoid(z)) for y=0 is log(1 + e^z)
    expected = (math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e**-1) + math.log(1 + math.e**-3)) / 4
    assert metrics.logloss(logits, labels) == pytest.approx(expected, rel=1e-9)


def test_logloss_is_finite_for_extreme_logits():
    value = metrics.logloss(t([100.0, -100.0]), t([0, 1]))
    assert value == pytest.approx(100.0, rel=1e-6)  # no clipping to log(eps), no inf


def test_entropy_values():
    assert metrics.entropy(0.5) == pytest.approx(math.log(2), abs=1e-15)
    p = 0.25
    assert metrics.entropy(p) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    assert metrics.entropy(0.1) == pytest.approx(metrics.entropy(0.9))
    assert math.isnan(metrics.entropy(0.0)) and math.isnan(metrics.entropy(1.0))


def test_ne_is_logloss_over_train_entropy():
    logits = t([0.3, -1.2, 2.0, 0.0, -0.4])
    labels = t([1, 0, 1, 0, 1])
    train_ctr = 0.3
    expected = metrics.logloss(logits, labels) / metrics.entropy(train_ctr)
    assert metrics.ne(logits, labels, train_ctr) == pytest.approx(expected, rel=1e-12)


def test_ne_of_constant_ctr_predictor_is_one():
    # predicting the train CTR everywhere on data with exactly that CTR gives NE = 1
    ctr = 0.25
    labels = t([1, 0, 0, 0] * 25)
    logits = torch.full((100,), math.log(ctr / (1 - ctr)))
    assert metrics.ne(logits, labels, ctr) == pytest.approx(1.0, rel=1e-6)


def test_all_metrics_consistent():
    logits = t([0.1, 0.4, 0.35, 0.8])
    labels = t([0, 0, 1, 1])
    out = metrics.all_metrics(logits, labels, 0.5)
    assert set(out) == {"auc", "logloss", "ne"}
    assert out["auc"] == pytest.approx(0.75)
    assert out["logloss"] == pytest.approx(metrics.logloss(logits, labels))
    assert out["ne"] == pytest.approx(out["logloss"] / math.log(2))
