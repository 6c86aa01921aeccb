"""N ranks training one model: launch, process group, and the few collectives the loop needs.

A scenario with ``gpus: N > 1`` (NCCL, one GPU per rank) or ``gpus: 0, processes: N > 1`` (gloo
on CPU) runs on N ranks. ``dlrs-bench run`` starts them on this machine through
torch.distributed's elastic launcher (the engine of ``torchrun``); across machines, users start
``dlrs-bench`` itself under ``torchrun`` (README, "GPU use") and every process runs the suite.
Collectives time out after ``distributed.timeout_s``, and the launcher stops every rank as soon
as one fails, so a failing rank ends the run with its error instead of a hang.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dlrs_bench.lifecycle import children_start_deaf


class DistributedRunError(RuntimeError):
    """A rank of a distributed run failed; the message names the rank and its error."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run. ``shard``: full tables go under DMP (fused TBE), true in any
    process group, a one-rank one (:func:`one_rank_group`) included; plain ``Ranks()`` is a single
    process without a group, training TorchRec's unsharded collection."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    shard: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


#: A single process (no process group).
SINGLE = Ranks()


def launched_world() -> int | None:
    """The world size when this process was started by ``torchrun``, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["WORLD_SIZE"])


def is_main_process() -> bool:
    """False on ranks other than 0 of a ``torchrun`` launch: they neither write results nor report."""
    return int(os.environ.get("RANK", 0)) == 0


def backend(device_kind: str) -> str:
    """The collective backend for ranks on ``device_kind``: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if device_kind == "cuda" else "gloo"


def init(device_kind: str, timeout_s: float, threads: int | None = None) -> tuple[Ranks, torch.device]:
    """Join the process group set up by the launcher (environment variables), once per process;
    returns this rank and its device (``cuda:<local rank>`` or ``cpu``). Torch's CPU threads:
    ``threads``, else one per gloo rank (ranks are the parallelism) or this machine's cores shared
    by its GPU ranks."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) // local_world))
    else:
        device = torch.device("cpu")
        torch.set_num_threads(threads or 1)
    if not dist.is_initialized():
        dist.init_process_group(backend(device_kind), timeout=timedelta(seconds=timeout_s),
                                device_id=device if device_kind == "cuda" else None)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, shard=True), device


@contextmanager
def one_rank_group(device: torch.device, timeout_s: float = 300) -> Iterator[Ranks]:
    """A process group of this process alone (``distributed.one_rank_dmp``), so full tables go under
    DMP like on every rank of a sharded run; destroyed on exit."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device.type), store=dist.HashStore(), rank=0, world_size=1,
                            timeout=timedelta(seconds=timeout_s))
    try:
        yield Ranks(shard=True)
    finally:
        dist.destroy_process_group()


def launch(entrypoint: Callable[..., Any], payload: Any, world: int, log_dir: Path) -> Any:
    """Run ``entrypoint(payload)`` on ``world`` local ranks and return rank 0's return value.

    Each rank's stdout and stderr go to ``log_dir``; the first failure is raised as
    :class:`DistributedRunError` with the failing rank's exception. Signals stay with this process
    (:mod:`dlrs_bench.lifecycle`): SIGINT or SIGTERM raise :class:`~dlrs_bench.lifecycle.Interrupted`
    through the launcher, which stops the ranks with SIGTERM on its way out; ranks started by an
    entrypoint that calls :func:`~dlrs_bench.lifecycle.child_setup` die with this process.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are raised below
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=world, run_id=f"dlrs-bench-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
        start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), redirects=Std.ALL),
        # none: the launcher would turn SIGINT/SIGTERM into its own exception (an Exception, recorded as a
        # failed scenario) and forward SIGINT to the ranks, which leave Ctrl-C to this process
        signals_to_handle="", shutdown_timeout=10,
    )
    handlers = {s: signal.getsignal(s) for s in _LAUNCHER_SIGNALS}
    try:
        with children_start_deaf():
            returned = elastic_launch(config, entrypoint)(payload)
    except ChildFailedError as e:
        rank, failure = _root_failure(e.failures)
        raise DistributedRunError(f"rank {rank} of {world} failed: {_failure_message(failure)} "
                                  f"(rank logs: {log_dir})") from None
    finally:
        for sig, handler in handlers.items():  # as they were, whatever the launcher did
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
    return returned[0]


#: Signals torch's elastic launcher may take over (its default ``signals_to_handle``).
_LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _root_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The rank whose failure caused the others' (their collectives then fail on a closed connection):
    one that died without recording an exception (``os._exit``, a signal) before those that recorded
    one, else the earliest recorded to the nanosecond — torch's ``get_first_failure`` orders by whole
    seconds, so a peer's "connection closed" could be named instead of the error that caused it."""
    def order(item: tuple[int, Any]) -> tuple[int, int, int]:
        rank, failure = item
        try:
            return 1, os.stat(failure.error_file).st_mtime_ns, rank
        except (OSError, TypeError, ValueError):
            return 0, failure.timestamp, rank
    return min(failures.items(), key=order)


def _failure_message(failure: Any) -> str:
    """The exception a rank recorded (``@record``), or how its process ended."""
    message = failure.message  # the error file's {"message": "Type: text", "extraInfo": ...} with @record
    if isinstance(message, dict):
        message = message.get("message", "")
    text = str(message or "").strip()
    if not text or text.startswith("To enable traceback") or text.startswith("Signal "):
        code = failure.exitcode
        if isinstance(code, int) and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                pass
        return f"exit code {code}"
    return text.splitlines()[-1] if "Traceback" in text else text


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (one all-reduce)."""
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(local: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's 1-D ``local`` tensor (lengths may differ), in rank order, on every rank (on ``device``)."""
    n = torch.tensor([local.numel()], device=device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=local.dtype, device=device)
    padded[: local.numel()] = local.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [p[: int(s.item())] for p, s in zip(parts, sizes)]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_sparse_gradients(params: list[torch.Tensor], device: torch.device) -> None:
    """Replace each parameter's sparse COO gradient by the mean over ranks (what DDP does for dense
    gradients, which its bucketed all-reduce cannot do for sparse ones): every rank's (index, value)
    pairs are gathered and summed."""
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            continue
        grad = p.grad.coalesce()
        indices = gather_rows(grad.indices().flatten(), device)
        values = gather_rows(grad.values().flatten(), device)
        sparse_dims, dense_shape = grad.indices().shape[0], grad.values().shape[1:]
        p.grad = torch.sparse_coo_tensor(
            torch.cat([i.view(sparse_dims, -1) for i in indices], dim=1),
            torch.cat([v.view(-1, *dense_shape) for v in values]) / world,
            grad.shape,
        ).coalesce()
