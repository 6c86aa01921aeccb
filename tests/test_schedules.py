"""Learning-rate schedules (train.lr_schedule) and gradient clipping (train.clip_grad_norm): rates by
step against hand-computed values, the rate reaching dense, sparse and fused optimizers, clipping by
global norm, options and scenario ids, the train loop's record."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN, tiny_suite
from pydantic import ValidationError
from torch import nn

from dlrs_bench.config.expand import scenario_id
from dlrs_bench.config.schema import PlateauSchedule, TrainSpec, validate_scenario
from dlrs_bench.engine.distributed import gather_objects, init, launch
from dlrs_bench.engine.optim import GradClip, OptimizerGroup, build_optimizer
from dlrs_bench.engine.schedules import Constant, LrControl, MLPerfDLRM, Plateau, Warmup, build_schedule


def rates(schedule, steps: int) -> list[float]:
    return [schedule.lr_at(s) for s in range(1, steps + 1)]


# ---------------------------------------------------------------- rates by step


def test_warmup_starts_at_lr_over_n_and_reaches_lr_at_step_n():
    assert rates(Warmup(1.0, 4), 6) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_mlperf_schedule_around_each_boundary():
    """W=4, decay from step 6 over 4 steps: the reference keeps the last warm-up rate (3/4) until the
    decay starts, decays by ((4 - k) / 4) ** 2 and keeps its last value after it."""
    got = rates(MLPerfDLRM(1.0, warmup_steps=4, decay_start_step=6, decay_steps=4), 12)
    assert got == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75, 1.0, 0.5625, 0.25, 0.0625, 0.0625, 0.0625, 0.0625])


def test_mlperf_schedule_without_decay_is_a_warmup_and_its_floor_is_1e_7():
    assert rates(MLPerfDLRM(1.0, 3, 3, 0), 5) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert rates(MLPerfDLRM(2.0, 0, 0, 0), 3) == [2.0, 2.0, 2.0]  # MLPerf's closed values: constant
    tiny = MLPerfDLRM(1e-6, 0, 0, 10)
    assert tiny.lr_at(9) == pytest.approx(1e-6 * (1 / 10) ** 2 if 1e-6 * 0.01 > 1e-7 else 1e-7)
    assert tiny.lr_at(9) == 1e-7 and tiny.lr_at(50) == 1e-7
    # decay from step 0: the reference's counter is 1 at the first step, one decay step in already
    assert MLPerfDLRM(1.0, 0, 0, 4).lr_at(1) == pytest.approx(0.5625)


def test_plateau_with_patience_and_min_lr():
    """Patience 1: the second miss in a row reduces; an improvement under min_delta is a miss."""
    schedule = Plateau(1.0, PlateauSchedule(kind="plateau", factor=0.1, patience=1, min_lr=0.005, min_delta=0.001),
                       "auc")
    seen = []
    for auc in (0.70, 0.71, 0.7105, 0.705, 0.72, 0.72, 0.71, 0.70, 0.70, 0.69, 0.69):
        schedule.after_eval({"auc": auc})
        seen.append(schedule.lr_at(100))
    assert seen == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005, 0.005])


def test_plateau_as_fuxictr_reduces_at_every_miss_and_logloss_falls():
    schedule = build_schedule(TrainSpec(lr=1.0, lr_schedule={"kind": "plateau"}), "logloss")
    seen = []
    for logloss in (0.5, 0.4, 0.45, 0.39, 0.3999999):
        schedule.after_eval({"logloss": logloss, "auc": 0.5})
        seen.append(schedule.lr_at(1))
    assert seen == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_plateau_watches_its_own_metric_where_given():
    schedule = build_schedule(TrainSpec(lr=1.0, lr_schedule={"kind": "plateau", "metric": "auc"}), "logloss")
    for auc, logloss in ((0.7, 0.5), (0.6, 0.4)):
        schedule.after_eval({"auc": auc, "logloss": logloss})
    assert schedule.lr_at(1) == pytest.approx(0.1)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(("schedule", "message"), [
    ({"kind": "warmup"}, "Field required"),
    ({"kind": "warmup", "warmup_steps": 0}, "greater than 0"),
    ({"kind": "cosine"}, "does not match any of the expected tags"),
    ({"kind": "plateau", "factor": 1.5}, "less than 1"),
    ({"kind": "plateau", "min_lr": 1.0}, "above train.lr"),
    ({"kind": "mlperf_dlrm", "warmup_steps": 10, "decay_start_step": 5}, "warm-up must finish before the decay"),
    ({"kind": "constant", "warmup_steps": 3}, "Extra inputs are not permitted"),
])
def test_bad_schedules_are_refused(schedule, message):
    with pytest.raises(ValidationError, match=message):
        TrainSpec(lr_schedule=schedule)


def test_bad_schedule_is_named_by_its_path_without_the_union_tag():
    suite = tiny_suite()["defaults"]
    _, errors = validate_scenario({**suite, "train": {**TINY_TRAIN, "lr_schedule": {"kind": "warmup",
                                                                                    "warmup_step": 3}}})
    assert (("train", "lr_schedule", "warmup_step"), "unknown key; did you mean 'warmup_steps'?") in errors


def test_defaults_keep_scenario_ids():
    suite = tiny_suite()["defaults"]
    plain, _ = validate_scenario(suite)
    explicit, _ = validate_scenario({**suite, "train": {**TINY_TRAIN, "lr_schedule": {"kind": "constant"},
                                                        "clip_grad_norm": None}})
    warm, _ = validate_scenario({**suite, "train": {**TINY_TRAIN, "lr_schedule": {"kind": "warmup",
                                                                                 "warmup_steps": 5}}})
    assert scenario_id(plain) == scenario_id(explicit) != scenario_id(warm)


# ---------------------------------------------------------------- clipping


def clip_model() -> tuple[list[nn.Parameter], nn.Embedding]:
    """Two dense parameters with gradients (3, 0) and (0, 4) and a sparse embedding whose gradient
    adds rows 1 twice (coalesced: (2, 2)) and 2 once (1, 1): global norm sqrt(9 + 16 + 8 + 2)."""
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    emb = nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1, 1, 2])).sum().backward()
    return [a, b, emb.weight], emb


def global_norm(params: list[nn.Parameter]) -> float:
    return float(torch.sqrt(sum((p.grad.to_dense() ** 2).sum() for p in params)))


def test_clipping_scales_to_the_bound_counting_sparse_gradients_coalesced():
    params, _ = clip_model()
    norm = GradClip(params, 1.0)()
    assert float(norm) == pytest.approx(35**0.5)
    assert global_norm(params) == pytest.approx(1.0, rel=1e-5)


def test_clipping_below_the_bound_changes_nothing():
    params, emb = clip_model()
    before = [p.grad.to_dense().clone() for p in params]
    GradClip(params, 10.0)()
    assert all(torch.equal(p.grad.to_dense(), g) for p, g in zip(params, before, strict=True))


def test_the_optimizer_group_clips_before_stepping():
    p = nn.Parameter(torch.zeros(2))
    group = OptimizerGroup([torch.optim.SGD([p], lr=1.0)], GradClip([p], 1.0))
    p.grad = torch.tensor([3.0, 4.0])
    group.step()
    assert p.detach().tolist() == pytest.approx([-0.6, -0.8], rel=1e-5)


def rank_clip_norms(timeout_s: float) -> list[tuple[float, float]]:
    """Rank entry point: a DDP linear layer on rank-dependent inputs, its gradients clipped to 0.01;
    every rank's (norm seen by the clip, norm of the average of every rank's local gradients)."""
    ranks, _ = init("cpu", timeout_s)
    torch.manual_seed(0)
    layer = nn.Linear(3, 1)
    x = torch.full((4, 3), float(ranks.rank + 1))
    local = torch.autograd.grad(layer(x).sum(), list(layer.parameters()))
    stacked = [torch.stack(parts) for parts in zip(*gather_objects(list(local)), strict=True)]
    expected = torch.sqrt(sum((g.mean(0) ** 2).sum() for g in stacked))
    ddp = nn.parallel.DistributedDataParallel(layer)
    ddp(x).sum().backward()
    norm = GradClip(list(layer.parameters()), 0.01)()
    return gather_objects((float(norm), float(expected)))


def test_clipping_under_ddp_uses_the_global_norm(tmp_path: Path):
    """DDP averages the gradients in the backward, before the step clips them: every rank clips by
    the norm of the averaged gradient."""
    import test_schedules

    norms = launch(test_schedules.rank_clip_norms, 60.0, 2, tmp_path / "logs")
    assert len(norms) == 2
    for seen, expected in norms:
        assert seen == pytest.approx(expected, rel=1e-5)
    assert norms[0][0] == norms[1][0]


def test_dmp_records_the_fused_tables_as_not_clipped():
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.engine.distributed import one_rank_group
    from dlrs_bench.engine.train import prepare

    suite = tiny_suite()["defaults"]
    spec, errors = validate_scenario({**suite, "train": {**TINY_TRAIN, "optimizer": "adagrad", "clip_grad_norm": 1.0},
                                      "distributed": {"one_rank_dmp": True}})
    assert not errors, errors
    dataset = build_dataset(spec.dataset)
    with one_rank_group(torch.device("cpu")) as ranks:
        prepared = prepare(spec, dataset, torch.device("cpu"), ranks)
    record = prepared.optimizer.clip.record()
    assert record["unclipped_params"] == (64 + 32 + 16) * 8  # the three full tables of width 8
    assert record["clipped_params"] == prepared.counts["total_params"] - record["unclipped_params"]
    assert "fused optimizer" in record["unclipped"]


# ---------------------------------------------------------------- the rate reaches every optimizer


def sparse_model_spec(**train):
    suite = tiny_suite()["defaults"]
    spec, errors = validate_scenario({**suite, "train": {**TINY_TRAIN, "optimizer": "sgd", **train},
                                      "compressor": {"kind": "robe", "ratio": 4, "gradient": "sparse"}})
    assert not errors, errors
    return spec


def test_rate_reaches_dense_and_sparse_optimizers_and_their_updates_follow_it():
    """SGD: a step moves every parameter by lr x gradient, at the schedule's rate of that step."""
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.engine.train import build

    spec = sparse_model_spec(lr=0.5)
    dataset = build_dataset(spec.dataset)
    model = build(spec, dataset, torch.device("cpu"))
    optimizer = build_optimizer(model, "sgd", 0.5)
    assert len(optimizer.optimizers) == 2  # dense and sparse
    control = LrControl(Warmup(0.5, 4), optimizer.param_groups)
    control.before_step(1)
    assert [g["lr"] for g in optimizer.param_groups()] == [0.125, 0.125]
    array = model.embeddings.sparse_parameters()[0]
    before = array.detach().clone()
    dense = next(p for p in model.parameters() if p is not array)
    dense_before = dense.detach().clone()
    dense.grad = torch.ones_like(dense)
    row = torch.ones(1, *array.shape[1:])
    array.grad = torch.sparse_coo_tensor(torch.tensor([[0]]), row, array.shape, check_invariants=True)
    optimizer.step()
    assert float((before - array.detach()).abs().sum()) == pytest.approx(0.125 * row.numel())
    assert torch.allclose(dense_before - dense.detach(), torch.full_like(dense, 0.125))


