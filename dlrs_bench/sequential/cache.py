"""The sequence cache: every user's events in time order, written in bounded memory, read memory-mapped.

A cache is a folder::

    manifest.json        what is inside (see :class:`SequenceManifest`), written last
    offsets.npy          int64 [U + 1]  user u's events are ``offsets[u]:offsets[u + 1]`` (each user >= 1)
    items.npy            int32 [E]      item ids in [1, items); 0 is the padding row, never stored
    timestamps.npy       int64 [E]      seconds, non-decreasing within a user
    actions.npy          uint8 [E]      optional: bit flags named by the manifest's ``actions``
    side_<name>.npy      int32 [E]      optional: a per-event id in [0, side[name]) (e.g. the rating)
    users.npy            int64 [U]      optional: the raw user id of each user row
    item_ids.npy         int64 [items]  optional: the raw item id of each item row (row 0, padding: -1)

Files are ``.npy`` (``np.load(mmap_mode="r")`` maps them). The writer streams chunks of whole users
into ``.npy`` files of a sibling temporary folder (the 128-byte header is rewritten with the final
length on :meth:`SequenceCacheWriter.close`) and renames the folder into place last, so an error or a
kill never leaves a folder that reads as a cache. While writing it records the min/max of every id
column and checks timestamps within each user; opening checks those ranges against the table sizes,
every file's dtype, shape and size against the manifest, and the offsets (O(users), not O(events)).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from dlrs_bench.data.cache import now, read_manifest
from dlrs_bench.errors import UserInputError
from dlrs_bench.lifecycle import remove_stale

FORMAT = "dlrs-bench-sequences"
VERSION = 1
ACTION_BITS = 8  # actions.npy is uint8


class SequenceManifest(BaseModel):
    """The ``manifest.json`` of a sequence cache; its meaning is checked when it is read.

    ``ranges`` holds [min, max] of ``items``, ``timestamps`` and each ``side.<name>`` as written;
    ``actions_seen`` the OR of every event's action flags.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["dlrs-bench-sequences"] = FORMAT
    version: Literal[1] = VERSION
    users: PositiveInt
    events: PositiveInt
    items: int = Field(ge=2)  # item table rows: ids 1..items-1, 0 = padding
    side: dict[str, PositiveInt] = {}  # name -> rows of its table
    actions: dict[str, int] = {}  # name -> bit (0..7)
    time_unit: Literal["s"] = "s"
    source: dict[str, Any] = {}
    created_at: str
    ranges: dict[str, tuple[int, int]]
    actions_seen: int = Field(0, ge=0, lt=1 << ACTION_BITS)
    files: list[str]  # the optional files present (users.npy, item_ids.npy)

    @model_validator(mode="after")
    def _meaning(self) -> SequenceManifest:
        if self.events < self.users:
            raise ValueError(f"events: {self.events:,} events for {self.users:,} users; every user has at least one")
        bits = list(self.actions.values())
        if any(not 0 <= b < ACTION_BITS for b in bits) or len(set(bits)) != len(bits):
            raise ValueError(f"actions: bits must be distinct and in 0..{ACTION_BITS - 1}, got {self.actions}")
        if self.actions_seen & ~self.action_mask:
            raise ValueError(f"actions_seen: flags {self.actions_seen:#x} hold bits no action of {self.actions} names")
        expected = {"items", "timestamps", *(f"side.{name}" for name in self.side)}
        if set(self.ranges) != expected:
            raise ValueError(f"ranges: expected {sorted(expected)}, got {sorted(self.ranges)}")
        limits = {"items": (1, self.items - 1), **{f"side.{n}": (0, rows - 1) for n, rows in self.side.items()}}
        for key, (lo, hi) in self.ranges.items():
            if lo > hi:
                raise ValueError(f"ranges.{key}: [{lo}, {hi}] is empty")
            if key in limits and not limits[key][0] <= lo <= hi <= limits[key][1]:
                raise ValueError(f"ranges.{key}: ids [{lo}, {hi}] outside the table's [{limits[key][0]}, "
                                 f"{limits[key][1]}]")
        unknown = set(self.files) - set(OPTIONAL_FILES)
        if unknown:
            raise ValueError(f"files: unknown file {sorted(unknown)[0]!r}")
        return self

    @property
    def action_mask(self) -> int:
        return sum(1 << b for b in self.actions.values())

    def shapes(self) -> dict[str, tuple[np.dtype, int]]:
        """Every data file of the cache: name -> (dtype, length)."""
        shapes = {"offsets.npy": (np.dtype(np.int64), self.users + 1), "items.npy": (np.dtype(np.int32), self.events),
                  "timestamps.npy": (np.dtype(np.int64), self.events)}
        if self.actions:
            shapes["actions.npy"] = (np.dtype(np.uint8), self.events)
        for name in self.side:
            shapes[f"side_{name}.npy"] = (np.dtype(np.int32), self.events)
        lengths = {"users.npy": self.users, "item_ids.npy": self.items}
        for name in self.files:
            shapes[name] = (np.dtype(np.int64), lengths[name])
        return shapes


