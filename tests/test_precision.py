"""Mixed precision (``train.precision: bf16``): the forward runs under bfloat16 autocast, parameters
and the loss stay fp32, and quality matches fp32."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_DATASET, TINY_MODEL

from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.batching import iter_batches
from dlrs_bench.data.synthetic import Synthetic
from dlrs_bench.engine.train import TrainStep, build, train
from dlrs_bench.measure.mllog import EventLog


def spec(precision: str):
    scenario, errors = validate_scenario({
        "dataset": {**copy.deepcopy(TINY_DATASET), "rows": 20_000}, "model": copy.deepcopy(TINY_MODEL),
        "train": {"batch_size": 256, "optimizer": "adam", "lr": 0.01, "max_epochs": 2, "eval_every": 1,
                  "stop_at_target": False, "precision": precision},
        "target": {"metric": "auc", "value": 0.55}})
    assert not errors, errors
    return scenario


@pytest.fixture(scope="module")
def dataset():
    return Synthetic.build(spec("fp32").dataset)


@pytest.mark.parametrize("precision,expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_forward_runs_in_the_requested_precision(dataset, precision, expected):
    model = build(spec(precision), dataset, torch.device("cpu"))
    seen = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    batch = next(iter_batches(dataset.splits["train"], 64, dataset.feature_names))
    loss, _ = TrainStep(model, precision)(batch)
    loss.backward()
    assert seen == [expected]
    assert loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in model.parameters())


def test_bf16_reaches_fp32_quality(dataset, tmp_path):
    auc = {}
    for precision in ("fp32", "bf16"):
        outcome = train(spec(precision), dataset, 0, torch.device("cpu"), EventLog(tmp_path / f"{precision}.log"))
        auc[precision] = outcome.best_metrics["auc"]
    assert auc["fp32"] > 0.75
    assert abs(auc["bf16"] - auc["fp32"]) < 0.01, auc


def test_unknown_precision_is_a_validation_error():
    _, errors = validate_scenario({"dataset": {"name": "synthetic"}, "model": {"name": "dlrm"},
                                   "train": {"precision": "fp16"}, "target": {"value": 0.7}})
    assert errors and errors[0][0] == ("train", "precision")
    assert "'fp32' or 'bf16'" in errors[0][1]
