"""MLPerf DLRM-DCNv2's materialised multi-hot Criteo 1TB → the binary cache
(``dlrs-bench data prepare criteo-tb --format mlperf-multihot --raw DIR``).

The input is the folder MLPerf Training's reference (``recommendation_v2/torchrec_dlrm``) trains on:
TorchRec's Criteo 1TB preprocessing (``process_Criteo_1TB_Click_Logs_dataset.sh``: contiguous ids,
days 0-22 shuffled together once with ``--random_seed 0``, the last day in order), then
``scripts/materialize_synthetic_multihot_dataset.py``. For each day ``i`` = 0 … k−1 (24 days in full)::

    day_{i}_labels.npy            [rows_i, 1]       int32 in {0, 1}
    day_{i}_dense.npy             [rows_i, 13]      float32 (TorchRec's log transform, kept as is)
    day_{i}_sparse_multi_hot.npz  "0.npy" … "25.npy": [rows_i, size_t] int32, ids in [0, n_t)

with size_t MLPerf's bag sizes ``3,2,1,2,6,1,1,1,1,7,3,8,1,6,9,5,1,1,1,12,100,27,10,3,1,1`` (the
first id of a bag is the row's one-hot id) and n_t the table sizes the script was given
(``--num_embeddings_per_feature``: TorchRec's Terabyte sizes with the 40M cap). ``np.savez`` stores its
members uncompressed, so every array is located by its ``.npy`` header (inside the zip for the bags)
and read in row ranges in place, as MLPerf's own loader does (``data/multi_hot_criteo.py``).

Nothing is loaded whole: chunks of ``chunk_rows`` rows are read with one ``pread`` per array (no
mapping), checked, laid out row-major (``[rows, 214]`` int32: each table's ``size_t`` columns in turn)
and appended to a :class:`~dlrs_bench.data.cache.CacheWriter`; host memory is a few chunks. The
manifest records the bags as MLPerf's (:class:`~dlrs_bench.data.cache.MultiHotRecord`) and the rows
as shuffled by MLPerf's preprocessing, so ``shuffle: auto`` reads them in order, as the reference does.
"""

from __future__ import annotations

import os
import re
import struct
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from dlrs_bench.data.ahead import in_order
from dlrs_bench.data.cache import (
    CacheWriter,
    Manifest,
    MultiHotRecord,
    ShuffleRecord,
    describe_inputs,
    now,
    pread_into,
)
from dlrs_bench.data.criteo import DENSE, SPARSE
from dlrs_bench.data.prepare import ProgressFn
from dlrs_bench.data.shapes import MLPERF_MATERIALISED, MLPERF_MULTI_HOT, TERABYTE_CARDINALITIES
from dlrs_bench.data.splits import train_rows
from dlrs_bench.errors import UserInputError

#: The three files of day ``i`` (MLPerf's names).
DAY_FILES = {"labels": "day_{i}_labels.npy", "dense": "day_{i}_dense.npy", "sparse": "day_{i}_sparse_multi_hot.npz"}
DAY_PATTERN = re.compile(r"day_(\d+)_(labels\.npy|dense\.npy|sparse_multi_hot\.npz)")
MADE_BY = ("MLPerf Training recommendation_v2/torchrec_dlrm: TorchRec's Criteo 1TB preprocessing, then "
           "scripts/materialize_synthetic_multihot_dataset.py")
#: How MLPerf's preprocessing orders the training rows (recorded, not checked: the files cannot tell).
SHUFFLED_BY = ("MLPerf's preprocessing (TorchRec shuffle_preproc_criteo --random_seed 0): the training days shuffled "
               "together once, the last day in order; taken from the input files as they are")


