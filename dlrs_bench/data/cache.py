"""The binary cache that ``dlrs-bench data prepare`` writes and every dataset reads.

A cache is a folder::

    manifest.json                 what is inside (see :class:`Manifest`), written last
    labels.u8                     [N]            uint8 in {0, 1}
    dense.f32                     [N, num_dense] float32 (already transformed)
    sparse.i32|i64                [N, W]         ids in [0, cardinality), row-major; feature f holds
                                                 ``bags[f]`` columns (1 = one-hot, the default)
    bags/<feature>.offsets.i64    [N + 1]        variable-length bags (``bags[f] == 0``): row i's ids are
    bags/<feature>.values.i32|i64 [total ids]    ``values[offsets[i]:offsets[i + 1]]``

Arrays are raw little-endian C-order files. Rows are read either as contiguous ranges (one
``pread`` per file into the batch's buffers: nothing is mapped, so host memory holds only the
batch) or gathered by index from read-only memory maps. A cache is built in a sibling temporary
folder and renamed into place only once the manifest is written, so an interrupted preparation
never leaves a folder that reads as a valid cache. Opening checks every file's size against the
manifest.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, model_validator

from dlrs_bench.errors import UserInputError
from dlrs_bench.lifecycle import remove_stale

FORMAT = "dlrs-bench-cache"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: one-hot features only, no fixed splits, never shuffled
M = TypeVar("M", bound=BaseModel)


#: Why a cache can hold what no preparation writes (the end of every :class:`DamagedCacheError`).
DAMAGED = "the file changed since `dlrs-bench data prepare`, or the cache is damaged"


class DamagedCacheError(UserInputError):
    """A cache file holds a value that no prepared cache holds."""


class InputFile(BaseModel):
    path: str
    bytes: int
    sha256: str


class ShuffleRecord(BaseModel):
    """Rows ``[0, rows)`` were permuted uniformly at random with ``seed`` when the cache was prepared
    (MLPerf: the training data is shuffled once, then read in order)."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    rows: int
    method: str