OPTIONAL_FILES = ("users.npy", "item_ids.npy")


class _NpyAppender:
    """A 1-D ``.npy`` file written in pieces: the header (128 bytes for any 1-D length) is written for
    length 0 first and rewritten with the final length by :meth:`finish`."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self.file = path.open("wb")
        self._header_bytes = self._header(0)

    def _header(self, length: int) -> int:
        self.file.seek(0)
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)})
        return self.file.tell()

    def write(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.length += len(values)

    def finish(self) -> None:
        self.file.flush()
        end = self.file.tell()
        assert self._header(self.length) == self._header_bytes, "a 1-D .npy header has a fixed size"
        self.file.seek(end)
        self.file.close()


def lengths_and_offsets(offsets_or_lengths: np.ndarray, events: int) -> np.ndarray:
    """Local offsets ``[n + 1]`` (from 0) of a chunk of n users given as lengths ``[n]`` (each >= 1) or
    offsets ``[n + 1]`` from 0 (told apart by the first value: no user has 0 events)."""
    a = np.asarray(offsets_or_lengths, dtype=np.int64)
    offsets = a if len(a) and a[0] == 0 else np.concatenate([[0], np.cumsum(a)])
    lengths = np.diff(offsets)
    if len(lengths) and lengths.min() < 1:
        raise ValueError(f"user {int(np.argmin(lengths))} of the chunk has {lengths.min()} events; each needs >= 1")
    if offsets[-1] != events:
        raise ValueError(f"the chunk's users hold {offsets[-1]:,} events but {events:,} were given")
    return offsets


class SequenceCacheWriter:
    """Appends chunks of whole users to a cache under construction; :meth:`close` commits it.

    ``side``: names of the per-event id columns; ``actions``: name -> bit of the action flags. Use as a
    context manager: leaving the block without :meth:`close` (an error, Ctrl-C) deletes the temporary
    folder ``.<name>.partial-<pid>``; one left by a killed writer is removed by the next writer of ``out``.
    """

    def __init__(self, folder: Path, side: tuple[str, ...] = (), actions: dict[str, int] | None = None) -> None:
        self.out = Path(folder)
        if self.out.exists():
            raise UserInputError(f"{self.out}: already exists; remove it or choose another folder")
        self.side, self.actions = tuple(side), dict(actions or {})
        prefix = f".{self.out.name}.partial-"
        self.tmp = self.out.parent / f"{prefix}{os.getpid()}"
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"cannot write {self.out.parent}: {e.strerror or e}") from None
        remove_stale(self.out.parent, prefix)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.users = self.events = 0
        self.ranges: dict[str, tuple[int, int]] = {}
        self.actions_seen = 0
        self._raw_users: bool | None = None  # whether chunks bring raw user ids (all or none)
        self._files: dict[str, _NpyAppender] = {}
        try:
            columns = {"offsets.npy": np.int64, "items.npy": np.int32, "timestamps.npy": np.int64}
            columns.update({f"side_{n}.npy": np.int32 for n in self.side})
            if self.actions:
                columns["actions.npy"] = np.uint8
            for name, dtype in columns.items():
                self._files[name] = _NpyAppender(self.tmp / name, dtype)
            self._files["offsets.npy"].write(np.zeros(1, np.int64))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> SequenceCacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def abort(self) -> None:
        """Discard what was written (nothing once :meth:`close` has committed)."""
        for f in self._files.values():
            f.file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def append(self, offsets_or_lengths: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
               actions: np.ndarray | None = None, side: dict[str, np.ndarray] | None = None,
               users: np.ndarray | None = None) -> None:
        """A chunk of n whole users: lengths ``[n]`` or offsets ``[n + 1]``, items ``[E_c]`` (ids >= 1),
        timestamps ``[E_c]`` int seconds (non-decreasing within each user), actions ``[E_c]`` uint8 flags
        (iff the writer has actions), side ``{name: [E_c]}`` ids >= 0 (every side column), users ``[n]``
        raw ids (in every chunk or none). A chunk that breaks a rule raises ``ValueError`` naming it."""
        n_events = len(items)
        local = lengths_and_offsets(offsets_or_lengths, n_events)
        columns = {"items": np.asarray(items), "timestamps": np.asarray(timestamps, dtype=np.int64),
                   **{f"side.{n}": np.asarray(v) for n, v in (side or {}).items()}}
        if actions is not None:
            columns["actions"] = np.asarray(actions)
            flags = int(np.bitwise_or.reduce(columns["actions"], initial=0))
            if flags & ~sum(1 << bit for bit in self.actions.values()):
                raise ValueError(f"actions: flags {flags:#x} hold bits no action of {self.actions} names")
        if set(side or {}) != set(self.side):
            raise ValueError(f"side: expected columns {list(self.side)}, got {list(side or {})}")
        if (actions is None) != (not self.actions):
            raise ValueError(f"actions: the writer has actions {self.actions}; a chunk brings flags iff it has")
        for key, values in columns.items():
            if len(values) != n_events:
                raise ValueError(f"{key}: {len(values):,} values for {n_events:,} items")
        if self._raw_users is not None and (users is not None) != self._raw_users:
            raise ValueError("users: raw user ids must come with every chunk or with none")
        if users is not None and len(users) != len(local) - 1:
            raise ValueError(f"users: {len(users):,} raw ids for {len(local) - 1:,} users")
        if not n_events:
            return
        self._check_times(columns["timestamps"], local)
        limits = {"items": (1, 2**31 - 1), **{f"side.{n}": (0, 2**31 - 1) for n in self.side}}
        ranges = {key: (int(columns[key].min()), int(columns[key].max())) for key in ["timestamps", *limits]}
        for key, (lo, hi) in limits.items():
            if not lo <= ranges[key][0] <= ranges[key][1] <= hi:
                raise ValueError(f"{key}: ids [{ranges[key][0]}, {ranges[key][1]}] outside [{lo}, {hi}]")
        for key, (lo, hi) in ranges.items():
            old = self.ranges.get(key, (lo, hi))
            self.ranges[key] = (min(old[0], lo), max(old[1], hi))
        self._raw_users = users is not None
        self._files["offsets.npy"].write(self.events + local[1:])
        self._files["items.npy"].write(columns["items"])
        self._files["timestamps.npy"].write(columns["timestamps"])
        for name in self.side:
            self._files[f"side_{name}.npy"].write(columns[f"side.{name}"])
        if self.actions:
            self.actions_seen |= flags
            self._files["actions.npy"].write(columns["actions"])
        if users is not None:
            if "users.npy" not in self._files:
                self._files["users.npy"] = _NpyAppender(self.tmp / "users.npy", np.int64)
            self._files["users.npy"].write(np.asarray(users, dtype=np.int64))
        self.users += len(local) - 1
        self.events += n_events

    def _check_times(self, timestamps: np.ndarray, local: np.ndarray) -> None:
        """Timestamps are non-decreasing within each user of the chunk (``local`` offsets)."""
        down = np.diff(timestamps) < 0
        down[local[1:-1] - 1] = False  # a new user may start earlier than the previous one ended
        if down.any():
            at = int(np.argmax(down)) + 1
            user = int(np.searchsorted(local, at, side="right")) - 1
            raise ValueError(f"timestamps: user {self.users + user:,} (event {at - local[user]} of its sequence) goes "
                             f"back in time ({timestamps[at - 1]} then {timestamps[at]}); sort each user's events")

    def close(self, source: dict[str, Any], items: int | None = None, side_rows: dict[str, int] | None = None,
              item_ids: np.ndarray | None = None) -> Path:
        """Commit: write the manifest and move the cache into place; returns its folder. ``items``: rows of the
        item table (default: largest id + 1); ``side_rows``: rows of each side table (default: largest id + 1);
        ``item_ids``: raw id of each item row ``[items]`` int64; ``source``: provenance, free-form JSON."""
        try:
            return self._commit(source, items, side_rows, item_ids)
        except BaseException:
            self.abort()
            raise

    def _commit(self, source: dict[str, Any], items: int | None, side_rows: dict[str, int] | None,
                item_ids: np.ndarray | None) -> Path:
        if self.users == 0:
            raise UserInputError(f"{self.out}: no events to write: the input is empty")
        items = self.ranges["items"][1] + 1 if items is None else items
        side_rows = {n: (side_rows or {}).get(n, self.ranges[f"side.{n}"][1] + 1) for n in self.side}
        if item_ids is not None:
            if len(item_ids) != items:
                raise ValueError(f"item_ids: {len(item_ids):,} raw ids for an item table of {items:,} rows")
            self._files["item_ids.npy"] = _NpyAppender(self.tmp / "item_ids.npy", np.int64)
            self._files["item_ids.npy"].write(item_ids)
        manifest = SequenceManifest(
            users=self.users, events=self.events, items=items, side=side_rows, actions=self.actions,
            source=source, created_at=now(), ranges=self.ranges, actions_seen=self.actions_seen,
            files=[f for f in OPTIONAL_FILES if f in self._files])
        for f in self._files.values():
            f.finish()
        (self.tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(self.tmp, self.out)
        return self.out


class SequenceCache:
    """An opened sequence cache: its manifest and memory-mapped columns (see the module docstring)."""

    def __init__(self, path: Path, manifest: SequenceManifest, arrays: dict[str, np.ndarray]) -> None:
        self.path, self.manifest = path, manifest
        self.offsets: np.ndarray = arrays["offsets.npy"]
        self.items: np.ndarray = arrays["items.npy"]
        self.timestamps: np.ndarray = arrays["timestamps.npy"]
        self.actions: np.ndarray | None = arrays.get("actions.npy")
        self.side = {name: arrays[f"side_{name}.npy"] for name in manifest.side}
        self.users: np.ndarray | None = arrays.get("users.npy")
        self.item_ids: np.ndarray | None = arrays.get("item_ids.npy")

    @property
    def num_users(self) -> int:
        return self.manifest.users

    @property
    def num_items(self) -> int:
        """Rows of the item table (ids 1..num_items-1, 0 = padding)."""
        return self.manifest.items

    def lengths(self) -> np.ndarray:
        """Events per user ``[U]`` int64."""
        return np.diff(self.offsets)

    @classmethod
    def open(cls, folder: Path) -> SequenceCache:
        """Open the cache ``folder``; a missing, inconsistent or truncated cache is a :class:`UserInputError`
        naming the file and, for the manifest, its first wrong field."""
        path = Path(folder)
        manifest = read_manifest(path, SequenceManifest, FORMAT, (VERSION,), "not a sequence cache (no manifest.json)")
        arrays = {name: _open_npy(path / name, dtype, length, manifest)
                  for name, (dtype, length) in manifest.shapes().items()}
        _check_offsets(path / "offsets.npy", arrays["offsets.npy"], manifest.events)
        return cls(path, manifest, arrays)


def _open_npy(file: Path, dtype: np.dtype, length: int, manifest: SequenceManifest) -> np.ndarray:
    """The 1-D ``.npy`` ``file`` memory-mapped (read-only), after checking its dtype, length and size against the
    manifest."""
    what = f"the manifest ({manifest.users:,} users, {manifest.events:,} events, {manifest.items:,} items) says"
    if not file.is_file():
        raise UserInputError(f"{file}: missing; {what} it is part of the cache")
    try:
        with file.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, got = read(f)
            header = f.tell()
    except (ValueError, OSError) as e:
        raise UserInputError(f"{file}: not a .npy file ({e})") from None
    if got != dtype or shape != (length,) or fortran:
        raise UserInputError(f"{file}: holds {got} {shape}, but {what} {dtype} ({length:,},)")
    size, expected = file.stat().st_size, header + dtype.itemsize * length
    if size != expected:
        raise UserInputError(f"{file}: {size:,} bytes but {what} {expected:,}; the cache is truncated or damaged")
    return np.load(file, mmap_mode="r").view(np.ndarray)  # a plain view: slicing a np.memmap costs microseconds


def _check_offsets(file: Path, offsets: np.ndarray, events: int) -> None:
    """Offsets start at 0, end at ``events`` and give every user at least one event."""
    if offsets[0] != 0 or offsets[-1] != events:
        raise UserInputError(f"{file}: runs from {offsets[0]} to {offsets[-1]}, not from 0 to the manifest's "
                             f"events ({events:,}); the cache is damaged")
    lengths = np.diff(offsets)
    if lengths.min() < 1:
        user = int(np.argmin(lengths))
        raise UserInputError(f"{file}: user {user:,} has {lengths[user]} events; every user has at least one "
                             "(the cache is damaged)")


class ItemIndex:
    """Dense item ids for raw ones, in order of first appearance: the first raw id seen becomes 1, the next
    new one 2, ... (0 stays the padding row). Fed chunk by chunk (vectorised: one ``np.unique`` and one
    ``searchsorted`` per chunk); memory grows with the distinct items, not the events."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)  # distinct raw ids, sorted
        self._ids = np.zeros(0, np.int64)  # their dense ids
        self._raw: list[np.ndarray] = []  # new raw ids of each chunk, in dense id order

    def __len__(self) -> int:
        """Rows of the item table so far (distinct items + the padding row)."""
        return len(self._keys) + 1

    def ids(self, raw: np.ndarray) -> np.ndarray:
        """Dense ids ``[n]`` int32 of the raw ids ``raw`` ``[n]``, new ones numbered in order of appearance."""
        uniq, first, inverse = np.unique(np.asarray(raw, dtype=np.int64), return_index=True, return_inverse=True)
        at = np.searchsorted(self._keys, uniq)
        known = at < len(self._keys)
        known[known] = self._keys[at[known]] == uniq[known]
        dense = np.empty(len(uniq), np.int64)
        dense[known] = self._ids[at[known]]
        new = np.flatnonzero(~known)
        new = new[np.argsort(first[new], kind="stable")]  # by first appearance in this chunk
        dense[new] = len(self) + np.arange(len(new))
        if len(dense) and dense.max() >= 2**31:
            raise ValueError("more than 2^31 - 1 distinct items: item ids are int32")
        if len(new):  # merged into the sorted keys (O(keys), no re-sort): uniq is sorted, so is uniq[sorted new]
            self._raw.append(uniq[new])
            in_order = np.sort(new)
            at_new = np.searchsorted(self._keys, uniq[in_order])
            self._keys = np.insert(self._keys, at_new, uniq[in_order])
            self._ids = np.insert(self._ids, at_new, dense[in_order])
        return dense[inverse].astype(np.int32)

    def raw_ids(self) -> np.ndarray:
        """The raw id of each item row ``[len(self)]`` int64 (row 0, padding: -1)."""
        return np.concatenate([[-1], *self._raw]).astype(np.int64)
