"""xDeepFM's CIN and FiBiNET's SENET and bilinear layers against their written-out formulas (issue 13).

Small inputs, hand-set weights, the reference computed here with explicit loops over fields, pairs
and maps (not the models' vectorised code):

- CIN (Lian et al. 2018, eq. 6): X^k_h = σ(sum_{i,j} W^k_{h, i m + j} (X^{k-1}_i ∘ X^0_j) + b^k_h),
  each layer sum-pooled over d; ``split_half`` (DeepCTR) keeps maps [0, H/2) for the next layer and
  outputs [H/2, H);
- bilinear (Huang et al. 2019): p_ij = (v_i W) ∘ v_j for i < j, W shared (field_all), per left
  field i (field_each) or per pair (field_interaction), pairs in itertools.combinations order;
- SENET: A = σ2(W2 ReLU(W1 z)), z_i = mean_d v_i, V = E ∘ A;
- FiBiNET's ``dense_position: last``: the same layers on the fields reordered categorical first;
- parameter counts of both models from the formulas, for every option combination.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from kjt_helpers import random_batch
from pydantic import ValidationError
from torch import nn

from dlrs_bench.compression.base import build_embeddings
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import build_model, count
from dlrs_bench.models.fibinet import SENET, Bilinear
from dlrs_bench.models.xdeepfm import CIN
from dlrs_bench.registry import COMPRESSORS, MODELS

FEATURES = [SparseFeature("a", 30), SparseFeature("b", 20), SparseFeature("c", 10)]
NUM_DENSE = 2
D = 4
M = len(FEATURES) + 1  # the dense field + F sparse fields


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


def fields(batch: int = 2, m: int = 3, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hand_set(module: nn.Module, seed: int = 1) -> nn.Module:
    """Every parameter set to fixed values (biases non-zero), in float64."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


# ---------------------------------------------------------------- CIN


