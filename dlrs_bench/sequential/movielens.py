"""MovieLens ratings as user sequences: the bundled ml-latest-small and raw ML-1M / ML-20M / ml-latest folders.

Every rating is an interaction (all of them, not only ratings >= 4: the SASRec/HSTU ML-1M protocol
uses every rating). Each user's ratings are sorted by (timestamp, movieId); users keep file order.
Item ids are dense, 1..N-1 in order of first appearance in that order (:class:`ItemIndex`);
``item_ids.npy`` maps each back to its movieId and ``users.npy`` each user row to its userId. The
rating is kept as the side column ``rating`` in half stars (0..10: 4.5 stars -> 9).

Inputs: ``ratings.dat`` (ML-1M: ``UserID::MovieID::Rating::Timestamp``, no header) or ``ratings.csv``
(ML-20M, ML-25M, ml-latest: header ``userId,movieId,rating,timestamp``). The file is streamed in
chunks of :data:`CHUNK_LINES` lines and every user is written once complete, so memory holds one chunk
and the item table, not the file. That needs each user's ratings on consecutive lines, as every
MovieLens release has them (sorted by user); a user met again after other users is an error. Every
malformed line is an error naming file:line and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrs_bench.data.cache import describe_inputs
from dlrs_bench.data.local_cache import first_use_folder
from dlrs_bench.data.options import BUNDLED
from dlrs_bench.data.textrows import split_columns
from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential.cache import ItemIndex, SequenceCacheWriter

CHUNK_LINES = 1 << 16  # ~2 MB of text: ~60 MB of Python strings while parsed (measured), as fast as larger
CSV_HEADER = "userId,movieId,rating,timestamp"
FIELDS = ("userId", "movieId", "rating", "timestamp")
RATING_STEPS = 10  # half stars: ratings 0..5 in steps of 0.5
#: Bump when the sequences prepared from given files change (first-use caches are then rebuilt).
BUILD_VERSION = 1


def bundled_movielens_sequences(cache_root: Path | None = None) -> Path:
    """The cache folder of the bundled ml-latest-small as sequences (610 users, 100,836 events), built on
    first use under ``cache_root`` (default ``$DLRS_BENCH_CACHE`` or ``~/.cache/dlrs-bench``)."""
    file = BUNDLED / "ratings.csv"
    st = file.stat()
    key = {"version": BUILD_VERSION, "file": [str(file.resolve()), st.st_size, st.st_mtime_ns]}
    return first_use_folder(cache_root, "movielens-latest-small-sequences", key,
                     lambda out: prepare_movielens_sequences(BUNDLED, out))


def ratings_file(folder: Path) -> Path:
    """``ratings.dat`` (ML-1M) or ``ratings.csv`` of ``folder`` (a file path is taken as is)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    for name in ("ratings.dat", "ratings.csv"):
        if (folder / name).is_file():
            return folder / name
    raise UserInputError(f"{folder}: no ratings.dat (ML-1M) or ratings.csv (ML-20M, ml-latest) found")


def prepare_movielens_sequences(folder: Path, out: Path) -> Path:
    """Write the ratings of ``folder`` (see the module docstring) as the sequence cache ``out``; returns ``out``."""
    path = ratings_file(folder)
    separator = "::" if path.suffix == ".dat" else ","
    index = ItemIndex()
    seen_users = np.zeros(0, np.int64)  # users written so far, sorted
    with SequenceCacheWriter(out, side=("rating",)) as writer:
        held: tuple[np.ndarray, ...] | None = None  # the last user of the previous chunk (may go on)
        for columns in _chunks(path, separator):
            if held is not None:
                columns = tuple(np.concatenate([a, b]) for a, b in zip(held, columns))
            user = columns[0]
            starts = np.flatnonzero(np.diff(user)) + 1
            cut = int(starts[-1]) if len(starts) else 0
            done = tuple(c[:cut] for c in columns)
            held = tuple(c[cut:] for c in columns)
            seen_users = _write_users(writer, index, done, seen_users, path)
        if held is not None:
            seen_users = _write_users(writer, index, held, seen_users, path)
        source = {
            "dataset": "movielens", "file": path.name, "inputs": [i.model_dump() for i in describe_inputs([path])],
            "interactions": "every rating (all ratings, not only >= 4)",
            "order": "each user's ratings by (timestamp, movieId); users in file order",
            "item_ids": "dense 1..N-1 in order of first appearance; item_ids.npy holds each row's movieId",
            "side": {"rating": "half stars: rating * 2 (0..10)"},
        }
        return writer.close(source, items=len(index), side_rows={"rating": RATING_STEPS + 1},
                            item_ids=index.raw_ids())


