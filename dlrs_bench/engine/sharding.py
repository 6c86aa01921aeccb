"""TorchRec model parallelism: full tables sharded by the planner, the rest data-parallel.

Full tables (:class:`~dlrs_bench.compression.full.FullEmbedding`) are placed by TorchRec's
``EmbeddingShardingPlanner`` and run as fused fbgemm TBE kernels whose optimizer runs inside the
backward pass (``apply_optimizer_in_backward``). Every other parameter (dense layers, compressed
embedding modules, tables under a compressor's threshold) is replicated and kept in sync by DDP
inside ``DistributedModelParallel``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dlrs_bench.compression.full import FullEmbedding
from dlrs_bench.config.schema import Scenario
from dlrs_bench.engine.optim import OPTIMIZERS, SPARSE_OPTIMIZERS, OptimizerGroup, grad_clip, optimizer_kwargs

#: Sharding types the planner may choose from (data_parallel is what we do for non-full tables).
MODEL_PARALLEL_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise")


#: Optimizers fbgemm's fused CPU kernels implement (on CUDA every optimizer here is fused).
FUSED_CPU_OPTIMIZERS = ("adagrad", "sgd")


def check_sharded_optimizer(spec: Scenario, device: torch.device, where: str) -> None:
    """Raise :class:`UserInputError` when ``spec`` would shard full tables on CPU with an optimizer
    the fused CPU kernels lack (checked before anything runs)."""
    from dlrs_bench.errors import UserInputError

    if spec.shards_tables(device.type) and device.type == "cpu" and spec.train.optimizer not in FUSED_CPU_OPTIMIZERS:
        raise UserInputError(
            f"{where}: full tables sharded over {spec.world_size} CPU rank(s) train with fbgemm's fused CPU "
            f"kernels, which implement {' and '.join(FUSED_CPU_OPTIMIZERS)} but not {spec.train.optimizer}; "
            "set train.optimizer to one of those, or run on GPUs")


class FullEmbeddingSharder(EmbeddingBagCollectionSharder):
    """TorchRec's EBC sharder for :class:`FullEmbedding` (sharders match the exact module type)."""

    @property
    def module_type(self) -> type[nn.Module]:
        return FullEmbedding


def full_tables(model: nn.Module) -> list[FullEmbedding]:
    return [m for m in model.modules() if isinstance(m, FullEmbedding)]


def quiet_torchrec() -> None:
    """Silence what TorchRec's planner and DMP say about choices made here on purpose (a Topology
    built directly, the default storage reservation, DDP's ``broadcast_buffers``): noise to users."""
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")


def plan_sharding(model: nn.Module, world_size: int, device: torch.device,
                  sharding_types: list[str] | None) -> ShardingPlan:
    """The planner's placement of every full table over ``world_size`` ranks (collective: every rank
    calls it; rank 0 plans and broadcasts). Tables are model-parallel (never ``data_parallel``) with
    the fused kernel; ``sharding_types`` narrows the choice (default: every type ``device`` supports)."""
    sharder = FullEmbeddingSharder()
    supported = [t for t in sharder.sharding_types(device.type) if t in MODEL_PARALLEL_TYPES]
    allowed = [t for t in supported if sharding_types is None or t in sharding_types]
    if not allowed:
        raise ValueError(f"sharding types {sharding_types} are not available on {device.type} "
                         f"(TorchRec offers {supported} there)")
    constraints = {
        config.name: ParameterConstraints(sharding_types=allowed, compute_kernels=["fused"])
        for table in full_tables(model) for config in table.embedding_bag_configs()
    }
    topology = Topology(world_size=world_size, compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    return planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)


def shard(model: nn.Module, optimizer: str, lr: float, device: torch.device, sharding_types: list[str] | None,
          sparse_parameters: list[nn.Parameter], clip_grad_norm: float | None = None,
          ) -> tuple[DistributedModelParallel, OptimizerGroup, dict[str, Any]]:
    """``model`` under DMP, its optimizer, and the placement ``{table: {sharding_type, ranks}}``.

    Full tables may live on the meta device: DMP allocates only each rank's shards.
    ``sparse_parameters`` (sparse gradients) get the sparse optimizer of the same algorithm and are
    left out of DDP: the caller averages their gradients (:func:`average_sparse_gradients`).
    ``clip_grad_norm`` clips every gradient that exists at the step (DDP's and the averaged sparse ones
    are the same on every rank, so each rank's norm is the global one); the full tables' fused optimizer
    updates them inside the backward, so they are recorded as not clipped.
    """
    quiet_torchrec()
    sparse_ids = {id(p) for p in sparse_parameters}
    settings = optimizer_kwargs(optimizer, lr)
    fused_params = sum(p.numel() for table in full_tables(model) for p in table.parameters())
    for table in full_tables(model):  # (TorchRec adds its own keys to the dict it is given: a copy each)
        apply_optimizer_in_backward(OPTIMIZERS[optimizer], table.parameters(), dict(settings))
    plan = plan_sharding(model, dist.get_world_size(), device, sharding_types)
    # DDP's bucketed all-reduce cannot take sparse gradients: those are averaged by the train step
    sparse_names = [name for name, p in model.named_parameters() if id(p) in sparse_ids]
    dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=[FullEmbeddingSharder()],
                                   data_parallel_wrapper=DefaultDataParallelWrapper(params_to_ignore=sparse_names))
    rest = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    dense = {k: p for k, p in rest.items() if id(p) not in sparse_ids}
    sparse = {k: p for k, p in rest.items() if id(p) in sparse_ids}
    optimizers: list[Any] = [CombinedOptimizer([
        dmp.fused_optimizer, KeyedOptimizerWrapper(dense, lambda ps: OPTIMIZERS[optimizer](ps, **settings))])]
    if sparse:
        optimizers.append(SPARSE_OPTIMIZERS[optimizer](list(sparse.values()), **settings))
    clip = grad_clip(list(rest.values()), clip_grad_norm, fused_params)
    return dmp, OptimizerGroup(optimizers, clip), placement(plan)


def placement(plan: ShardingPlan) -> dict[str, Any]:
    """``{table: {"sharding_type", "compute_kernel", "ranks"}}`` of a sharding plan."""
    out = {}
    for module_plan in plan.plan.values():
        for table, p in module_plan.items():
            ranks = sorted({s.placement.rank() for s in p.sharding_spec.shards}) if p.sharding_spec else p.ranks
            out[table] = {"sharding_type": p.sharding_type, "compute_kernel": p.compute_kernel, "ranks": ranks}
    return out
