"""Reading a :class:`CTRSplit` as TorchRec ``Batch`` objects (dense, KJT, labels).

A batch is read from the cache with vectorised reads (one contiguous read per file when its rows
are consecutive, else one gather), and its KJT is assembled feature by feature with numpy copies
(no Python loop over rows); per-key lengths are known on the host and passed to the KJT.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.ahead import in_order
from dlrs_bench.data.base import CTRSplit, synthesise_bags
from dlrs_bench.data.rows import Rows


def make_batch(split: CTRSplit, positions: Rows, keys: list[str]) -> Batch:
    """The rows at ``positions`` of ``split`` as one TorchRec batch.

    Returns a ``Batch`` with ``dense_features`` ``[B, num_dense]`` float32, ``sparse_features`` a
    ``KeyedJaggedTensor`` over ``keys`` (int64 values, int32 lengths ``[len(keys) * B]``) and
    ``labels`` ``[B]`` float32.
    """
    raw = split.read(positions)
    b = len(raw.labels)
    layout = {f.name: f for f in split.layout}
    features = [layout[key] for key in keys]
    per_key = [b * f.bag_size if f.bag_size is not None else len(raw.bags[f.name][1]) for f in features]
    values = np.empty(sum(per_key), np.int64)
    at = 0
    for feature, count in zip(features, per_key):  # one strided copy (and widening) per feature
        target = values[at : at + count]
        if feature.width == 0:
            target[:] = raw.bags[feature.name][1]
        elif feature.synthesised > 1:
            synthesise_bags(raw.sparse[:, feature.column], feature.cardinality, feature.synthesised,
                            feature.table, out=target.reshape(b, feature.synthesised))
        else:
            target.reshape(b, feature.width)[...] = raw.sparse[:, feature.column : feature.column + feature.width]
        at += count
    if all(f.bag_size == 1 for f in features):
        lengths = split.lengths_of_ones(len(keys) * b)
    else:
        lengths = torch.from_numpy(np.concatenate(
            [np.full(b, f.bag_size, np.int32) if f.bag_size is not None else raw.bags[f.name][0].astype(np.int32)
             for f in features]))
    kjt = KeyedJaggedTensor(keys=keys, values=torch.from_numpy(values), lengths=lengths, length_per_key=per_key)
    dense = torch.from_numpy(raw.dense) if raw.dense.shape[1] else torch.ones(b, 1)
    return Batch(dense_features=dense, sparse_features=kjt, labels=torch.from_numpy(raw.labels).float())


def rank_slice(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[start, end)`` of a global batch of ``rows`` rows split
    as evenly as possible over ``world`` ranks (sizes differ by at most one)."""
    return rank * rows // world, (rank + 1) * rows // world


def rank_share(positions: Rows, rank: int, world: int, pad: bool) -> Rows | None:
    """Rank ``rank``'s positions of one global batch; None when the batch has fewer rows than ranks
    (unless ``pad``: then one row each, the last row for ranks past the end)."""
    if world == 1:
        return positions
    if isinstance(positions, slice):
        n, first = positions.stop - positions.start, positions.start
        if n < world:
            return slice(first + min(rank, n - 1), first + min(rank, n - 1) + 1) if pad else None
        start, end = rank_slice(n, rank, world)
        return slice(first + start, first + end)
    if len(positions) < world:
        return positions[min(rank, len(positions) - 1) :][:1] if pad else None
    start, end = rank_slice(len(positions), rank, world)
    return positions[start:end]


def batch_positions(split: CTRSplit, batch_size: int, seed: int | None = None, rank: int = 0, world: int = 1,
                    pad: bool = False) -> Iterator[Rows]:
    """This rank's positions of each global batch of one pass over ``split`` (see :func:`iter_batches`)."""
    for positions in split.order.batches(len(split), batch_size, seed):
        share = rank_share(positions, rank, world, pad)
        if share is None:
            return
        yield share


def iter_batches(
    split: CTRSplit,
    batch_size: int,
    keys: list[str],
    seed: int | None = None,
    rank: int = 0,
    world: int = 1,
    pad: bool = False,
    workers: int = 0,
) -> Iterator[Batch]:
    """Batches over one pass of ``split``: in the split's shuffle order with ``seed`` (see
    :mod:`dlrs_bench.data.order`), in order without.

    Global batches hold ``batch_size`` rows (the last one may be smaller). With ``world > 1`` this
    yields rank ``rank``'s :func:`rank_slice` of each global batch, and reads only those rows. A
    global batch with fewer rows than ranks cannot give every rank a row (TorchRec needs at least
    one per rank): it is skipped, or with ``pad`` every rank gets one row (the last row for ranks
    past the end; callers drop those, see :func:`global_batch_rows`). With ``workers`` > 0 that many
    threads read and assemble batches ahead (numpy and the reads release the GIL), still in order.
    """
    shares = batch_positions(split, batch_size, seed, rank, world, pad)
    if workers <= 0:
        yield from (make_batch(split, share, keys) for share in shares)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="dlrs-bench-read") as pool:
        yield from in_order(pool, make_batch, ((split, share, keys) for share in shares), 2 * workers)


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


def prefetch(batches: Iterator[Batch], device: torch.device, depth: int = 2, copy: bool = True
             ) -> Iterator[Batch]:
    """``batches`` built by a background thread, ``depth`` ahead, in pinned memory, and with
    ``copy`` moved to the CUDA ``device`` there (else left pinned on the host for a consumer that
    copies them itself, such as TorchRec's train pipelines).

    Reading and assembling a batch (reads release the GIL) and the host-to-device copy (from pinned
    memory, asynchronous) overlap with the training step. Errors in the thread are raised here;
    closing the iterator stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for batch in batches:
                batch = batch.pin_memory()
                if copy:
                    batch = batch.to(device, non_blocking=True)
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