class MultiHotPrepareOptions(BaseModel):
    """Options of a preparation from MLPerf's materialised files."""

    model_config = ConfigDict(extra="forbid")

    table_sizes: list[PositiveInt] = Field(
        default_factory=lambda: list(TERABYTE_CARDINALITIES),
        description="rows per table (the materialise script's --num_embeddings_per_feature); every id must be below")
    chunk_rows: PositiveInt = Field(65_536, description="rows per chunk (memory ≈ 2 × workers chunks of 909 B a row)")
    workers: PositiveInt = Field(default_factory=lambda: len(os.sched_getaffinity(0)),
                                 description="threads reading and checking chunks ahead")

    @field_validator("table_sizes")
    @classmethod
    def _one_per_table(cls, sizes: list[int]) -> list[int]:
        if len(sizes) != len(SPARSE):
            raise ValueError(f"expected {len(SPARSE)} table sizes (one per Criteo table), got {len(sizes)}")
        if max(sizes) >= 2**31:
            raise ValueError("table sizes must be below 2^31 (MLPerf's ids are int32)")
        return sizes


@dataclass(frozen=True)
class Array:
    """An array stored in ``path`` at byte ``offset``: ``shape`` (rows first), C order, ``dtype``;
    ``name`` names it in messages (``path``, or ``path`` plus the zip member)."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    name: str

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.shape[1:]))

    def read(self, fd: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` (one pread of file descriptor ``fd`` of :attr:`path`)."""
        out = np.empty((hi - lo, *self.shape[1:]), self.dtype)
        got = pread_into(fd, out, self.offset + lo * self.row_bytes)
        if got != out.nbytes:
            raise UserInputError(f"{self.name}: ends early (read {got:,} of {out.nbytes:,} bytes at row {lo:,})")
        return out


def npy_array(path: Path, offset: int = 0, name: str | None = None) -> Array:
    """The array of the ``.npy`` data starting at byte ``offset`` of ``path`` (its header parsed, no data
    read); the file must hold all of it."""
    name = name or str(path)
    with path.open("rb") as f:
        f.seek(offset)
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0) else
                                     np.lib.format.read_array_header_2_0(f))
        except ValueError as e:
            raise UserInputError(f"{name}: not a .npy array ({e})") from None
        data = f.tell()
    if fortran and len(shape) > 1:
        raise UserInputError(f"{name}: stored in Fortran order; MLPerf's arrays are C order (rows contiguous)")
    array = Array(path, data, tuple(shape), np.dtype(dtype), name)
    size = path.stat().st_size
    if data + array.row_bytes * (shape[0] if shape else 1) > size:
        raise UserInputError(f"{name}: truncated: its header says {shape} {dtype}, the file ends at byte {size:,}")
    return array


