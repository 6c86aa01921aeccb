"""DCN-V2, DeepFM and the dense-feature inputs against their written-out formulas (issue 13).

Every expected value here is computed with Python loops over hand-set weights (no module, no matmul):
the cross layers (full, low-rank U V^T, mixture of low-rank experts) in both structures, FM's
second-order term, the per-feature dense embedding v_k x_k, where the dropout layers sit, the
initialisation schemes, and the parameter count of every option from its formula.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from conftest import line_of
from kjt_helpers import one_hot_kjt, random_batch
from torch import nn

from dlrs_bench.compression.base import build_embeddings
from dlrs_bench.config.expand import load_suite
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.errors import UserInputError
from dlrs_bench.models.base import build_model, count
from dlrs_bench.models.deepfm import fm_second_order
from dlrs_bench.models.layers import FieldInputs
from dlrs_bench.models.options import DCNv2Options, DeepFMOptions
from dlrs_bench.registry import COMPRESSORS

CPU = torch.device("cpu")
FEATURES = [SparseFeature("a", 5), SparseFeature("b", 3)]
NUM_DENSE, DIM = 2, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


def make(options: Any, num_dense: int = NUM_DENSE, features: list[SparseFeature] = FEATURES,
         seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    embeddings = build_embeddings(features, options.table_width(), COMPRESSORS.get("none").Options(kind="none"), CPU)
    return build_model(options, num_dense, features, embeddings).eval()


def hand(*shape: int, scale: float = 0.1, offset: int = 0) -> torch.Tensor:
    """Deterministic, varied values: ((7 i + offset) mod 11 - 5) * scale, in row-major order."""
    n = math.prod(shape)
    return torch.tensor([((7 * i + offset) % 11 - 5) * scale for i in range(n)]).reshape(shape)


def set_(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value)


def vec(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().reshape(-1)]


def matvec(w: list[list[float]], x: list[float]) -> list[float]:
    return [sum(w_ij * x_j for w_ij, x_j in zip(row, x)) for row in w]


def rows(t: torch.Tensor) -> list[list[float]]:
    return [vec(r) for r in t]


# ---------------------------------------------------------------- the inputs: x0 by hand

DENSE = [[0.5, -2.0], [1.5, 0.25]]
IDS = {"a": [4, 1], "b": [0, 2]}


def hand_tables(model: nn.Module) -> dict[str, torch.Tensor]:
    """Sets every table by hand (rows of d, or d + 1 with a per-id first-order column); returns them."""
    tables = {}
    for i, f in enumerate(FEATURES):
        weight = model.embeddings.embedding_bags[f"t_{f.name}"].weight
        tables[f.name] = hand(*weight.shape, offset=5 + i)
        set_(weight, tables[f.name])
    return tables


def hand_inputs(model: nn.Module) -> tuple[torch.Tensor, Any, list[list[float]]]:
    """Sets the dense weights v_k and the tables by hand; returns dense, KJT and x0 per sample,
    x0 = [v_1 x_1; v_2 x_2; e_a[id]; e_b[id]] (per_feature: the dense fields first)."""
    v = hand(NUM_DENSE, DIM, offset=3)
    set_(model.inputs.dense_weight, v)
    tables = hand_tables(model)
    x0 = []
    for s, dense in enumerate(DENSE):
        x = [dense[k] * float(v[k, j]) for k in range(NUM_DENSE) for j in range(DIM)]
        x += [float(tables[f.name][IDS[f.name][s], j]) for f in FEATURES for j in range(DIM)]
        x0.append(x)
    return torch.tensor(DENSE), one_hot_kjt(IDS), x0


def test_per_feature_dense_embedding_is_v_k_times_x_k():
    inputs = FieldInputs(3, 2, [4], "per_feature")
    assert inputs.num_fields == 5
    v = hand(3, 4)
    set_(inputs.dense_weight, v)
    dense = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    got = inputs.dense_fields(dense)
    assert got.shape == (2, 3, 4)
    for b in range(2):
        for k in range(3):
            assert vec(got[b, k]) == pytest.approx([float(dense[b, k]) * float(x) for x in v[k]])
    # one Linear(1, d, bias=False) per feature, as FuxiCTR: the same numbers
    for k in range(3):
        linear = nn.Linear(1, 4, bias=False)
        set_(linear.weight, v[k].reshape(4, 1))
        assert torch.allclose(linear(dense[:, k:k + 1]), got[:, k])


def test_field_inputs_stack_dense_fields_first():
    model = make(DCNv2Options(embedding_dim=DIM, top_mlp=[3, 1]))
    dense, kjt, x0 = hand_inputs(model)
    got = model.inputs(dense, model.embeddings(kjt))
    assert got.shape == (2, NUM_DENSE + len(FEATURES), DIM)
    assert [vec(r) for r in got.flatten(1)] == [pytest.approx(x) for x in x0]


def test_field_mode_is_one_field_through_the_bottom_mlp():
    inputs = FieldInputs(3, 2, [5, 4], "field")
    assert inputs.num_fields == 3
    dense = torch.randn(6, 3)
    assert torch.equal(inputs.dense_fields(dense), inputs.dense_arch(dense).unsqueeze(1))
    with pytest.raises(ValueError, match="at least one dense feature"):
        FieldInputs(0, 2, [4], "field")
    assert FieldInputs(0, 2, [4], "per_feature").num_fields == 2  # no dense features: F fields


# ---------------------------------------------------------------- DCN-V2 cross layers


def cross_full(x0: list[float], kernels: list[list[list[float]]], biases: list[list[float]]) -> list[float]:
    """Eq. 1: x_{l+1} = x0 ∘ (W_l x_l + b_l) + x_l."""
    x = x0
    for w, b in zip(kernels, biases):
        wx = matvec(w, x)
        x = [x0[i] * (wx[i] + b[i]) + x[i] for i in range(len(x0))]
    return x


def cross_mixture(x0: list[float], layers: list[dict[str, Any]], gates: list[list[float]] | None,
                  g: Any) -> list[float]:
    """Eqs. 3-4: x_{l+1} = Σ_i G_i(x_l) x0 ∘ (U_i g(C_i g(V_i^T x_l)) + b) + x_l, softmax gates."""
    x = x0
    for layer in layers:
        experts = []
        for u, c, vt in zip(layer["U"], layer["C"], layer["Vt"]):
            inner = [g(z) for z in matvec(c, [g(z) for z in matvec(vt, x)])]
            uv = matvec(u, inner)
            experts.append([x0[i] * (uv[i] + layer["b"][i]) for i in range(len(x0))])
        if gates is None:
            weights = [1.0]
        else:
            scores = [sum(w_i * x_i for w_i, x_i in zip(w, x)) for w in gates]
            top = max(scores)
            exp = [math.exp(s - top) for s in scores]
            weights = [e / sum(exp) for e in exp]
        x = [sum(wt * e[i] for wt, e in zip(weights, experts)) + x[i] for i in range(len(x0))]
    return x


def dnn(x: list[float], linears: list[tuple[list[list[float]], list[float]]]) -> list[float]:
    for w, b in linears:
        x = [max(0.0, z + bi) for z, bi in zip(matvec(w, x), b)]
    return x


def set_dnn_and_out(model: nn.Module) -> tuple[list[tuple[list[list[float]], list[float]]], list[float], float]:
    """Hand weights for the DNN's Linears and the logit layer; returns them as lists."""
    linears = []
    for i, layer in enumerate(x for x in model.dnn.modules() if isinstance(x, nn.Linear)):
        w, b = hand(*layer.weight.shape, offset=20 + i), hand(layer.out_features, scale=0.05, offset=30 + i)
        set_(layer.weight, w)
        set_(layer.bias, b)
        linears.append((rows(w), vec(b)))
    w_out, b_out = hand(*model.out.weight.shape, scale=0.2, offset=40), 0.3
    set_(model.out.weight, w_out)
    set_(model.out.bias, torch.tensor([b_out]))
    return linears, vec(w_out), b_out


