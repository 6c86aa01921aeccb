"""Raw dataset files → the binary cache, streaming in chunks on every core with bounded memory.

Pipeline: each input file is read in chunks of ``chunk_rows`` lines, parsed by a pool of worker
processes (a few chunks in flight at a time, so memory does not grow with the input), and
appended to a :class:`~dlrs_bench.data.cache.CacheWriter`; then the dense columns get their
global transform (if any) and every sparse column is renumbered, one column at a time.
A format (Criteo, Avazu, MovieLens) only supplies a line parser and its column names.
"""

from __future__ import annotations

import concurrent.futures as futures
import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from dlrs_bench.data.cache import CacheWriter, Manifest, ShuffleRecord, describe_inputs, now
from dlrs_bench.data.shuffle import METHOD as SHUFFLE_METHOD
from dlrs_bench.data.shuffle import shuffle_rows
from dlrs_bench.data.splits import train_rows
from dlrs_bench.errors import UserInputError
from dlrs_bench.lifecycle import child_setup, children_start_deaf

#: Called with (rows written so far, seconds elapsed).
ProgressFn = Callable[[int, float], None]


class PrepareOptions(BaseModel):
    """Conventions of a preparation, recorded in the manifest (``options``)."""

    model_config = ConfigDict(extra="forbid")

    numbering: Literal["dlrm", "torchrec", "modulo"] = Field(
        "dlrm",
        description="dlrm: contiguous ids over the observed values in sorted order; torchrec: ids from 2 in "
        "order of first appearance, rare ids -> 1; modulo: id = value mod max_rows (no vocabulary pass)",
    )
    max_rows: PositiveInt | None = Field(None, description="cap per table: value mod max_rows first (MLPerf: 40M)")
    frequency_threshold: int = Field(0, ge=0, description="values seen fewer times share one 'rare' id")
    on_error: Literal["error", "skip"] = Field("error", description="bad lines: stop with file:line, or skip and count")
    chunk_rows: PositiveInt = Field(65_536, description="lines per parsed chunk (memory ≈ workers × chunk)")
    shuffle_seed: int | None = Field(None, description="shuffle the training rows once with this seed (MLPerf)")
    workers: PositiveInt = Field(default_factory=lambda: len(os.sched_getaffinity(0)))

    @model_validator(mode="after")
    def _modulo_needs_cap(self) -> PrepareOptions:
        if self.numbering == "modulo" and self.max_rows is None:
            raise ValueError("numbering 'modulo' needs max_rows")
        return self


@dataclass
class ParsedChunk:
    """One parsed chunk: ``labels`` [n] u8, ``dense`` [n, num_dense] f32, ``sparse`` [n, F] int64 raw values."""

    labels: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, problem), lines dropped


class RawFormat(Protocol):
    """What a raw format supplies to the pipeline."""

    dataset: str
    default_split: str  # the split protocol its datasets load with (decides what --shuffle-seed permutes)
    dense_names: list[str]
    sparse_names: list[str]
    header: bool  # the first line of each file is a header to skip

    def check_header(self, first_line: str) -> str | None:
        """What is wrong with a file's first line (when ``header``), or None."""
        ...

    def parse(self, lines: list[str], first_line: int) -> ParsedChunk:
        """Parse ``lines`` (``first_line`` = 1-based line number of ``lines[0]``); a bad line is
        reported in ``bad`` and left out."""
        ...

    def finish_dense(self, dense: np.ndarray) -> dict[str, Any]:
        """Global dense transform in place over the whole ``[N, num_dense]`` memmap; returns facts
        for the manifest."""
        ...


