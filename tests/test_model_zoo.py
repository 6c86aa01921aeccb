"""The model zoo: every model over every compressor, analytic parameter and FLOP counts, Wukong's
scaling knobs, the scale.{rows,dim,over_arch,mlp} schemes, and suite validation of model options.

Parameter counts are recomputed here from the options and the formulas of REFERENCE.md §3 and the
model docstrings, independently of the models' own code; FLOPs are checked against
``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import yaml
from conftest import line_of
from kjt_helpers import measured_flops_per_sample, random_batch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.hashing import MERSENNE_31
from dlrs_bench.compression.rows import RowScaledEmbedding
from dlrs_bench.config.expand import load_suite
from dlrs_bench.config.schema import ModelOptions, validate_scenario
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.data.synthetic import Synthetic, SyntheticOptions
from dlrs_bench.engine.train import build
from dlrs_bench.errors import UserInputError
from dlrs_bench.models.base import build_model, count
from dlrs_bench.registry import COMPRESSORS, MODELS

CPU = torch.device("cpu")
#: table a (300) and b (120, multi-hot) are compressed under THRESHOLD; c (40) stays full
FEATURES = [SparseFeature("a", 300), SparseFeature("b", 120, multi_hot=True), SparseFeature("c", 40)]
THRESHOLD = 100
NUM_DENSE = 4
DIM = 8
MODEL_NAMES = ["dlrm", "dcnv2", "wukong", "deepfm", "autoint", "xdeepfm", "fibinet"]
COMPRESSOR_KINDS = ["none", "hashing", "qr", "memcom", "bch", "robe", "tt", "md"]
#: every method reaches ratio 4 on FEATURES at d = 8 (memcom and md need a ratio below d)
RATIO = 4

#: small layer sizes per model (embedding_dim 8, F = 3 sparse features; the dense features as one field
#: through a bottom MLP, or as NUM_DENSE fields where the model's default is dense_features: per_feature)
SMALL: dict[str, dict[str, Any]] = {
    "dlrm": {"bottom_mlp": [16, 8], "top_mlp": [16, 1]},
    "dcnv2": {"cross_layers": 2, "top_mlp": [16, 1]},
    # n_0 = F + 1 = 4 != n_f + n_l = 8: layer 0 projects its residual, layer 1 does not
    "wukong": {"num_layers": 2, "n_f": 4, "n_l": 4, "k": 4, "fmb_mlp": [16], "bottom_mlp": [16], "top_mlp": [16, 1]},
    "deepfm": {"dnn": [16, 1]},
    "autoint": {"attention_layers": 2, "heads": 2, "attention_dim": 4, "dnn": [16, 1]},
    "xdeepfm": {"cin": [8, 8], "dnn": [16, 1]},
    "fibinet": {"reduction": 2, "dnn": [16, 1]},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


# ---------------------------------------------------------------- helpers


def options(name: str, **overrides: Any) -> ModelOptions:
    values = {"embedding_dim": DIM, **SMALL[name], **overrides}
    return MODELS.get(name).Options(name=name, **values)


def compressor(kind: str, **overrides: Any) -> Any:
    values = {"threshold": THRESHOLD, **({} if kind == "none" else {"ratio": RATIO}), **overrides}
    return COMPRESSORS.get(kind).Options(kind=kind, **values)


def make_model(opts: ModelOptions, kind: str = "none", features: list[SparseFeature] = FEATURES,
               num_dense: int = NUM_DENSE, seed: int = 0) -> nn.Module:
    """Embeddings at the scaled dimension ``opts.dim`` (as the engine builds them), then the model."""
    torch.manual_seed(seed)
    embeddings = build_embeddings(features, opts.table_width(), compressor(kind), CPU)
    return build_model(opts, num_dense, features, embeddings)




def one_hot_kjt(ids_per_key: dict[str, list[int]]) -> KeyedJaggedTensor:
    keys = list(ids_per_key)
    values = torch.tensor([i for k in keys for i in ids_per_key[k]], dtype=torch.int64)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=torch.ones(len(values), dtype=torch.int32))


def dense_grad(p: nn.Parameter) -> torch.Tensor:
    g = p.grad
    return g.coalesce().values() if g.is_sparse else g


# ---------------------------------------------------------------- formulas, computed independently


def scaled(layers: list[int], factor: float, logit: bool = False) -> list[int]:
    """``layers`` times ``factor`` (rounded, at least 1); with ``logit`` the final 1 stays 1."""
    out = [max(1, round(w * factor)) for w in layers]
    return out[:-1] + [1] if logit else out


def chain(sizes: list[int]) -> int:
    """Parameters (weights + biases) of Linear layers ``sizes[0] -> sizes[1] -> ...``."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def resolved_dim(o: Any) -> int:
    return max(1, round(o.embedding_dim * o.scale.dim))


def first_order_linears(o: Any, m: int, d: int) -> list[tuple[int, int, bool]]:
    """``first_order: fields`` is a Linear(m d, 1); ``per_id`` has no Linear (w is a table column)."""
    return [(m * d, 1, True)] if o.first_order == "fields" else []


