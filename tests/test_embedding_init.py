"""model.embedding_init: each scheme's statistics on unsharded tables and under one-rank DMP (the same
floats), the first-order column, the padding row, compressed tables, the refusal of TT and ROBE, and
the default left as TorchRec draws it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN

from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import build_dataset
from dlrs_bench.models.init import InitTable, draw_rows, normal_sampler, start_tables

ROWS, DIM = 10_000, 16
DATASET = {"name": "synthetic", "rows": 3000, "cardinalities": [ROWS, 50], "num_dense": 4, "signal": 2.0, "seed": 0}


def scenario(init: dict[str, Any] | None, compressor: dict[str, Any] | None = None, **model: Any) -> Any:
    """A validated scenario at d = 16 over one 10,000-row table and one of 50: DLRM, or the ``model``
    options given."""
    options = {**(model or {**TINY_MODEL, "bottom_mlp": [16, DIM]}), "embedding_dim": DIM}
    if init is not None:
        options["embedding_init"] = init
    spec, errors = validate_scenario({"dataset": DATASET, "model": options,
                                      "compressor": compressor or {"kind": "none"},
                                      "train": {**TINY_TRAIN, "optimizer": "adagrad"}, "target": {"value": 0.55}})
    assert not errors, errors
    return spec


def unsharded_tables(spec: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """The scenario's tables built on one process (the CPU default), by name."""
    from dlrs_bench.engine.train import build, seed_everything

    seed_everything(seed)
    model = build(spec, build_dataset(spec.dataset), torch.device("cpu"))
    return {t.name: t.weight.detach().clone() for t in model.embeddings.init_tables()}


