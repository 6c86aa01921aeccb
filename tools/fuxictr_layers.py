"""FuxiCTR's FiBiNET, DeepFM, xDeepFM and WuKong against dlrs-bench's, layer by layer, with copied weights.

Run with dlrs-bench's Python; FuxiCTR (2.3.10) is imported from its own virtual environment, whose
site-packages go at the END of ``sys.path`` (torch and everything else come from dlrs-bench's venv;
both are torch 2.13.0), and the model classes are loaded by file path from the zoo::

    nice -n 10 .venv/bin/python tools/fuxictr_layers.py \\
        --fuxi-site-packages /tmp/fuxi-venv/lib/python3.11/site-packages --zoo /tmp/fuxi-zoo

What it does, for d = 16 and 32 (``--dims``), in float32:

1. builds FuxiCTR's model from an in-memory FeatureMap laid out as tools/fuxictr_compare.py exports
   dlrs-bench's MovieLens (user, movie, genres (a sequence, masked mean), year, then the 4 numeric
   features, FuxiCTR's train vocabularies: 612, 8974, 22, 109 rows with padding 0) and with its
   ``<Model>_default`` template (``hidden_units`` etc. read from the zoo's model_config.yaml);
2. builds dlrs-bench's model as suites/fuxictr_match.yaml does (``per_feature`` dense fields, per-id
   first-order weights with a bag's weights summed, ``first_order_pooling: sum``, mean pooling);
3. copies every FuxiCTR weight into dlrs-bench's model (tables, the 1-wide LR tables as the per-id
   column, numeric ``Linear(1, d)``s, SENET, bilinear, CIN, MLP), permuting fields where the two
   orders differ, and prints max |difference| of every intermediate output on one random batch
   (the tables redrawn from N(0, 0.1²), ``--table-std``: at FuxiCTR's N(0, 1e-4²) init every product
   of two embeddings is ~1e-8 and an absolute tolerance could not see a difference in it).

Two field layouts are run (``--layouts``): ``fuxictr`` (the order FuxiCTR really sees: 4 categorical
fields, then the 4 numeric ones; dlrs-bench puts the dense fields first) and ``dlrs`` (the FeatureMap
in dlrs-bench's order, dense first, so that both models see the same fields in the same order).
For FiBiNET the order is part of the function: a bilinear pair (i < j) is p_ij = (v_i W_ij) ∘ v_j,
asymmetric in i and j, so the 16 dense × categorical pairs are (v_dense W) ∘ v_cat in dlrs-bench and
(v_cat W) ∘ v_dense in FuxiCTR; dlrs-bench's FiBiNET with ``dense_position: last`` (run too, in the
``fuxictr`` layout) sees FuxiCTR's order. DeepFM and xDeepFM are the same function in any order.

FuxiCTR's ``LogisticRegression`` sum-pools a sequence's 1-wide weights (FeatureEmbeddingDict gives 1-wide
LR tables ``MaskedSumPooling``, whatever the field's encoder) while the field's embedding is mean-pooled;
dlrs-bench does the same with ``first_order_pooling: sum`` (the suite's setting), and the ``first-order
term, genres pooled as the embedding`` rows show the default (``embedding``: the weights averaged like the
embedding, k times smaller for a bag of k genres), which is a different function.

WuKong (``WuKong_default``: 3 layers of 40 FMB + 40 LCB embeddings, k = 8, FMB MLP 512-256, top 512-256
with BatchNorm) is compared with dlrs-bench's Wukong under WUKONG_FUXICTR, the options that express
FuxiCTR's choices (a ReLU after the FMB MLP, Y ~ N(0, 1), a residual bias, top BatchNorm, per-feature
numeric fields, Xavier-normal Linears); FuxiCTR's biases and norms are redrawn first (they start constant),
and the logit is compared in eval mode (BatchNorm's running statistics) and train mode (the batch's). Its
field order, too, is a permutation absorbed by the copied weights (Y's rows, the first FMB Linear's,
W_L's and the residual projection's columns of layer 0). ``init std`` rows compare its fresh weights.

Separately (``bilinear/senet same input`` rows): FuxiCTR's ``BilinearInteractionV2`` and
``SqueezeExcitation`` against dlrs-bench's ``Bilinear`` and ``SENET`` on the same tensor with the same
weights, every bilinear type and excitation; and the initialisation (``init std`` rows): the standard
deviation of every freshly initialised weight in both codes, which would show a d-dependent init scale.

Exit status 1 if a layer that should be the same function differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: FuxiCTR's FeatureMap of dlrs-bench's MovieLens (build/.../feature_map.json of tools/fuxictr_compare.py).
CATEGORICAL = [("user", 612, False), ("movie", 8974, False), ("genres", 22, True), ("year", 109, False)]
NUM_DENSE = 4
MAX_LEN = 10
MODELS = ("FiBiNET", "DeepFM", "xDeepFM", "WuKong")
#: WuKong_default's sizes as suites/fuxictr_match.yaml gives them to dlrs-bench's Wukong.
WUKONG_TEMPLATE = {"num_layers": 3, "n_f": 40, "n_l": 40, "k": 8, "fmb_mlp": [512, 256], "top_mlp": [512, 256, 1]}
#: The options that make dlrs-bench's Wukong FuxiCTR's WuKong (dlrs_bench/models/options.py WukongOptions).
WUKONG_FUXICTR = {"fmb_activation": "relu", "y_init_std": "one", "residual_bias": True, "top_batchnorm": True,
                  "dense_features": "per_feature", "init": "xavier_normal"}


def import_fuxictr(site_packages: str) -> None:
    sys.path.append(site_packages)  # after dlrs-bench's own: torch comes from .venv
    import fuxictr.pytorch.layers  # noqa: F401  (fails here, not later, if the path is wrong)


def load_model_class(zoo: Path, model: str) -> type:
    """As tools/fuxictr_compare.py: ``zoo/<model>/src/<model>.py`` by path."""
    path = zoo / model / "src" / f"{model}.py"
    spec = importlib.util.spec_from_file_location(f"fuxictr_zoo_{model}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, model)


def template(zoo: Path, model: str) -> dict[str, Any]:
    import yaml

    with open(zoo / model / "config" / "model_config.yaml") as f:
        return yaml.safe_load(f)[f"{model}_default"]


# ---------------------------------------------------------------- the two models


def feature_map(order: str, d: int) -> Any:
    """FuxiCTR's FeatureMap in memory: categorical then numeric (``fuxictr``) or numeric first (``dlrs``)."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap("layers", "/nonexistent")
    cat = [(name, {"source": "", "type": "sequence", "feature_encoder": "layers.MaskedAveragePooling()",
                   "padding_idx": 0, "max_len": MAX_LEN, "vocab_size": n} if multi else
            {"source": "", "type": "categorical", "padding_idx": 0, "vocab_size": n})
           for name, n, multi in CATEGORICAL]
    num = [(f"dense_{k}", {"source": "", "type": "numeric"}) for k in range(NUM_DENSE)]
    fmap.features = OrderedDict(cat + num if order == "fuxictr" else num + cat)
    fmap.labels = ["label"]
    fmap.default_emb_dim = d
    fmap.num_fields = len(fmap.features)
    fmap.set_column_index()
    return fmap