def logit(model: nn.Module, x0: list[float], crossed: list[float], linears: Any, w_out: list[float],
          b_out: float) -> float:
    """Stacked: w^T DNN(x_L) + b; parallel: w^T [x_L; DNN(x0)] + b."""
    final = dnn(crossed, linears) if model.structure == "stacked" else crossed + dnn(x0, linears)
    assert len(final) == len(w_out)
    return sum(w * f for w, f in zip(w_out, final)) + b_out


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_full_cross_layers_and_structure(structure):
    model = make(DCNv2Options(embedding_dim=DIM, structure=structure, cross_layers=2, top_mlp=[3, 1]))
    dense, kjt, x0 = hand_inputs(model)
    n = len(x0[0])
    kernels = [hand(n, n, scale=0.05, offset=i_l) for i_l in range(2)]
    biases = [hand(n, 1, scale=0.1, offset=9 + i_l) for i_l in range(2)]
    for i_l in range(2):
        set_(model.cross.kernels[i_l], kernels[i_l])
        set_(model.cross.bias[i_l], biases[i_l])
    linears, w_out, b_out = set_dnn_and_out(model)
    with torch.no_grad():
        got = model(dense, kjt)
    for s in range(2):
        crossed = cross_full(x0[s], [rows(k) for k in kernels], [vec(b) for b in biases])
        assert vec(model.cross(torch.tensor([x0[s]]))) == pytest.approx(crossed, rel=1e-5, abs=1e-6)
        assert float(got[s]) == pytest.approx(logit(model, x0[s], crossed, linears, w_out, b_out), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_low_rank_cross_layers_are_full_ones_with_w_equal_u_v_transposed(structure):
    r = 3
    model = make(DCNv2Options(embedding_dim=DIM, structure=structure, cross_layers=2, low_rank=r, top_mlp=[3, 1]))
    dense, kjt, x0 = hand_inputs(model)
    n = len(x0[0])
    us = [hand(n, r, scale=0.2, offset=i_l) for i_l in range(2)]  # U_l [n, r]
    vs = [hand(n, r, scale=0.2, offset=4 + i_l) for i_l in range(2)]  # V_l [n, r]
    biases = [hand(n, scale=0.1, offset=9 + i_l) for i_l in range(2)]
    for i_l in range(2):
        set_(model.cross.W_kernels[i_l], us[i_l])
        set_(model.cross.V_kernels[i_l], vs[i_l].T)
        set_(model.cross.bias[i_l], biases[i_l])
    # W_l = U_l V_l^T, written out
    kernels = [[[sum(float(u[i, k]) * float(v[j, k]) for k in range(r)) for j in range(n)] for i in range(n)]
               for u, v in zip(us, vs)]
    linears, w_out, b_out = set_dnn_and_out(model)
    with torch.no_grad():
        got = model(dense, kjt)
    for s in range(2):
        crossed = cross_full(x0[s], kernels, [vec(b) for b in biases])
        assert vec(model.cross(torch.tensor([x0[s]]))) == pytest.approx(crossed, rel=1e-5, abs=1e-6)
        assert float(got[s]) == pytest.approx(logit(model, x0[s], crossed, linears, w_out, b_out), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
@pytest.mark.parametrize("experts, activation", [(3, "tanh"), (2, "relu"), (1, "tanh")])
def test_mixture_of_low_rank_experts(structure, experts, activation):
    r, layers = 2, 2
    model = make(DCNv2Options(embedding_dim=DIM, structure=structure, cross_layers=layers, low_rank=r,
                              experts=experts, expert_activation=activation, top_mlp=[3, 1]))
    dense, kjt, x0 = hand_inputs(model)
    n = len(x0[0])
    cross = model.cross
    spec = []
    for i_l in range(layers):
        u = hand(experts, n, r, scale=0.2, offset=i_l)
        vt = hand(experts, r, n, scale=0.2, offset=3 + i_l)
        c = hand(experts, r, r, scale=0.3, offset=6 + i_l)
        b = hand(n, 1, scale=0.1, offset=9 + i_l)
        set_(cross.U_kernels[i_l], u)
        set_(cross.V_kernels[i_l], vt)
        set_(cross.C_kernels[i_l], c)
        set_(cross.bias[i_l], b)
        spec.append({"U": [rows(x) for x in u], "Vt": [rows(x) for x in vt], "C": [rows(x) for x in c], "b": vec(b)})
    gates = None
    if experts > 1:
        gates = [vec(hand(n, scale=0.15, offset=12 + i)) for i in range(experts)]
        for gate, w in zip(cross.gates, gates):
            set_(gate.weight, torch.tensor([w]))
    else:
        assert cross.gates is None  # K = 1: G ≡ 1, no gate parameters
    g = math.tanh if activation == "tanh" else (lambda z: max(0.0, z))
    linears, w_out, b_out = set_dnn_and_out(model)
    with torch.no_grad():
        got = model(dense, kjt)
    for s in range(2):
        crossed = cross_mixture(x0[s], spec, gates, g)
        assert vec(cross(torch.tensor([x0[s]]))) == pytest.approx(crossed, rel=1e-5, abs=1e-6)
        assert float(got[s]) == pytest.approx(logit(model, x0[s], crossed, linears, w_out, b_out), rel=1e-5, abs=1e-6)


def test_stacked_without_hidden_layers_is_the_cross_network_alone():
    model = make(DCNv2Options(embedding_dim=DIM, structure="stacked", top_mlp=[1]))
    assert isinstance(model.dnn, nn.Identity)
    assert model.out.in_features == model.width == (NUM_DENSE + len(FEATURES)) * DIM


# ---------------------------------------------------------------- DeepFM


def test_fm_second_order_term():
    x = hand(2, 4, 3, scale=0.3)
    got = fm_second_order(x)
    for b in range(2):
        e = rows(x[b])
        pairs = sum(sum(p * q for p, q in zip(e[f], e[g])) for f in range(4) for g in range(f + 1, 4))
        written = 0.5 * sum(sum(e[f][j] for f in range(4)) ** 2 - sum(e[f][j] ** 2 for f in range(4))
                            for j in range(3))
        assert float(got[b]) == pytest.approx(pairs, rel=1e-5, abs=1e-6)
        assert float(got[b]) == pytest.approx(written, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("first_order", ["per_id", "fields"])
def test_deepfm_logit_is_first_order_plus_fm_plus_dnn(first_order):
    """per_id: b + w_a[id_a] + w_b[id_b] + u · dense, w column d of each table (the paper's <w, x>);
    fields: a Linear over x0."""
    model = make(DeepFMOptions(embedding_dim=DIM, dnn=[3, 2, 1], first_order=first_order))
    dense, kjt, x0 = hand_inputs(model)
    tables = hand_tables(model)
    if first_order == "per_id":
        u = hand(NUM_DENSE, scale=0.3, offset=2)
        set_(model.first_order.dense_weight, u)
        set_(model.first_order.bias, torch.tensor([0.2]))
        firsts = [sum(float(tables[f.name][IDS[f.name][s], DIM]) for f in FEATURES)
                  + sum(DENSE[s][k] * float(u[k]) for k in range(NUM_DENSE)) + 0.2 for s in range(2)]
    else:
        w1 = hand(1, len(x0[0]), scale=0.1, offset=2)
        set_(model.first_order.linear.weight, w1)
        set_(model.first_order.linear.bias, torch.tensor([0.2]))
        firsts = [sum(w * z for w, z in zip(vec(w1), x0[s])) + 0.2 for s in range(2)]
    linears = []
    for i, layer in enumerate(x for x in model.dnn.hidden.modules() if isinstance(x, nn.Linear)):
        w, b = hand(*layer.weight.shape, offset=20 + i), hand(layer.out_features, scale=0.05, offset=30 + i)
        set_(layer.weight, w)
        set_(layer.bias, b)
        linears.append((rows(w), vec(b)))
    w_out = hand(*model.dnn.out.weight.shape, scale=0.2, offset=40)
    set_(model.dnn.out.weight, w_out)
    set_(model.dnn.out.bias, torch.tensor([-0.1]))
    with torch.no_grad():
        got = model(dense, kjt)  # eval: dropout is the identity
    m = NUM_DENSE + len(FEATURES)
    for s in range(2):
        x = x0[s]
        first = firsts[s]
        e = [x[f * DIM:(f + 1) * DIM] for f in range(m)]
        fm = sum(sum(p * q for p, q in zip(e[f], e[g])) for f in range(m) for g in range(f + 1, m))
        deep = sum(w * h for w, h in zip(vec(w_out), dnn(x, linears))) - 0.1
        assert float(got[s]) == pytest.approx(first + fm + deep, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- dropout placement


def layer_kinds(module: nn.Module) -> list[str]:
    return [type(x).__name__ for x in module.modules() if isinstance(x, (nn.Linear, nn.ReLU, nn.Dropout))]


@pytest.mark.parametrize("widths", [[400, 400, 400, 1], [7, 1], [5, 6, 1]])
def test_deepfm_dropout_after_every_hidden_layer(widths):
    model = make(DeepFMOptions(embedding_dim=DIM, dnn=widths, dropout=0.5))
    hidden = len(widths) - 1
    assert layer_kinds(model.dnn) == ["Linear", "ReLU", "Dropout"] * hidden + ["Linear"]
    drops = [x for x in model.modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == hidden and all(d.p == 0.5 for d in drops)
    # nothing between the inputs and the DNN's first Linear, nothing after its logit
    assert not any(isinstance(x, nn.Dropout) for x in model.inputs.modules())
    assert isinstance(model.dnn.out, nn.Linear)


def test_deepfm_dropout_is_active_in_training_only():
    model = make(DeepFMOptions(embedding_dim=DIM, dnn=[64, 1], dropout=0.5))
    dense, kjt = random_batch(4, NUM_DENSE, FEATURES)
    seen: list[torch.Tensor] = []
    model.dnn.hidden[2].register_forward_hook(lambda mod, args, out: seen.append(out.detach()))
    with torch.no_grad():
        model.train()
        model(dense, kjt)
        model.eval()
        model(dense, kjt)
    before = model.dnn.hidden[1](model.dnn.hidden[0](model.inputs(dense, model.embeddings(kjt)).flatten(1)))
    assert torch.equal(seen[1], before.detach())  # eval: identity
    kept = seen[0] != 0
    assert torch.allclose(seen[0][kept], 2 * before.detach()[kept])  # train: 1 / (1 - p) on the kept units
    assert (~kept & (before.detach() != 0)).any()  # some units dropped


def test_no_dropout_modules_without_dropout():
    assert layer_kinds(make(DeepFMOptions(embedding_dim=DIM, dnn=[5, 1], dropout=0.0)).dnn).count("Dropout") == 0
    assert not any(isinstance(x, nn.Dropout) for x in make(DCNv2Options(embedding_dim=DIM, top_mlp=[5, 1])).modules())


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcnv2_dropout_after_every_dnn_hidden_layer(structure):
    model = make(DCNv2Options(embedding_dim=DIM, structure=structure, top_mlp=[6, 5, 1], dropout=0.25))
    assert layer_kinds(model.dnn) == ["Linear", "ReLU", "Dropout"] * 2
    assert [x.p for x in model.modules() if isinstance(x, nn.Dropout)] == [0.25, 0.25]


# ---------------------------------------------------------------- initialisation


def dense_linears(model: nn.Module) -> list[nn.Linear]:
    embedding = {id(x) for x in model.embeddings.modules()}
    return [x for x in model.modules() if isinstance(x, nn.Linear) and id(x) not in embedding]


@pytest.mark.parametrize("name", ["dcnv2", "deepfm"])
def test_xavier_normal_is_the_default_init(name):
    options = (DCNv2Options(embedding_dim=16, top_mlp=[400, 400, 1]) if name == "dcnv2"
               else DeepFMOptions(embedding_dim=16))
    assert options.init == "xavier_normal"
    model = make(options, num_dense=300, features=[SparseFeature("a", 50)])
    for layer in dense_linears(model):
        assert layer.bias is None or not layer.bias.any()  # zero biases
        if layer.weight.numel() >= 10_000:
            expected = math.sqrt(2.0 / (layer.in_features + layer.out_features))
            assert float(layer.weight.detach().std()) == pytest.approx(expected, rel=0.05)
    # v_k as Linear(1, d) weights: N(0, 2 / (1 + d))
    assert float(model.inputs.dense_weight.detach().std()) == pytest.approx(math.sqrt(2.0 / 17), rel=0.05)


def test_mixture_kernels_are_drawn_as_fuxictr_draws_them():
    """CrossNetMix: xavier_normal_ on U [K, N, r], V [K, N, r], C [K, r, r] (torch's fans of a 3-d tensor:
    fan_in = size(1) * size(2), fan_out = size(0) * size(2)); TorchRec holds V^T [K, r, N]."""
    k, r = 4, 8
    model = make(DCNv2Options(embedding_dim=16, low_rank=r, experts=k), num_dense=300,
                 features=[SparseFeature("a", 50)])
    n = model.width
    for kernel, (fan_in, fan_out) in [(model.cross.U_kernels[0], (n * r, k * r)),
                                      (model.cross.V_kernels[0], (n * r, k * r)),
                                      (model.cross.C_kernels[0], (r * r, k * r))]:
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        assert float(kernel.detach().std()) == pytest.approx(expected, rel=0.1)
    assert model.cross.V_kernels[0].shape == (k, r, n)
    for gate in model.cross.gates:  # Linear(N, 1, bias=False): xavier as every Linear
        assert float(gate.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / (n + 1)), rel=0.1)


def test_he_normal_is_truncated_at_two_std_with_std_sqrt_2_over_fan_in():
    model = make(DCNv2Options(embedding_dim=16, top_mlp=[400, 1], init="he_normal"),
                 num_dense=300, features=[SparseFeature("a", 50)])
    n = model.width
    first = dense_linears(model)[0]
    assert (first.in_features, first.out_features) == (n, 400)
    std = math.sqrt(2.0 / n)
    assert float(first.weight.detach().std()) == pytest.approx(std, rel=0.05)
    assert float(first.weight.detach().abs().max()) <= 2 * std / 0.87962566103423978 + 1e-6
    kernel = model.cross.kernels[0]  # the cross kernels too (the paper: every kernel)
    assert float(kernel.detach().std()) == pytest.approx(std, rel=0.05)
    assert not first.bias.any()


def test_torch_init_keeps_pytorch_defaults_and_no_init_touches_the_embeddings():
    torch_init = make(DeepFMOptions(embedding_dim=DIM, init="torch", first_order="fields"), seed=3)
    linear = torch_init.first_order.linear
    bound = 1 / math.sqrt(linear.in_features)
    assert linear.bias.abs().max() <= bound and linear.bias.any()
    assert torch_init.inputs.dense_weight.abs().max() <= 1.0  # nn.Linear(1, d): U(-1, 1)
    per_id = make(DeepFMOptions(embedding_dim=DIM, init="torch"), seed=3).first_order
    assert per_id.dense_weight.abs().max() <= 1.0 and per_id.dense_weight.any()  # nn.Linear(1, 1): U(-1, 1)
    assert not per_id.bias.any()  # FuxiCTR's LogisticRegression: zeros
    xavier = make(DeepFMOptions(embedding_dim=DIM, first_order="fields"), seed=3)
    for a, b in zip(torch_init.embeddings.parameters(), xavier.embeddings.parameters()):
        assert torch.equal(a, b)  # the embeddings are the compressor's, drawn first, never re-initialised


# ---------------------------------------------------------------- parameter counts from formulas


def chain(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def inputs_params(o: Any, num_dense: int) -> tuple[int, int]:
    """(m, parameters) of the dense inputs: per_feature m = F + num_dense, num_dense d weights;
    field m = F + 1 and the bottom MLP [num_dense, *hidden, d] (default [64, d])."""
    f, d = len(FEATURES), o.embedding_dim
    if o.dense_features == "per_feature":
        return f + num_dense, num_dense * d
    bottom = o.bottom_mlp or [64, d]
    return f + 1, chain([num_dense, *bottom])


def dcnv2_params(o: DCNv2Options, num_dense: int) -> int:
    m, total = inputs_params(o, num_dense)
    n, L, r, k = m * o.embedding_dim, o.cross_layers, o.low_rank, o.experts
    if k is not None:
        total += L * (k * (2 * n * r + r * r) + n) + (k * n if k > 1 else 0)  # U, V, C; bias; gates
    elif r is not None:
        total += L * (2 * n * r + n)  # U, V; bias
    else:
        total += L * (n * n + n)  # W; bias
    h = o.top_mlp[:-1]
    total += chain([n, *h])
    last = h[-1] if h else n
    return total + (n + last if o.structure == "parallel" else last) + 1


def first_order_params(o: Any, num_dense: int, m: int) -> int:
    """per_id: u (num_dense) and b (its id weights are table columns); fields: Linear(m d, 1)."""
    return num_dense + 1 if o.first_order == "per_id" else m * o.embedding_dim + 1


def table_params(o: Any) -> int:
    """Σ rows × (d + 1 with a per-id first-order column)."""
    return sum(f.cardinality for f in FEATURES) * (o.embedding_dim + (getattr(o, "first_order", "") == "per_id"))


def deepfm_params(o: DeepFMOptions, num_dense: int) -> int:
    m, total = inputs_params(o, num_dense)
    n = m * o.embedding_dim
    return total + first_order_params(o, num_dense, m) + chain([n, *o.dnn])


CROSS_VARIANTS: list[dict[str, Any]] = [
    {}, {"low_rank": 3}, {"low_rank": 2, "experts": 1}, {"low_rank": 2, "experts": 4},
    {"low_rank": 3, "experts": 2, "expert_activation": "relu", "cross_layers": 1},
]
INPUT_VARIANTS: list[dict[str, Any]] = [
    {}, {"dense_features": "field"}, {"dense_features": "field", "bottom_mlp": [7, 5, DIM]},
]


@pytest.mark.parametrize("inputs", INPUT_VARIANTS)
@pytest.mark.parametrize("cross", CROSS_VARIANTS)
@pytest.mark.parametrize("structure, top", [("stacked", [6, 1]), ("stacked", [1]), ("parallel", [6, 4, 1])])
def test_dcnv2_parameter_count(structure, top, cross, inputs):
    o = DCNv2Options(embedding_dim=DIM, structure=structure, top_mlp=top, dropout=0.1, **cross, **inputs)
    counts = count(make(o))
    assert counts.dense_params == dcnv2_params(o, NUM_DENSE)
    assert counts.total_params == counts.dense_params + sum(f.cardinality for f in FEATURES) * DIM


@pytest.mark.parametrize("inputs", INPUT_VARIANTS)
@pytest.mark.parametrize("dnn, dropout, init", [([400, 400, 400, 1], 0.5, "xavier_normal"), ([1], 0.0, "torch"),
                                                ([8, 3, 1], 0.2, "he_normal")])
def test_deepfm_parameter_count(dnn, dropout, init, inputs):
    for first_order in ("per_id", "fields"):
        o = DeepFMOptions(embedding_dim=DIM, dnn=dnn, dropout=dropout, init=init, first_order=first_order, **inputs)
        counts = count(make(o))
        assert counts.dense_params == deepfm_params(o, NUM_DENSE)
        assert counts.total_params == counts.dense_params + table_params(o)


def test_options_do_not_change_the_parameter_count():
    """dropout, init, expert_activation change no parameter."""
    base = count(make(DCNv2Options(embedding_dim=DIM, low_rank=2, experts=3))).dense_params
    other = DCNv2Options(embedding_dim=DIM, low_rank=2, experts=3, expert_activation="relu", dropout=0.3,
                         init="he_normal")
    assert count(make(other)).dense_params == base


# ---------------------------------------------------------------- options: defaults and refusals


def test_defaults_and_their_sources():
    dcn = DCNv2Options()
    assert (dcn.dense_features, dcn.structure, dcn.cross_layers, dcn.low_rank, dcn.experts) == \
        ("per_feature", "parallel", 3, None, None)
    assert (dcn.top_mlp, dcn.dropout, dcn.init, dcn.expert_activation) == ([512, 512, 512, 1], 0.0, "xavier_normal",
                                                                           "tanh")
    fm = DeepFMOptions()
    assert (fm.dense_features, fm.dnn, fm.dropout, fm.init) == ("per_feature", [400, 400, 400, 1], 0.5,
                                                                "xavier_normal")
    assert DCNv2Options(dense_features="field").bottom() == [64, 16]
    assert DCNv2Options(dense_features="field", embedding_dim=8).bottom() == [64, 8]


@pytest.mark.parametrize("cls, values, message", [
    (DCNv2Options, {"bottom_mlp": [32, 16]}, "bottom_mlp is unused with dense_features: per_feature"),
    (DeepFMOptions, {"bottom_mlp": [32, 16]}, "bottom_mlp is unused with dense_features: per_feature"),
    (DCNv2Options, {"dense_features": "field", "bottom_mlp": [32, 8]}, "must end in embedding_dim"),
    (DCNv2Options, {"experts": 4}, "experts needs low_rank"),
    (DCNv2Options, {"structure": "parallel", "top_mlp": [1]}, "parallel needs a DNN"),
    (DCNv2Options, {"structure": "diagonal"}, "structure"),
    (DCNv2Options, {"dense_features": "per_field"}, "dense_features"),
    (DeepFMOptions, {"dropout": 1.0}, "dropout"),
])
def test_bad_options_are_refused(cls, values, message):
    with pytest.raises(ValueError, match=message):
        cls(**values)


def test_bottom_is_refused_for_per_feature():
    """A model that builds its inputs from ``bottom()`` under per_feature would build a bottom MLP."""
    with pytest.raises(ValueError, match="FieldInputs.from_options"):
        DCNv2Options().bottom()


def test_bottom_mlp_with_per_feature_in_a_suite_names_its_file_and_line(write_suite):
    path = write_suite(
        "name: zoo\n"
        "defaults:\n"
        "  dataset: {name: synthetic, rows: 500, cardinalities: [100, 40], num_dense: 3}\n"
        "  target: {metric: auc, value: 0.6}\n"
        "  model:\n"
        "    name: deepfm\n"
        "    embedding_dim: 8\n"
        "    bottom_mlp: [16, 8]\n")
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    lines = [x for x in info.value.lines if "bottom_mlp is unused" in x]
    assert lines, info.value.lines
    assert lines[0].startswith(f"{path}:"), lines[0]
    assert int(lines[0].split(":")[1]) in (line_of(path, "model:"), line_of(path, "bottom_mlp"))