class MultiHotRecord(BaseModel):
    """Where the stored multi-hot bags of a cache come from (written by
    :mod:`dlrs_bench.data.mlperf_multihot`, the one preparation that copies bags made elsewhere)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["mlperf-materialised"]  # dlrs_bench.data.shapes.MLPERF_MATERIALISED
    sizes: list[int]  # ids per bag of each table, in feature order (checked against the input's arrays)
    files: str  # the input files the bags were read from
    made_by: str  # the program that wrote those files


SPLIT_NAMES = ("train", "val", "test")


class Manifest(BaseModel):
    """The ``manifest.json`` of a cache.

    Its meaning is checked when it is read, not only its shape: positive table sizes, a known id type,
    input parts adding up to the rows, and fixed splits that are ordered, disjoint, non-empty row ranges
    within the rows. ``identity`` is a digest of what the cache holds (:meth:`content_identity`),
    recorded when it is written and checked whenever it is opened.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    version: int = VERSION
    dataset: str
    rows: PositiveInt
    num_dense: NonNegativeInt
    features: dict[str, int]  # name -> cardinality (rows of its table), in column order
    sparse_dtype: Literal["int32", "int64"]
    ctr: float = Field(ge=0, le=1)
    parts: list[PositiveInt]  # rows per input file (per day for Criteo Terabyte), in order
    options: dict[str, Any]  # the conventions used (transform, numbering, caps, ...)
    inputs: list[InputFile]
    skipped: dict[str, Any]  # {"policy": "error"|"skip", "count": int, "examples": [...]}
    created_at: str
    bags: dict[str, int] = {}  # ids per row of stored multi-hot features (0 = variable length); absent = 1
    splits: dict[str, tuple[int, int]] | None = None  # fixed [start, stop) row ranges of train / val / test
    shuffle: ShuffleRecord | None = None
    info: dict[str, Any] = {}  # facts recorded with results (e.g. a synthetic teacher's ceiling)
    multi_hot: MultiHotRecord | None = None  # the stored bags' provenance, where they were copied from elsewhere
    identity: str | None = None  # content_identity() when written (absent in caches of earlier versions)

    @model_validator(mode="after")
    def _meaning(self) -> Manifest:
        if sum(self.parts) != self.rows:
            raise ValueError(f"parts: {self.parts} add up to {sum(self.parts):,} rows, but rows says {self.rows:,}")
        for name, cardinality in self.features.items():
            if cardinality < 1:
                raise ValueError(f"features.{name}: a table of {cardinality} rows; every table needs at least one")
        if self.sparse_dtype == "int32" and max(self.features.values(), default=0) > 2**31:
            raise ValueError(f"sparse_dtype: int32 cannot hold the ids of a table of {max(self.features.values()):,} "
                             "rows")
        unknown = sorted(set(self.bags) - set(self.features))
        if unknown:
            raise ValueError(f"bags: {unknown[0]!r} is not one of the features")
        if any(w < 0 for w in self.bags.values()):
            raise ValueError("bags: ids per row must be 0 (variable length) or more")
        if self.splits is not None:
            self._check_splits(self.splits)
        if self.shuffle is not None and self.shuffle.rows > self.rows:
            raise ValueError(f"shuffle: {self.shuffle.rows:,} shuffled rows of {self.rows:,}")
        return self

    def _check_splits(self, splits: dict[str, tuple[int, int]]) -> None:
        """Fixed splits: exactly train, val and test, each a non-empty [start, stop) within the rows, in that
        order and disjoint (training on evaluation rows, or evaluating on none, would be a wrong result)."""
        if sorted(splits) != sorted(SPLIT_NAMES):
            raise ValueError(f"splits: expected {', '.join(SPLIT_NAMES)}, got {', '.join(splits) or 'none'}")
        end = 0
        for name in SPLIT_NAMES:
            start, stop = splits[name]
            if not 0 <= start < stop <= self.rows:
                raise ValueError(f"splits.{name}: [{start}, {stop}) is not a non-empty row range within the "
                                 f"{self.rows:,} rows")
            if start < end:
                raise ValueError(f"splits.{name}: starts at row {start:,}, before the previous split ends "
                                 f"({end:,}): splits must be in the order {', '.join(SPLIT_NAMES)} and disjoint")
            end = stop

    def content_identity(self, file_bytes: dict[str, int]) -> str:
        """A digest (16 hex digits) of what the cache holds: this manifest without the time it was written,
        where its inputs were (their sizes and SHA-256 stay) and the facts derived from the rows (``info``),
        plus the size of each data file (``file_bytes``: name -> bytes). The same data prepared again, or
        copied elsewhere, has the same identity; other rows, tables or options have another."""
        content = self.model_dump(mode="json", exclude={"created_at", "identity", "info"})
        content["inputs"] = [{"bytes": i.bytes, "sha256": i.sha256} for i in self.inputs]
        content["files"] = dict(sorted(file_bytes.items()))
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def width(self, feature: str) -> int:
        """Columns of ``feature`` in ``sparse`` (0: a variable-length bag kept in ``bags/``)."""
        return self.bags.get(feature, 1)

    @property
    def sparse_columns(self) -> int:
        return sum(self.width(f) for f in self.features)

    @property
    def jagged(self) -> list[str]:
        """Features with variable-length bags."""
        return [f for f in self.features if self.width(f) == 0]


