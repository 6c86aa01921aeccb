"""Per-id first-order weights (``model.first_order: per_id``): one more table column, pooled with the
embedding, compressed and counted with the tables, padded to fbgemm's 4-float rows when sharded."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_suite, train_one_rank
from kjt_helpers import random_batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.full import full_for_sharding
from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import build_model
from dlrs_bench.models.options import DeepFMOptions, FiBiNETOptions, XDeepFMOptions
from dlrs_bench.registry import COMPRESSORS

CPU = torch.device("cpu")
FEATURES = [SparseFeature("a", 40), SparseFeature("tags", 30, multi_hot=True)]
NUM_DENSE, D = 3, 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def none() -> object:
    return COMPRESSORS.get("none").Options(kind="none")


@pytest.mark.parametrize("options", [DeepFMOptions, XDeepFMOptions, FiBiNETOptions])
def test_the_papers_per_id_term_is_the_default_and_widens_the_tables_by_one(options):
    o = options(embedding_dim=D)
    assert o.first_order == "per_id" and o.table_width() == D + 1
    assert options(embedding_dim=D, first_order="fields").table_width() == D


def test_a_bag_sums_the_weights_of_its_ids():
    """FirstOrder = b + Σ_f Σ_{id in bag f} w_f[id] + u · dense, w the last column of each table."""
    o = DeepFMOptions(embedding_dim=D, dnn=[4, 1])
    torch.manual_seed(0)
    model = build_model(o, NUM_DENSE, FEATURES, build_embeddings(FEATURES, o.table_width(), none(), CPU)).eval()
    tables = {f.name: model.embeddings.embedding_bags[f"t_{f.name}"].weight for f in FEATURES}
    assert all(t.shape[1] == D + 1 for t in tables.values())
    with torch.no_grad():
        model.first_order.bias.fill_(0.25)
    kjt = KeyedJaggedTensor.from_lengths_sync(  # sample 0: a=[3], tags=[1, 4, 7]; sample 1: a=[5], tags=[]
        keys=["a", "tags"], values=torch.tensor([3, 5, 1, 4, 7]), lengths=torch.tensor([1, 1, 3, 0]))
    dense = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]])
    got = model.first_order(dense, model.embeddings(kjt), torch.empty(0), kjt)
    u = model.first_order.dense_weight.detach()
    w_a, w_tags = tables["a"][:, D].detach(), tables["tags"][:, D].detach()
    want = [w_a[3] + w_tags[1] + w_tags[4] + w_tags[7] + dense[0] @ u + 0.25, w_a[5] + dense[1] @ u + 0.25]
    torch.testing.assert_close(got, torch.stack(want))


def _first_order(pooling: str, first_order_pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first-order term on a batch with a 3-id bag, and what b + Σ w would be (bias 0, dense 0)."""
    o = DeepFMOptions(embedding_dim=D, dnn=[4, 1], first_order_pooling=first_order_pooling)
    compressor = COMPRESSORS.get("none").Options(kind="none", pooling=pooling)
    torch.manual_seed(0)
    model = build_model(o, NUM_DENSE, FEATURES, build_embeddings(FEATURES, o.table_width(), compressor, CPU)).eval()
    kjt = KeyedJaggedTensor.from_lengths_sync(  # sample 0: a=[3], tags=[1, 4, 7]; sample 1: a=[5], tags=[]
        keys=["a", "tags"], values=torch.tensor([3, 5, 1, 4, 7]), lengths=torch.tensor([1, 1, 3, 0]))
    got = model.first_order(torch.zeros(2, NUM_DENSE), model.embeddings(kjt), torch.empty(0), kjt)
    w_a = model.embeddings.embedding_bags["t_a"].weight[:, D].detach()
    w_tags = model.embeddings.embedding_bags["t_tags"].weight[:, D].detach()
    return got.detach(), torch.stack([w_a[3], w_a[5]]), w_tags[[1, 4, 7]]


@pytest.mark.parametrize("first_order_pooling", ["embedding", "sum"])
def test_mean_pooled_bags_average_or_sum_their_first_order_weights(first_order_pooling):
    """Under ``compressor.pooling: mean`` a bag's weights are averaged like its embedding (default) or
    summed as FuxiCTR's 1-wide LR tables sum them (``first_order_pooling: sum``); an empty bag adds 0."""
    got, w_a, w_tags = _first_order("mean", first_order_pooling)
    bag = w_tags.sum() if first_order_pooling == "sum" else w_tags.mean()
    torch.testing.assert_close(got, torch.stack([w_a[0] + bag, w_a[1]]))


def test_first_order_pooling_sum_needs_mean_pooling_and_per_id_weights():
    suite = tiny_suite()["defaults"]
    model = {"name": "deepfm", "embedding_dim": 16, "first_order_pooling": "sum"}
    spec, errors = validate_scenario({**suite, "model": model, "compressor": {"kind": "none"}})
    assert spec is None and "first_order_pooling: sum needs compressor.pooling: mean" in errors[0][1]
    spec, errors = validate_scenario({**suite, "model": {**model, "first_order": "fields"},
                                      "compressor": {"kind": "none", "pooling": "mean"}})
    assert spec is None and "first_order_pooling: sum is for first_order: per_id" in str(errors)
    spec, errors = validate_scenario({**suite, "model": model, "compressor": {"kind": "none", "pooling": "mean"}})
    assert not errors and spec.model.first_order_pooling == "sum"
    assert "first_order_pooling" not in DeepFMOptions().model_dump(exclude_defaults=True)  # ids unchanged