def sharded_tables(spec: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """The scenario's full tables as one-rank DMP stores them (fused fbgemm kernels), assembled by name."""
    from dlrs_bench.engine.distributed import one_rank_group
    from dlrs_bench.engine.train import prepare, seed_everything
    from dlrs_bench.models.init import sharded_tables as sharded

    seed_everything(seed)
    device = torch.device("cpu")
    with one_rank_group(device) as ranks:
        prepared = prepare(spec, build_dataset(spec.dataset), device, ranks)
        out = {}
        for name, tensor in sharded(prepared.pipeline.dmp):
            whole = torch.zeros(tensor.size())
            for shard in tensor.local_shards():
                (r0, c0), (r, c) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                whole[r0:r0 + r, c0:c0 + c] = shard.tensor
            out[name] = whole
    return out


@pytest.fixture(scope="module")
def normal_tables() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    spec = scenario({"kind": "normal", "std": 1e-4})
    return unsharded_tables(spec), sharded_tables(spec)


@pytest.fixture(scope="module")
def xavier_tables() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    spec = scenario({"kind": "xavier"})
    return unsharded_tables(spec), sharded_tables(spec)


def test_normal_statistics_unsharded_and_under_dmp(normal_tables):
    local, sharded = normal_tables
    table = local["t_t0"]
    assert table.shape == (ROWS, DIM)
    assert abs(table.mean().item()) < 1e-4 * 5 / math.sqrt(table.numel())
    assert table.std().item() == pytest.approx(1e-4, rel=0.02)
    assert table.abs().max().item() < 6e-4  # 160,000 draws: none beyond 6 sigma
    assert torch.equal(sharded["t_t0"][:, :DIM], table)  # the same floats under DMP
    assert torch.equal(sharded["t_t1"][:, :DIM], local["t_t1"])


def test_xavier_statistics_unsharded_and_under_dmp(xavier_tables):
    local, sharded = xavier_tables
    table = local["t_t0"]
    bound = math.sqrt(6 / (ROWS + DIM))
    assert table.abs().max().item() <= bound
    assert table.abs().max().item() > 0.99 * bound
    assert table.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert abs(table.mean().item()) < 5 * bound / math.sqrt(3 * table.numel())
    assert local["t_t1"].abs().max().item() <= math.sqrt(6 / (50 + DIM))
    assert torch.equal(sharded["t_t0"][:, :DIM], table)


def test_default_is_torchrec_uniform_untouched():
    spec = scenario(None)
    assert "embedding_init" not in spec.model.model_dump(exclude_defaults=True)
    assert spec.model.init_scheme() == "uniform"
    table = unsharded_tables(spec)["t_t0"]
    bound = math.sqrt(1 / ROWS)  # EmbeddingBagConfig's weight_init_min / max
    assert table.abs().max().item() <= bound and table.abs().max().item() > 0.99 * bound


def test_explicit_uniform_keeps_the_scenario_id():
    from dlrs_bench.config.expand import scenario_id

    assert scenario_id(scenario({"kind": "uniform"})) == scenario_id(scenario(None))
    assert scenario_id(scenario({"kind": "normal"})) != scenario_id(scenario(None))


def test_first_order_column_starts_like_the_embedding():
    spec = scenario({"kind": "normal"}, name="deepfm", dnn=[8, 1])
    assert spec.model.table_width() == DIM + 1
    local = unsharded_tables(spec)["t_t0"]
    assert local.shape == (ROWS, DIM + 1)
    assert local[:, DIM].std().item() == pytest.approx(1e-4, rel=0.05)  # FuxiCTR's LR embedding: N(0, 1e-4²)
    sharded = sharded_tables(spec)["t_t0"]
    assert sharded.shape == (ROWS, 20)  # stored padded to a multiple of 4: the padding columns are zero
    assert torch.equal(sharded[:, :DIM + 1], local) and not sharded[:, DIM + 1:].any()


def test_padding_row_is_zero_and_scheme_covers_the_rest():
    weight = torch.empty(100, 4)
    table = InitTable("t_x", weight, ids_are_rows=True)

    class Tables(torch.nn.Module):
        def init_tables(self) -> list[InitTable]:
            return [table]

    options = scenario({"kind": "normal", "std": 0.5}).model
    start_tables(Tables(), options, {"vocabulary": {"padding_row": 0}})
    assert not weight[0].any() and weight[1:].std().item() == pytest.approx(0.5, rel=0.2)
    sampler = normal_sampler(options.embedding_init, 99, 4)
    assert torch.equal(weight[1:], draw_rows(sampler, "t_x", torch.initial_seed(), 1, 100, True))


def test_shards_read_the_rows_of_the_whole_table():
    sampler = normal_sampler(scenario({"kind": "normal"}).model.embedding_init, ROWS, 3)
    whole = draw_rows(sampler, "t", 7, 0, 200_000, False)
    assert torch.equal(draw_rows(sampler, "t", 7, 65_000, 140_000, False), whole[65_000:140_000])
    padded = draw_rows(sampler, "t", 7, 0, 200_001, True)
    assert torch.equal(padded[1:], whole) and torch.equal(draw_rows(sampler, "t", 7, 5, 9, True), whole[4:8])


@pytest.mark.parametrize("compressor", [{"kind": "hashing", "ratio": 4}, {"kind": "qr", "ratio": 4},
                                        {"kind": "memcom", "ratio": 4}, {"kind": "md", "ratio": 4},
                                        {"kind": "bch", "ratio": 4}])
def test_compressed_tables_take_the_scheme(compressor):
    tables = unsharded_tables(scenario({"kind": "normal", "std": 0.01}, compressor))
    assert tables and all(t.std().item() == pytest.approx(0.01, rel=0.2) for t in tables.values() if t.numel() > 500)


@pytest.mark.parametrize("compressor", [{"kind": "tt", "ratio": 4}, {"kind": "robe", "ratio": 4}])
def test_methods_with_their_own_init_refuse_a_scheme(compressor):
    options = {**TINY_MODEL, "embedding_dim": DIM, "bottom_mlp": [16, DIM], "embedding_init": {"kind": "xavier"}}
    _, errors = validate_scenario({"dataset": DATASET, "model": options, "compressor": compressor,
                                   "target": {"value": 0.55}})
    assert [loc for loc, _ in errors] == [("model", "embedding_init")]
    assert f"compressor {compressor['kind']} cannot start from embedding_init xavier" in errors[0][1]
    scenario({"kind": "uniform"}, compressor)  # the default is accepted


def test_unknown_scheme_and_misplaced_std_are_errors():
    options = {**TINY_MODEL, "embedding_dim": DIM, "bottom_mlp": [16, DIM]}
    for init in ({"kind": "kaiming"}, {"kind": "xavier", "std": 0.1}):
        _, errors = validate_scenario({"dataset": DATASET, "model": {**options, "embedding_init": init},
                                       "target": {"value": 0.55}})
        assert errors and errors[0][0][:2] == ("model", "embedding_init")