def first_order_params(o: Any, num_dense: int, m: int, d: int) -> int:
    """per_id: u (num_dense) and a bias; fields: Linear(m d, 1)."""
    return m * d + 1 if o.first_order == "fields" else num_dense + 1


def field_inputs(o: Any, num_dense: int, num_sparse: int) -> tuple[int, list[int] | None]:
    """(m, bottom sizes) of FieldInputs: ``per_feature`` m = F + num_dense fields of v_k x_k and no
    bottom MLP; ``field`` m = F + 1 and the bottom MLP [num_dense, *hidden (scale.mlp), d]."""
    if getattr(o, "dense_features", "field") == "per_feature":
        return num_sparse + num_dense, None
    bottom = o.bottom_mlp or [64, o.embedding_dim]
    return num_sparse + 1, [num_dense, *scaled(bottom[:-1], o.scale.mlp), resolved_dim(o)]


def dcnv2_tail(o: Any, n: int) -> tuple[list[int], int]:
    """DCN-V2: (DNN sizes [n, *hidden], in_features of the final Linear) for x0 width n."""
    h = scaled(o.top_mlp[:-1], o.scale.mlp * o.scale.over_arch)
    last = h[-1] if h else n
    return [n, *h], n + last if o.structure == "parallel" else last


def dcnv2_cross_params(o: Any, n: int) -> int:
    """L (n^2 + n) full; L (2 n r + n) low-rank; L (K (2 n r + r^2) + n) + K n gates (K > 1) mixture."""
    r, k = o.low_rank, o.experts
    if k is not None:
        return o.cross_layers * (k * (2 * n * r + r * r) + n) + (k * n if k > 1 else 0)
    return o.cross_layers * (2 * n * r + n if r else n * n + n)