def _write_users(writer: SequenceCacheWriter, index: ItemIndex, columns: tuple[np.ndarray, ...],
                 seen_users: np.ndarray, path: Path) -> np.ndarray:
    """Write the complete users of ``columns`` (user, movie, half stars, timestamp, line; consecutive lines per
    user); returns the sorted users written so far. A user met again after others is an error."""
    user, movie, stars, stamp, line = columns
    if not len(user):
        return seen_users
    starts = np.concatenate([[0], np.flatnonzero(np.diff(user)) + 1])
    firsts = user[starts]
    uniq, first_block = np.unique(firsts, return_index=True)
    again = np.isin(firsts, seen_users)  # written in an earlier chunk
    again[np.setdiff1d(np.arange(len(firsts)), first_block)] = True  # or in an earlier block of this one
    if again.any():
        block = int(np.argmax(again))
        raise UserInputError(f"{path}:{line[starts[block]]}: userId: user {firsts[block]} appears again after other "
                             "users' ratings; each user's ratings must be on consecutive lines (as MovieLens releases "
                             "are sorted by user)")
    block_of = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(user)]])))
    order = np.lexsort((movie, stamp, block_of))
    lengths = np.diff(np.concatenate([starts, [len(user)]]))
    writer.append(lengths, index.ids(movie[order]), stamp[order], side={"rating": stars[order]}, users=firsts)
    return np.union1d(seen_users, uniq)


def _chunks(path: Path, separator: str):
    """Parsed chunks of ``path``: (user, movie, half stars, timestamp, line number) arrays, int64."""
    try:
        f = path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        first = 1
        if separator == ",":
            header = f.readline().rstrip("\r\n").lstrip("\ufeff")
            if header != CSV_HEADER:
                raise UserInputError(f"{path}:1: expected the header {CSV_HEADER!r}, got {header[:80]!r}")
            first = 2
        while lines := f.readlines(CHUNK_LINES * 32):  # about CHUNK_LINES lines of ~32 bytes
            yield _parse(lines, first, separator, path)
            first += len(lines)


def _parse(lines: list[str], first: int, separator: str, path: Path) -> tuple[np.ndarray, ...]:
    """(user, movie, half stars, timestamp, line number) of ``lines`` (the first is line ``first``)."""
    columns, numbers, bad = split_columns(lines, separator, 4, first)
    if bad:
        line, problem = bad[0]
        raise UserInputError(f"{path}:{line}: {problem} ({separator.join(FIELDS)})")
    user, movie, rating, stamp = columns
    try:
        parsed = [np.array(user, np.int64), np.array(movie, np.int64), np.array(rating, np.float64),
                  np.array(stamp, np.int64)]
    except (ValueError, OverflowError):
        parsed = None
    stars = None if parsed is None else parsed[2] * 2
    if parsed is None or not ((stars >= 0) & (stars <= RATING_STEPS) & (stars == np.round(stars))).all():
        for i, number in enumerate(numbers):
            problem = _field_problem([c[i] for c in columns])
            if problem:
                raise UserInputError(f"{path}:{number}: {problem}")
        raise AssertionError("a chunk failed to parse but no line has a problem")
    return parsed[0], parsed[1], stars.astype(np.int64), parsed[3], np.array(numbers, np.int64)


def _field_problem(values: list[str]) -> str | None:
    """What is wrong with one line's four fields, or None."""
    for name, v in zip(FIELDS, values):
        try:
            if name == "rating":
                stars = float(v) * 2
                if not (0 <= stars <= RATING_STEPS and stars == round(stars)):
                    return f"rating: must be 0 to 5 in steps of 0.5, got {v.strip()!r}"
            elif not -(1 << 63) <= int(v) < (1 << 63):
                return f"{name}: out of the int64 range: {v.strip()!r}"
        except ValueError:
            return f"{name}: must be {'a number' if name == 'rating' else 'an integer'}, got {v.strip()!r}"
    return None