def sha256_of(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def describe_inputs(paths: list[Path]) -> list[InputFile]:
    return [InputFile(path=str(p), bytes=p.stat().st_size, sha256=sha256_of(p)) for p in paths]


def _suffix(dtype: str) -> str:
    return {"int32": "i32", "int64": "i64"}[dtype]


class CacheWriter:
    """Appends row chunks to a cache under construction; :meth:`commit` makes it visible.

    ``sparse_columns`` = W of ``sparse`` (one per one-hot feature, k per k-hot one);
    ``jagged`` names the variable-length features, appended as (lengths, values). Use as a context
    manager: leaving the block without :meth:`commit` (an error, Ctrl-C) deletes the temporary
    folder ``.<name>.partial-<pid>``; one left by a writer that was killed (its pid no longer runs)
    is removed when the next writer of the same ``out`` starts.
    """

    def __init__(self, out: Path, num_dense: int, sparse_columns: int, jagged: tuple[str, ...] = (),
                 ids_dtype: str = "int64") -> None:
        self.out = self.check_out(out)
        prefix = f".{self.out.name}.partial-"
        self.tmp = self.out.parent / f"{prefix}{os.getpid()}"
        if self.out.parent.is_dir():  # what a writer killed before it could clean up left (kill -9)
            remove_stale(self.out.parent, prefix)
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "bags").mkdir(parents=True)
        self.num_dense, self.num_sparse = num_dense, sparse_columns
        self.jagged = tuple(jagged)
        self.rows = 0
        self._ids = {name: 0 for name in self.jagged}  # ids written per jagged feature
        self.ids_dtype = np.dtype(ids_dtype)  # as written; int64 when ids are renumbered before commit
        self._sparse = f"sparse.{_suffix(ids_dtype)}"
        names = ["labels.u8", "dense.f32", self._sparse]
        names += [f"bags/{f}.offsets.i64" for f in self.jagged] + [f"bags/{f}.values.i64" for f in self.jagged]
        self._files = {}
        try:
            for name in names:
                self._files[name] = (self.tmp / name).open("wb")
            for f in self.jagged:
                self._files[f"bags/{f}.offsets.i64"].write(np.zeros(1, np.int64).tobytes())
        except BaseException:
            self.__exit__(None)
            raise

    @staticmethod
    def check_out(out: Path) -> Path:
        """``out`` if a cache can be created there, else a :class:`UserInputError` saying why."""
        out = Path(out)
        if out.exists():
            raise UserInputError(f"{out}: already exists; remove it or choose another --out")
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise UserInputError(f"{parent}: is not a folder, so {out} cannot be created")
        return out

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        for f in self._files.values():
            f.close()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def append(self, labels: np.ndarray, dense: np.ndarray, sparse: np.ndarray,
               bags: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Rows: labels ``[n]`` (0/1), dense ``[n, num_dense]``, sparse ``[n, W]`` int64 ids, and per
        jagged feature (lengths ``[n]``, values ``[sum(lengths)]``)."""
        n = len(labels)
        assert dense.shape == (n, self.num_dense) and sparse.shape == (n, self.num_sparse)
        self._files["labels.u8"].write(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        self._files["dense.f32"].write(np.ascontiguousarray(dense, dtype=np.float32).tobytes())
        self._files[self._sparse].write(np.ascontiguousarray(sparse, dtype=self.ids_dtype).tobytes())
        for name in self.jagged:
            lengths, values = (bags or {})[name]
            assert len(lengths) == n and int(np.sum(lengths)) == len(values)
            ends = self._ids[name] + np.cumsum(lengths, dtype=np.int64)
            self._files[f"bags/{name}.offsets.i64"].write(ends.tobytes())
            self._files[f"bags/{name}.values.i64"].write(np.ascontiguousarray(values, dtype=np.int64).tobytes())
            self._ids[name] += len(values)
        self.rows += n

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def sparse_column_pass(self) -> np.memmap:
        """The raw sparse ids written so far, ``[rows, W]`` int64, writable (for renumbering)."""
        self.flush()
        assert self.ids_dtype == np.int64, "renumbering needs the ids written as int64"
        return np.memmap(self.tmp / "sparse.i64", dtype=np.int64, mode="r+", shape=(self.rows, self.num_sparse))

    def commit(self, manifest: Manifest, sparse_dtype: str) -> Path:
        """Narrow the ids to ``sparse_dtype`` (unless written so), write the manifest, and move the cache
        into place."""
        for f in self._files.values():
            f.close()
        if self.rows == 0:
            raise UserInputError("no rows to write: the input is empty")
        if sparse_dtype == "int32" and self.ids_dtype == np.int64:
            _narrow(self.tmp / "sparse.i64", self.tmp / "sparse.i32")
            for name in self.jagged:
                _narrow(self.tmp / f"bags/{name}.values.i64", self.tmp / f"bags/{name}.values.i32")
        shapes = {**_fixed_files(manifest), **_values_files(self.tmp, manifest)}
        manifest.identity = manifest.content_identity(_file_bytes(shapes))
        (self.tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(self.tmp, self.out)
        return self.out


def _narrow(wide_path: Path, narrow_path: Path, block: int = 1 << 23) -> None:
    """Rewrite the int64 file ``wide_path`` as int32 ``narrow_path`` block by block; remove the wide one."""
    wide = np.memmap(wide_path, dtype=np.int64, mode="r") if wide_path.stat().st_size else np.zeros(0, np.int64)
    with narrow_path.open("wb") as out:
        for lo in range(0, len(wide), block):
            out.write(wide[lo : lo + block].astype(np.int32).tobytes())
    del wide
    wide_path.unlink()


Shapes = dict[str, tuple[np.dtype, tuple[int, ...]]]


def _fixed_files(manifest: Manifest) -> Shapes:
    """Data files whose shapes the manifest fixes: name -> (dtype, shape)."""
    n, ids = manifest.rows, np.dtype(manifest.sparse_dtype)
    shapes: Shapes = {
        "labels.u8": (np.dtype(np.uint8), (n,)),
        "dense.f32": (np.dtype(np.float32), (n, manifest.num_dense)),
        f"sparse.{_suffix(manifest.sparse_dtype)}": (ids, (n, manifest.sparse_columns)),
    }
    for f in manifest.jagged:
        shapes[f"bags/{f}.offsets.i64"] = (np.dtype(np.int64), (n + 1,))
    return shapes


def _values_files(path: Path, manifest: Manifest) -> Shapes:
    """The id files of variable-length bags, each as long as the last offset of its feature says."""
    shapes: Shapes = {}
    for f in manifest.jagged:
        total = int(np.fromfile(path / f"bags/{f}.offsets.i64", dtype=np.int64, count=1, offset=8 * manifest.rows)[0])
        shapes[f"bags/{f}.values.{_suffix(manifest.sparse_dtype)}"] = (np.dtype(manifest.sparse_dtype), (total,))
    return shapes


def _file_bytes(shapes: Shapes) -> dict[str, int]:
    """Bytes of each data file of ``shapes``."""
    return {name: dtype.itemsize * int(np.prod(shape)) for name, (dtype, shape) in shapes.items()}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RawRows:
    """Rows read from a cache: ``labels`` [B] uint8, ``dense`` [B, num_dense] float32, ``sparse``
    [B, W] int32/int64 and, per variable-length feature, (lengths [B] int64, values [total])."""

    labels: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray
    bags: dict[str, tuple[np.ndarray, np.ndarray]]


class Cache:
    """An opened cache: its manifest and read access to its rows (thread-safe)."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path, self.manifest = path, manifest
        self.shapes = _fixed_files(manifest)
        self._check_sizes(self.shapes)
        self.shapes.update(_values_files(path, manifest))  # the offsets say how many ids the values files hold
        self._check_sizes(self.shapes)
        self.identity = manifest.content_identity(_file_bytes(self.shapes))
        if manifest.identity is not None and manifest.identity != self.identity:
            raise UserInputError(
                f"{path / 'manifest.json'}: changed since `dlrs-bench data prepare` wrote it (the cache's identity "
                f"is {self.identity}, the manifest records {manifest.identity}); prepare the cache again")
        self._fds = {name: os.open(path / name, os.O_RDONLY) for name in self.shapes}
        self._maps = {name: np.memmap(path / name, dtype=dt, mode="r", shape=shape) if np.prod(shape) else
                      np.zeros(shape, dt) for name, (dt, shape) in self.shapes.items()}
        suffix = _suffix(manifest.sparse_dtype)
        self.labels, self.dense = self._maps["labels.u8"], self._maps["dense.f32"]
        self.sparse = self._maps[f"sparse.{suffix}"]
        self.bags = {f: (self._maps[f"bags/{f}.offsets.i64"], self._maps[f"bags/{f}.values.{suffix}"])
                     for f in manifest.jagged}

    def _check_sizes(self, shapes: Shapes) -> None:
        for name, (dtype, shape) in shapes.items():
            file = self.path / name
            expected = dtype.itemsize * int(np.prod(shape))
            if not file.is_file():
                raise UserInputError(f"{file}: missing; the cache files do not match the manifest")
            size = file.stat().st_size
            if size != expected:
                raise UserInputError(
                    f"{file}: {size:,} bytes but the manifest ({self.manifest.rows:,} rows) says {expected:,}; the "
                    "cache files do not match the manifest (truncated or changed since `dlrs-bench data prepare`)")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fds", None):
            self.close()

    def columns(self) -> tuple[Manifest, np.ndarray, np.ndarray, np.ndarray]:
        """(manifest, labels ``[N]`` u8, dense ``[N, num_dense]`` f32, sparse ``[N, W]``), memory-mapped."""
        return self.manifest, self.labels, self.dense, self.sparse

    def _pread(self, name: str, start: int, stop: int) -> np.ndarray:
        """Items ``[start, stop)`` of the first axis of file ``name``, read with one pread (no mapping)."""
        dtype, shape = self.shapes[name]
        row = dtype.itemsize * int(np.prod(shape[1:]))
        out = np.empty((stop - start, *shape[1:]), dtype)
        got = pread_into(self._fds[name], out, start * row)
        if got != out.nbytes:
            raise UserInputError(f"{self.path / name}: ends early (read {got} of {out.nbytes} bytes at row "
                                 f"{start}); the file changed since the cache was opened")
        return out

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        """Labels ``[start, stop)`` (uint8), read contiguously."""
        return self._pread("labels.u8", start, stop)

    def read_range(self, start: int, stop: int) -> RawRows:
        """Rows ``[start, stop)``, each file read contiguously."""
        suffix = _suffix(self.manifest.sparse_dtype)
        bags = {}
        for f in self.manifest.jagged:
            offsets = self._pread(f"bags/{f}.offsets.i64", start, stop + 1)
            self._check_bags(f, offsets[:-1], offsets[1:], lambda i: start + i)
            bags[f] = (np.diff(offsets), self._pread(f"bags/{f}.values.{suffix}", int(offsets[0]), int(offsets[-1])))
        return RawRows(self._pread("labels.u8", start, stop), self._pread("dense.f32", start, stop),
                       self._pread(f"sparse.{suffix}", start, stop), bags)

    def _check_bags(self, feature: str, starts: np.ndarray, ends: np.ndarray, row: Callable[[int], int]) -> None:
        """Bags ``[starts[i], ends[i])`` of the variable-length ``feature`` (of the cache rows ``row(i)``) are
        ranges of zero or more ids within its values file, else a :class:`DamagedCacheError`."""
        total = len(self.bags[feature][1])
        bad = (starts < 0) | (ends < starts) | (ends > total)
        if bad.any():
            i = int(np.argmax(bad))
            raise DamagedCacheError(
                f"{self.path / f'bags/{feature}.offsets.i64'}: row {row(i):,} has the bag [{starts[i]}, {ends[i]}), "
                f"not a range within the {total:,} ids of feature {feature} ({DAMAGED})")

    def gather(self, rows: np.ndarray) -> RawRows:
        """The rows ``rows`` (int64 indexes, any order) gathered from the memory maps.

        Each page fault maps the 64 KiB around it (the kernel's fault-around), so the pages a gather
        mapped are dropped from this process afterwards (they stay in the page cache, shared and
        reclaimable): mapped cache pages then stay within one batch's rows x 64 KiB per file instead
        of growing to the file's size over an epoch.
        """
        bags = {}
        for f, (offsets, values) in self.bags.items():
            self._check_bags(f, offsets[rows], offsets[rows + 1], lambda i: int(rows[i]))
            positions, lengths = bag_positions(offsets, rows)
            bags[f] = (lengths, _take(values, positions))
        out = RawRows(*(_take(a, rows) for a in (self.labels, self.dense, self.sparse)), bags)
        for m in self._maps.values():
            if isinstance(m, np.memmap) and m._mmap is not None:
                m._mmap.madvise(mmap.MADV_DONTNEED)
        return out


def pread_into(fd: int, out: np.ndarray, offset: int) -> int:
    """Fill the C-contiguous array ``out`` with the bytes of file ``fd`` from byte ``offset`` (one
    ``pread``: nothing is mapped); returns the bytes read (fewer than ``out.nbytes`` where the file ends)."""
    return os.preadv(fd, [memoryview(out).cast("B")], offset) if out.nbytes else 0


def bag_positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For variable-length bags stored as ``values[offsets[i]:offsets[i + 1]]``: the positions in
    ``values`` of the bags of ``rows``, concatenated (int64), and their lengths ``[len(rows)]``."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths), lengths


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` as a plain array: np.take copies whole rows (4x faster than fancy indexing)."""
    return np.take(array, rows, axis=0).view(np.ndarray)


def read_manifest(path: Path, model: type[M], format_: str, versions: tuple[int, ...], missing: str) -> M:
    """The ``manifest.json`` of cache folder ``path`` as ``model``; a :class:`UserInputError` naming the file (and
    its first wrong field) when it is absent (``missing``: the message then), unreadable, of another ``format_``
    or version than ``versions``, or invalid."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UserInputError(f"{path}: {missing}")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise UserInputError(f"{manifest_path}: invalid manifest: {e}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{manifest_path}: invalid manifest: not a JSON object")
    if data.get("format") != format_ or data.get("version") not in versions:
        raise UserInputError(f"{manifest_path}: format, version: {data.get('format')} v{data.get('version')}, "
                             f"expected {format_} v{versions[-1]}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        raise UserInputError(f"{manifest_path}: invalid manifest: {field + ': ' if field else ''}{message}") from None


def open_cache(path: Path) -> Cache:
    """Open the cache folder ``path``; a missing, inconsistent or edited cache is a :class:`UserInputError`
    naming the file and, for a manifest, its first wrong field."""
    path = Path(path)
    manifest = read_manifest(path, Manifest, FORMAT, READABLE_VERSIONS,
                             "not a prepared dataset (no manifest.json); run `dlrs-bench data prepare`")
    return Cache(path, manifest)