def test_summed_bags_train_under_dmp():
    """The length scaling reads the batch's KJT inside TorchRec's pipelined model (one-rank DMP)."""
    dataset = {**tiny_suite()["defaults"]["dataset"], "multi_hot_sizes": [1, 3, 2]}
    prepared, losses = train_one_rank({"dataset": dataset, "compressor": {"kind": "none", "pooling": "mean"},
                                       "model": {"name": "deepfm", "embedding_dim": 16, "dnn": [16, 1],
                                                 "first_order_pooling": "sum"}})
    assert type(prepared.pipeline).__name__ == "ShardedPipeline"
    assert all(0 < loss < 2 for loss in losses)


def test_the_first_order_column_learns():
    o = DeepFMOptions(embedding_dim=D, dnn=[4, 1])
    model = build_model(o, NUM_DENSE, FEATURES, build_embeddings(FEATURES, o.table_width(), none(), CPU))
    dense, kjt = random_batch(8, NUM_DENSE, FEATURES)
    model(dense, kjt).sum().backward()
    grad = model.embeddings.embedding_bags["t_a"].weight.grad
    assert grad[:, D].abs().sum() > 0  # the w column gets a gradient of its own
    assert model.first_order.dense_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind, options", [("hashing", {"ratio": 4}), ("memcom", {"ratio": 4}),
                                           ("md", {"ratio": 4}), ("tt", {"ratio": 4}), ("robe", {"ratio": 4}),
                                           ("qr", {"ratio": 2, "threshold": 30})])
def test_compressors_compress_the_whole_row_and_count_it(kind, options):
    """The weight is part of the id's row: a compressor shares/factorises it with the embedding,
    and the ratio is over rows × (d + 1)."""
    o = XDeepFMOptions(embedding_dim=D, cin=[3], dnn=[4, 1])
    compressor = COMPRESSORS.get(kind).Options(kind=kind, **options)
    embeddings = build_embeddings(FEATURES, o.table_width(), compressor, CPU)
    acc = account(embeddings)
    assert [t.dim for t in acc.per_table] == [D + 1, D + 1]
    assert acc.uncompressed_params == sum(f.cardinality for f in FEATURES) * (D + 1)
    model = build_model(o, NUM_DENSE, FEATURES, embeddings)
    dense, kjt = random_batch(6, NUM_DENSE, FEATURES)
    out = model(dense, kjt)
    assert out.shape == (6,) and torch.isfinite(out).all()


def test_sharded_tables_pad_rows_to_four_floats_and_the_padding_is_never_read():
    o = FiBiNETOptions(embedding_dim=D, dnn=[4, 1])  # rows of 5 floats → stored as 8
    padded = full_for_sharding(FEATURES, o.table_width(), none(), CPU)
    acc = account(padded)
    assert [(t.dim, t.params, t.detail) for t in acc.per_table] == [
        (5, 40 * 8, {"padding": 3}), (5, 30 * 8, {"padding": 3})]
    assert acc.compression_ratio == pytest.approx(5 / 8)  # the padding is allocated: counted, honestly
    plain = build_embeddings(FEATURES, o.table_width(), none(), CPU)
    with torch.no_grad():
        for f in FEATURES:
            stored = padded.embedding_bags[f"t_{f.name}"].weight
            stored[:, :5] = plain.embedding_bags[f"t_{f.name}"].weight
            stored[:, 5:] = 1e6  # would dominate the logit if read
    torch.manual_seed(1)
    a = build_model(o, NUM_DENSE, FEATURES, plain).eval()
    torch.manual_seed(1)
    b = build_model(o, NUM_DENSE, FEATURES, padded).eval()
    dense, kjt = random_batch(5, NUM_DENSE, FEATURES)
    torch.testing.assert_close(a(dense, kjt), b(dense, kjt))


def test_a_four_float_row_is_not_padded():
    acc = account(full_for_sharding(FEATURES, 16, none(), CPU))
    assert [(t.dim, t.params, t.detail) for t in acc.per_table] == [(16, 40 * 16, {}), (16, 30 * 16, {})]


def test_deepfm_trains_under_dmp_with_fbgemms_fused_kernels():
    """The one-rank DMP path (fbgemm's table-batched kernels, which refuse rows of 17 floats)."""
    prepared, losses = train_one_rank({"model": {"name": "deepfm", "embedding_dim": 16, "dnn": [16, 1]},
                                       "compressor": {"kind": "none"}})
    assert type(prepared.pipeline).__name__ == "ShardedPipeline"
    assert all(0 < loss < 2 for loss in losses)
    tables = prepared.embedding["per_table"]
    assert {(t["dim"], t["params"] // t["rows"], t["detail"]["padding"]) for t in tables} == {(17, 20, 3)}


def test_a_compressor_that_cannot_take_the_wider_row_says_why():
    suite = tiny_suite()["defaults"]
    spec, errors = validate_scenario({**suite, "model": {"name": "deepfm", "embedding_dim": 16},
                                      "compressor": {"kind": "qr", "ratio": 2, "fusion": "concat"}})
    assert spec is None
    (loc, message), = errors
    assert loc == ("compressor",)
    assert "got 17" in message and "embedding_dim 16 + a per-id first-order weight" in message
    assert "first_order: fields" in message
    spec, errors = validate_scenario({**suite, "model": {"name": "deepfm", "embedding_dim": 16,
                                                         "first_order": "fields"},
                                      "compressor": {"kind": "qr", "ratio": 2, "fusion": "concat"}})
    assert not errors
