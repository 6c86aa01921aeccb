"""The binary columnar cache that ``dlrs-bench data prepare`` writes and datasets read.

A cache is a folder::

    manifest.json     what is inside (see :class:`Manifest`), written last
    labels.u8         [N]            uint8 in {0, 1}
    dense.f32         [N, num_dense] float32 (already transformed)
    sparse.i32|i64    [N, F]         ids in [0, cardinality) per column (one id per row and feature)

Arrays are raw little-endian C-order files, memory-mapped on read. A cache is built in a
sibling temporary folder and renamed into place only once the manifest is written, so an
interrupted preparation never leaves a folder that reads as a valid cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from dlrs_bench.errors import UserInputError

FORMAT = "dlrs-bench-cache"
VERSION = 1


class InputFile(BaseModel):
    path: str
    bytes: int
    sha256: str


class Manifest(BaseModel):
    """The ``manifest.json`` of a cache."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    version: int = VERSION
    dataset: str
    rows: int
    num_dense: int
    features: dict[str, int]  # name -> cardinality, in column order
    sparse_dtype: str  # "int32" or "int64"
    ctr: float
    parts: list[int]  # rows per input file (per day for Criteo Terabyte), in order
    options: dict[str, Any]  # the conventions used (transform, numbering, caps, ...)
    inputs: list[InputFile]
    skipped: dict[str, Any]  # {"policy": "error"|"skip", "count": int, "examples": [...]}
    created_at: str


def sha256_of(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def describe_inputs(paths: list[Path]) -> list[InputFile]:
    return [InputFile(path=str(p), bytes=p.stat().st_size, sha256=sha256_of(p)) for p in paths]


class CacheWriter:
    """Appends row chunks to a cache under construction; :meth:`commit` makes it visible.

    Use as a context manager: leaving the block without :meth:`commit` (an error) deletes the
    temporary folder.
    """

    def __init__(self, out: Path, num_dense: int, num_sparse: int) -> None:
        self.out = Path(out)
        if self.out.exists():
            raise UserInputError(f"{self.out}: already exists; remove it or choose another --out")
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.num_dense, self.num_sparse = num_dense, num_sparse
        self.rows = 0
        self._files = {name: (self.tmp / name).open("wb") for name in ("labels.u8", "dense.f32", "sparse.i64")}

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        for f in self._files.values():
            f.close()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def append(self, labels: np.ndarray, dense: np.ndarray, sparse: np.ndarray) -> None:
        """Rows: labels ``[n]`` (0/1), dense ``[n, num_dense]``, sparse ``[n, F]`` raw int64 ids."""
        n = len(labels)
        assert dense.shape == (n, self.num_dense) and sparse.shape == (n, self.num_sparse)
        self._files["labels.u8"].write(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        self._files["dense.f32"].write(np.ascontiguousarray(dense, dtype=np.float32).tobytes())
        self._files["sparse.i64"].write(np.ascontiguousarray(sparse, dtype=np.int64).tobytes())
        self.rows += n

    def sparse_column_pass(self) -> np.memmap:
        """The raw sparse ids written so far, ``[rows, F]`` int64, writable (for renumbering)."""
        for f in self._files.values():
            f.flush()
        return np.memmap(self.tmp / "sparse.i64", dtype=np.int64, mode="r+", shape=(self.rows, self.num_sparse))

    def commit(self, manifest: Manifest, sparse_dtype: str) -> Path:
        """Narrow the ids to ``sparse_dtype``, write the manifest, and move the cache into place."""
        for f in self._files.values():
            f.close()
        if self.rows == 0:
            raise UserInputError("no rows to write: the input is empty")
        source = self.tmp / "sparse.i64"
        if sparse_dtype == "int32":
            wide = np.memmap(source, dtype=np.int64, mode="r", shape=(self.rows, self.num_sparse))
            narrow = np.memmap(self.tmp / "sparse.i32", dtype=np.int32, mode="w+", shape=wide.shape)
            for lo in range(0, self.rows, 1 << 20):
                narrow[lo : lo + (1 << 20)] = wide[lo : lo + (1 << 20)]
            narrow.flush()
            del wide, narrow
            source.unlink()
        (self.tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(self.tmp, self.out)
        return self.out


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_cache(path: Path) -> tuple[Manifest, np.ndarray, np.ndarray, np.ndarray]:
    """(manifest, labels ``[N]`` u8, dense ``[N, num_dense]`` f32, sparse ``[N, F]``), memory-mapped."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise UserInputError(f"{path}: not a prepared dataset (no manifest.json); run `dlrs-bench data prepare`")
    try:
        manifest = Manifest.model_validate(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (ValueError, OSError) as e:
        raise UserInputError(f"{manifest_path}: invalid manifest: {e}") from None
    if manifest.format != FORMAT or manifest.version != VERSION:
        raise UserInputError(
            f"{manifest_path}: format {manifest.format} v{manifest.version}, expected {FORMAT} v{VERSION}"
        )
    n, f = manifest.rows, len(manifest.features)
    suffix = "i32" if manifest.sparse_dtype == "int32" else "i64"
    try:
        labels = np.memmap(path / "labels.u8", dtype=np.uint8, mode="r", shape=(n,))
        dense = np.memmap(path / "dense.f32", dtype=np.float32, mode="r", shape=(n, manifest.num_dense))
        sparse = np.memmap(path / f"sparse.{suffix}", dtype=manifest.sparse_dtype, mode="r", shape=(n, f))
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path}: cache files do not match the manifest ({e})") from None
    return manifest, labels, dense, sparse