def read_chunks(path: Path, chunk_rows: int, header: bool) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of ``path``, ``chunk_rows`` lines at a time."""
    try:
        f = path.open("r", encoding="utf-8", errors="replace", newline="")  # bad bytes → U+FFFD → a bad value
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        line_no = 1
        if header:
            f.readline()
            line_no = 2
        while True:
            lines = list(itertools.islice(f, chunk_rows))
            if not lines:
                return
            yield line_no, lines
            line_no += len(lines)


def prepare(
    fmt: RawFormat, raw: list[Path], out: Path, options: PrepareOptions, progress: ProgressFn | None = None
) -> Manifest:
    """Prepare ``raw`` files (in order) into the cache folder ``out``; returns its manifest."""
    for path in raw:
        if not path.is_file():
            raise UserInputError(f"{path}: no such file")
        if fmt.header:
            with path.open("r", encoding="utf-8", errors="replace") as f:
                problem = fmt.check_header(f.readline())
            if problem:
                raise UserInputError(f"{path}:1: {problem}")
    if options.shuffle_seed is not None and fmt.default_split == "last-day" and len(raw) < 2:
        raise UserInputError(f"--shuffle-seed: {fmt.dataset} trains on every day but the last, so one input file "
                             "has no training rows to shuffle; give the days in order (day_0 ... day_23)")
    started = time.perf_counter()
    skipped: list[str] = []
    bad_count = 0
    parts: list[int] = []
    with CacheWriter(out, len(fmt.dense_names), len(fmt.sparse_names)) as writer, \
            parser_pool(options.workers) as pool:
        for path in raw:
            before = writer.rows
            pending: list[futures.Future[ParsedChunk]] = []
            chunks = read_chunks(path, options.chunk_rows, fmt.header)
            while True:
                while len(pending) < 2 * options.workers:
                    nxt = next(chunks, None)
                    if nxt is None:
                        break
                    pending.append(pool.submit(fmt.parse, nxt[1], nxt[0]))
                if not pending:
                    break
                chunk = pending.pop(0).result()
                if chunk.bad:
                    bad_count += len(chunk.bad)
                    first_line, problem = chunk.bad[0]
                    if options.on_error == "error":
                        raise UserInputError(f"{path}:{first_line}: {problem}")
                    skipped.extend(f"{path}:{line}: {msg}" for line, msg in chunk.bad[: max(0, 5 - len(skipped))])
                if len(chunk.labels):
                    writer.append(chunk.labels, chunk.dense, chunk.sparse)
                if progress:
                    progress(writer.rows, time.perf_counter() - started)
            if writer.rows == before:
                raise UserInputError(f"{path}: no data rows")
            parts.append(writer.rows - before)

        sparse = writer.sparse_column_pass()
        cardinalities = [renumber(sparse, j, options) for j in range(sparse.shape[1])]
        dense = (np.memmap(writer.tmp / "dense.f32", dtype=np.float32, mode="r+",
                           shape=(writer.rows, len(fmt.dense_names))) if fmt.dense_names
                 else np.zeros((writer.rows, 0), np.float32))  # (a memmap of no bytes would write one)
        dense_facts = fmt.finish_dense(dense)
        labels = np.memmap(writer.tmp / "labels.u8", dtype=np.uint8, mode="r", shape=(writer.rows,))
        ctr = float(labels.mean(dtype=np.float64))
        del sparse, dense, labels
        shuffled = None
        if options.shuffle_seed is not None:  # the training rows, once (MLPerf); evaluation rows stay in order
            rows = train_rows(writer.rows, parts, fmt.default_split)
            shuffle_rows(writer.tmp, [("labels.u8", 1), ("dense.f32", 4 * len(fmt.dense_names)),
                                      ("sparse.i64", 8 * len(fmt.sparse_names))], rows, options.shuffle_seed)
            shuffled = ShuffleRecord(seed=options.shuffle_seed, rows=rows, method=SHUFFLE_METHOD)
        manifest = Manifest(
            dataset=fmt.dataset,
            rows=writer.rows,
            num_dense=len(fmt.dense_names),
            features=dict(zip(fmt.sparse_names, cardinalities)),
            sparse_dtype="int32" if max(cardinalities) < 2**31 else "int64",
            ctr=ctr,
            parts=parts,
            options={**options.model_dump(exclude={"workers", "chunk_rows", "shuffle_seed"}), **dense_facts},
            inputs=describe_inputs(raw),
            skipped={"policy": options.on_error, "count": bad_count, "examples": skipped},
            created_at=now(),
            shuffle=shuffled,
        )
        writer.commit(manifest, manifest.sparse_dtype)
    return manifest


@contextmanager
def parser_pool(workers: int) -> Iterator[futures.Executor]:
    """``workers`` parser processes (one: this process). They die with this process, even one killed
    with SIGKILL, and leave Ctrl-C to it; leaving the block by an error or a signal drops the chunks
    not yet started and waits for those being parsed (a few seconds at most)."""
    if workers == 1:
        yield InlineExecutor()
        return
    pool = futures.ProcessPoolExecutor(max_workers=workers, initializer=child_setup)
    try:
        with children_start_deaf():
            pool.submit(int).result()  # start the workers now (fork: all of them), deaf to Ctrl-C until set up
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # (terminating a worker that sends a result would hang)
        raise
    pool.shutdown(wait=True)


class InlineExecutor(futures.Executor):
    """Runs each task at submit time in this process (one worker: no pool, no pickling)."""

    def __init__(self, max_workers: int = 1) -> None:
        del max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(e)
        return future


#: Rows per block of the vocabulary and mapping passes (memory: a block plus the vocabulary).
BLOCK_ROWS = 1 << 22


def renumber(sparse: np.ndarray, column: int, options: PrepareOptions) -> int:
    """Renumber one column of raw values in place by ``options.numbering``; returns its cardinality.

    Works block by block: memory grows with the column's vocabulary (bounded by ``max_rows``), not
    with the number of rows.
    """
    n = len(sparse)

    def block(lo: int) -> np.ndarray:
        values = np.asarray(sparse[lo : lo + BLOCK_ROWS, column])
        return values % options.max_rows if options.max_rows else values

    if options.numbering == "modulo":
        for lo in range(0, n, BLOCK_ROWS):
            sparse[lo : lo + BLOCK_ROWS, column] = block(lo)
        return int(options.max_rows)
    unique, counts, first = vocabulary((block(lo), lo) for lo in range(0, n, BLOCK_ROWS))
    keep = counts >= max(options.frequency_threshold, 1)
    if options.numbering == "torchrec":  # 1 = rare, kept values from 2 in order of first appearance
        kept = np.flatnonzero(keep)[np.argsort(first[keep], kind="stable")]
        ids = np.ones(len(unique), dtype=np.int64)
        ids[kept] = np.arange(2, 2 + len(kept))
        cardinality = 2 + len(kept)
    else:  # dlrm: sorted values; with a threshold, rare values share id 0 and the others start at 1
        shift = 1 if options.frequency_threshold > 1 else 0
        ids = np.where(keep, np.cumsum(keep) - 1 + shift, 0)
        cardinality = int(keep.sum()) + shift
    for lo in range(0, n, BLOCK_ROWS):
        sparse[lo : lo + BLOCK_ROWS, column] = ids[np.searchsorted(unique, block(lo))]
    return int(cardinality)


def vocabulary(blocks: Iterator[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct values, their counts, the row of their first appearance) over ``blocks`` of
    (values, first row number), merged block by block."""
    unique = counts = first = np.zeros(0, dtype=np.int64)
    for values, offset in blocks:
        u, index, c = np.unique(values, return_index=True, return_counts=True)
        merged = np.concatenate([unique, u])
        order = np.argsort(merged, kind="stable")
        merged = merged[order]
        starts = np.flatnonzero(np.r_[True, merged[1:] != merged[:-1]])
        counts = np.add.reduceat(np.concatenate([counts, c])[order], starts)
        first = np.minimum.reduceat(np.concatenate([first, index + offset])[order], starts)
        unique = merged[starts]
    return unique, counts, first
