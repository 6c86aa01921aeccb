"""Embedding compressors: exact accounting, output contract, hashing maps, pooling, state dicts."""

from __future__ import annotations

import math
import re

import pytest
import torch
from kjt_helpers import bags_kjt, one_hot_kjt
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.full import FullOptions
from dlrs_bench.compression.hashing import MERSENNE_31, HashingOptions
from dlrs_bench.data.base import SparseFeature

CPU = torch.device("cpu")
DIM = 4
FEATURES = [SparseFeature("a", 100), SparseFeature("b", 37), SparseFeature("c", 8)]


def build(options, features=FEATURES, dim=DIM, seed=0):
    torch.manual_seed(seed)
    return build_embeddings(features, dim, options, CPU)






def all_ids_kjt(features=FEATURES) -> KeyedJaggedTensor:
    """Row r holds id r % n_t of every table t, so every id of every table appears."""
    rows = max(f.cardinality for f in features)
    return one_hot_kjt({f.name: [r % f.cardinality for r in range(rows)] for f in features})


def weight(module, feature: str) -> torch.Tensor:
    ebc = module.ebc if hasattr(module, "ebc") else module
    return ebc.embedding_bags[f"t_{feature}"].weight


def set_row_index_weights(module, feature: str) -> None:
    """Row r of the table of ``feature`` becomes [r, r, ..., r] (so outputs reveal the row)."""
    w = weight(module, feature)
    with torch.no_grad():
        w.copy_(torch.arange(w.shape[0], dtype=w.dtype)[:, None].expand_as(w))


def block(out, key: str) -> torch.Tensor:
    return out.to_dict()[key]


# ---------------------------------------------------------------- accounting


def test_full_accounting_is_exact():
    module = build(FullOptions())
    acc = account(module)
    expected = sum(f.cardinality * DIM for f in FEATURES)
    assert acc.uncompressed_params == expected == acc.params
    assert acc.compression_ratio == 1.0
    assert acc.bytes == expected * 4  # float32
    assert sum(p.numel() for p in module.parameters()) == expected
    assert [(t.name, t.rows, t.dim, t.params, t.compressed) for t in acc.per_table] == [
        (f.name, f.cardinality, DIM, f.cardinality * DIM, False) for f in FEATURES
    ]


@pytest.mark.parametrize("ratio, threshold", [(4, 10), (5, 0), (3.5, 40), (2, 1000)])
def test_hashing_accounting_is_exact(ratio, threshold):
    module = build(HashingOptions(ratio=ratio, threshold=threshold))
    acc = account(module, requested_ratio=ratio)
    rows = [math.ceil(f.cardinality / ratio) if f.cardinality > threshold else f.cardinality for f in FEATURES]
    params = sum(r * DIM for r in rows)
    uncompressed = sum(f.cardinality * DIM for f in FEATURES)
    assert acc.params == params
    assert acc.uncompressed_params == uncompressed
    assert acc.compression_ratio == uncompressed / params  # exactly that quotient
    assert acc.requested_ratio == ratio
    assert acc.bytes == params * 4
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == params
    for table, f, r in zip(acc.per_table, FEATURES, rows):
        assert table.name == f.name
        assert table.rows == f.cardinality  # the full table's size, not the hashed one
        assert table.dim == DIM
        assert table.params == r * DIM
        assert table.uncompressed_params == f.cardinality * DIM
        assert table.compressed == (f.cardinality > threshold and r < f.cardinality)
        assert table.detail["buckets"] == r


@pytest.mark.parametrize("ratio, table, reached", [(16, "c (8 rows)", "8x"), (100_000, "a (100 rows)", "100x")])
def test_hashing_refuses_a_ratio_a_table_cannot_reach(ratio, table, reached):
    """ceil(n / ratio) rows: an 8-row table at ratio 16 would silently get 8x, every table at ratio 1e5 one
    row; both are errors naming the table and what it can do (``threshold`` leaves small tables full)."""
    message = rf"hashing on table {re.escape(table)}: cannot reach ratio {ratio}.*{reached}"
    with pytest.raises(ValueError, match=message):
        build(HashingOptions(ratio=ratio))
    assert HashingOptions(ratio=16, threshold=8).plan([(f.name, f.cardinality) for f in FEATURES], DIM) == [7, 3, None]