def cin_reference(x0: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor] | None,
                  relu: bool, split_half: bool) -> torch.Tensor:
    """Eq. 6 with explicit loops: ``[B, m, d]`` → the pooled maps sent to the output."""
    b, m, d = x0.shape
    prev, pooled = x0, []
    for k, w in enumerate(weights):
        h_k = w.shape[0]
        xk = torch.zeros(b, h_k, d, dtype=x0.dtype)
        for h in range(h_k):
            for i in range(prev.shape[1]):
                for j in range(m):
                    xk[:, h] += w[h, i * m + j] * prev[:, i] * x0[:, j]
            if biases is not None:
                xk[:, h] += biases[k][h]
        if relu:
            xk = xk.clamp(min=0)
        if split_half and k < len(weights) - 1:
            prev, out = xk[:, : h_k // 2], xk[:, h_k // 2:]
        else:
            prev, out = xk, xk
        pooled.append(out.sum(2))
    return torch.cat(pooled, dim=1)


CIN_CASES = [
    # widths, activation, bias, split_half
    ([3], "identity", False, False),
    ([3], "identity", True, False),
    ([3], "relu", True, False),
    ([3, 2], "identity", False, False),
    ([3, 2], "identity", True, False),
    ([3, 2], "relu", False, False),
    ([3, 2], "relu", True, False),
    ([4, 2, 3], "identity", True, True),
    ([4, 2, 3], "relu", False, True),
]


@pytest.mark.parametrize("widths, activation, bias, split_half", CIN_CASES)
def test_cin_matches_eq6(widths, activation, bias, split_half):
    x0 = fields(m=3)
    cin = hand_set(CIN(3, widths, activation, bias, split_half))
    got = cin(x0)
    biases = list(cin.biases) if bias else None
    want = cin_reference(x0, list(cin.maps), biases, activation == "relu", split_half)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


def test_cin_one_layer_by_hand():
    """m = 2, d = 1, one map: X^1 = W·[x0 x0, x0 x1, x1 x0, x1 x1] + b."""
    cin = CIN(2, [1], "identity", bias=True).double()
    with torch.no_grad():
        cin.maps[0].copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        cin.biases[0].fill_(0.5)
    x = torch.tensor([[[2.0], [3.0]]], dtype=torch.float64)
    # 1*4 + 2*6 + 3*6 + 4*9 + 0.5
    assert cin(x).item() == pytest.approx(4 + 12 + 18 + 36 + 0.5)


def test_identity_cin_without_bias_is_a_polynomial():
    """Eq. 6 without activation or bias: layer k is homogeneous of degree k + 1 in X^0."""
    x0, t = fields(m=3), 1.7
    cin = hand_set(CIN(3, [3, 2, 2], "identity", bias=False))
    out, scaled = cin(x0), cin(t * x0)
    torch.testing.assert_close(scaled[:, :3], t ** 2 * out[:, :3])
    torch.testing.assert_close(scaled[:, 3:5], t ** 3 * out[:, 3:5])
    torch.testing.assert_close(scaled[:, 5:], t ** 4 * out[:, 5:])


def test_cin_equals_fuxictr_conv1d_form():
    """FuxiCTR's CIN (einsum "bhd,bmd->bhmd" of X^0 and X^{k-1}, then Conv1d(kernel 1) with bias),
    written out with its own index order: the same function after permuting the weight columns."""
    m, widths, x0 = 3, [3, 2], fields(m=3)
    cin = hand_set(CIN(m, widths, "identity", bias=True))
    convs, previous = [], [m, *widths[:-1]]
    for w, b, p in zip(cin.maps, cin.biases, previous):
        conv = nn.Conv1d(m * p, w.shape[0], kernel_size=1).double()
        # FuxiCTR's channel j p + i is X^0_j ∘ X^{k-1}_i; ours i m + j
        order = [i * m + j for j in range(m) for i in range(p)]
        with torch.no_grad():
            conv.weight.copy_(w[:, order].unsqueeze(2))
            conv.bias.copy_(b)
        convs.append(conv)
    x, pooled = x0, []
    for conv in convs:
        hadamard = torch.einsum("bhd,bmd->bhmd", x0, x).reshape(x0.shape[0], -1, x0.shape[2])
        x = conv(hadamard)
        pooled.append(x.sum(-1))
    torch.testing.assert_close(cin(x0), torch.cat(pooled, dim=-1))


def test_split_half_shapes():
    cin = CIN(5, [6, 4, 3], split_half=True)
    assert [tuple(w.shape) for w in cin.maps] == [(6, 5 * 5), (4, 3 * 5), (3, 2 * 5)]
    assert cin.out_features == 3 + 2 + 3
    assert cin(torch.randn(7, 5, D)).shape == (7, 8)
    no_split = CIN(5, [6, 4, 3])
    assert [tuple(w.shape) for w in no_split.maps] == [(6, 25), (4, 30), (3, 20)]
    assert no_split.out_features == 13


def test_split_half_needs_even_widths():
    with pytest.raises(ValueError, match="even"):
        CIN(3, [5, 4], split_half=True)
    CIN(3, [4, 5], split_half=True)  # the last layer may be odd
    opts = MODELS.get("xdeepfm").Options
    with pytest.raises(ValidationError, match="even"):
        opts(name="xdeepfm", embedding_dim=D, cin=[5, 4], split_half=True)
    with pytest.raises(ValidationError, match="scale.mlp"):  # even as written, odd after scale.mlp
        opts(name="xdeepfm", embedding_dim=D, cin=[2, 4], split_half=True, scale={"mlp": 1.5})


# ---------------------------------------------------------------- bilinear


def bilinear_reference(x: torch.Tensor, kind: str, weight: torch.Tensor) -> torch.Tensor:
    out = []
    for n, (i, j) in enumerate(itertools.combinations(range(x.shape[1]), 2)):
        w = weight if kind == "field_all" else weight[i] if kind == "field_each" else weight[n]
        out.append((x[:, i] @ w) * x[:, j])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("kind, matrices", [("field_all", None), ("field_each", 3), ("field_interaction", 6)])
def test_bilinear_matches_formula(kind, matrices):
    x = fields(m=4)
    layer = hand_set(Bilinear(4, D, kind))
    assert tuple(layer.weight.shape) == ((D, D) if matrices is None else (matrices, D, D))
    torch.testing.assert_close(layer(x), bilinear_reference(x, kind, layer.weight))


def test_bilinear_by_hand():
    """m = 3, d = 2; field_each: W_0 = I, W_1 = [[0, 1], [1, 0]] (swap)."""
    layer = Bilinear(3, 2, "field_each").double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]))
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], dtype=torch.float64)
    want = torch.tensor([[[1 * 3, 2 * 4], [1 * 5, 2 * 6], [4 * 5, 3 * 6]]], dtype=torch.float64)
    torch.testing.assert_close(layer(v), want)


