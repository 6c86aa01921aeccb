"""The memory planner: estimates per GPU and the refusal of what cannot fit (MLPerf DLRM tables)."""

from __future__ import annotations

import pytest

from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import CTRDataset, SparseFeature
from dlrs_bench.data.shapes import TERABYTE_CARDINALITIES
from dlrs_bench.engine.memory_plan import GIB, MemoryPlanError, check_fits, estimate

#: MLPerf DLRM-DCNv2 (TorchRec's DLRM_DCN): one dense field through a bottom MLP, cross network then DNN
MLPERF_MODEL = {"name": "dcnv2", "embedding_dim": 128, "dense_features": "field", "bottom_mlp": [512, 256, 128],
                "structure": "stacked", "cross_layers": 3, "low_rank": 512, "top_mlp": [1024, 1024, 512, 256, 1]}
TERABYTE = CTRDataset("criteo-tb", [SparseFeature(f"C{i}", n) for i, n in enumerate(TERABYTE_CARDINALITIES)], 13, {})


def scenario(compressor: dict | None = None, model: dict = MLPERF_MODEL, gpus: int = 1, one_rank_dmp: bool = False):
    spec, errors = validate_scenario({
        "dataset": {"name": "synthetic"}, "model": model, "compressor": compressor or {"kind": "none"},
        "train": {"batch_size": 65536, "optimizer": "adagrad"}, "target": {"value": 0.80275}, "gpus": gpus,
        "distributed": {"one_rank_dmp": one_rank_dmp}})
    assert not errors, errors
    return spec


def test_mlperf_tables_are_97_gib_and_refused_on_one_80gb_gpu():
    plan = estimate(scenario(), TERABYTE)
    assert plan.embedding_params == sum(TERABYTE_CARDINALITIES) * 128  # 26.1 B parameters
    assert plan.embedding_params * 4 / GIB == pytest.approx(97.4, abs=0.1)
    with pytest.raises(MemoryPlanError) as refused:
        check_fits(plan, 80 * GIB)
    message = str(refused.value)
    assert "per GPU" in message and "tables 97.4" in message
    assert "compression ratio of at least" in message and "GPUs with the tables sharded" in message


def test_the_advice_fits():
    plan = estimate(scenario(), TERABYTE)
    with pytest.raises(MemoryPlanError) as refused:
        check_fits(plan, 80 * GIB)
    words = str(refused.value).split()
    ratio = float(words[words.index("least") + 1].rstrip("x"))
    gpus = int(words[words.index("or") + 1])
    assert plan.per_gpu(gpus=gpus, sharded=True) <= 0.9 * 80 * GIB < plan.per_gpu(gpus=gpus - 1, sharded=True)
    assert plan.per_gpu(embedding_scale=1 / ratio) <= 0.9 * 80 * GIB * 1.001


def test_compression_makes_it_fit():
    robe = estimate(scenario(compressor={"kind": "robe", "ratio": 1000, "chunk": 32}), TERABYTE)
    assert robe.embedding_params == pytest.approx(sum(TERABYTE_CARDINALITIES) * 128 / 1000, rel=1e-3)
    check_fits(robe, 80 * GIB)  # does not raise


def test_sharding_over_gpus_divides_the_tables():
    plan = estimate(scenario(), TERABYTE)
    assert plan.per_gpu(gpus=8) < plan.per_gpu(gpus=1) / 6


def test_mlperf_tables_sharded_over_8_gpus_fit_without_table_gradients():
    plan = estimate(scenario(gpus=8), TERABYTE)
    assert plan.sharded and plan.gpus == 8
    tables_and_adagrad = plan.embedding_params * 8 / 8  # weight + adagrad state, bytes per GPU
    assert plan.per_gpu() == pytest.approx(tables_and_adagrad + plan.fixed_bytes, rel=1e-6)
    assert plan.per_gpu() / GIB == pytest.approx(24.4 + plan.fixed_bytes / GIB, abs=0.1)
    check_fits(plan, 80 * GIB)  # does not raise
    with pytest.raises(MemoryPlanError, match="per GPU"):
        check_fits(estimate(scenario(gpus=2), TERABYTE), 80 * GIB)  # 97 GiB of weights + state over 2


def test_fused_tables_on_one_gpu_need_no_gradients():
    plain, fused = estimate(scenario(), TERABYTE), estimate(scenario(one_rank_dmp=True), TERABYTE)
    assert not plain.sharded and fused.sharded
    assert plain.per_gpu() - fused.per_gpu() == plain.embedding_params * 4  # the dense table gradient