def test_hashing_accounting_known_numbers():
    # a: ceil(100/4)=25 rows, b: ceil(37/4)=10 rows, c: 8 <= threshold 10 -> full
    acc = account(build(HashingOptions(ratio=4, threshold=10)), 4)
    assert acc.params == (25 + 10 + 8) * DIM == 172
    assert acc.uncompressed_params == 145 * DIM == 580
    assert acc.compression_ratio == 580 / 172
    as_json = acc.to_json()
    assert [t["ratio"] for t in as_json["per_table"]] == [4.0, 3.7, 1.0]
    assert as_json["per_table"][2]["compressed"] is False
    assert round(as_json["compression_ratio"], 4) == 3.3721


def test_universal_hash_coefficients_are_buffers_not_parameters():
    module = build(HashingOptions(ratio=5, hash="universal"))
    names = {n for n, _ in module.named_parameters()}
    assert not any(n.split(".")[-1] in ("a", "b", "buckets") for n in names)
    assert {"hasher.a", "hasher.b", "hasher.buckets"} <= {n for n, _ in module.named_buffers()}
    account(module)  # does not raise: the parameters held equal the ones reported


# ---------------------------------------------------------------- output contract


@pytest.mark.parametrize("options", [FullOptions(), HashingOptions(ratio=4), HashingOptions(ratio=3, hash="universal")])
def test_output_is_a_keyed_tensor_like_the_full_collection(options):
    full = build(FullOptions())
    module = build(options)
    kjt = bags_kjt({"a": [[1], [2, 99], []], "b": [[36], [0], [5, 6, 7]], "c": [[4], [0], [1]]})
    out, ref = module(kjt), full(kjt)
    assert out.keys() == ref.keys() == ["a", "b", "c"]
    assert out.values().shape == ref.values().shape == (3, 3 * DIM)
    assert out.length_per_key() == ref.length_per_key() == [DIM] * 3
    assert torch.isfinite(out.values()).all()


def test_wrong_keys_are_rejected():
    module = build(HashingOptions(ratio=4))
    with pytest.raises(ValueError, match="expects features"):
        module(one_hot_kjt({"b": [1], "a": [1], "c": [1]}))


# ---------------------------------------------------------------- hashing maps


def test_modulo_hashing_maps_id_x_to_row_x_mod_m():
    module = build(HashingOptions(ratio=4, hash="modulo"))
    m = 25  # ceil(100 / 4)
    assert weight(module, "a").shape == (m, DIM)
    set_row_index_weights(module, "a")
    x = 3
    out = block(module(one_hot_kjt({"a": [x, x + m, x + 1, x + 3 * m], "b": [0] * 4, "c": [0] * 4})), "a")
    assert torch.equal(out[0], out[1])  # x and x + m share a row
    assert torch.equal(out[0], out[3])
    assert not torch.equal(out[0], out[2])  # x and x + 1 do not
    # every id of table a lands on row id % m
    ids = list(range(100))
    rows = block(module(one_hot_kjt({"a": ids, "b": [0] * 100, "c": [0] * 100})), "a")[:, 0]
    assert rows.tolist() == [float(i % m) for i in ids]


def test_modulo_hashing_with_trained_weights_shares_rows():
    module = build(HashingOptions(ratio=4, hash="modulo"))
    m = 10  # ceil(37 / 4) for table b
    out = block(module(one_hot_kjt({"a": [0, 0, 0], "b": [7, 7 + m, 8], "c": [0, 0, 0]})), "b")
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])
    assert torch.equal(out[0], weight(module, "b")[7].detach())


def universal_rows(hash_seed: int, feature: str = "a") -> list[int]:
    module = build(HashingOptions(ratio=4, hash="universal", hash_seed=hash_seed))
    set_row_index_weights(module, feature)
    n = next(f.cardinality for f in FEATURES if f.name == feature)
    ids = {f.name: [i % f.cardinality for i in range(n)] for f in FEATURES}
    rows = block(module(one_hot_kjt(ids)), feature)[:, 0]
    return [int(r) for r in rows.tolist()]


def test_universal_hashing_is_deterministic_per_seed_and_differs_across_seeds():
    first, again, other = universal_rows(0), universal_rows(0), universal_rows(1)
    assert first == again
    assert first != other
    assert all(0 <= r < 25 for r in first + other)
    assert len(set(first)) > 15  # spreads 100 ids over most of the 25 rows


def test_universal_hashing_formula():
    module = build(HashingOptions(ratio=4, hash="universal", hash_seed=3))
    a, b = int(module.hasher.a[0]), int(module.hasher.b[0])
    assert 1 <= a < MERSENNE_31 and 0 <= b < MERSENNE_31
    set_row_index_weights(module, "a")
    ids = list(range(100))
    rows = block(module(one_hot_kjt({"a": ids, "b": [0] * 100, "c": [0] * 100})), "a")[:, 0]
    assert [int(r) for r in rows.tolist()] == [((a * x + b) % MERSENNE_31) % 25 for x in ids]