def test_bilinear_field_each_gets_a_gradient_for_every_matrix():
    layer = Bilinear(4, D, "field_each")
    layer(torch.randn(3, 4, D)).sum().backward()
    assert (layer.weight.grad.flatten(1).abs().sum(1) > 0).all()


# ---------------------------------------------------------------- SENET


@pytest.mark.parametrize("excitation", ["relu", "sigmoid"])
@pytest.mark.parametrize("m, reduction, hidden", [(4, 3, 1), (7, 3, 2), (4, 10, 1), (6, 2, 3)])
def test_senet_matches_formula(excitation, m, reduction, hidden):
    e = fields(batch=5, m=m)
    senet = hand_set(SENET(m, reduction, excitation))
    w1, w2 = senet.excitation[0].weight, senet.excitation[2].weight
    assert tuple(w1.shape) == (hidden, m) and tuple(w2.shape) == (m, hidden)
    assert senet.excitation[0].bias is None and senet.excitation[2].bias is None
    sigma2 = torch.relu if excitation == "relu" else torch.sigmoid
    for s in range(e.shape[0]):
        z = torch.stack([e[s, i].mean() for i in range(m)])
        a = sigma2(w2 @ torch.relu(w1 @ z))
        torch.testing.assert_close(senet.weights(e)[s], a)
        torch.testing.assert_close(senet(e)[s], e[s] * a.unsqueeze(1))


# ---------------------------------------------------------------- the models, assembled


def model(name: str, seed: int = 0, **overrides):
    values = {"embedding_dim": D, "dense_features": "field", "bottom_mlp": [8, D], "dnn": [8, 1], **overrides}
    opts = MODELS.get(name).Options(name=name, **values)
    torch.manual_seed(seed)
    full = COMPRESSORS.get("none").Options(kind="none")
    embeddings = build_embeddings(FEATURES, opts.table_width(), full, torch.device("cpu"))
    return opts, build_model(opts, NUM_DENSE, FEATURES, embeddings).double()


def batch(size: int = 3):
    dense, kjt = random_batch(size, NUM_DENSE, FEATURES)
    return dense.double(), kjt


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_fibinet_two_independent_bilinear_layers(kind):
    _, net = model("fibinet", bilinear=kind)
    assert net.bilinear_e is not net.bilinear_v
    assert net.bilinear_e.weight.data_ptr() != net.bilinear_v.weight.data_ptr()
    assert not torch.equal(net.bilinear_e.weight, net.bilinear_v.weight)  # initialised independently
    dense, kjt = batch()
    pooled = net.embeddings(kjt)
    e = net.inputs(dense, pooled)
    p = bilinear_reference(e, kind, net.bilinear_e.weight)
    q = bilinear_reference(net.senet(e), kind, net.bilinear_v.weight)
    want = net.first_order(dense, pooled, e, kjt) + net.dnn(torch.cat([p, q], dim=1).flatten(1))
    torch.testing.assert_close(net(dense, kjt), want)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_fibinet_dense_position_last(kind):
    """``dense_position: last``: the same layers on the fields reordered categorical first, then dense (FuxiCTR's
    order in tools/fuxictr_compare.py); pair (i, j), i < j, in that order is (v_i W) ∘ v_j. Same parameters and,
    from the same seed, the same weights as the default; a different function on the dense × categorical pairs."""
    _, first = model("fibinet", bilinear=kind)
    _, last = model("fibinet", bilinear=kind, dense_position="last")
    assert [n for n, _ in first.named_parameters()] == [n for n, _ in last.named_parameters()]
    for a, b in zip(first.parameters(), last.parameters()):
        torch.testing.assert_close(a, b)
    dense, kjt = batch()
    pooled = last.embeddings(kjt)
    e = last.inputs(dense, pooled)  # [dense field, a, b, c]
    reordered = torch.cat([e[:, 1:], e[:, :1]], dim=1)  # [a, b, c, dense field]
    p = bilinear_reference(reordered, kind, last.bilinear_e.weight)
    q = bilinear_reference(last.senet(reordered), kind, last.bilinear_v.weight)
    want = last.first_order(dense, pooled, e, kjt) + last.dnn(torch.cat([p, q], dim=1).flatten(1))
    torch.testing.assert_close(last(dense, kjt), want)
    assert (first(dense, kjt) - last(dense, kjt)).abs().max() > 1e-6


