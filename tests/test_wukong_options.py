"""Wukong's options for FuxiCTR's WuKong (fmb_activation, y_init_std, residual_bias, top_batchnorm,
dense_features, init), each against its formula on tiny inputs, their parameter counts by hand, and that
their defaults keep today's model and scenario ids (``model_dump(exclude_defaults=True)``).

The formulas are written out with plain tensor ops over the layers' own weights; the reference is
FuxiCTR 2.3.10's model_zoo/WuKong/src/WuKong.py (tools/fuxictr_layers.py ``compare_wukong`` checks the
whole model against it with copied weights).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from kjt_helpers import measured_flops_per_sample, random_batch
from pydantic import ValidationError
from torch import nn

from dlrs_bench.compression.base import build_embeddings
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import build_model, count
from dlrs_bench.models.layers import FieldInputs, Head
from dlrs_bench.models.options import WukongOptions
from dlrs_bench.models.wukong import BatchNormHead, WukongLayer
from dlrs_bench.registry import COMPRESSORS

CPU = torch.device("cpu")
FEATURES = [SparseFeature("a", 7), SparseFeature("b", 5, multi_hot=True), SparseFeature("c", 3)]
NUM_DENSE, DIM = 2, 4
#: n_0 = 3 + 1 (mlp) or 3 + 2 (per_feature) != n_f + n_l = 5 or 6: layer 0 projects its residual
SMALL = {"embedding_dim": DIM, "num_layers": 2, "n_f": 2, "n_l": 4, "k": 3, "fmb_mlp": [8], "bottom_mlp": [6],
         "top_mlp": [8, 4, 1]}
FUXICTR = {"fmb_activation": "relu", "y_init_std": "one", "residual_bias": True, "top_batchnorm": True,
           "dense_features": "per_feature", "init": "xavier_normal"}
NEW_DEFAULTS = {"fmb_activation": "identity", "y_init_std": "inverse_sqrt", "residual_bias": False,
                "top_batchnorm": False, "dense_features": "mlp", "init": "torch"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


def options(**overrides: Any) -> WukongOptions:
    values = {**SMALL, **overrides}
    if values.get("dense_features") == "per_feature":
        values.pop("bottom_mlp", None)
    return WukongOptions(**values)


def make(opts: WukongOptions, num_dense: int = NUM_DENSE, features: list[SparseFeature] = FEATURES,
         seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    embeddings = build_embeddings(features, opts.table_width(), COMPRESSORS.get("none").Options(kind="none"), CPU)
    return build_model(opts, num_dense, features, embeddings).eval()


def layer_by_hand(layer: WukongLayer, x: torch.Tensor, relu: bool) -> torch.Tensor:
    """X_{i+1} = LN(concat(FMB(X), W_L X) + R(X)), FMB = σ(MLP(LN(flatten(X (X^T Y))))) ``[B, n_out, d]``."""
    b, n, d = x.shape
    fm = torch.einsum("bnd,bmd,mk->bnk", x, x, layer.projection).reshape(b, n * layer.k)
    h = nn.functional.layer_norm(fm, (n * layer.k,), layer.fmb_norm.weight, layer.fmb_norm.bias)
    linears = [m for m in layer.fmb_mlp.modules() if isinstance(m, nn.Linear)]
    for lin in linears[:-1]:
        h = torch.relu(h @ lin.weight.T + lin.bias)
    h = h @ linears[-1].weight.T + linears[-1].bias
    fmb = (torch.relu(h) if relu else h).view(b, layer.n_f, d)
    lcb = torch.einsum("ln,bnd->bld", layer.lcb.weight, x)
    if isinstance(layer.residual, nn.Identity):
        res = x
    else:
        res = torch.einsum("on,bnd->bod", layer.residual.weight, x)
        if layer.residual.bias is not None:
            res = res + layer.residual.bias[None, :, None]
    return nn.functional.layer_norm(torch.cat([fmb, lcb], 1) + res, (d,), layer.norm.weight, layer.norm.bias)


def chain(sizes: list[int]) -> int:
    """Weights and biases of Linear layers sizes[0] -> sizes[1] -> ..."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def params_by_hand(o: WukongOptions, num_dense: int, num_sparse: int) -> int:
    """Every parameter outside the embeddings, from the options."""
    d = o.dim
    if o.dense_features == "per_feature":
        total, n = num_dense * d, num_sparse + num_dense  # v_k [d] per dense feature
    else:
        total, n = chain([num_dense, *o.bottom_mlp, o.dense_embeddings * d]), num_sparse + o.dense_embeddings
    n_out = o.n_f + o.n_l
    for _ in range(o.num_layers):
        total += (n * o.k + 2 * n * o.k + chain([n * o.k, *o.fmb_mlp, o.n_f * d]) + o.n_l * n + 2 * d
                  + ((n_out * n + (n_out if o.residual_bias else 0)) if n != n_out else 0))
        n = n_out
    hidden = o.top_mlp[:-1]
    return total + chain([n * d, *o.top_mlp]) + (2 * sum(hidden) if o.top_batchnorm else 0)  # BN γ, β