@pytest.mark.parametrize("hash_kind", ["modulo", "universal"])
def test_hashing_below_threshold_is_an_identity_map(hash_kind):
    """Tables with n <= threshold "stay full": n rows and id x on row x, whatever the hash."""
    module = build(HashingOptions(ratio=4, threshold=10, hash=hash_kind))
    assert account(module).per_table[2].compressed is False
    assert weight(module, "c").shape == (8, DIM)
    set_row_index_weights(module, "c")
    rows = block(module(one_hot_kjt({"a": [0] * 5, "b": [0] * 5, "c": [0, 1, 2, 3, 4]})), "c")[:, 0]
    assert rows.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


# ---------------------------------------------------------------- every id, gradients


@pytest.mark.parametrize(
    "options, every_row",
    [(FullOptions(), True), (HashingOptions(ratio=4), True), (HashingOptions(ratio=8, hash="universal"), False)],
)
def test_every_id_gives_finite_output_and_gradients_flow(options, every_row):
    module = build(options)
    out = module(all_ids_kjt())
    assert out.values().shape == (100, 3 * DIM)
    assert torch.isfinite(out.values()).all()
    (out.values() ** 2).sum().backward()
    params = [p for p in module.parameters() if p.requires_grad]
    assert params
    for p in params:
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
        if every_row:  # every id of every table was looked up, and full/modulo maps onto every row
            assert (p.grad.abs().sum(dim=1) > 0).all()


def test_a_training_step_changes_only_the_rows_used():
    module = build(HashingOptions(ratio=4))
    before = weight(module, "a").detach().clone()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(one_hot_kjt({"a": [3, 30], "b": [0, 1], "c": [0, 1]})).values().sum().backward()
    opt.step()
    after = weight(module, "a").detach()
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 5]  # 3 % 25 and 30 % 25


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("make", [lambda p: FullOptions(pooling=p), lambda p: HashingOptions(ratio=4, pooling=p)])
def test_mean_pooling_is_sum_over_bag_length(make):
    summed = build(make("sum"))
    mean = build(make("mean"))
    mean.load_state_dict(summed.state_dict())
    kjt = bags_kjt({"a": [[1, 2, 3], [7]], "b": [[0, 36], [5]], "c": [[4, 4, 1, 0], [2]]})
    s, m = summed(kjt).to_dict(), mean(kjt).to_dict()
    for key, lengths in (("a", [3, 1]), ("b", [2, 1]), ("c", [4, 1])):
        expected = s[key] / torch.tensor(lengths, dtype=torch.float32)[:, None]
        torch.testing.assert_close(m[key], expected)
    # the sum itself is the sum of the rows
    w = weight(summed, "a").detach()
    torch.testing.assert_close(s["a"][0], w[[1, 2, 3]].sum(0))  # ids 1..3 < 25: the same rows when hashed


# ---------------------------------------------------------------- state dicts


@pytest.mark.parametrize(
    "options", [FullOptions(), HashingOptions(ratio=4), HashingOptions(ratio=4, hash="universal", hash_seed=9)]
)
def test_state_dict_round_trip_gives_identical_outputs(options, tmp_path):
    original = build(options, seed=0)
    other = build(options, seed=1)
    kjt = all_ids_kjt()
    assert not torch.equal(original(kjt).values(), other(kjt).values())  # different initialisation
    path = tmp_path / "emb.pt"
    torch.save(original.state_dict(), path)
    other.load_state_dict(torch.load(path))
    assert torch.equal(original(kjt).values(), other(kjt).values())


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize(
    "options", [FullOptions(), HashingOptions(ratio=4), HashingOptions(ratio=4, hash="universal", hash_seed=5)]
)
def test_cuda_outputs_match_cpu(options):
    cuda = torch.device("cuda")
    cpu_module = build(options)
    torch.manual_seed(0)
    gpu_module = build_embeddings(FEATURES, DIM, options, cuda)
    gpu_module.load_state_dict(cpu_module.state_dict())
    bags = {"a": [[1, 99], [50], []], "b": [[36], [0, 1, 2], [5]], "c": [[4], [0], [1, 3]]}
    expected = cpu_module(bags_kjt(bags))
    # a fresh KJT: TorchRec's KJT.to() keeps per-key views cached by an earlier forward on the CPU
    got = gpu_module(bags_kjt(bags).to(cuda))
    assert got.keys() == expected.keys()
    torch.testing.assert_close(got.values().cpu(), expected.values(), rtol=1e-5, atol=1e-6)
    got.values().sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in gpu_module.parameters())
    assert account(gpu_module).params == account(cpu_module).params
