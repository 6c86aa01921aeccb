"""The compression methods beyond hashing: QR, MEmCom, BCH, ROBE-Z, TT-Rec, mixed dimension.

For every method (parametrized over its variants): exact parameter counts against the
REFERENCE.md formulas, every id mapping to a finite vector, gradients into every parameter,
the id -> vector map of each method recomputed by hand, distinct vectors where the method
guarantees them, determinism, state-dict round trips, sum / mean pooling of multi-hot bags,
unreachable ratios, ROBE's hash and sparse gradients, and a few DLRM training steps on
MovieLens with falling loss.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import TINY_DATASET, TINY_MODEL
from kjt_helpers import bags_kjt, one_hot_kjt
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.compression.base import account, build_embeddings
from dlrs_bench.compression.options import RATIO_TOLERANCE
from dlrs_bench.compression.pooled import FullTable
from dlrs_bench.compression.robe import PRIME, ROBEEmbedding
from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.engine.optim import build_optimizer
from dlrs_bench.registry import COMPRESSORS

CPU = torch.device("cpu")
#: table a stays full under THRESHOLD; b and c are compressed
FEATURES = [SparseFeature("a", 50), SparseFeature("b", 300), SparseFeature("c", 1000)]
#: BCH with strided blocks only reaches a few ratios (the block count fixes the block lengths);
#: 300 and 500 rows (both 9 bits) share reachable ratios, 300 and 1000 rows do not
BCH_SKIP_FEATURES = [SparseFeature("a", 50), SparseFeature("b", 300), SparseFeature("c", 500)]
#: TT splits row ids into digits (p1, p2, p3); 400 rows give p = [8, 8, 7], so p2 != p3 is exercised
TT_FEATURES = [SparseFeature("a", 50), SparseFeature("b", 400), SparseFeature("c", 1000)]
THRESHOLD = 60


@dataclass(frozen=True)
class Case:
    """One method variant: compressor kind and options, embedding dim and tables."""

    name: str
    kind: str
    ratio: float
    dim: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    features: list[SparseFeature] = field(default_factory=lambda: FEATURES)

    def make_options(self, **overrides: Any) -> Any:
        values = {"ratio": self.ratio, "threshold": THRESHOLD, **self.options, **overrides}
        return COMPRESSORS.get(self.kind).Options(kind=self.kind, **values)

    def build(self, seed: int = 0, features: list[SparseFeature] | None = None, **overrides: Any) -> nn.Module:
        torch.manual_seed(seed)
        return build_embeddings(features or self.features, self.dim, self.make_options(**overrides), CPU)

    @property
    def compressed(self) -> list[SparseFeature]:
        return [f for f in self.features if f.cardinality > THRESHOLD]


CASES = [
    Case("qr-mult-2", "qr", 4, options={"fusion": "mult", "levels": 2}),
    Case("qr-add-2", "qr", 4, options={"fusion": "add", "levels": 2}),
    Case("qr-concat-2", "qr", 4, options={"fusion": "concat", "levels": 2}),
    Case("qr-mult-3", "qr", 6, options={"fusion": "mult", "levels": 3}),
    Case("qr-add-3", "qr", 6, options={"fusion": "add", "levels": 3}),
    Case("qr-concat-3", "qr", 16, dim=12, options={"fusion": "concat", "levels": 3}),
    Case("qr-fc-2", "qr", 3, options={"fusion": "fc", "levels": 2}),
    Case("qr-fc-3", "qr", 4, options={"fusion": "fc", "levels": 3}),
    Case("memcom", "memcom", 4),
    Case("bch-succession-sum", "bch", 4, options={"blocks": "succession", "fusion": "sum"}),
    Case("bch-succession-concat", "bch", 4, options={"blocks": "succession", "fusion": "concat"}),
    Case("bch-skip-sum", "bch", 10, options={"blocks": "skip", "fusion": "sum"}, features=BCH_SKIP_FEATURES),
    Case("bch-skip-concat", "bch", 16, options={"blocks": "skip", "fusion": "concat"}, features=BCH_SKIP_FEATURES),
    Case("robe-dense-z1", "robe", 16, options={"chunk": 1, "gradient": "dense"}),
    Case("robe-sparse-z1", "robe", 16, options={"chunk": 1, "gradient": "sparse"}),
    Case("robe-dense-z4", "robe", 16, options={"chunk": 4, "gradient": "dense"}),
    Case("robe-sparse-z4", "robe", 16, options={"chunk": 4, "gradient": "sparse"}),
    Case("tt", "tt", 4, dim=16, features=TT_FEATURES),
    Case("md", "md", 4),
]
ROBE_CASES = [c for c in CASES if c.kind == "robe"]
PER_TABLE_CASES = [c for c in CASES if c.kind != "robe"]


def case_named(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def cases(selection: list[Case]) -> Any:
    return pytest.mark.parametrize("case", selection, ids=[c.name for c in selection])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: intra-op threads only spin, and on a busy machine they make
    this file 10-20x slower (measured: 6 s with one thread, up to 110 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers






def all_ids_kjt(features: list[SparseFeature]) -> KeyedJaggedTensor:
    """Row r holds id r % n_t of every table t, so rows 0..n_t-1 of table t are its ids 0..n_t-1."""
    rows = max(f.cardinality for f in features)
    return one_hot_kjt({f.name: [r % f.cardinality for r in range(rows)] for f in features})


def table_vectors(module: nn.Module, features: list[SparseFeature]) -> dict[str, torch.Tensor]:
    """Per table, the vectors ``[n, d]`` of its ids 0..n-1."""
    out = module(all_ids_kjt(features)).to_dict()
    return {f.name: out[f.name][: f.cardinality] for f in features}


def random_target(shape: tuple[int, ...], seed: int = 123) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def bch_positions(bits: int, lengths: list[int], mode: str) -> list[list[int]]:
    """Bit positions of each block: consecutive runs (succession) or every B-th bit (skip)."""
    if mode == "succession":
        starts = list(itertools.accumulate([0, *lengths]))
        return [list(range(s, s + n)) for s, n in zip(starts, lengths)]
    count = len(lengths)
    return [list(range(b, bits, count)) for b in range(count)]


# ---------------------------------------------------------------- formulas, computed independently


def expected_table_params(case: Case, f: SparseFeature, detail: dict[str, Any]) -> int:
    """REFERENCE.md §2's parameter count of one compressed table, from n, d and ``detail``."""
    n, d = f.cardinality, case.dim
    if case.kind == "qr":
        c, k = detail["radix"], detail["levels"]
        assert k == case.options["levels"]
        rows = [c] * (k - 1) + [ceil_div(n, c ** (k - 1))]
        assert detail["rows"] == rows
        assert c ** (k - 1) * rows[-1] >= n  # every id has a digit tuple
        width = d // k if case.options["fusion"] == "concat" else d
        mixer = k * d * d + d if case.options["fusion"] == "fc" else 0  # fc: Linear(k d, d) with its bias
        return ((k - 1) * c + ceil_div(n, c ** (k - 1))) * width + mixer
    if case.kind == "memcom":
        m = detail["buckets"]
        assert 1 <= m < n
        return m * d + n
    if case.kind == "bch":
        lengths = detail["blocks"]
        assert sum(lengths) == math.ceil(math.log2(n))  # L bits, each in exactly one block
        assert detail["rows"] == [2**b for b in lengths]
        width = d // len(lengths) if case.options["fusion"] == "concat" else d
        return sum(2**b * width for b in lengths)
    if case.kind == "tt":
        p, q, r = detail["p"], detail["q"], detail["rank"]
        assert math.prod(q) == d and math.prod(p) >= n and r >= 1
        return r * p[0] * q[0] + r * r * p[1] * q[1] + r * p[2] * q[2]
    if case.kind == "md":
        dt = detail["dim"]
        assert 1 <= dt <= d and dt & (dt - 1) == 0  # a power of two
        return n * dt + (dt * d if dt < d else 0)
    raise AssertionError(case.kind)