def expected_linears(o: Any, num_dense: int, num_sparse: int) -> list[tuple[int, int, bool]]:
    """Every ``nn.Linear`` of the model outside the embeddings as (in, out, bias), from the options:
    hidden MLP widths scaled by ``scale.mlp`` (top MLP also by ``scale.over_arch``), the last bottom
    layer at d = scaled embedding dim, logit layers of width 1."""
    d, m, f = resolved_dim(o), num_sparse + 1, num_sparse
    mlp_factor, top_factor = o.scale.mlp, o.scale.mlp * o.scale.over_arch

    def lin(sizes: list[int], bias: bool = True) -> list[tuple[int, int, bool]]:
        return [(a, b, bias) for a, b in zip(sizes, sizes[1:])]

    if o.name == "wukong":
        out = lin([num_dense, *scaled(o.bottom_mlp, mlp_factor), o.dense_embeddings * d])
        n, n_out, fmb = num_sparse + o.dense_embeddings, o.n_f + o.n_l, scaled(o.fmb_mlp, mlp_factor)
        for _ in range(o.num_layers):
            out += lin([n * o.k, *fmb, o.n_f * d]) + [(n, o.n_l, False)]
            out += [(n, n_out, False)] if n != n_out else []
            n = n_out
        return out + lin([n * d, *scaled(o.top_mlp[:-1], top_factor), 1])

    if o.name == "dlrm":
        out = lin([num_dense, *scaled(o.bottom_mlp[:-1], mlp_factor), d])
        return out + lin([d + f * (f + 1) // 2, *scaled(o.top_mlp[:-1], top_factor), 1])
    m, bottom = field_inputs(o, num_dense, num_sparse)
    out = lin(bottom) if bottom else []
    if o.name == "dcnv2":
        gates = [(m * d, 1, False)] * o.experts if o.experts and o.experts > 1 else []
        dnn, final = dcnv2_tail(o, m * d)
        return out + gates + lin(dnn) + [(final, 1, True)]
    if o.name == "deepfm":
        return out + first_order_linears(o, m, d) + lin([m * d, *scaled(o.dnn[:-1], top_factor), 1])
    if o.name == "autoint":
        d_in, width = d, o.heads * o.attention_dim
        for _ in range(o.attention_layers):
            out += [(d_in, width, False)] * 4  # query, key, value, residual
            d_in = width
        out += [(m * width, 1, True)]
        return out + (lin([m * d, *scaled(o.dnn[:-1], top_factor), 1]) if o.dnn else [])
    if o.name == "xdeepfm":
        cin = scaled(o.cin, mlp_factor)
        pooled = sum(h // 2 for h in cin[:-1]) + cin[-1] if o.split_half else sum(cin)
        return (out + first_order_linears(o, m, d) + [(pooled, 1, False)]
                + lin([m * d, *scaled(o.dnn[:-1], top_factor), 1]))
    if o.name == "fibinet":  # the bilinear weights are Parameters, not Linears
        s = max(1, m // o.reduction)
        out += [(m, s, False), (s, m, False), *first_order_linears(o, m, d)]
        return out + lin([m * (m - 1) * d, *scaled(o.dnn[:-1], top_factor), 1])
    raise AssertionError(o.name)


def expected_dense_params(o: Any, num_dense: int, num_sparse: int) -> int:
    """REFERENCE.md §3 / docstring parameter count of everything outside the embedding module."""
    d, m, f = resolved_dim(o), num_sparse + 1, num_sparse
    mlp_factor, top_factor = o.scale.mlp, o.scale.mlp * o.scale.over_arch
    if o.name == "wukong":
        total = chain([num_dense, *scaled(o.bottom_mlp, mlp_factor), o.dense_embeddings * d])
        n, n_out, fmb = num_sparse + o.dense_embeddings, o.n_f + o.n_l, scaled(o.fmb_mlp, mlp_factor)
        for _ in range(o.num_layers):
            total += (n * o.k  # Y
                      + 2 * n * o.k  # LayerNorm(n k)
                      + chain([n * o.k, *fmb, o.n_f * d])  # FMB MLP
                      + o.n_l * n  # LCB W_L
                      + (n_out * n if n != n_out else 0)  # residual projection
                      + 2 * d)  # LayerNorm(d)
            n = n_out
        return total + chain([n * d, *scaled(o.top_mlp, top_factor, logit=True)])

    if o.name == "dlrm":
        total = chain([num_dense, *scaled(o.bottom_mlp[:-1], mlp_factor), d])
        return total + chain([d + f * (f + 1) // 2, *scaled(o.top_mlp, top_factor, logit=True)])
    m, bottom = field_inputs(o, num_dense, num_sparse)
    total = chain(bottom) if bottom else num_dense * d  # per_feature: one v_k [d] per dense feature
    if o.name == "dcnv2":
        dnn, final = dcnv2_tail(o, m * d)
        return total + dcnv2_cross_params(o, m * d) + chain(dnn) + final + 1
    if o.name == "deepfm":
        return total + first_order_params(o, num_dense, m, d) + chain([m * d, *scaled(o.dnn, top_factor, logit=True)])
    if o.name == "autoint":
        d_in, width = d, o.heads * o.attention_dim
        for _ in range(o.attention_layers):
            total += 4 * d_in * width
            d_in = width
        total += m * d_in + 1
        return total + (chain([m * d, *scaled(o.dnn, top_factor, logit=True)]) if o.dnn else 0)
    if o.name == "xdeepfm":
        # layer k: H_k (H_{k-1} m + bias); split_half passes H_k / 2 on and sends H_k / 2 out (not the last)
        cin = scaled(o.cin, mlp_factor)
        kept = [h // 2 for h in cin[:-1]] + [cin[-1]] if o.split_half else cin
        previous = [m, *kept[:-1]]
        pooled = sum(cin) - (sum(kept[:-1]) if o.split_half else 0)  # the maps sent to the output
        return (total + first_order_params(o, num_dense, m, d)
                + sum(h * p * m + h * o.cin_bias for h, p in zip(cin, previous)) + pooled
                + chain([m * d, *scaled(o.dnn, top_factor, logit=True)]))
    if o.name == "fibinet":
        s = max(1, m // o.reduction)
        n = {"field_all": 1, "field_each": m - 1, "field_interaction": m * (m - 1) // 2}[o.bilinear]
        senet, bilinear, linear = 2 * m * s, 2 * n * d * d, first_order_params(o, num_dense, m, d)  # E and V layers
        return total + senet + bilinear + linear + chain([m * (m - 1) * d, *scaled(o.dnn, top_factor, logit=True)])
    raise AssertionError(o.name)


def linears(model: nn.Module) -> list[tuple[int, int, bool]]:
    embedding = {id(x) for x in model.embeddings.modules()}
    return [(x.in_features, x.out_features, x.bias is not None)
            for x in model.modules() if isinstance(x, nn.Linear) and id(x) not in embedding]


# ---------------------------------------------------------------- 1. every model x every compressor


@pytest.mark.parametrize("kind", COMPRESSOR_KINDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_backward_over_every_compressor(name, kind):
    model = make_model(options(name), kind)
    batch = 6
    dense, kjt = random_batch(batch, NUM_DENSE, FEATURES)
    out = model(dense, kjt)
    assert out.shape == (batch,)
    assert torch.isfinite(out).all()

    loss = nn.functional.binary_cross_entropy_with_logits(out, torch.tensor([0.0, 1.0] * (batch // 2)))
    loss.backward()
    embedding = {id(p) for p in model.embeddings.parameters()}
    assert embedding, "the embedding module holds no parameters"
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert embedding <= {id(p) for _, p in trainable}, "embedding parameters are not part of the model"
    for n, p in trainable:
        assert p.grad is not None, f"{name}/{kind}: no gradient for {n}"
        assert torch.isfinite(dense_grad(p)).all(), f"{name}/{kind}: non-finite gradient for {n}"
    emb_grad = sum(dense_grad(p).abs().sum() for p in model.embeddings.parameters() if p.requires_grad)
    assert emb_grad > 0, f"{name}/{kind}: no gradient reaches the embeddings"
    # the model's counts agree with the embedding accounting
    counts = count(model)
    assert counts.total_params == counts.dense_params + account(model.embeddings).params


# ---------------------------------------------------------------- 2. parameter counts

COUNT_CASES = [
    *[(n, {}) for n in MODEL_NAMES],
    ("dlrm", {"bottom_mlp": [32, 16, 8], "top_mlp": [32, 16, 1]}),
    ("dcnv2", {"low_rank": 5}),
    ("dcnv2", {"structure": "stacked", "cross_layers": 3, "top_mlp": [1]}),  # the cross network alone
    ("dcnv2", {"structure": "stacked", "low_rank": 3, "top_mlp": [16, 12, 1]}),
    ("dcnv2", {"low_rank": 3, "experts": 4}),
    ("dcnv2", {"structure": "stacked", "low_rank": 5, "experts": 1, "expert_activation": "relu"}),  # no gates
    ("dcnv2", {"dense_features": "field", "bottom_mlp": [16, 8], "dropout": 0.3, "init": "he_normal"}),
    ("dcnv2", {"dense_features": "field", "init": "torch"}),  # bottom_mlp default [64, d]
    ("wukong", {"n_f": 2, "n_l": 2}),  # n_0 = n_f + n_l: identity residual everywhere
    ("wukong", {"num_layers": 3, "n_f": 3, "n_l": 5, "k": 6, "fmb_mlp": [16, 12], "dense_embeddings": 2,
                "bottom_mlp": [8, 12], "top_mlp": [12, 6, 1]}),
    ("wukong", {"fmb_mlp": [], "bottom_mlp": [], "top_mlp": [1]}),
    ("deepfm", {"dnn": [32, 16, 1]}),
    ("deepfm", {"dense_features": "field", "bottom_mlp": [16, 8], "dropout": 0.0, "init": "torch"}),
    ("autoint", {"dense_features": "field", "bottom_mlp": [16, 8]}),
    ("autoint", {"dnn": []}),
    ("autoint", {"attention_layers": 3, "heads": 3, "attention_dim": 5}),
    ("xdeepfm", {"cin": [6, 4, 5], "dnn": [1]}),
    ("xdeepfm", {"cin": [6, 4, 5], "cin_activation": "relu", "cin_bias": False}),
    ("xdeepfm", {"cin": [6, 4, 5], "split_half": True}),
    ("fibinet", {"reduction": 3, "dnn": [32, 16, 1]}),
    ("fibinet", {"reduction": 10}),  # m // r = 0: at least one squeezed unit
    ("fibinet", {"bilinear": "field_all", "excitation": "sigmoid"}),
    ("fibinet", {"bilinear": "field_each"}),
    # the scaling knobs enter the formulas through d and the hidden widths
    *[(n, {"scale": {"dim": 2.0, "mlp": 1.5, "over_arch": 2.0}}) for n in MODEL_NAMES],
]


@pytest.mark.parametrize("name, overrides", COUNT_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(COUNT_CASES)])
def test_dense_parameter_count_matches_formula(name, overrides):
    opts = options(name, **overrides)
    model = make_model(opts)
    counts = count(model)
    assert counts.dense_params == expected_dense_params(opts, NUM_DENSE, len(FEATURES))
    width = opts.dim + (getattr(opts, "first_order", None) == "per_id")  # + the per-id first-order column
    assert counts.total_params == counts.dense_params + sum(f.cardinality for f in FEATURES) * width
    assert counts.total_params == sum(p.numel() for p in model.parameters())
    assert counts.flops_per_sample == model.flops_per_sample()


# ---------------------------------------------------------------- 3. FLOPs

FLOP_CASES = [
    *[(n, {}) for n in MODEL_NAMES],
    ("dcnv2", {"low_rank": 4}),
    ("dcnv2", {"structure": "stacked", "dense_features": "field", "bottom_mlp": [16, 8]}),
    ("dcnv2", {"low_rank": 3, "experts": 4}),
    ("dcnv2", {"structure": "stacked", "low_rank": 3, "experts": 1}),
    ("deepfm", {"dense_features": "field", "bottom_mlp": [16, 8]}),
    ("autoint", {"dnn": []}),
    ("wukong", {"n_f": 2, "n_l": 2}),  # n_in == n_f + n_l in every layer
    ("wukong", {"n_f": 3, "n_l": 6, "num_layers": 3, "dense_embeddings": 2}),  # layer 0 projects (5 -> 9)
    ("xdeepfm", {"cin": [6, 4, 5]}),
    ("xdeepfm", {"cin": [6, 4, 5], "split_half": True}),
    ("fibinet", {"bilinear": "field_all"}),
    ("fibinet", {"bilinear": "field_each"}),
    ("dlrm", {"scale": {"mlp": 2.0, "dim": 2.0}}),
]


@pytest.mark.parametrize("name, overrides", FLOP_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FLOP_CASES)])
def test_flops_per_sample_matches_flop_counter(name, overrides):
    model = make_model(options(name, **overrides)).eval()
    batch = 32
    dense, kjt = random_batch(batch, NUM_DENSE, FEATURES)
    measured = measured_flops_per_sample(model, dense, kjt)
    assert measured > 0
    assert model.flops_per_sample() == pytest.approx(measured, rel=0.10)
    assert count(model).flops_per_sample == model.flops_per_sample()


# ---------------------------------------------------------------- 4. Wukong knobs


@pytest.mark.parametrize("knob, value", [("n_l", 6), ("n_f", 6), ("k", 7), ("num_layers", 3)])
def test_wukong_knobs_change_the_output(knob, value):
    dense, kjt = random_batch(8, NUM_DENSE, FEATURES)
    base = make_model(options("wukong")).eval()
    again = make_model(options("wukong")).eval()
    changed = make_model(options("wukong", **{knob: value})).eval()
    with torch.no_grad():
        y0, y1, y2 = base(dense, kjt), again(dense, kjt), changed(dense, kjt)
    assert torch.equal(y0, y1)  # same seed, same inputs: same output
    assert not torch.allclose(y0, y2), f"changing {knob} left the output unchanged"
    assert count(changed).dense_params != count(base).dense_params


WUKONG_SETTINGS = [(2, 2, 4, 1), (4, 4, 4, 2), (8, 4, 6, 3), (4, 8, 2, 2), (1, 3, 1, 1), (1, 1, 1, 4)]


@pytest.mark.parametrize("n_f, n_l, k, layers", WUKONG_SETTINGS)
def test_wukong_parameter_count_follows_formula(n_f, n_l, k, layers):
    opts = options("wukong", n_f=n_f, n_l=n_l, k=k, num_layers=layers)
    model = make_model(opts)
    assert count(model).dense_params == expected_dense_params(opts, NUM_DENSE, len(FEATURES))
    assert len(model.layers) == layers
    for i, layer in enumerate(model.layers):
        n_in = len(FEATURES) + 1 if i == 0 else n_f + n_l
        assert layer.projection.shape == (n_in, k)
        assert layer.lcb.weight.shape == (n_l, n_in)
        assert layer.fmb_mlp[-1].out_features == n_f * DIM


@pytest.mark.parametrize("knob, values", [("n_f", [1, 2, 3, 4, 8]), ("n_l", [1, 2, 3, 4, 8]),
                                          ("k", [1, 2, 4, 8]), ("num_layers", [1, 2, 3, 4])])
def test_wukong_parameter_count_increases_with_each_knob(knob, values):
    # base n_f = 2 so that n_f + n_l crosses n_0 = 4 (the residual projection disappears) on the n_l sweep
    base = {"n_f": 2, "n_l": 4, "k": 4, "num_layers": 2}
    counts = []
    for v in values:
        opts = options("wukong", **{**base, knob: v})
        params = count(make_model(opts)).dense_params
        assert params == expected_dense_params(opts, NUM_DENSE, len(FEATURES))
        counts.append(params)
    assert all(a < b for a, b in zip(counts, counts[1:])), counts


# ---------------------------------------------------------------- 5. scaling knobs


@pytest.mark.parametrize("factor", [2.0, 0.5, 1.5])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scale_dim_multiplies_the_embedding_dimension(name, factor):
    opts = options(name, scale={"dim": factor})
    d = round(DIM * factor)
    assert opts.dim == d
    model = make_model(opts)
    acc = account(model.embeddings)
    width = d + (getattr(opts, "first_order", None) == "per_id")  # + the per-id first-order column
    assert opts.table_width() == width
    assert [t.dim for t in acc.per_table] == [width] * len(FEATURES)
    assert acc.params == sum(f.cardinality for f in FEATURES) * width
    assert count(model).total_params - count(model).dense_params == acc.params
    dense, kjt = random_batch(5, NUM_DENSE, FEATURES)
    out = model(dense, kjt)
    assert out.shape == (5,) and torch.isfinite(out).all()
    assert model.embeddings(kjt).values().shape == (5, len(FEATURES) * width)
    assert linears(model) == expected_linears(opts, NUM_DENSE, len(FEATURES))


@pytest.mark.parametrize("factor", [2.0, 0.5, 3.0])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scale_mlp_multiplies_every_hidden_width(name, factor):
    base, opts = options(name), options(name, scale={"mlp": factor})
    model_base, model = make_model(base), make_model(opts)
    got = linears(model)
    assert got == expected_linears(opts, NUM_DENSE, len(FEATURES))
    # against the unscaled model: same layers; an output width is multiplied unless it is the
    # logit, d (bottom MLP), an embedding-count (Wukong) or a field/attention width
    before = linears(model_base)
    assert len(got) == len(before)
    assert sum(o for _, o, _ in got) != sum(o for _, o, _ in before)
    assert count(model).dense_params == expected_dense_params(opts, NUM_DENSE, len(FEATURES))
    # the logit layers stay width 1 and the embeddings are untouched
    assert sorted(o for _, o, _ in got if o == 1) == sorted(o for _, o, _ in before if o == 1)
    assert account(model.embeddings).params == account(model_base.embeddings).params
    dense, kjt = random_batch(4, NUM_DENSE, FEATURES)
    assert model(dense, kjt).shape == (4,)


def test_scale_mlp_on_dlrm_layer_by_layer():
    opts = options("dlrm", bottom_mlp=[32, 16, 8], top_mlp=[24, 12, 1], scale={"mlp": 2.0})
    model = make_model(opts)
    assert opts.bottom() == [64, 32, 8]  # the last bottom layer is d, not scaled by mlp
    assert opts.top() == [48, 24, 1]
    assert [x.out_features for x in model.dense_arch.modules() if isinstance(x, nn.Linear)] == [64, 32, 8]
    assert [x.out_features for x in model.over_arch.modules() if isinstance(x, nn.Linear)] == [48, 24, 1]


@pytest.mark.parametrize("name, spec", [
    ("dlrm", {"bottom_mlp": [16, 1, 8]}),  # bottom hidden widths 16, 1; the last layer is d = 8
    ("wukong", {"fmb_mlp": [16, 1], "bottom_mlp": [16, 1]}),
    ("xdeepfm", {"cin": [8, 1]}),
    ("deepfm", {"dense_features": "field", "bottom_mlp": [16, 1, 8]}),
])
def test_scale_mlp_also_scales_a_last_hidden_width_of_one(name, spec):
    """A hidden width of 1 at the end of a hidden list is not a logit: scale.mlp must scale it
    like the others (ScaleSpec: "Output layers (the logit) are never scaled")."""
    opts = options(name, **spec, scale={"mlp": 4.0})
    model = make_model(opts)
    assert linears(model) == expected_linears(opts, NUM_DENSE, len(FEATURES))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scale_over_arch_scales_only_the_top_mlp(name):
    base, opts = options(name), options(name, scale={"over_arch": 2.0})
    before, after = linears(make_model(base)), linears(make_model(opts))
    assert after == expected_linears(opts, NUM_DENSE, len(FEATURES))
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert changed, "over_arch changed no layer"
    # only the top MLP changes: its hidden width 16 doubles (and the logit layer's input with it;
    # DCN-V2 parallel: the logit layer reads [x_L; h], N + 16 → N + 32)
    for (bi, bo, _), (ai, ao, _) in changed:
        parallel_logit = name == "dcnv2" and ao == bo == 1 and ai == bi + 16
        assert parallel_logit or ((ai, ao) in ((2 * bi, bo), (bi, 2 * bo)) and 16 in (bi, bo))
    assert after[-1][1] == 1  # the logit layer stays width 1


def test_scale_over_arch_on_dlrm_changes_top_not_bottom():
    base = options("dlrm", bottom_mlp=[32, 16, 8], top_mlp=[24, 12, 1])
    opts = options("dlrm", bottom_mlp=[32, 16, 8], top_mlp=[24, 12, 1], scale={"over_arch": 2.0})
    m0, m1 = make_model(base), make_model(opts)

    def widths(module: nn.Module) -> list[int]:
        return [x.out_features for x in module.modules() if isinstance(x, nn.Linear)]

    assert widths(m1.dense_arch) == widths(m0.dense_arch) == [32, 16, 8]
    assert widths(m0.over_arch) == [24, 12, 1]
    assert widths(m1.over_arch) == [48, 24, 1]
    both = options("dlrm", bottom_mlp=[32, 16, 8], top_mlp=[24, 12, 1], scale={"over_arch": 2.0, "mlp": 1.5})
    m2 = make_model(both)
    assert widths(m2.dense_arch) == [48, 24, 8]
    assert widths(m2.over_arch) == [72, 36, 1]  # mlp x over_arch on the top MLP only


# ---------------------------------------------------------------- scale.rows through the engine


@pytest.fixture(scope="module")
def tiny_dataset():
    return Synthetic.build(SyntheticOptions(rows=500, cardinalities=[100, 40], num_dense=3))


def scenario(model: dict[str, Any], compressor_block: dict[str, Any] | None = None):
    raw = {
        "dataset": {"name": "synthetic", "rows": 500, "cardinalities": [100, 40], "num_dense": 3},
        "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [16, 1], **model},
        "target": {"metric": "auc", "value": 0.6},
    }
    if compressor_block is not None:
        raw["compressor"] = compressor_block
    spec, errors = validate_scenario(raw)
    assert not errors, errors
    return spec


@pytest.mark.parametrize("rows", [0.5, 1.0, 2.5, 0.33, 0.001])
def test_scale_rows_sizes_tables_at_ceil_rows_n(tiny_dataset, rows):
    torch.manual_seed(0)
    model = build(scenario({"scale": {"rows": rows}}), tiny_dataset, CPU)
    assert isinstance(model.embeddings, RowScaledEmbedding)
    tables = account(model.embeddings).per_table
    assert [t.rows for t in tables] == [max(1, math.ceil(rows * n)) for n in (100, 40)]
    assert [t.dim for t in tables] == [8, 8]
    dense, kjt = random_batch(10, 3, tiny_dataset.features)
    out = model(dense, kjt)
    assert out.shape == (10,) and torch.isfinite(out).all()


def test_scale_rows_composes_with_a_compressor(tiny_dataset):
    torch.manual_seed(0)
    spec = scenario({"scale": {"rows": 2.0}}, {"kind": "hashing", "ratio": 4, "threshold": 50})
    model = build(spec, tiny_dataset, CPU)
    tables = account(model.embeddings).per_table
    assert [t.rows for t in tables] == [200, 80]  # the compressor sees the scaled tables
    assert [t.params for t in tables] == [50 * 8, 20 * 8]


def test_scale_rows_hashes_ids_and_collides_below_one(tiny_dataset):
    torch.manual_seed(0)
    model = build(scenario({"scale": {"rows": 0.5}}), tiny_dataset, CPU)
    emb = model.embeddings
    name, n, m = tiny_dataset.features[0].name, 100, 50
    other = tiny_dataset.features[1].name
    ids = list(range(n))
    hashed = emb.hasher(one_hot_kjt({name: ids, other: [0] * n})).to_dict()[name].values().tolist()
    # a universal hash ((a x + b) mod P) mod m, recomputed from the hasher's coefficients
    a, b = int(emb.hasher.a[0]), int(emb.hasher.b[0])
    assert hashed == [((a * x + b) % MERSENNE_31) % m for x in ids]
    assert all(0 <= h < m for h in hashed)
    assert hashed != [x % m for x in ids]  # not the identity / modulo map
    by_row: dict[int, list[int]] = {}
    for x, h in zip(ids, hashed):
        by_row.setdefault(h, []).append(x)
    collisions = [xs for xs in by_row.values() if len(xs) > 1]
    assert collisions  # 100 ids into 50 rows
    x, y = collisions[0][:2]
    vectors = emb(one_hot_kjt({name: ids, other: [0] * n})).to_dict()[name].detach()
    assert torch.equal(vectors[x], vectors[y])  # colliding ids share one embedding
    weight = emb.inner.embedding_bags[f"t_{name}"].weight.detach()
    assert torch.equal(vectors, weight[hashed])
    assert len({tuple(v.tolist()) for v in vectors}) == len(set(hashed))


def test_scale_rows_unset_keeps_the_identity_map(tiny_dataset):
    torch.manual_seed(0)
    model = build(scenario({}), tiny_dataset, CPU)
    emb = model.embeddings
    assert not isinstance(emb, RowScaledEmbedding)
    assert [t.rows for t in account(emb).per_table] == [100, 40]
    name, other = tiny_dataset.features[0].name, tiny_dataset.features[1].name
    vectors = emb(one_hot_kjt({name: list(range(100)), other: [0] * 100})).to_dict()[name].detach()
    assert torch.equal(vectors, emb.embedding_bags[f"t_{name}"].weight.detach())
    assert len({tuple(v.tolist()) for v in vectors}) == 100  # no two ids share a vector


def test_scale_dim_through_the_engine(tiny_dataset):
    torch.manual_seed(0)
    model = build(scenario({"scale": {"dim": 2.0, "rows": 1.5}}), tiny_dataset, CPU)
    tables = account(model.embeddings).per_table
    assert [(t.rows, t.dim) for t in tables] == [(150, 16), (60, 16)]
    dense, kjt = random_batch(4, 3, tiny_dataset.features)
    assert model(dense, kjt).shape == (4,)


# ---------------------------------------------------------------- 6. suite validation


def suite_text(model_block: str, matrix: str = "") -> str:
    return (
        "name: zoo\n"
        "defaults:\n"
        "  dataset: {name: synthetic, rows: 1000, cardinalities: [100, 40], num_dense: 3}\n"  # 800 train rows ≥ a batch
        "  target: {metric: auc, value: 0.6}\n"
        "  model:\n" + model_block + (("matrix:\n" + matrix) if matrix else "")
    )


WUKONG_BLOCK = (
    "    name: wukong\n"
    "    embedding_dim: 8\n"
    "    num_layers: 2\n"
    "    n_f: 4\n"
    "    n_l: 4\n"
    "    k: 4\n"
    "    fmb_mlp: [16]\n"
    "    top_mlp: [16, 1]\n"
)


def load_error(path) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    err = info.value
    for line in err.lines:
        assert line.startswith(f"{path}:") and line.split(":")[1].isdigit(), line
    return err


def find(err: UserInputError, *needles: str) -> str:
    hits = [line for line in err.lines if all(n in line for n in needles)]
    assert hits, f"no error line contains {needles}: {err.lines}"
    return hits[0]


def test_matrix_sweeps_over_dotted_model_keys(write_suite):
    path = write_suite(suite_text(WUKONG_BLOCK, "  model.scale.mlp: [1.0, 2.0]\n  model.n_l: [4, 8, 12]\n"))
    suite = load_suite(path)
    got = sorted((s.spec.model.scale.mlp, s.spec.model.n_l) for s in suite.scenarios)
    assert got == sorted((m, n) for m in (1.0, 2.0) for n in (4, 8, 12))
    assert len({s.scenario_id for s in suite.scenarios}) == 6
    for s in suite.scenarios:
        assert s.spec.model.name == "wukong"
        assert s.spec.model.n_f == 4 and s.spec.model.k == 4  # the rest of the defaults merged in
        assert f"mlp={s.spec.model.scale.mlp}" in s.label and f"n_l={s.spec.model.n_l}" in s.label
        assert s.source.startswith(f"{path}:")
    # each resolved scenario builds the model it describes
    one = next(s for s in suite.scenarios if s.spec.model.scale.mlp == 2.0 and s.spec.model.n_l == 8)
    model = make_model(one.spec.model, features=[SparseFeature("t0", 100), SparseFeature("t1", 40)], num_dense=3)
    assert model.layers[0].lcb.out_features == 8
    fmb = [x.out_features for x in model.layers[0].fmb_mlp.modules() if isinstance(x, nn.Linear)]
    assert fmb == [32, 4 * 8]  # fmb hidden 16 x 2, then n_f * d


def test_matrix_sweep_over_scale_dim_and_rows_gives_distinct_ids(write_suite):
    path = write_suite(suite_text(WUKONG_BLOCK, "  model.scale.dim: [1.0, 2.0]\n  model.scale.rows: [0.5, 1.0]\n"))
    suite = load_suite(path)
    assert len(suite.scenarios) == 4
    assert len({s.scenario_id for s in suite.scenarios}) == 4
    assert sorted(s.spec.model.dim for s in suite.scenarios) == [8, 8, 16, 16]


def test_equal_scale_is_the_same_scenario_as_no_scale(write_suite):
    path = write_suite(suite_text(WUKONG_BLOCK, "  model.scale.mlp: [1.0, 1]\n"))
    err = load_error(path)
    assert "same scenario" in err.lines[0]


@pytest.mark.parametrize("block, needle, field", [
    (WUKONG_BLOCK.replace("n_f: 4", "n_f: 0"), "n_f: 0", "model.n_f"),
    (WUKONG_BLOCK.replace("k: 4", "k: -2"), "k: -2", "model.k"),
    ("    name: dcnv2\n    embedding_dim: 8\n    bottom_mlp: [16, 8]\n    top_mlp: [16, 2]\n",
     "top_mlp: [16, 2]", "model.top_mlp"),
    ("    name: autoint\n    embedding_dim: 8\n    bottom_mlp: [16, 8]\n    dnn: [16]\n", "dnn: [16]", "model.dnn"),
    ("    name: xdeepfm\n    embedding_dim: 8\n    bottom_mlp: [16, 8]\n    cin: []\n", "cin: []", "model.cin"),
    (WUKONG_BLOCK + "    n_layers: 3\n", "n_layers: 3", "model.n_layers"),
    ("    name: dlrm\n    embedding_dim: 8\n    bottom_mlp: [16, 8]\n    top_mlp: [16, 1]\n    cin: [8]\n",
     "cin: [8]", "model.cin"),  # a key of another model
    (WUKONG_BLOCK + "    scale: {mlp: 0}\n", "scale: {mlp: 0}", "model.scale.mlp"),
    (WUKONG_BLOCK + "    scale: {over_arc: 2}\n", "scale: {over_arc: 2}", "model.scale.over_arc"),
])
def test_bad_model_options_are_errors_with_file_and_line(write_suite, block, needle, field):
    path = write_suite(suite_text(block))
    err = load_error(path)
    line = find(err, field)
    assert line.startswith(f"{path}:{line_of(path, needle)}: "), (line, err.lines)


def test_bad_option_in_a_matrix_axis_points_at_the_axis(write_suite):
    path = write_suite(suite_text(WUKONG_BLOCK, "  model.n_f: [4, 0]\n"))
    err = load_error(path)
    line = find(err, "n_f")
    assert line.startswith(f"{path}:{line_of(path, 'model.n_f:')}: "), line
    assert "greater than 0" in line


def test_unknown_model_name_is_an_error_with_its_line(write_suite):
    path = write_suite(suite_text("    name: wukang\n    embedding_dim: 8\n"))
    err = load_error(path)
    line = find(err, "wukang")
    assert line.startswith(f"{path}:{line_of(path, 'name: wukang')}: "), line


def test_model_options_round_trip_through_yaml():
    """The options a suite writes validate to the same model (what a result file records)."""
    for name in MODEL_NAMES:
        opts = options(name, scale={"mlp": 2.0, "over_arch": 0.5, "dim": 2.0})
        dumped = yaml.safe_load(yaml.safe_dump(opts.model_dump(mode="json")))
        assert MODELS.get(name).Options.model_validate(dumped) == opts