# ---------------------------------------------------------------- defaults


def test_defaults_leave_the_dump_and_the_model_unchanged():
    assert WukongOptions().model_dump(exclude_defaults=True) == {}
    plain = options()
    explicit = options(**NEW_DEFAULTS)
    assert explicit.model_dump(exclude_defaults=True) == plain.model_dump(exclude_defaults=True)
    assert not set(NEW_DEFAULTS) & set(plain.model_dump(exclude_defaults=True))
    a, b = make(plain), make(explicit)
    dense, kjt = random_batch(6, NUM_DENSE, FEATURES)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with torch.no_grad():
        assert torch.equal(a(dense, kjt), b(dense, kjt))
    # today's structure: a linear FMB end, no residual bias, no BatchNorm, dense_embeddings through the MLP
    assert not isinstance(a.layers[0].fmb_mlp[-1], nn.ReLU)
    assert a.layers[0].residual.bias is None
    assert isinstance(a.head, Head) and not any(isinstance(m, nn.BatchNorm1d) for m in a.modules())
    assert a.inputs is None and a.layers[0].n_in == len(FEATURES) + 1


def test_the_match_suite_block_dumps_as_before():
    block = {"embedding_dim": 32, "embedding_init": {"kind": "normal", "std": 1e-4}, "num_layers": 3, "n_f": 40,
             "n_l": 40, "k": 8, "fmb_mlp": [512, 256], "dense_embeddings": 4, "bottom_mlp": [],
             "top_mlp": [512, 256, 1]}
    dumped = WukongOptions(name="wukong", **block).model_dump(exclude_defaults=True)
    assert set(dumped) == set(block) - {"num_layers"}  # num_layers 3 is the default; no new key
    assert WukongOptions(**block, **NEW_DEFAULTS).model_dump(exclude_defaults=True) == dumped
    full = WukongOptions(**FUXICTR).model_dump()
    assert WukongOptions(**full) == WukongOptions(**FUXICTR)  # a full dump validates again (per_feature too)


# ---------------------------------------------------------------- each option's formula


