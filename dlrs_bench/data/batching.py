"""Turning a :class:`CTRSplit` into TorchRec ``Batch`` objects (dense, KJT, labels)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import CTRSplit


def make_batch(split: CTRSplit, rows: torch.Tensor, keys: list[str]) -> Batch:
    """The rows ``rows`` of ``split`` as one TorchRec batch.

    Returns a ``Batch`` with ``dense_features`` ``[B, num_dense]``, ``sparse_features`` a
    ``KeyedJaggedTensor`` over ``keys`` (lengths ``[len(keys) * B]``) and ``labels`` ``[B]``.
    """
    values, lengths = [], []
    for key in keys:
        jagged = split.sparse[key]
        if jagged.is_single:
            values.append(jagged.values[rows])
            lengths.append(torch.ones(len(rows), dtype=torch.int32))
        else:
            part = jagged.take(rows)
            values.append(part.values)
            lengths.append((part.offsets[1:] - part.offsets[:-1]).to(torch.int32))
    # ids per key are known here on the host: cached in the KJT, consumers need no device sync for them
    kjt = KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths),
                            length_per_key=[len(v) for v in values])
    return Batch(dense_features=split.dense[rows], sparse_features=kjt, labels=split.labels[rows])


def rank_slice(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[start, end)`` of a global batch of ``rows`` rows split
    as evenly as possible over ``world`` ranks (sizes differ by at most one)."""
    return rank * rows // world, (rank + 1) * rows // world


def iter_batches(
    split: CTRSplit,
    batch_size: int,
    keys: list[str],
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
    pad: bool = False,
) -> Iterator[Batch]:
    """Batches over one pass of ``split``: shuffled when ``generator`` is given, else in order.

    Global batches hold ``batch_size`` rows (the last one may be smaller). With ``world > 1`` this
    yields rank ``rank``'s :func:`rank_slice` of each global batch. A global batch with fewer rows
    than ranks cannot give every rank a row (TorchRec needs at least one per rank): it is skipped,
    or with ``pad`` every rank gets one row (the last row for ranks past the end; callers drop
    those, see :func:`global_batch_rows`).
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for begin in range(0, n, batch_size):
        rows = order[begin : begin + batch_size]
        if world > 1:
            if len(rows) < world:
                if not pad:
                    return
                rows = rows[min(rank, len(rows) - 1)].view(1)
            else:
                start, end = rank_slice(len(rows), rank, world)
                rows = rows[start:end]
        yield make_batch(split, rows, keys)


def global_batch_rows(n: int, batch_size: int, world: int) -> list[int]:
    """Rows of each global batch that :func:`iter_batches` trains on (the last one is dropped when
    it has fewer rows than ``world``)."""
    sizes = [min(batch_size, n - begin) for begin in range(0, n, batch_size)]
    return [s for s in sizes if s >= world]


def merge_rank_rows(parts: list[torch.Tensor], n: int, batch_size: int, world: int) -> torch.Tensor:
    """The per-row outputs of an in-order pass over ``n`` rows in the original row order, from
    ``parts[r]`` = rank r's outputs of its :func:`iter_batches` (``pad=True``) shares."""
    out, offsets = [], [0] * world
    for begin in range(0, n, batch_size):
        rows = min(batch_size, n - begin)
        for r in range(world):
            if rows < world:  # padded: one row each, kept for ranks that got a real row
                size, keep = 1, r < rows
            else:
                start, end = rank_slice(rows, r, world)
                size, keep = end - start, True
            if keep:
                out.append(parts[r][offsets[r] : offsets[r] + size])
            offsets[r] += size
    return torch.cat(out)


def prefetch(batches: Iterator[Batch], device: torch.device, depth: int = 2) -> Iterator[Batch]:
    """``batches`` built and moved to the CUDA ``device`` by a background thread, ``depth`` ahead.

    Building a batch (gathers, KJT) and the host-to-device copy (from pinned memory, asynchronous)
    overlap with the training step; torch releases the GIL in its kernels. Errors in the thread are
    raised here; closing the iterator stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for batch in batches:
                batch = batch.pin_memory().to(device, non_blocking=True)
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            ready.put(e)

    thread = threading.Thread(target=work, daemon=True, name="dlrs-bench-prefetch")
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