#: Std the tables are redrawn with before the comparison (``--table-std``; 0 keeps FuxiCTR's N(0, 1e-4²),
#: under which every product of two embeddings is ~1e-8 and an absolute tolerance would not see it).
TABLE_STD = [0.1]


def fuxi_model(zoo: Path, name: str, order: str, d: int, seed: int) -> nn.Module:
    cls = load_model_class(zoo, name)
    params = {**template(zoo, name), "embedding_dim": d}
    skip = {"model", "dataset_id", "batch_size", "epochs", "shuffle", "seed", "monitor", "monitor_mode"}
    kwargs = {k: v for k, v in params.items() if k not in skip}
    kwargs.update(verbose=0, model_root="/tmp/fuxictr_layers_unused", gpu=-1)
    torch.manual_seed(seed)
    model = cls(feature_map(order, d), **kwargs)
    model.output_activation = nn.Identity()  # compare logits
    if name == "WuKong":  # its top MLP_Block ends in the output activation
        assert isinstance(model.fc.mlp[-1], nn.Sigmoid)
        model.fc.mlp[-1] = nn.Identity()
    if TABLE_STD[0]:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for table in (mod for mod in model.modules() if isinstance(mod, nn.Embedding)):
                table.weight[1:] = torch.randn(table.weight[1:].shape, generator=g) * TABLE_STD[0]  # row 0: padding
    return model.eval()


def dlrs_options(name: str, d: int) -> Any:
    """The suite's (suites/fuxictr_match.yaml) settings for ``name``."""
    from dlrs_bench.registry import MODELS as REGISTRY

    summed = {"first_order_pooling": "sum"}
    spec = {"FiBiNET": {"name": "fibinet", "dnn": [500, 500, 500, 1], **summed},
            "DeepFM": {"name": "deepfm", "dnn": [300, 300, 300, 1], "dropout": 0, **summed},
            "xDeepFM": {"name": "xdeepfm", "cin": [32, 32, 32], "dnn": [500, 500, 500, 1], **summed},
            "WuKong": {"name": "wukong", **WUKONG_TEMPLATE, **WUKONG_FUXICTR}}[name]
    return REGISTRY.get(spec["name"]).Options(embedding_dim=d, **spec)


def first_order_as_embedding(net: nn.Module, dense: torch.Tensor, pooled: Any, kjt: Any) -> torch.Tensor:
    """``net``'s first-order term with the default ``first_order_pooling: embedding`` (bags averaged)."""
    from dlrs_bench.models.layers import FirstOrder

    plain = FirstOrder(NUM_DENSE, len(CATEGORICAL), net.first_order.d)
    plain.load_state_dict(net.first_order.state_dict())
    return plain(dense, pooled, torch.empty(0), kjt)