def fused_kernels(optimizer) -> list:
    """fbgemm's table-batched kernels under TorchRec's (combined) optimizers."""
    if hasattr(optimizer, "_emb_module"):
        return [optimizer._emb_module]
    return [k for _, sub in getattr(optimizer, "optimizers", []) for k in fused_kernels(sub)]


def test_rate_reaches_the_fused_tables_under_one_rank_dmp():
    """Full tables under DMP (fbgemm's fused CPU Adagrad): the kernel's rate is the schedule's at
    every step, and a step at rate 0 leaves the tables as they were."""
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.data.batching import iter_batches
    from dlrs_bench.engine.distributed import one_rank_group
    from dlrs_bench.engine.train import prepare

    suite = tiny_suite()["defaults"]
    spec, errors = validate_scenario({**suite, "train": {**TINY_TRAIN, "optimizer": "adagrad"},
                                      "distributed": {"one_rank_dmp": True}})
    assert not errors, errors
    dataset = build_dataset(spec.dataset)
    device = torch.device("cpu")
    with one_rank_group(device) as ranks:
        prepared = prepare(spec, dataset, device, ranks)
        kernels = fused_kernels(prepared.optimizer.optimizers[0])
        assert kernels
        batches = iter_batches(dataset.splits["train"], 128, dataset.feature_names, seed=0)
        control = LrControl(Warmup(0.01, 4), prepared.optimizer.param_groups)
        for step in (1, 2, 3):
            control.before_step(step)
            prepared.pipeline.progress(batches)
            assert all(k.get_learning_rate() == pytest.approx(0.01 * step / 4) for k in kernels)
        tables = [w.detach().clone() for k in kernels for w in k.split_embedding_weights()]
        frozen = LrControl(Constant(0.0), prepared.optimizer.param_groups)
        frozen.before_step(4)
        prepared.pipeline.progress(batches)
        after = [w.detach() for k in kernels for w in k.split_embedding_weights()]
        assert all(torch.equal(a, b) for a, b in zip(tables, after, strict=True))
        LrControl(Constant(0.01), prepared.optimizer.param_groups).before_step(5)
        prepared.pipeline.progress(batches)
        moved = [w.detach() for k in kernels for w in k.split_embedding_weights()]
        assert any(not torch.equal(a, b) for a, b in zip(tables, moved, strict=True))