@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("residual_bias", [False, True])
def test_layer_follows_its_formula(activation, residual_bias):
    model = make(options(fmb_activation=activation, residual_bias=residual_bias, num_layers=1))
    layer = model.layers[0]
    assert layer.n_in != layer.n_f + layer.n_l  # the residual is a projection
    with torch.no_grad():
        if residual_bias:
            layer.residual.bias.copy_(torch.linspace(-1.0, 1.0, layer.residual.out_features))
        x = torch.randn(5, layer.n_in, DIM, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(layer(x), layer_by_hand(layer, x, relu=activation == "relu"))


def test_relu_makes_every_fmb_embedding_non_negative():
    x = torch.randn(16, len(FEATURES) + 1, DIM, generator=torch.Generator().manual_seed(2))
    for activation, negative in (("relu", False), ("identity", True)):
        layer = make(options(fmb_activation=activation)).layers[0]
        with torch.no_grad():
            fm = torch.bmm(x, x.transpose(1, 2) @ layer.projection).flatten(1)
            fmb = layer.fmb_mlp(layer.fmb_norm(fm))
        assert bool((fmb < 0).any()) is negative
        assert isinstance(layer.fmb_mlp[-1], nn.ReLU) is (activation == "relu")
        if not negative:
            assert bool((fmb == 0).any()) and bool((fmb > 0).any())


@pytest.mark.parametrize("y_init_std", ["inverse_sqrt", "one"])
def test_y_starts_at_its_std(y_init_std):
    model = make(options(y_init_std=y_init_std, k=400, n_f=30, n_l=30))
    for layer in model.layers:  # n_0 = 4 (400 x 4 draws), then 60 (24,000 draws)
        expected = 1.0 if y_init_std == "one" else 1 / math.sqrt(layer.n_in)
        y = layer.projection.detach()
        assert y.shape == (layer.n_in, 400)
        assert abs(y.mean().item()) < 0.1 * expected
        assert y.std().item() == pytest.approx(expected, rel=0.06)


def test_residual_bias_is_a_parameter_only_where_there_is_a_projection():
    model = make(options(residual_bias=True))
    first, second = model.layers
    assert first.residual.bias.shape == (first.n_f + first.n_l,)
    assert isinstance(second.residual, nn.Identity)
    assert count(model).dense_params - count(make(options())).dense_params == first.n_f + first.n_l


def test_top_batchnorm_normalises_before_each_relu_in_train_and_eval():
    model = make(options(top_batchnorm=True))
    head = model.head
    assert isinstance(head, BatchNormHead)
    kinds = [type(m) for m in head.hidden]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    z = torch.randn(9, head.sizes[0], generator=torch.Generator().manual_seed(3))

    def by_hand(train: bool) -> torch.Tensor:
        h = z
        for lin, bn in zip(head.hidden[0::3], head.hidden[1::3]):
            a = h @ lin.weight.T + lin.bias
            mean, var = (a.mean(0), a.var(0, unbiased=False)) if train else (bn.running_mean, bn.running_var)
            h = torch.relu((a - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
        return (h @ head.out.weight.T + head.out.bias).squeeze(-1)

    with torch.no_grad():
        for bn in head.hidden[1::3]:
            bn.running_mean.copy_(torch.linspace(-0.5, 0.5, bn.num_features))
            bn.running_var.copy_(torch.linspace(0.5, 2.0, bn.num_features))
            bn.weight.copy_(torch.linspace(0.8, 1.2, bn.num_features))
            bn.bias.copy_(torch.linspace(-0.1, 0.1, bn.num_features))
        head.eval()
        torch.testing.assert_close(head(z), by_hand(train=False))
        expected_train = by_hand(train=True)
        before = head.hidden[1].running_mean.clone()
        head.train()
        torch.testing.assert_close(head(z), expected_train)
        assert not torch.equal(head.hidden[1].running_mean, before)  # train mode updates the running mean


def test_per_feature_makes_each_dense_feature_a_field():
    model = make(options(dense_features="per_feature"))
    assert isinstance(model.inputs, FieldInputs) and not hasattr(model, "dense_arch")
    assert model.layers[0].n_in == len(FEATURES) + NUM_DENSE
    dense = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    with torch.no_grad():
        v = model.inputs.dense_weight
        fields = model.dense_fields(dense)
    assert fields.shape == (2, NUM_DENSE, DIM)
    for row in range(2):
        for k in range(NUM_DENSE):
            torch.testing.assert_close(fields[row, k], dense[row, k] * v[k])  # e_k = v_k x_k


def test_per_feature_refuses_the_mlp_options_and_works_without_dense_features():
    with pytest.raises(ValidationError, match="unused with dense_features: per_feature"):
        WukongOptions(dense_features="per_feature", dense_embeddings=2)
    with pytest.raises(ValidationError, match="unused with dense_features: per_feature"):
        WukongOptions(dense_features="per_feature", bottom_mlp=[])
    with pytest.raises(ValueError, match="at least one dense feature"):
        make(options(), num_dense=0)
    model = make(options(dense_features="per_feature"), num_dense=0)
    dense, kjt = random_batch(3, 0, FEATURES)
    assert model.layers[0].n_in == len(FEATURES)
    assert model(dense, kjt).shape == (3,)


def test_xavier_normal_init_draws_every_linear_and_leaves_y():
    torch.manual_seed(0)
    o = options(init="xavier_normal", dense_features="per_feature", residual_bias=True, top_batchnorm=True,
                fmb_mlp=[300], top_mlp=[300, 1], embedding_dim=8, n_f=40, n_l=20)
    model = make(o, num_dense=200)
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.numel() >= 5000:
            expected = math.sqrt(2.0 / (m.in_features + m.out_features))
            assert m.weight.std().item() == pytest.approx(expected, rel=0.05)
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert not m.bias.any()
    v = model.inputs.dense_weight.detach()  # 200 Linear(1, d) weights: N(0, 2 / (1 + d))
    assert v.std().item() == pytest.approx(math.sqrt(2.0 / (1 + 8)), rel=0.06)
    for layer in model.layers:  # Y keeps its y_init_std draw
        assert layer.projection.std().item() == pytest.approx(1 / math.sqrt(layer.n_in), rel=0.2)
    torch_default = make(options(fmb_mlp=[300]))
    assert torch_default.layers[0].fmb_mlp[-1].bias.any()  # PyTorch's default: uniform biases


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize("overrides", [{}, FUXICTR, *({k: v} for k, v in FUXICTR.items()),
                                       {**FUXICTR, "num_layers": 3, "n_f": 3, "n_l": 2}])
def test_parameter_and_flop_counts(overrides):
    o = options(**overrides)
    model = make(o)
    assert count(model).dense_params == params_by_hand(o, NUM_DENSE, len(FEATURES))
    dense, kjt = random_batch(8, NUM_DENSE, FEATURES)
    assert model.flops_per_sample() == pytest.approx(measured_flops_per_sample(model, dense, kjt), rel=0.10)


def test_fuxictr_options_give_fuxictr_wukong_parameter_count():
    """FuxiCTR's WuKong_default on the bundled MovieLens at d = 32 has 3,837,617 parameters
    (build/fuxictr_d32.json: 311,072 in its embeddings, the 4 numeric Linear(1, 32) among them); the
    train vocabularies are 612, 8974, 22 and 109 rows (tools/fuxictr_layers.py CATEGORICAL)."""
    features = [SparseFeature("user", 612), SparseFeature("movie", 8974), SparseFeature("genres", 22, multi_hot=True),
                SparseFeature("year", 109)]
    o = WukongOptions(embedding_dim=32, num_layers=3, n_f=40, n_l=40, k=8, fmb_mlp=[512, 256],
                      top_mlp=[512, 256, 1], **FUXICTR)
    counts = count(make(o, num_dense=4, features=features))
    assert counts.dense_params == params_by_hand(o, 4, len(features))
    assert counts.total_params == 3_837_617
    assert counts.total_params - counts.dense_params + 4 * 32 == 311_072
