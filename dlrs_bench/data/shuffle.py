"""A bounded-memory external shuffle of a cache's first rows (``data prepare --shuffle-seed``).

Two passes over the rows ``[0, rows)`` of the cache files (each file a fixed number of bytes a row):
1. every row is packed into one record (its bytes of every file) and sent to one of K bucket files
   chosen uniformly at random, K = ceil(total bytes / ``bucket_bytes``);
2. each bucket in turn is read whole, permuted uniformly at random, and written back in place.
Random buckets then a uniform permutation within each bucket give a uniformly random permutation
of the rows. Memory: one chunk of records and one bucket; disk: one more copy of the rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

BUCKET_BYTES = 1 << 29
CHUNK_ROWS = 1 << 20
METHOD = "two-pass random-bucket shuffle (uniform permutation)"


def shuffle_rows(folder: Path, files: list[tuple[str, int]], rows: int, seed: int,
                 bucket_bytes: int = BUCKET_BYTES, chunk_rows: int = CHUNK_ROWS) -> None:
    """Permute rows ``[0, rows)`` of ``files`` (``(file name in folder, bytes per row)``) in place,
    the same permutation in every file, drawn with ``seed``."""
    widths = [w for _, w in files]
    record = sum(widths)
    buckets = max(1, -(-rows * record // bucket_bytes))
    rng = np.random.default_rng([seed, 0x5F])
    spill = folder / ".shuffle"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir()
    handles = [open(folder / name, "r+b") for name, _ in files]  # noqa: SIM115 - closed below
    try:
        for lo in range(0, rows, chunk_rows):  # pass 1: rows to random buckets
            n = min(chunk_rows, rows - lo)
            records = np.empty((n, record), np.uint8)
            at = 0
            for handle, width in zip(handles, widths):
                handle.seek(lo * width)
                records[:, at : at + width] = np.frombuffer(handle.read(n * width), np.uint8).reshape(n, width)
                at += width
            target = rng.integers(0, buckets, n)
            order = np.argsort(target, kind="stable")
            counts = np.bincount(target, minlength=buckets)
            ends = np.cumsum(counts)
            for k in np.flatnonzero(counts):
                with (spill / f"{k}.bin").open("ab") as out:
                    out.write(records[order[ends[k] - counts[k] : ends[k]]].tobytes())
        written = 0
        for k in range(buckets):  # pass 2: each bucket permuted, written back in order
            path = spill / f"{k}.bin"
            if not path.exists():
                continue
            records = np.fromfile(path, np.uint8).reshape(-1, record)
            records = records[rng.permutation(len(records))]
            at = 0
            for handle, width in zip(handles, widths):
                handle.seek(written * width)
                handle.write(np.ascontiguousarray(records[:, at : at + width]).tobytes())
                at += width
            written += len(records)
            path.unlink()
        assert written == rows
    finally:
        for handle in handles:
            handle.close()
        shutil.rmtree(spill, ignore_errors=True)