def dlrs_model(name: str, d: int, seed: int, **overrides: Any) -> nn.Module:
    from dlrs_bench.compression.base import build_embeddings
    from dlrs_bench.data.base import SparseFeature
    from dlrs_bench.models.base import build_model
    from dlrs_bench.registry import COMPRESSORS

    opts = dlrs_options(name, d)
    if overrides:
        opts = type(opts)(**{**opts.model_dump(exclude_defaults=True), **overrides})
    features = [SparseFeature(n, rows, multi) for n, rows, multi in CATEGORICAL]
    torch.manual_seed(seed)
    full = COMPRESSORS.get("none").Options(kind="none", pooling="mean")
    embeddings = build_embeddings(features, opts.table_width(), full, torch.device("cpu"))
    return build_model(opts, NUM_DENSE, features, embeddings).eval()


def batch(size: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
    """One batch both ways: FuxiCTR's dict (sequences 0-padded to MAX_LEN) and dlrs-bench's (dense, KJT).
    Ids from 1 (0 is the padding row on both sides); genres bags of 1..3 ids."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(size, NUM_DENSE, generator=g)
    x: dict[str, torch.Tensor] = {f"dense_{k}": dense[:, k] for k in range(NUM_DENSE)}
    values, lengths = [], []
    for name, n, multi in CATEGORICAL:
        if multi:
            bag_len = torch.randint(1, 4, (size,), generator=g)
            seq = torch.zeros(size, MAX_LEN, dtype=torch.long)
            for r, k in enumerate(bag_len.tolist()):
                ids = torch.randperm(n - 1, generator=g)[:k] + 1
                seq[r, :k] = ids
                values.append(ids)
            x[name] = seq
            lengths.append(bag_len)
        else:
            ids = torch.randint(1, n, (size,), generator=g)
            x[name] = ids
            values.append(ids)
            lengths.append(torch.ones(size, dtype=torch.long))
    kjt = KeyedJaggedTensor(keys=[n for n, _, _ in CATEGORICAL], values=torch.cat(values),
                            lengths=torch.cat(lengths).to(torch.int32))
    return x, dense, kjt


# ---------------------------------------------------------------- copying weights FuxiCTR → dlrs-bench


def field_names(order: str) -> list[str]:
    cat = [n for n, _, _ in CATEGORICAL]
    num = [f"dense_{k}" for k in range(NUM_DENSE)]
    return cat + num if order == "fuxictr" else num + cat


def permutation(order: str, dlrs_order: str = "dlrs") -> list[int]:
    """pi[a]: FuxiCTR's index of dlrs-bench's field a (dlrs-bench: dense fields first; ``fuxictr`` for
    FiBiNET's ``dense_position: last``, whose layers see the fields categorical first)."""
    fuxi = field_names(order)
    return [fuxi.index(n) for n in field_names(dlrs_order)]


def pair_map(m: int, pi: list[int]) -> tuple[list[int], list[bool]]:
    """For every dlrs-bench pair n = (a, b), a < b: FuxiCTR's pair index of {pi[a], pi[b]} and whether
    it has the same orientation (pi[a] < pi[b]; else FuxiCTR computes (v_b W) ∘ v_a)."""
    fuxi_pairs = {p: n for n, p in enumerate(itertools.combinations(range(m), 2))}
    index, same = [], []
    for a, b in itertools.combinations(range(m), 2):
        i, j = pi[a], pi[b]
        index.append(fuxi_pairs[(min(i, j), max(i, j))])
        same.append(i < j)
    return index, same


@torch.no_grad()
def copy_inputs(fuxi: nn.Module, net: nn.Module, d: int) -> None:
    """Tables, numeric Linear(1, d)s and the first-order weights (the 1-wide LR tables become the per-id
    column d; FuxiCTR's LR has no bias (FiBiNET, xDeepFM) or one (DeepFM's FM): copied, else 0)."""
    emb = fuxi.embedding_layer.embedding_layer.embedding_layers
    lr = fuxi.fm.lr_layer if hasattr(fuxi, "fm") else fuxi.lr_layer
    lr_emb = lr.embedding_layer.embedding_layer.embedding_layers
    for name, _, _ in CATEGORICAL:
        table = net.embeddings.embedding_bags[f"t_{name}"].weight
        table[:, :d] = emb[name].weight
        table[:, d] = lr_emb[name].weight[:, 0]
    for k in range(NUM_DENSE):
        net.inputs.dense_weight[k] = emb[f"dense_{k}"].weight[:, 0]
        net.first_order.dense_weight[k] = lr_emb[f"dense_{k}"].weight[0, 0]
    net.first_order.bias.fill_(lr.bias.item() if lr.bias is not None else 0.0)


@torch.no_grad()
def copy_mlp(fuxi_mlp: nn.Module, head: nn.Module, first_columns: torch.Tensor | None = None) -> None:
    """FuxiCTR's MLP_Block (Linear, ReLU, ...; no BN or dropout in these templates) into a Head; the first
    Linear's columns taken in ``first_columns`` order (dlrs-bench's input column c = FuxiCTR's column
    first_columns[c])."""
    fl = [m for m in fuxi_mlp.modules() if isinstance(m, nn.Linear)]
    dl = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [tuple(a.weight.shape) for a in fl] == [tuple(b.weight.shape) for b in dl], "MLP shapes differ"
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in fuxi_mlp.modules())
    for k, (a, b) in enumerate(zip(fl, dl)):
        w = a.weight if k or first_columns is None else a.weight[:, first_columns]
        b.weight.copy_(w)
        b.bias.copy_(a.bias)


def field_columns(pi: list[int], d: int) -> torch.Tensor:
    """Columns of a flattened [m, d] input: dlrs-bench's field a is FuxiCTR's field pi[a]."""
    return torch.tensor([pi[a] * d + k for a in range(len(pi)) for k in range(d)])


# ---------------------------------------------------------------- reporting


class Report:
    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.failures: list[str] = []

    def row(self, label: str, a: torch.Tensor, b: torch.Tensor, same: bool = True, note: str = "") -> float:
        diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        scale = b.double().abs().max().item() if b.numel() else 0.0
        verdict = ("ok" if diff <= self.tolerance else "DIFFERS") if same else "differs (expected)"
        if same and diff > self.tolerance:
            self.failures.append(label)
        rel = diff / scale if scale else 0.0
        print(f"  {label:<50} max|diff| {diff:9.3e}  max|FuxiCTR| {scale:9.3e}  rel {rel:8.2e}  "
              f"{verdict}{'  ' + note if note else ''}")
        return diff


# ---------------------------------------------------------------- FiBiNET


def compare_fibinet(zoo: Path, d: int, order: str, seed: int, size: int, rep: Report,
                    dense_position: str = "first") -> None:
    """dlrs-bench's FiBiNET with ``dense_position`` (its layers see the fields dense first, or last)."""
    fuxi = fuxi_model(zoo, "FiBiNET", order, d, seed)
    net = dlrs_model("FiBiNET", d, seed + 1, **({"dense_position": "last"} if dense_position == "last" else {}))
    m = fuxi.embedding_layer.embedding_layer._feature_map.num_fields
    pi = permutation(order, "fuxictr" if dense_position == "last" else "dlrs")
    pairs, same = pair_map(m, pi)
    same_t = torch.tensor(same)
    copy_inputs(fuxi, net, d)
    with torch.no_grad():
        net.senet.excitation[0].weight.copy_(fuxi.senet_layer.excitation[0].weight[:, pi])
        net.senet.excitation[2].weight.copy_(fuxi.senet_layer.excitation[2].weight[pi, :])
        net.bilinear_e.weight.copy_(fuxi.bilinear_interaction1.bilinear_W[pairs])
        net.bilinear_v.weight.copy_(fuxi.bilinear_interaction2.bilinear_W[pairs])
        # DNN input: [p (P pairs), q (P pairs)] × d; dlrs-bench pair n is FuxiCTR pair pairs[n]
        p_count = len(pairs)
        cols = torch.tensor([(s * p_count + pairs[n]) * d + k for s in range(2) for n in range(p_count)
                             for k in range(d)])
    copy_mlp(fuxi.dnn, net.dnn, cols)

    x, dense, kjt = batch(size, seed + 2)
    with torch.no_grad():
        X = fuxi.get_inputs(x)
        fe = fuxi.embedding_layer(X)[:, pi]  # FuxiCTR's fields in dlrs-bench's order
        fv = fuxi.senet_layer(fuxi.embedding_layer(X))[:, pi]
        fa = fuxi.senet_layer.excitation(fuxi.embedding_layer(X).mean(-1))[:, pi]
        fp = fuxi.bilinear_interaction1(fuxi.embedding_layer(X))[:, pairs]
        fq = fuxi.bilinear_interaction2(fuxi.senet_layer(fuxi.embedding_layer(X)))[:, pairs]
        comb = torch.flatten(torch.cat([fuxi.bilinear_interaction1(fuxi.embedding_layer(X)),
                                        fuxi.bilinear_interaction2(fuxi.senet_layer(fuxi.embedding_layer(X)))],
                                       dim=1), start_dim=1)
        fdnn = fuxi.dnn(comb).squeeze(-1)
        flr = fuxi.lr_layer(X).squeeze(-1)
        flogit = fuxi(x)["y_pred"].squeeze(-1)

        pooled = net.embeddings(kjt)
        e = net.inputs(dense, pooled)
        e = e if net.order is None else e[:, net.order]  # the fields as FiBiNET's layers see them
        a = net.senet.weights(e)
        v = net.senet(e)
        p, q = net.bilinear_e(e), net.bilinear_v(v)
        both = torch.cat([p, q], dim=1).flatten(1)
        dnn = net.dnn(both)
        lr = net.first_order(dense, pooled, e, kjt)
        lr_mean = first_order_as_embedding(net, dense, pooled, kjt)
        logit = net(dense, kjt)

    rep.row("embeddings E [B, m, d]", e, fe)
    rep.row("SENET A [B, m]", a, fa)
    rep.row("SENET V = E ∘ A", v, fv)
    oriented = "same orientation" if same_t.all() else f"{int(same_t.sum())} of {len(same)} pairs, same orientation"
    rep.row(f"bilinear p on E ({oriented})", p[:, same_t], fp[:, same_t])
    rep.row("bilinear q on V (same orientation)", q[:, same_t], fq[:, same_t])
    if not same_t.all():
        flipped = int((~same_t).sum())
        rep.row(f"bilinear p, {flipped} flipped pairs (dense × cat)", p[:, ~same_t], fp[:, ~same_t], same=False,
                note="(v_i W) ∘ v_j vs (v_j W) ∘ v_i")
        rep.row(f"bilinear q, {flipped} flipped pairs", q[:, ~same_t], fq[:, ~same_t], same=False)
    rep.row("DNN on its own input [p, q]", dnn, fdnn, same=bool(same_t.all()))
    with torch.no_grad():
        dnn_same_in = net.dnn(comb[:, cols])
    rep.row("DNN on FuxiCTR's [p, q] (columns permuted)", dnn_same_in, fdnn)
    rep.row("first-order term (genres summed)", lr, flr)
    rep.row("first-order term, genres pooled as the embedding", lr_mean, flr, same=False,
            note="first_order_pooling: embedding averages a bag's weights")
    rep.row("logit", logit, flogit, same=bool(same_t.all()))


def same_input_layers(d: int, seed: int, rep: Report) -> None:
    """FuxiCTR's SqueezeExcitation and BilinearInteractionV2 against dlrs-bench's SENET and Bilinear on
    one tensor, weights copied (FuxiCTR's field_each has m matrices, the last never used)."""
    from fuxictr.pytorch.layers import BilinearInteractionV2, SqueezeExcitation

    from dlrs_bench.models.fibinet import SENET, Bilinear

    m = len(CATEGORICAL) + NUM_DENSE
    x = torch.randn(64, m, d, generator=torch.Generator().manual_seed(seed))
    for kind in ("field_all", "field_each", "field_interaction"):
        fb, db = BilinearInteractionV2(m, d, kind), Bilinear(m, d, kind)
        with torch.no_grad():
            db.weight.copy_(fb.bilinear_W[: m - 1] if kind == "field_each" else fb.bilinear_W)
            rep.row(f"bilinear {kind} same input", db(x), fb(x))
    for act in ("relu", "sigmoid"):
        fs, ds = SqueezeExcitation(m, 3, act), SENET(m, 3, act)
        with torch.no_grad():
            ds.excitation[0].weight.copy_(fs.excitation[0].weight)
            ds.excitation[2].weight.copy_(fs.excitation[2].weight)
            rep.row(f"SENET {act} same input", ds(x), fs(x))


def init_stds(zoo: Path, d: int, builds: int = 8) -> None:
    """Root-mean-square of every freshly initialised weight over ``builds`` builds (FuxiCTR after
    reset_parameters, dlrs-bench after build); the same distribution gives ratios ≈ 1 (up to sampling)."""
    sums: dict[str, list[float]] = {}
    for seed in range(builds):
        for label, a, b in init_rows(zoo, d, seed):
            acc = sums.setdefault(label, [0.0, 0.0, 0, list(a.shape)])
            acc[0] += a.double().pow(2).mean().item()
            acc[1] += b.double().pow(2).mean().item()
    for label, (fa, da, _, shape) in sums.items():
        f_std, d_std = (fa / builds) ** 0.5, (da / builds) ** 0.5
        print(f"  init std {label:<36} {str(tuple(shape)):<14} FuxiCTR {f_std:.4f}  dlrs-bench {d_std:.4f}  "
              f"ratio {d_std / f_std:.3f}")


def init_rows(zoo: Path, d: int, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    fuxi = fuxi_model(zoo, "FiBiNET", "fuxictr", d, seed)
    net = dlrs_model("FiBiNET", d, seed)
    f_lin = [mod.weight for mod in fuxi.dnn.modules() if isinstance(mod, nn.Linear)]
    d_lin = [mod.weight for mod in net.dnn.modules() if isinstance(mod, nn.Linear)]
    emb = fuxi.embedding_layer.embedding_layer.embedding_layers
    rows = [("bilinear W (p)", fuxi.bilinear_interaction1.bilinear_W, net.bilinear_e.weight),
            ("bilinear W (q)", fuxi.bilinear_interaction2.bilinear_W, net.bilinear_v.weight),
            ("SENET W1", fuxi.senet_layer.excitation[0].weight, net.senet.excitation[0].weight),
            ("SENET W2", fuxi.senet_layer.excitation[2].weight, net.senet.excitation[2].weight),
            ("numeric Linear(1, d)", torch.cat([emb[f"dense_{k}"].weight for k in range(NUM_DENSE)]),
             net.inputs.dense_weight)]
    rows += [(f"DNN Linear {k}", a, b) for k, (a, b) in enumerate(zip(f_lin, d_lin))]
    return rows


# ---------------------------------------------------------------- DeepFM and xDeepFM


def compare_deepfm(zoo: Path, d: int, order: str, seed: int, size: int, rep: Report) -> None:
    from dlrs_bench.models.deepfm import fm_second_order

    fuxi = fuxi_model(zoo, "DeepFM", order, d, seed)
    net = dlrs_model("DeepFM", d, seed + 1)
    pi = permutation(order)
    copy_inputs(fuxi, net, d)
    copy_mlp(fuxi.mlp, net.dnn, field_columns(pi, d))
    x, dense, kjt = batch(size, seed + 2)
    with torch.no_grad():
        X = fuxi.get_inputs(x)
        fe = fuxi.embedding_layer(X)
        ffm = fuxi.fm.fm_layer(fe).squeeze(-1)
        fdnn = fuxi.mlp(fe.flatten(1)).squeeze(-1)
        flr = fuxi.fm.lr_layer(X).squeeze(-1)
        flogit = fuxi(x)["y_pred"].squeeze(-1)
        pooled = net.embeddings(kjt)
        e = net.inputs(dense, pooled)
        lr = net.first_order(dense, pooled, e, kjt)
        lr_mean = first_order_as_embedding(net, dense, pooled, kjt)
        logit = net(dense, kjt)
    rep.row("embeddings E", e, fe[:, pi])
    rep.row("FM second order", fm_second_order(e), ffm)
    rep.row("DNN", net.dnn(e.flatten(1)), fdnn)
    rep.row("first-order term (genres summed)", lr, flr)
    rep.row("first-order term, genres pooled as the embedding", lr_mean, flr, same=False)
    rep.row("logit", logit, flogit)


def compare_xdeepfm(zoo: Path, d: int, order: str, seed: int, size: int, rep: Report) -> None:
    fuxi = fuxi_model(zoo, "xDeepFM", order, d, seed)
    net = dlrs_model("xDeepFM", d, seed + 1)
    pi = permutation(order)
    m = len(pi)
    copy_inputs(fuxi, net, d)
    copy_mlp(fuxi.dnn, net.dnn, field_columns(pi, d))
    with torch.no_grad():
        widths = fuxi.cin.cin_hidden_units
        for k, (w, b) in enumerate(zip(net.cin.maps, net.cin.biases)):
            conv = fuxi.cin.cin_layer[f"layer_{k + 1}"]
            p = m if k == 0 else widths[k - 1]
            # dlrs-bench's channel i m + a (X^{k-1}_i ∘ X^0_a, a in dlrs order) is FuxiCTR's pi[a] p + i
            prev = pi if k == 0 else list(range(p))
            order_ = [pi[a] * p + prev[i] for i in range(p) for a in range(m)]
            w.copy_(conv.weight[:, order_, 0])
            b.copy_(conv.bias)
        net.cin_out.weight.copy_(fuxi.cin.fc.weight)
        # FuxiCTR's CIN fc has a bias and its LR none; dlrs-bench the reverse: one bias either way
        net.first_order.bias.fill_(fuxi.cin.fc.bias.item())
    x, dense, kjt = batch(size, seed + 2)
    with torch.no_grad():
        X = fuxi.get_inputs(x)
        fe = fuxi.embedding_layer(X)
        fcin = fuxi.cin(fe).squeeze(-1)
        fdnn = fuxi.dnn(fe.flatten(1)).squeeze(-1)
        flr = fuxi.lr_layer(X).squeeze(-1)
        flogit = fuxi(x)["y_pred"].squeeze(-1)
        pooled = net.embeddings(kjt)
        e = net.inputs(dense, pooled)
        lr = net.first_order(dense, pooled, e, kjt)
        lr_mean = first_order_as_embedding(net, dense, pooled, kjt)
        cin = net.cin_out(net.cin(e)).squeeze(-1) + net.first_order.bias
        logit = net(dense, kjt)
    rep.row("embeddings E", e, fe[:, pi])
    rep.row("CIN + fc (+ bias)", cin, fcin)
    rep.row("DNN", net.dnn(e.flatten(1)), fdnn)
    rep.row("first-order term without bias (genres summed)", lr - net.first_order.bias, flr)
    rep.row("first-order term without bias, genres pooled as the embedding", lr_mean - net.first_order.bias, flr,
            same=False)
    rep.row("logit", logit, flogit)


# ---------------------------------------------------------------- WuKong


@torch.no_grad()
def perturb_wukong(fuxi: nn.Module, seed: int) -> None:
    """Redraw what FuxiCTR starts at a constant (biases 0, LayerNorm and BatchNorm affine 1 / 0, BatchNorm
    running mean 0 / var 1) so that a bias or norm copied to the wrong place shows."""
    g = torch.Generator().manual_seed(seed + 200)
    for mod in fuxi.modules():
        if isinstance(mod, nn.Linear) and mod.bias is not None:
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
        elif isinstance(mod, (nn.LayerNorm, nn.BatchNorm1d)):
            mod.weight.copy_(1 + torch.randn(mod.weight.shape, generator=g) * 0.1)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def copy_wukong(fuxi: nn.Module, net: nn.Module, pi: list[int], d: int) -> None:
    """Every FuxiCTR WuKong weight into dlrs-bench's Wukong (all WUKONG_FUXICTR options on). Layer 0 sees
    the fields in each code's order: Y's rows, the FMB LayerNorm's and first Linear's n k columns, W_L's
    and the residual projection's columns are taken in dlrs-bench's order (field a = FuxiCTR's pi[a]);
    later layers see the same n_F + n_L outputs in both."""
    emb = fuxi.embedding_layer.embedding_layer.embedding_layers
    for name, _, _ in CATEGORICAL:
        net.embeddings.embedding_bags[f"t_{name}"].weight.copy_(emb[name].weight)
    for k in range(NUM_DENSE):
        net.inputs.dense_weight[k] = emb[f"dense_{k}"].weight[:, 0]
    for i, (fl, dl) in enumerate(zip(fuxi.wukong_stack, net.layers)):
        fields_ = pi if i == 0 else list(range(dl.n_in))
        cols = field_columns(fields_, dl.k)
        dl.projection.copy_(fl.fmb.proj_Y[fields_])
        dl.fmb_norm.weight.copy_(fl.fmb.layer_norm.weight[cols])
        dl.fmb_norm.bias.copy_(fl.fmb.layer_norm.bias[cols])
        f_lin, d_lin = linears(fl.fmb.mlp), linears(dl.fmb_mlp)
        assert [a.weight.shape for a in f_lin] == [b.weight.shape for b in d_lin], "FMB MLP shapes differ"
        for j, (a, b) in enumerate(zip(f_lin, d_lin)):
            b.weight.copy_(a.weight if j else a.weight[:, cols])
            b.bias.copy_(a.bias)
        dl.lcb.weight.copy_(fl.lcb.linear.weight[:, fields_])
        if hasattr(fl, "residual_proj"):
            dl.residual.weight.copy_(fl.residual_proj.weight[:, fields_])
            dl.residual.bias.copy_(fl.residual_proj.bias)
        dl.norm.load_state_dict(fl.layer_norm.state_dict())
    f_lin, d_lin = linears(fuxi.fc), linears(net.head)
    assert [a.weight.shape for a in f_lin] == [b.weight.shape for b in d_lin], "top MLP shapes differ"
    for a, b in zip(f_lin, d_lin):
        b.load_state_dict(a.state_dict())
    f_bn = [m for m in fuxi.fc.modules() if isinstance(m, nn.BatchNorm1d)]
    d_bn = [m for m in net.head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(f_bn) == len(d_bn)
    for a, b in zip(f_bn, d_bn):
        b.load_state_dict(a.state_dict())


def compare_wukong(zoo: Path, d: int, order: str, seed: int, size: int, rep: Report) -> None:
    """dlrs-bench's Wukong with WUKONG_FUXICTR against FuxiCTR's WuKong (WuKong_default), both in eval
    mode (BatchNorm on its running statistics, redrawn) and in train mode (on the batch's)."""
    fuxi = fuxi_model(zoo, "WuKong", order, d, seed)
    perturb_wukong(fuxi, seed)
    net = dlrs_model("WuKong", d, seed + 1)
    pi = permutation(order)
    copy_wukong(fuxi, net, pi, d)
    x, dense, kjt = batch(size, seed + 2)
    with torch.no_grad():
        fx = fuxi.embedding_layer(fuxi.get_inputs(x))
        ex = torch.cat([net.dense_fields(dense), fields_of(net, kjt)], dim=1)
        rep.row("embeddings X0 [B, n, d]", ex, fx[:, pi])
        fl_in, dl_in = fx, ex
        for i, (fl, dl) in enumerate(zip(fuxi.wukong_stack, net.layers)):
            cols = field_columns(pi if i == 0 else list(range(dl.n_in)), dl.k)
            # normalised (|X (X^T Y)| reaches ~10^2, where fp32's summation order alone moves it 10^-4)
            ffm = fl.fmb.layer_norm(fl.fmb.optimized_fm(fl_in))
            dfm = dl.fmb_norm(torch.bmm(dl_in, dl_in.transpose(1, 2) @ dl.projection).flatten(1))
            rep.row(f"layer {i}: LN(X (X^T Y)) flattened", dfm, ffm[:, cols])
            dfmb = dl.fmb_mlp(dfm).view(size, dl.n_f, d)
            rep.row(f"layer {i}: FMB (>= 0: {bool((dfmb >= 0).all())})", dfmb, fl.fmb(fl_in))
            rep.row(f"layer {i}: LCB", dl.lcb(dl_in.transpose(1, 2)).transpose(1, 2), fl.lcb(fl_in))
            fl_in, dl_in = fl(fl_in), dl(dl_in)
            rep.row(f"layer {i}: output X_{i + 1}", dl_in, fl_in)
        rep.row("top MLP (BatchNorm, eval)", net.head(dl_in.flatten(1)), fuxi.fc(fl_in.flatten(1)).squeeze(-1))
        rep.row("logit (eval)", net(dense, kjt), fuxi(x)["y_pred"].squeeze(-1))
        fuxi.train(), net.train()
        rep.row("logit (train: BatchNorm on the batch)", net(dense, kjt), fuxi(x)["y_pred"].squeeze(-1))
        rep.row("BatchNorm running means after it", torch.cat([m.running_mean for m in net.head.modules()
                                                               if isinstance(m, nn.BatchNorm1d)]),
                torch.cat([m.running_mean for m in fuxi.fc.modules() if isinstance(m, nn.BatchNorm1d)]))


def fields_of(net: nn.Module, kjt: Any) -> torch.Tensor:
    """The F pooled embeddings of dlrs-bench's model ``[B, F, d]``."""
    from dlrs_bench.models.layers import fields

    return fields(net.embeddings(kjt), net.num_sparse, net.d)


def wukong_init_stds(zoo: Path, d: int, builds: int = 8) -> None:
    """As :func:`init_stds`, for WuKong: FuxiCTR's fresh weights against dlrs-bench's with WUKONG_FUXICTR
    (Y ~ N(0, 1), Xavier-normal Linears, numeric v_k as Linear(1, d))."""
    sums: dict[str, list[Any]] = {}
    for seed in range(builds):
        fuxi = fuxi_model(zoo, "WuKong", "dlrs", d, seed)
        net = dlrs_model("WuKong", d, seed)
        emb = fuxi.embedding_layer.embedding_layer.embedding_layers
        rows = [("numeric Linear(1, d)", torch.cat([emb[f"dense_{k}"].weight for k in range(NUM_DENSE)]),
                 net.inputs.dense_weight)]
        for i, (fl, dl) in enumerate(zip(fuxi.wukong_stack, net.layers)):
            rows += [(f"layer {i} Y", fl.fmb.proj_Y, dl.projection), (f"layer {i} W_L", fl.lcb.linear.weight,
                                                                       dl.lcb.weight)]
            rows += [(f"layer {i} FMB Linear {j}", a.weight, b.weight)
                     for j, (a, b) in enumerate(zip(linears(fl.fmb.mlp), linears(dl.fmb_mlp)))]
            if hasattr(fl, "residual_proj"):
                rows.append((f"layer {i} residual projection", fl.residual_proj.weight, dl.residual.weight))
        rows += [(f"top Linear {j}", a.weight, b.weight) for j, (a, b) in enumerate(zip(linears(fuxi.fc),
                                                                                        linears(net.head)))]
        for label, a, b in rows:
            acc = sums.setdefault(label, [0.0, 0.0, list(a.shape)])
            acc[0] += a.double().pow(2).mean().item()
            acc[1] += b.double().pow(2).mean().item()
    for label, (fa, da, shape) in sums.items():
        f_std, d_std = (fa / builds) ** 0.5, (da / builds) ** 0.5
        print(f"  init std {label:<36} {str(tuple(shape)):<14} FuxiCTR {f_std:.4f}  dlrs-bench {d_std:.4f}  "
              f"ratio {d_std / f_std:.3f}")


COMPARE = {"FiBiNET": compare_fibinet, "DeepFM": compare_deepfm, "xDeepFM": compare_xdeepfm,
           "WuKong": compare_wukong}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fuxi-site-packages", default="/tmp/fuxi-venv/lib/python3.11/site-packages")
    parser.add_argument("--zoo", type=Path, default=Path("/tmp/fuxi-zoo"))
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--layouts", nargs="+", choices=("fuxictr", "dlrs"), default=["fuxictr", "dlrs"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--table-std", type=float, default=0.1,
                        help="redraw FuxiCTR's tables (and 1-wide LR tables) from N(0, std²) before copying, padding "
                             "rows kept zero (0: keep its N(0, 1e-4²) init)")
    args = parser.parse_args(argv)
    TABLE_STD[0] = args.table_std
    import_fuxictr(args.fuxi_site_packages)
    torch.set_num_threads(1)
    rep = Report(args.tolerance)
    for d in args.dims:
        print(f"\n=== d = {d}")
        same_input_layers(d, args.seed, rep)
        if "FiBiNET" in args.models:
            init_stds(args.zoo, d)
        if "WuKong" in args.models:
            wukong_init_stds(args.zoo, d)
        for name in args.models:
            for order in args.layouts:
                print(f"--- {name}, FuxiCTR fields in {order} order "
                      f"({', '.join(field_names(order))}; dlrs-bench: {', '.join(field_names('dlrs'))})")
                COMPARE[name](args.zoo, d, order, args.seed, args.batch, rep)
                if name == "FiBiNET" and order == "fuxictr":
                    print("--- FiBiNET with dense_position: last (its layers see FuxiCTR's order), FuxiCTR's fields in "
                          "fuxictr order")
                    compare_fibinet(args.zoo, d, order, args.seed, args.batch, rep, dense_position="last")
    if rep.failures:
        print(f"\n{len(rep.failures)} layer(s) that should be the same function differ by more than "
              f"{args.tolerance:g}: {rep.failures}")
        return 1
    print(f"\nevery layer that should be the same function is within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