def npz_arrays(path: Path) -> dict[str, Array]:
    """The members of the ``.npz`` ``path`` (``np.savez``: uncompressed) by name without ``.npy``, each
    located inside the zip (its local header read for the data's start) and parsed."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UserInputError(f"{path}: not a .npz archive ({e})") from None
    arrays = {}
    with path.open("rb") as f:
        for info in infos:
            member = f"{path}[{info.filename}]"
            if not info.filename.endswith(".npy"):
                raise UserInputError(f"{member}: not a .npy member")
            if info.compress_type != zipfile.ZIP_STORED:
                raise UserInputError(f"{member}: compressed (np.savez_compressed); MLPerf's files are written by "
                                     "np.savez, uncompressed, so that rows can be read in place")
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise UserInputError(f"{member}: broken zip entry (no local header at byte {info.header_offset:,})")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            arrays[info.filename.removesuffix(".npy")] = npy_array(
                path, info.header_offset + 30 + name_len + extra_len, member)
    return arrays


@dataclass(frozen=True)
class Day:
    """One day's arrays, checked against each other and MLPerf's layout."""

    index: int
    labels: Array
    dense: Array
    tables: list[Array]  # [rows, size_t] int32 each, in table order

    @property
    def rows(self) -> int:
        return self.labels.shape[0]

    @property
    def files(self) -> list[Path]:
        return [self.labels.path, self.dense.path, self.tables[0].path]


def _expect(array: Array, dtype: type, shapes: list[tuple[int, ...]], what: str) -> None:
    """An input error naming ``array`` unless its dtype is ``dtype`` and its shape one of ``shapes``."""
    if array.dtype != np.dtype(dtype):
        raise UserInputError(f"{array.name}: dtype {array.dtype}, expected {np.dtype(dtype)} ({what})")
    if array.shape not in shapes:
        expected = " or ".join(str(list(s)) for s in shapes)
        raise UserInputError(f"{array.name}: shape {list(array.shape)}, expected {expected} ({what})")


def open_day(raw: Path, index: int) -> Day:
    """Day ``index`` of the folder ``raw``, its headers checked: dtypes, shapes, row counts, and bag sizes
    equal to MLPerf's (a different size is another dataset, not MLPerf's)."""
    paths = {part: raw / pattern.format(i=index) for part, pattern in DAY_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise UserInputError(f"{path}: missing (each day needs {', '.join(DAY_FILES.values())})")
    labels = npy_array(paths["labels"])
    rows = labels.shape[0] if labels.shape else 0
    _expect(labels, np.int32, [(rows, 1), (rows,)], "labels 0/1, one per row")
    if rows == 0:
        raise UserInputError(f"{labels.name}: no rows")
    dense = npy_array(paths["dense"])
    _expect(dense, np.float32, [(rows, len(DENSE))], f"{len(DENSE)} dense features per row, as many rows as the labels")
    members = npz_arrays(paths["sparse"])
    wanted = [str(t) for t in range(len(SPARSE))]
    if sorted(members, key=lambda m: (len(m), m)) != wanted:
        missing, extra = sorted(set(wanted) - set(members), key=int), sorted(set(members) - set(wanted))
        raise UserInputError(f"{paths['sparse']}: members {', '.join(f'{m}.npy' for m in missing + extra)} "
                             f"{'missing' if missing else 'unexpected'}; expected 0.npy ... {len(SPARSE) - 1}.npy, one "
                             "per table")
    tables = [members[m] for m in wanted]
    for t, (table, size) in enumerate(zip(tables, MLPERF_MULTI_HOT)):
        width = table.shape[1] if len(table.shape) == 2 else size  # a 2-D array of other bags: the message below
        _expect(table, np.int32, [(rows, width)], f"table {t}: one bag of ids per row, as many rows as the labels")
        if width != size:
            raise UserInputError(
                f"{table.name}: bags of {table.shape[1]} ids, MLPerf's table {t} has {size} (sizes "
                f"{','.join(map(str, MLPERF_MULTI_HOT))}); this is not MLPerf's materialised multi-hot dataset")
    return Day(index, labels, dense, tables)


def find_days(raw: Path) -> list[int]:
    """Day numbers 0 … k−1 of the folder ``raw`` (k ≥ 2: the last day is evaluated); a gap or a missing file
    is an error naming it."""
    if not raw.is_dir():
        raise UserInputError(f"{raw}: not a folder (--format mlperf-multihot reads the folder of MLPerf's day files)")
    found = {int(m.group(1)) for p in raw.iterdir() if (m := DAY_PATTERN.fullmatch(p.name))}
    if not found:
        raise UserInputError(f"{raw}: no MLPerf multi-hot day files ({', '.join(DAY_FILES.values())})")
    for i in range(max(found) + 1):
        for pattern in DAY_FILES.values():
            if not (raw / pattern.format(i=i)).is_file():
                raise UserInputError(f"{raw / pattern.format(i=i)}: missing (days 0 ... {max(found)} are there)")
    if max(found) < 1:
        raise UserInputError(f"{raw}: one day only; the last day is the evaluation day, so at least two are needed")
    return list(range(max(found) + 1))


def read_chunk(day: Day, fds: dict[Path, int], lo: int, hi: int, table_sizes: list[int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``[lo, hi)`` of ``day``: labels ``[n]`` uint8, dense ``[n, 13]`` float32, and the bags row-major
    ``[n, 214]`` int32 (table t's ids in its ``size_t`` columns); labels other than 0/1 and ids outside
    ``[0, table_sizes[t])`` are errors naming the file and the row."""
    labels = day.labels.read(fds[day.labels.path], lo, hi).reshape(-1)
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise UserInputError(f"{day.labels.name}: row {lo + bad[0]:,}: label {labels[bad[0]]}, expected 0 or 1")
    sparse = np.empty((hi - lo, sum(MLPERF_MULTI_HOT)), np.int32)
    column = 0
    for t, (table, n) in enumerate(zip(day.tables, table_sizes)):
        ids = table.read(fds[table.path], lo, hi)
        if ids.min() < 0 or ids.max() >= n:
            row, column = (int(i[0]) for i in np.nonzero((ids < 0) | (ids >= n)))
            raise UserInputError(f"{table.name}: row {lo + row:,}: id {ids[row, column]} outside table {t}'s "
                                 f"{n:,} rows (--table-sizes)")
        sparse[:, column : column + table.shape[1]] = ids
        column += table.shape[1]
    return labels.astype(np.uint8), day.dense.read(fds[day.dense.path], lo, hi), sparse


