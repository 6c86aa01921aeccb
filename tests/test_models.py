"""DLRM: output shape, analytic parameter and FLOP counts, any compressor underneath."""

from __future__ import annotations

import pytest
import torch
from kjt_helpers import measured_flops_per_sample, random_batch

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.full import FullOptions
from dlrs_bench.compression.hashing import HashingOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import build_model, count
from dlrs_bench.models.dlrm import DLRMBuilder, DLRMOptions

CPU = torch.device("cpu")
FEATURES = [SparseFeature("a", 50), SparseFeature("b", 20), SparseFeature("c", 10, multi_hot=True)]




def dlrm(options: DLRMOptions, num_dense: int, compressor=None, features=FEATURES):
    torch.manual_seed(0)
    emb = build_embeddings(features, options.embedding_dim, compressor or FullOptions(), CPU)
    return DLRMBuilder.build(options, num_dense, features, emb)


def mlp_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


OPTIONS = [
    (DLRMOptions(embedding_dim=8, bottom_mlp=[32, 16, 8], top_mlp=[64, 32, 1]), 5),
    (DLRMOptions(embedding_dim=4, bottom_mlp=[4], top_mlp=[8, 1]), 1),
    (DLRMOptions(embedding_dim=16, bottom_mlp=[64, 16], top_mlp=[32, 16, 8, 1]), 13),
]


@pytest.mark.parametrize("options, num_dense", OPTIONS)
def test_output_shape_and_finite(options, num_dense):
    model = dlrm(options, num_dense)
    dense, kjt = random_batch(7, num_dense, FEATURES)
    out = model(dense, kjt)
    assert out.shape == (7,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("options, num_dense", OPTIONS)
def test_dense_parameter_count_matches_formula(options, num_dense):
    model = dlrm(options, num_dense)
    d, f = options.embedding_dim, len(FEATURES)
    bottom = mlp_params([num_dense, *options.bottom_mlp])
    top = mlp_params([d + f * (f + 1) // 2, *options.top_mlp])
    counts = count(model)
    assert counts.dense_params == bottom + top
    embedding = sum(x.cardinality for x in FEATURES) * d
    assert counts.total_params == bottom + top + embedding
    assert counts.total_params == sum(p.numel() for p in model.parameters())
    assert counts.flops_per_sample == model.flops_per_sample()


@pytest.mark.parametrize("options, num_dense", OPTIONS)
def test_flops_per_sample_matches_flop_counter(options, num_dense):
    model = dlrm(options, num_dense)
    batch = 64
    dense, kjt = random_batch(batch, num_dense, FEATURES)
    measured = measured_flops_per_sample(model, dense, kjt)
    assert measured > 0
    assert model.flops_per_sample() == pytest.approx(measured, rel=0.10)


def test_flops_formula_by_hand():
    # bottom 5->32->16->8: 2*(160+512+128); gram: 2*(F+1)^2*d = 2*16*8; top (8+6)->64->32->1: 2*(896+2048+32)
    model = dlrm(DLRMOptions(embedding_dim=8, bottom_mlp=[32, 16, 8], top_mlp=[64, 32, 1]), 5)
    assert model.flops_per_sample() == 2 * (160 + 512 + 128) + 2 * 16 * 8 + 2 * (896 + 2048 + 32)


@pytest.mark.parametrize("hashing", [HashingOptions(ratio=4), HashingOptions(ratio=3, hash="universal", threshold=15)])
def test_dlrm_over_hashed_embeddings(hashing):
    options = DLRMOptions(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1])
    full, hashed = dlrm(options, 4), dlrm(options, 4, hashing)
    dense, kjt = random_batch(16, 4, FEATURES)
    out = hashed(dense, kjt)
    assert out.shape == (16,) and torch.isfinite(out).all()
    # same dense part, fewer embedding parameters
    assert count(hashed).dense_params == count(full).dense_params
    emb = account(hashed.embeddings, hashing.ratio)
    assert count(hashed).total_params == count(full).dense_params + emb.params
    assert emb.params < account(full.embeddings).params
    # gradients reach the hashed tables and the MLPs
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.ones(16))
    loss.backward()
    assert all(p.grad is not None for p in hashed.parameters())
    assert hashed.embeddings.ebc.embedding_bags["t_a"].weight.grad.abs().sum() > 0


def test_build_model_through_the_registry_and_errors():
    options = DLRMOptions(embedding_dim=8, bottom_mlp=[8], top_mlp=[4, 1])
    emb = build_embeddings(FEATURES, 8, FullOptions(), CPU)
    model = build_model(options, 2, FEATURES, emb)
    assert model.embeddings is emb
    with pytest.raises(ValueError, match="at least one dense feature"):
        DLRMBuilder.build(options, 0, FEATURES, emb)


def test_training_reduces_loss_on_a_learnable_task():
    """A few Adam steps on a fixed batch whose label is a function of one id: the loss falls."""
    options = DLRMOptions(embedding_dim=8, bottom_mlp=[8], top_mlp=[16, 1])
    model = dlrm(options, 2)
    dense, kjt = random_batch(128, 2, FEATURES, seed=3)
    labels = (kjt.to_dict()["a"].values() % 2).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