def reference_vectors(case: Case, encoder: nn.Module, n: int) -> torch.Tensor:
    """The vectors of ids 0..n-1 recomputed from the encoder's parameters by each method's definition."""
    ids = list(range(n))
    if isinstance(encoder, FullTable):
        return encoder.weight.detach()[:n]
    detail = encoder.detail
    params = [p.detach() for p in encoder.parameters()]
    if case.kind == "qr":
        c, k = detail["radix"], detail["levels"]
        digits = [[(x // c**i) % c for x in ids] for i in range(k - 1)] + [[x // c ** (k - 1) for x in ids]]
        parts = [params[i][digits[i]] for i in range(k)]
        fusion = case.options["fusion"]
        if fusion == "concat":
            return torch.cat(parts, dim=1)
        if fusion == "fc":  # [d]-wide digit vectors, concatenated, times W [d, k d] plus b
            weight, bias = params[k], params[k + 1]
            return torch.stack([torch.cat([part[i] for part in parts]) @ weight.T + bias for i in range(n)])
        out = parts[0].clone()
        for part in parts[1:]:
            out = out * part if fusion == "mult" else out + part
        return out
    if case.kind == "memcom":
        m = detail["buckets"]
        shared, scale = encoder.shared.detach(), encoder.scale.detach()
        return torch.stack([shared[x % m] * scale[x, 0] for x in ids])
    if case.kind == "bch":
        bits = math.ceil(math.log2(n))
        positions = bch_positions(bits, detail["blocks"], case.options["blocks"])
        parts = []
        for table, pos in zip(params, positions):
            codes = [sum(((x >> bit) & 1) << j for j, bit in enumerate(pos)) for x in ids]
            parts.append(table[codes])
        return torch.cat(parts, dim=1) if case.options["fusion"] == "concat" else sum(parts)
    if case.kind == "tt":
        (p1, p2, p3), (q1, q2, q3), r = detail["p"], detail["q"], detail["rank"]
        g1 = encoder.core1.detach().view(p1, q1, r)
        g2 = encoder.core2.detach().view(p2, r, q2, r)
        g3 = encoder.core3.detach().view(p3, r, q3)
        full = torch.einsum("iar,jrbs,ksc->ijkabc", g1, g2, g3).reshape(p1 * p2 * p3, q1 * q2 * q3)
        return full[:n]  # row x = digits (x // p2 p3, x // p3 mod p2, x mod p3)
    if case.kind == "md":
        weight = encoder.weight.detach()
        if detail["dim"] == case.dim:
            return weight
        return weight @ encoder.project.weight.detach().T
    raise AssertionError(case.kind)


# ---------------------------------------------------------------- 1. parameter counts


@cases(PER_TABLE_CASES)
def test_parameter_count_matches_formula(case):
    module = case.build()
    acc = account(module, case.ratio)
    expected_total = 0
    for f, encoder, table in zip(case.features, module.encoders, acc.per_table):
        n, d = f.cardinality, case.dim
        assert (table.name, table.rows, table.dim) == (f.name, n, d)
        if n <= THRESHOLD:
            assert isinstance(encoder, FullTable)
            assert not table.compressed
            expected = n * d
        else:
            assert table.compressed
            assert table.detail == encoder.detail
            expected = expected_table_params(case, f, encoder.detail)
            if case.kind != "md":  # md meets the ratio over all compressed tables together
                assert case.ratio / RATIO_TOLERANCE <= n * d / expected <= case.ratio * RATIO_TOLERANCE
        assert table.params == expected == sum(p.numel() for p in encoder.parameters())
        expected_total += expected
    uncompressed = sum(f.cardinality * case.dim for f in case.features)
    assert acc.params == expected_total == sum(p.numel() for p in module.parameters())
    assert acc.uncompressed_params == uncompressed
    assert acc.compression_ratio == uncompressed / expected_total
    assert acc.bytes == 4 * expected_total
    compressed = [t for t in acc.per_table if t.compressed]
    achieved = sum(t.rows * t.dim for t in compressed) / sum(t.params for t in compressed)
    assert case.ratio / RATIO_TOLERANCE <= achieved <= case.ratio * RATIO_TOLERANCE
    if case.kind == "md":  # larger tables get smaller (or equal) dimensions
        dims = [t.detail["dim"] for t in sorted(compressed, key=lambda t: t.rows)]
        assert dims == sorted(dims, reverse=True)


@cases(ROBE_CASES)
def test_robe_parameter_count_is_the_shared_array_plus_full_tables(case):
    module = case.build()
    acc = account(module, case.ratio)
    compressed_full = sum(f.cardinality * case.dim for f in case.compressed)
    m = round(compressed_full / case.ratio)
    assert module.array.shape == (m, 1) and module.size == m
    full_tables = sum(f.cardinality * case.dim for f in case.features if f.cardinality <= THRESHOLD)
    assert acc.params == m + full_tables == sum(p.numel() for p in module.parameters())
    uncompressed = sum(f.cardinality * case.dim for f in case.features)
    assert acc.compression_ratio == uncompressed / (m + full_tables)
    # the array's share of each compressed table adds up to M; full tables count n d
    assert sum(t.params for t in acc.per_table if t.compressed) == m
    for f, table in zip(case.features, acc.per_table):
        assert table.compressed == (f.cardinality > THRESHOLD)
        if not table.compressed:
            assert table.params == f.cardinality * case.dim
        else:
            assert table.detail == {"shared_array": m, "chunk": case.options["chunk"]}
    assert case.ratio / RATIO_TOLERANCE <= compressed_full / m <= case.ratio * RATIO_TOLERANCE
    # hash coefficients and offsets are buffers, not learnable
    assert {n for n, _ in module.named_parameters()} >= {"array"}
    assert {"coefficients", "offsets"} <= {n for n, _ in module.named_buffers()}


# ---------------------------------------------------------------- 2. every id, gradients


@cases(CASES)
def test_every_id_gives_a_finite_vector_and_every_parameter_gets_gradient(case):
    module = case.build()
    out = module(all_ids_kjt(case.features))
    rows = max(f.cardinality for f in case.features)
    assert out.keys() == [f.name for f in case.features]
    assert out.values().shape == (rows, len(case.features) * case.dim)
    assert out.length_per_key() == [case.dim] * len(case.features)
    assert torch.isfinite(out.values()).all()
    (out.values() * random_target(tuple(out.values().shape))).sum().backward()
    named = list(module.named_parameters())
    assert named
    for name, p in named:
        assert p.grad is not None, name
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


@cases(PER_TABLE_CASES)
def test_vectors_follow_the_method_definition(case):
    module = case.build()
    vectors = table_vectors(module, case.features)
    for f, encoder in zip(case.features, module.encoders):
        torch.testing.assert_close(vectors[f.name], reference_vectors(case, encoder, f.cardinality), msg=f.name)


# ---------------------------------------------------------------- 3. distinct ids, distinct vectors


def assert_all_rows_distinct(vectors: torch.Tensor, what: str) -> None:
    distinct = torch.unique(vectors, dim=0).shape[0]
    assert distinct == vectors.shape[0], f"{what}: {vectors.shape[0] - distinct} ids share a vector"


@cases([c for c in CASES if c.kind in ("qr", "bch", "md")])
def test_distinct_ids_get_distinct_vectors(case):
    """QR gives every id its own digit tuple, BCH its own code, MD its own (projected) row."""
    vectors = table_vectors(case.build(), case.features)
    for f in case.features:
        assert_all_rows_distinct(vectors[f.name], f"{case.name} table {f.name}")


def test_memcom_colliding_ids_separate_after_one_step():
    case = next(c for c in CASES if c.kind == "memcom")
    module = case.build()
    m = module.encoders[2].detail["buckets"]
    vectors = table_vectors(module, case.features)["c"]
    torch.testing.assert_close(vectors[5], vectors[5 + m], rtol=0, atol=0)  # w = 1: x and x + m collide
    assert not torch.equal(vectors[5], vectors[6])
    out = module(all_ids_kjt(case.features)).values()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    ((out - random_target(tuple(out.shape))) ** 2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        vectors = table_vectors(module, case.features)
    for f in case.features:
        assert_all_rows_distinct(vectors[f.name], f"memcom table {f.name} after one step")


# ---------------------------------------------------------------- 4. determinism


@cases(CASES)
def test_same_seed_same_module_other_seed_other_parameters(case):
    first, again, other = case.build(seed=7), case.build(seed=7), case.build(seed=8)
    kjt = all_ids_kjt(case.features)
    a, b = first.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(first(kjt).values(), again(kjt).values())
    differing = 0
    for (name, p), q in zip(first.named_parameters(), other.parameters()):
        if torch.equal(p, q):  # only constant initialisations (MEmCom's w = 1) may coincide
            assert p.unique().numel() == 1, name
        else:
            differing += 1
    assert differing > 0
    assert not torch.equal(first(kjt).values(), other(kjt).values())


@cases(ROBE_CASES)
def test_robe_hash_depends_on_hash_seed_only(case):
    ids = torch.arange(1300)
    base = case.build(seed=0, hash_seed=0)
    other_torch_seed = case.build(seed=1, hash_seed=0)
    other_hash = case.build(seed=0, hash_seed=1)
    assert torch.equal(base.coefficients, other_torch_seed.coefficients)
    assert torch.equal(base.locations(ids), other_torch_seed.locations(ids))
    assert not torch.equal(base.coefficients, other_hash.coefficients)
    differ = (base.locations(ids) != other_hash.locations(ids)).float().mean()
    assert differ > 0.9  # almost every element moves to another position


# ---------------------------------------------------------------- 5. state dicts


@cases(CASES)
def test_state_dict_round_trip_gives_identical_outputs(case, tmp_path):
    original = case.build(seed=0)
    overrides = {"hash_seed": 5} if case.kind == "robe" else {}  # buffers are restored too
    other = case.build(seed=1, **overrides)
    kjt = all_ids_kjt(case.features)
    assert not torch.equal(original(kjt).values(), other(kjt).values())
    path = tmp_path / "emb.pt"
    torch.save(original.state_dict(), path)
    other.load_state_dict(torch.load(path))
    assert torch.equal(original(kjt).values(), other(kjt).values())


# ---------------------------------------------------------------- 6. pooling


BAGS = {
    "a": [[1, 2, 3], [], [7], [49, 49]],
    "b": [[0, 299], [5, 6, 7, 8], [], [17]],
    "c": [[], [3, 3, 499], [1, 2], [498, 0, 100, 200, 250]],
}


@cases(CASES)
def test_sum_and_mean_pooling_of_multi_hot_bags(case):
    summed = case.build(pooling="sum")
    mean = case.build(seed=3, pooling="mean")
    mean.load_state_dict(summed.state_dict())
    vectors = table_vectors(summed, case.features)
    kjt = bags_kjt(BAGS)
    s, m = summed(kjt).to_dict(), mean(kjt).to_dict()
    for key, bags in BAGS.items():
        assert s[key].shape == m[key].shape == (len(bags), case.dim)
        for i, bag in enumerate(bags):
            if not bag:
                assert torch.equal(s[key][i], torch.zeros(case.dim)), (key, i)
                assert torch.equal(m[key][i], torch.zeros(case.dim)), (key, i)
                continue
            rows = vectors[key][bag]
            torch.testing.assert_close(s[key][i], rows.sum(0), msg=f"sum {key}[{i}]")
            torch.testing.assert_close(m[key][i], rows.mean(0), msg=f"mean {key}[{i}]")


# ---------------------------------------------------------------- 7. unreachable ratios


def test_qr_unreachable_ratio_names_the_table():
    case = CASES[0]
    with pytest.raises(ValueError, match=r"table a \(50 rows\).*cannot reach ratio 1000.*reachable"):
        case.build(ratio=1000, threshold=0)
    # 8x is reachable for 300 and 1000 rows but not for 50: leaving a full (threshold) makes it valid
    with pytest.raises(ValueError, match=r"table a \(50 rows\)"):
        case.build(ratio=8, threshold=0)
    case.build(ratio=8, threshold=THRESHOLD)


def test_bch_unreachable_ratio_names_the_table():
    with pytest.raises(ValueError, match=r"bch on table b \(300 rows\).*cannot reach ratio 1000"):
        case_named("bch-succession-sum").build(ratio=1000)
    with pytest.raises(ValueError, match=r"table c \(1,000 rows\)"):  # skip blocks: 1000 rows miss 10x
        Case("x", "bch", 10, options={"blocks": "skip"}).build()


def test_tt_unreachable_ratio_names_the_table():
    with pytest.raises(ValueError, match=r"tt on table b \(300 rows\).*cannot reach ratio 1000"):
        Case("tt", "tt", 1000, dim=16).build()


@pytest.mark.parametrize("chunk", [1, 4])
def test_robe_ratio_leaving_less_than_one_chunk_is_rejected(chunk):
    compressed = (300 + 1000) * 8
    case = Case("robe", "robe", 16, options={"chunk": chunk})
    largest = re.escape(f"{compressed / chunk:.4g}")
    with pytest.raises(ValueError, match=rf"fewer than one chunk.*largest reachable ratio is {largest}"):
        case.build(ratio=compressed / chunk * 2.5)
    assert case.build(ratio=compressed / chunk).size == chunk  # exactly one chunk is fine


def scenario(compressor: dict[str, Any], dim: int = 8) -> dict[str, Any]:
    model = {**TINY_MODEL, "embedding_dim": dim, "bottom_mlp": [16, dim]}
    return {"dataset": dict(TINY_DATASET), "model": model, "compressor": compressor,
            "target": {"metric": "auc", "value": 0.55}}


@pytest.mark.parametrize("kind, ratio", [("memcom", 8), ("memcom", 20), ("md", 8)])
def test_ratio_at_or_above_embedding_dim_is_rejected_at_validation(kind, ratio):
    result, errors = validate_scenario(scenario({"kind": kind, "ratio": ratio}))
    assert result is None
    assert [loc for loc, _ in errors] == [("compressor",)]
    assert "embedding_dim 8" in errors[0][1]


def test_valid_compressor_scenarios_pass_validation():
    for compressor in ({"kind": "memcom", "ratio": 4}, {"kind": "qr", "ratio": 4, "fusion": "concat"},
                       {"kind": "bch", "ratio": 4}, {"kind": "robe", "ratio": 16, "chunk": 4},
                       {"kind": "tt", "ratio": 4}, {"kind": "md", "ratio": 4}):
        result, errors = validate_scenario(scenario(compressor))
        assert errors == [] and result is not None, compressor
    result, errors = validate_scenario(scenario({"kind": "qr", "ratio": 4, "fusion": "concat", "levels": 3}))
    assert result is None and [loc for loc, _ in errors] == [("compressor",)]


# ---------------------------------------------------------------- 8. ROBE specifics


def hand_locations(module: ROBEEmbedding, global_id: int, dim: int, chunk: int, size: int) -> list[int]:
    """W positions of the d elements of ``global_id``: (h(g, j // Z) mod (M - Z + 1)) + j mod Z."""
    r1, r2, r3 = (int(v) for v in module.coefficients)
    return [((global_id * r3 + (j // chunk) * r2 + r1) % PRIME) % (size - chunk + 1) + j % chunk for j in range(dim)]


@cases(ROBE_CASES)
def test_robe_locations_follow_the_formula(case):
    module = case.build(hash_seed=11)
    chunk, m, d = case.options["chunk"], module.size, case.dim
    assert all(0 <= int(r) < PRIME for r in module.coefficients)
    # global id = row id + rows of the compressed tables before (a is full and takes none)
    assert module.offsets.tolist() == [0, 0, 300]
    offsets = {"b": 0, "c": 300}
    vectors = table_vectors(module, case.features)
    array = module.array.detach()[:, 0]
    for name, n in (("b", 300), ("c", 1000)):
        ids = torch.arange(n)
        where = module.locations(ids + offsets[name])
        assert where.shape == (n, d)
        assert int(where.min()) >= 0 and int(where.max()) < m
        for x in (0, 1, 2, n // 2, n - 1):
            assert where[x].tolist() == hand_locations(module, x + offsets[name], d, chunk, m), (name, x)
        # each element of each id reads its array position
        assert torch.equal(vectors[name], array[where])
        # elements of one chunk read consecutive positions
        for j in range(d):
            start = j - j % chunk
            assert torch.equal(where[:, j], where[:, start] + (j - start)), (name, j)
    # a table under the threshold is a full table, not read from the array
    assert torch.equal(vectors["a"], module.full[0].weight.detach())


class Wrapper(nn.Module):
    """The least a model needs for ``build_optimizer``: an ``embeddings`` attribute."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings


def robe_grad(gradient: str, chunk: int) -> tuple[ROBEEmbedding, torch.Tensor | None]:
    module = Case("robe", "robe", 16, options={"chunk": chunk, "gradient": gradient}).build(seed=4)
    out = module(bags_kjt(BAGS)).values()
    (out * random_target(tuple(out.shape))).sum().backward()
    return module, module.array.grad


@pytest.mark.parametrize("chunk", [1, 4])
def test_robe_sparse_gradient_equals_dense_and_steps_with_sparse_adam(chunk):
    dense_module, dense = robe_grad("dense", chunk)
    sparse_module, sparse = robe_grad("sparse", chunk)
    assert not dense.is_sparse and sparse.is_sparse
    assert dense.shape == sparse.shape == (sparse_module.size, 1)
    torch.testing.assert_close(sparse.to_dense(), dense)
    assert dense_module.sparse_parameters() == []
    assert sparse_module.sparse_parameters() == [sparse_module.array]
    # the dense array is stepped by Adam, the sparse one by SparseAdam
    dense_opt = build_optimizer(Wrapper(dense_module), "adam", 1e-3)
    assert [type(o) for o in dense_opt.optimizers] == [torch.optim.Adam]
    model = Wrapper(sparse_module)
    optimizer = build_optimizer(model, "adam", 1e-3)
    assert [type(o) for o in optimizer.optimizers] == [torch.optim.Adam, torch.optim.SparseAdam]
    assert optimizer.optimizers[1].param_groups[0]["params"] == [sparse_module.array]
    dense_params = {id(p) for p in optimizer.optimizers[0].param_groups[0]["params"]}
    assert id(sparse_module.array) not in dense_params
    assert {id(p) for p in model.parameters()} == dense_params | {id(sparse_module.array)}
    before = sparse_module.array.detach().clone()
    optimizer.step()
    after = sparse_module.array.detach()
    changed = (after != before)[:, 0]
    touched = torch.zeros_like(changed)
    touched[sparse.coalesce().indices()[0]] = True
    assert changed.any()
    assert not (changed & ~touched).any()  # SparseAdam moves only the positions that were read


# ---------------------------------------------------------------- 9. inside DLRM on MovieLens


DLRM_CASES = [
    Case("qr-mult", "qr", 4),
    Case("qr-add-3", "qr", 4, options={"fusion": "add", "levels": 3}),
    Case("qr-concat", "qr", 4, options={"fusion": "concat"}),
    Case("memcom", "memcom", 4),
    Case("bch-succession", "bch", 4),
    Case("bch-skip", "bch", 32, options={"blocks": "skip"}),
    Case("robe-dense-z4", "robe", 16, options={"chunk": 4}),
    Case("robe-sparse-z1", "robe", 16, options={"chunk": 1, "gradient": "sparse"}),
    Case("tt", "tt", 4),
    Case("md", "md", 4),
]
ML_THRESHOLD = 200  # genres (20) and year (107) stay full; user (610) and movie (9,742) are compressed
ML_DIM = 16


@pytest.fixture(scope="module")
def movielens():
    from dlrs_bench.data.batching import iter_batches
    from dlrs_bench.data.movielens import MovieLensLatestSmall, MovieLensOptions

    dataset = MovieLensLatestSmall.build(MovieLensOptions())
    split = dataset.splits["train"].take(slice(0, 4096))
    batches = list(iter_batches(split, 512, dataset.feature_names))
    return dataset, batches


@cases(DLRM_CASES)
def test_dlrm_trains_with_falling_loss_on_movielens(case, movielens):
    from dlrs_bench.models.dlrm import DLRMBuilder, DLRMOptions

    dataset, batches = movielens
    torch.manual_seed(0)
    options = case.make_options(threshold=ML_THRESHOLD)
    embeddings = build_embeddings(dataset.features, ML_DIM, options, CPU)
    acc = account(embeddings, case.ratio)
    assert [t.compressed for t in acc.per_table] == [True, True, False, False]
    model = DLRMBuilder.build(DLRMOptions(embedding_dim=ML_DIM, bottom_mlp=[32, ML_DIM], top_mlp=[32, 1]),
                              dataset.num_dense, dataset.features, embeddings)
    optimizer = build_optimizer(model, "adam", 0.01)
    loss_fn = nn.BCEWithLogitsLoss()
    losses = []
    for step in range(30):
        batch = batches[step % len(batches)]
        loss = loss_fn(model(batch.dense_features, batch.sparse_features), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{case.name}: loss {first:.4f} -> {last:.4f}"