def chunks(days: list[Day], chunk_rows: int) -> Iterator[tuple[Day, int, int]]:
    """(day, first row, end row) of every chunk, day by day."""
    for day in days:
        for lo in range(0, day.rows, chunk_rows):
            yield day, lo, min(lo + chunk_rows, day.rows)


def prepare_mlperf_multihot(raw: Path, out: Path, options: MultiHotPrepareOptions,
                            progress: ProgressFn | None = None) -> Manifest:
    """Copy MLPerf's materialised multi-hot days in the folder ``raw`` into the cache folder ``out``
    (every header checked before anything is written); returns its manifest."""
    CacheWriter.check_out(out)
    days = [open_day(raw, i) for i in find_days(raw)]
    files = [path for day in days for path in day.files]
    started = time.perf_counter()
    positives = 0
    with ExitStack() as stack:
        fds = {path: os.open(path, os.O_RDONLY) for path in files}
        stack.callback(lambda: [os.close(fd) for fd in fds.values()])
        writer = stack.enter_context(CacheWriter(out, len(DENSE), sum(MLPERF_MULTI_HOT), ids_dtype="int32"))
        pool = stack.enter_context(ThreadPoolExecutor(options.workers, thread_name_prefix="dlrs-bench-mlperf"))
        calls = ((day, fds, lo, hi, options.table_sizes) for day, lo, hi in chunks(days, options.chunk_rows))
        for labels, dense, sparse in in_order(pool, read_chunk, calls, 2 * options.workers):
            writer.append(labels, dense, sparse)
            positives += int(labels.sum(dtype=np.int64))
            if progress:
                progress(writer.rows, time.perf_counter() - started)
        parts = [day.rows for day in days]
        trained = train_rows(writer.rows, parts, "last-day")
        manifest = Manifest(
            dataset="criteo-tb", rows=writer.rows, num_dense=len(DENSE),
            features=dict(zip(SPARSE, options.table_sizes)), sparse_dtype="int32", ctr=positives / writer.rows,
            parts=parts,
            options={"format": "mlperf-multihot",
                     "dense_transform": "as stored in day_{i}_dense.npy (TorchRec's Criteo preprocessing)",
                     "numbering": "as stored (MLPerf's materialised ids, each below its table size)"},
            inputs=describe_inputs(files),
            skipped={"policy": "error", "count": 0, "examples": []},
            created_at=now(),
            bags={name: size for name, size in zip(SPARSE, MLPERF_MULTI_HOT) if size != 1},
            shuffle=ShuffleRecord(seed=0, rows=trained, method=SHUFFLED_BY),
            multi_hot=MultiHotRecord(source=MLPERF_MATERIALISED, sizes=list(MLPERF_MULTI_HOT),
                                     files=", ".join(DAY_FILES.values()), made_by=MADE_BY),
        )
        writer.commit(manifest, manifest.sparse_dtype)
    return manifest