def test_fibinet_dense_position_is_not_in_default_ids():
    """The default is left out of the options (and so of existing scenario ids); ``last`` is kept."""
    opts = MODELS.get("fibinet").Options
    assert "dense_position" not in opts(name="fibinet").model_dump(exclude_defaults=True)
    assert opts(name="fibinet", dense_position="last").model_dump(exclude_defaults=True)["dense_position"] == "last"
    with pytest.raises(ValidationError):
        opts(name="fibinet", dense_position="middle")


@pytest.mark.parametrize("activation, bias, split_half", itertools.product(["identity", "relu"], [False, True],
                                                                           [False, True]))
def test_xdeepfm_assembled(activation, bias, split_half):
    _, net = model("xdeepfm", cin=[4, 2], cin_activation=activation, cin_bias=bias, split_half=split_half)
    dense, kjt = batch()
    rows = net.embeddings(kjt)
    x = net.inputs(dense, rows)
    pooled = cin_reference(x, list(net.cin.maps), list(net.cin.biases) if bias else None,
                           activation == "relu", split_half)
    want = net.first_order(dense, rows, x, kjt) + (pooled @ net.cin_out.weight.T).squeeze(-1) + net.dnn(x.flatten(1))
    torch.testing.assert_close(net(dense, kjt), want)


def test_defaults():
    """The defaults and where they come from (see the models' docstrings)."""
    x = MODELS.get("xdeepfm").Options(name="xdeepfm")
    assert (x.cin_activation, x.cin_bias, x.split_half) == ("identity", True, False)  # FuxiCTR's CIN, eq. 6
    f = MODELS.get("fibinet").Options(name="fibinet")
    assert (f.bilinear, f.reduction, f.excitation) == ("field_interaction", 3, "relu")  # FuxiCTR, DeepCTR
    assert f.dense_position == "first"  # FieldInputs' order (the paper orders no fields)


# ---------------------------------------------------------------- parameter counts, every option


def bottom_and_dnn(m: int) -> int:
    """Bottom MLP 2 → 8 → 4 and a DNN [8] to the logit, on the model's DNN input width ``m``."""
    return (NUM_DENSE * 8 + 8) + (8 * D + D) + (m * 8 + 8) + (8 + 1)


@pytest.mark.parametrize("activation, bias, split_half", itertools.product(["identity", "relu"], [False, True],
                                                                           [False, True]))
def test_xdeepfm_parameter_count(activation, bias, split_half):
    cin = [6, 4, 5]
    opts, net = model("xdeepfm", cin=cin, cin_activation=activation, cin_bias=bias, split_half=split_half)
    if split_half:  # layer inputs m, 3, 2; outputs 3 + 2 + 5
        maps = 6 * (M * M) + 4 * (3 * M) + 5 * (2 * M)
        out = 3 + 2 + 5
    else:  # layer inputs m, 6, 4; outputs 6 + 4 + 5
        maps = 6 * (M * M) + 4 * (6 * M) + 5 * (4 * M)
        out = 6 + 4 + 5
    want = bottom_and_dnn(M * D) + (NUM_DENSE + 1) + maps + bias * (6 + 4 + 5) + out  # per-id first order: u, b
    assert count(net).dense_params == want
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("embeddings")) == want


@pytest.mark.parametrize("excitation", ["relu", "sigmoid"])
@pytest.mark.parametrize("kind, matrices", [("field_all", 1), ("field_each", M - 1),
                                            ("field_interaction", M * (M - 1) // 2)])
@pytest.mark.parametrize("first_order, linear", [("per_id", NUM_DENSE + 1), ("fields", M * D + 1)])
def test_fibinet_parameter_count(kind, matrices, excitation, first_order, linear):
    opts, net = model("fibinet", bilinear=kind, excitation=excitation, first_order=first_order)
    hidden = max(1, M // 3)
    pairs = M * (M - 1) // 2
    want = bottom_and_dnn(2 * pairs * D) + 2 * M * hidden + 2 * matrices * D * D + linear
    assert count(net).dense_params == want
    rows = sum(f.cardinality for f in FEATURES)
    assert count(net).total_params == want + rows * (D + (first_order == "per_id"))  # w: one more column
