"""Yambda (Yandex Music; HuggingFace ``yandex/yambda``) as user sequences: ``multi_event.parquet`` streamed
into a sequence cache.

What was checked of Yambda's files, and where (2026-12):

- Layout: ``flat/{50m,500m,5b}/`` holds ``listens``, ``likes``, ``dislikes``, ``unlikes``, ``undislikes`` and
  ``multi_event`` ``.parquet``; ``artist_item_mapping.parquet`` and ``album_item_mapping.parquet`` lie at the
  dataset's root, shared by the sizes (the dataset card's configs and its ``YambdaDataset`` download helper).
- Columns: ``uid``, ``timestamp``, ``item_id`` uint32 and ``is_organic`` uint8 (the card's data viewer);
  listens add ``played_ratio_pct`` uint16 and ``track_length_seconds`` uint32 (loaders and a data dictionary
  written against the files). ``multi_event`` is Yambda's own union of the five (its ``make_multievent``
  script): the five files concatenated with ``event_type`` a polars Enum of ``listen, dislike, like,
  undislike, unlike`` (dictionary-encoded strings; plain strings are read too), ``played_ratio_pct`` /
  ``track_length_seconds`` null but for listens, sorted by (uid, timestamp) keeping that order among a
  user's events at the same time.
- Mappings: ``artist_id`` / ``album_id`` and ``item_id``, uint32; an item may be listed more than once (a
  probe of the files: 9,271,906 artist rows over 9,270,506 items, 9,651,644 album rows over 8,653,783).
- Time: ``timestamp`` counts seconds on Yambda's own clock (its zero is not the Unix epoch): the benchmark's
  constants are DAY_SECONDS = 86,400, GAP_SIZE = 1,800, LAST_TIMESTAMP = 26,000,000 (301 days) and
  TEST_TIMESTAMP = LAST_TIMESTAMP - one day, and a dlrmv4 Yambda reader takes the hour as ``t // 3600 % 24``.
  Values are multiples of 5 (a 5-second grid, not 5-second units); ``timestamps.npy`` keeps them as they are
  and the manifest counts any off the grid.
- Listen+: ``played_ratio_pct >= 50`` (the benchmark's TRACK_LISTEN_THRESHOLD; the card's FAQ says "over
  50%"); dlrmv4's action bits: 1 listen+, 2 like, 4 skip (a listen below 50%).

Why ``multi_event``: it is Yambda's own time-ordered union of the per-event files, so one sorted stream gives
every user's events interleaved; the per-event files would need a five-way merge to say the same.

Every event kept is one cache event with one action flag (``actions.npy`` bit positions :data:`ACTIONS`):
listen+ 1, like 2, skip 4 as dlrmv4's, and dislike 8, unlike 16, undislike 32 of their own, so no feedback is
merged into another's bit. ``events`` chooses the event types kept; the default, listens and likes, is what
dlrmv4 reads as history (its listen+, like and skip pools). Dislikes, unlikes and undislikes are left out by
default: dlrmv4 does not read them, and in retrieval every event is a target, so keeping them would ask the
model to predict tracks the user rejected.

Items are dense 1..N-1 in order of first appearance (``item_ids.npy``: each row's raw ``item_id``;
``users.npy``: each user row's ``uid``). With a mapping file beside ``multi_event.parquet`` each event gets
its item's artist (``side_artist``) or album (``side_album``): 0 for an item the file does not list, else
1.. in order of first appearance; an item listed several times keeps its last row, as the assignment
``table[item_id] = artist_id`` of a dlrmv4 Yambda reader leaves it.

Streaming: :data:`BATCH_ROWS` rows at a time (``ParquetFile.iter_batches``); a user is written once a
larger ``uid`` starts, so memory holds a batch, one user and the id tables (items; ~16 bytes per item of
each mapping file, ~40 per row while it is read), not the file. The file must be
sorted by (uid, timestamp), as Yambda's flat files are; every batch is checked and a row out of order is
an error. Bad input is a :class:`UserInputError` naming the file, the column and the row (rows count from
0, as pyarrow and pandas number them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dlrs_bench.data.cache import describe_inputs
from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential.cache import ItemIndex, SequenceCacheWriter

EVENTS_FILE = "multi_event.parquet"
EVENT_TYPES = ("listen", "like", "dislike", "unlike", "undislike")
DEFAULT_EVENTS = ("listen", "like")
#: Bit position of each action flag in ``actions.npy`` (values 1, 2, 4, ...: dlrmv4's LP, LIKE, SKIP first).
ACTIONS = {"listen_plus": 0, "like": 1, "skip": 2, "dislike": 3, "unlike": 4, "undislike": 5}
LISTEN_PLUS_PCT = 50  # played_ratio_pct >= 50: listen+, else skip
MEANING = {"listen_plus": f"a listen with played_ratio_pct >= {LISTEN_PLUS_PCT}",
           "skip": f"a listen with played_ratio_pct < {LISTEN_PLUS_PCT}"}
GRID_S = 5  # Yambda's timestamps are multiples of 5 seconds
#: side column -> (mapping file, its id column)
MAPPINGS = {"artist": ("artist_item_mapping.parquet", "artist_id"),
            "album": ("album_item_mapping.parquet", "album_id")}
#: The types Yambda writes, named in errors.
YAMBDA_TYPES = {"uid": "uint32", "item_id": "uint32", "timestamp": "uint32", "played_ratio_pct": "uint16",
                "event_type": "a dictionary of strings", "artist_id": "uint32", "album_id": "uint32"}
BATCH_ROWS = 1 << 20  # ~60 MB of columns and work arrays per batch

#: Progress callback: rows read so far.
Progress = Callable[[int], object]


def events_file(raw: Path) -> Path:
    """``multi_event.parquet`` of the folder ``raw`` (a file path is taken as is)."""
    raw = Path(raw)
    path = raw if raw.is_file() else raw / EVENTS_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: missing; Yambda's flat/<size>/{EVENTS_FILE} is the input")
    return path


def prepare_yambda(raw: Path, out: Path, events: tuple[str, ...] = DEFAULT_EVENTS,
                   progress: Progress | None = None) -> Path:
    """Write the Yambda events of ``raw`` (a folder with ``multi_event.parquet`` and optionally the mapping
    files, or the events file itself) whose type is in ``events`` as the sequence cache ``out``; returns
    ``out``. See the module docstring."""
    kept = check_events(events)
    path = events_file(raw)
    maps = {name: _item_map(path.parent / file, column)
            for name, (file, column) in MAPPINGS.items() if (path.parent / file).is_file()}
    names = [name for name in ACTIONS if _event_of(name) in kept]
    items = ItemIndex()
    sides = {name: ItemSide(mapping) for name, mapping in maps.items()}
    stats = {"rows": 0, "off_grid": 0, "kept": dict.fromkeys(kept, 0), "dropped": {}}
    with SequenceCacheWriter(out, side=tuple(maps), actions={n: ACTIONS[n] for n in names}) as writer:
        held: tuple[np.ndarray, ...] | None = None  # the last user of the previous batch (may go on)
        for columns in _kept_events(path, kept, stats, progress):
            if held is not None:
                columns = tuple(np.concatenate([a, b]) for a, b in zip(held, columns))
            uid = columns[0]
            starts = np.flatnonzero(np.diff(uid)) + 1
            cut = int(starts[-1]) if len(starts) else 0
            _write_users(writer, items, sides, tuple(c[:cut] for c in columns))
            held = tuple(c[cut:] for c in columns)
        if held is not None:
            _write_users(writer, items, sides, held)
        source = {
            "dataset": "yambda", "file": path.name,
            "inputs": [i.model_dump() for i in describe_inputs([path, *(m.path for m in maps.values())])],
            "events": list(kept), "rows_read": stats["rows"], "events_kept": stats["kept"],
            "events_dropped": stats["dropped"],
            "actions": {n: MEANING.get(n, f"a {n} event") for n in names},
            "timestamps": {"column": "timestamp", "unit": "s, on Yambda's own clock (not Unix time)",
                           "seconds_per_unit": 1, "grid_s": GRID_S, "off_grid": stats["off_grid"]},
            "order": "file order: sorted by (uid, timestamp); a user's events at the same time keep the file's order",
            "item_ids": "dense 1..N-1 in order of first appearance; item_ids.npy holds each row's item_id",
            "users": "users.npy holds each user row's uid",
            "side": {name: {"ids": f"0: the item is not in {m.path.name}; 1..: {MAPPINGS[name][1]} in order of "
                                   "first appearance; an item listed several times: its last row",
                            "items_listed_several_times": m.repeated} for name, m in maps.items()},
        }
        return writer.close(source, items=len(items), side_rows={n: len(side.index) for n, side in sides.items()},
                            item_ids=items.raw_ids())


def check_events(events: tuple[str, ...]) -> tuple[str, ...]:
    """``events`` in :data:`EVENT_TYPES` order, each known and named once."""
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown or not events:
        got = repr(unknown[0]) if unknown else "none"
        raise UserInputError(f"events: {got}: expected one or more of {', '.join(EVENT_TYPES)}")
    return tuple(e for e in EVENT_TYPES if e in events)


def _event_of(action: str) -> str:
    """The event type an action flag belongs to."""
    return "listen" if action in ("listen_plus", "skip") else action


def _write_users(writer: SequenceCacheWriter, items: ItemIndex, sides: dict[str, ItemSide],
                 columns: tuple[np.ndarray, ...]) -> None:
    """Append the complete users of ``columns`` (uid, item_id, timestamp, flags; each user's rows together)."""
    uid, item, stamp, flags = columns
    if not len(uid):
        return
    starts = np.concatenate([[0], np.flatnonzero(np.diff(uid)) + 1])
    dense = items.ids(item)
    writer.append(np.diff(np.concatenate([starts, [len(uid)]])), dense, stamp, actions=flags,
                  side={name: side.of(dense, item) for name, side in sides.items()}, users=uid[starts])


def _kept_events(path: Path, kept: tuple[str, ...], stats: dict, progress: Progress | None
                 ) -> Iterator[tuple[np.ndarray, ...]]:
    """(uid, item_id, timestamp, action flags) of every event of ``path`` whose type is in ``kept``, batch by
    batch, after checking every row (types, nulls, signs, order); ``stats`` counts rows and events."""
    columns = ["uid", "item_id", "timestamp", "event_type"] + (["played_ratio_pct"] if "listen" in kept else [])
    parquet = _open(path, columns)
    flag_of = np.array([1 << ACTIONS["listen_plus" if e == "listen" else e] for e in EVENT_TYPES], np.uint8)
    keep_code = np.isin(np.arange(len(EVENT_TYPES)), [EVENT_TYPES.index(e) for e in kept])
    last: tuple[int, int] | None = None  # (uid, timestamp) of the previous row
    first = 0
    for batch in _batches(parquet, path, columns):
        uid, item, stamp = (_ints(batch, name, path, first) for name in ("uid", "item_id", "timestamp"))
        last = _check_order(uid, stamp, last, path, first)
        code = _event_codes(batch.column("event_type"), path, first)
        flags = flag_of[code]
        if "listen" in kept:
            listen = code == EVENT_TYPES.index("listen")
            ratio = _listen_ratios(batch.column("played_ratio_pct"), listen, path, first)
            flags[listen & (ratio < LISTEN_PLUS_PCT)] = 1 << ACTIONS["skip"]
        counts = np.bincount(code, minlength=len(EVENT_TYPES))
        for i, name in enumerate(EVENT_TYPES):
            group = stats["kept"] if keep_code[i] else stats["dropped"]
            group[name] = group.get(name, 0) + int(counts[i])
        keep = keep_code[code]
        stats["off_grid"] += int(np.count_nonzero(stamp % GRID_S))
        first += len(uid)
        stats["rows"] = first
        if progress is not None:
            progress(first)
        yield uid[keep], item[keep], stamp[keep], flags[keep]


def _open(path: Path, columns: list[str]) -> pq.ParquetFile:
    """``path`` opened as parquet, after checking it has rows and ``columns`` of the right types."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserInputError(f"{path}: not a parquet file ({e})") from None
    schema = parquet.schema_arrow
    for name in columns:
        if name not in schema.names:
            raise UserInputError(f"{path}: column {name!r} is missing (the file has {', '.join(schema.names)})")
        got = schema.field(name).type
        text = (pa.types.is_dictionary(got) and _is_text(got.value_type)) or _is_text(got)
        fits = text if name == "event_type" else pa.types.is_integer(got) and got != pa.uint64()
        if not fits:
            kind = "strings" if name == "event_type" else "integers"
            raise UserInputError(f"{path}: column {name!r}: expected {kind} (Yambda: {YAMBDA_TYPES[name]}), "
                                 f"got {got}")
    if parquet.metadata.num_rows == 0:
        raise UserInputError(f"{path}: the file has no rows")
    return parquet


def _is_text(t: pa.DataType) -> bool:
    return str(t) in ("string", "large_string", "string_view")


def _batches(parquet: pq.ParquetFile, path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of ``parquet`` in batches of :data:`BATCH_ROWS` rows; a damaged file is an error."""
    try:
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise UserInputError(f"{path}: cannot read: {e}") from None


def _null_row(column: pa.Array) -> int:
    """Index of the first null of ``column``."""
    return int(np.argmax(~column.is_valid().to_numpy(zero_copy_only=False)))


def _ints(batch: pa.RecordBatch, name: str, path: Path, first: int) -> np.ndarray:
    """Column ``name`` of ``batch`` (rows from ``first``) as int64, refusing nulls and negative values."""
    column = batch.column(name)
    if column.null_count:
        raise UserInputError(f"{path}: row {first + _null_row(column):,}: {name}: missing value (null)")
    values = column.to_numpy().astype(np.int64, copy=False)
    if len(values) and values.min() < 0:
        at = int(np.argmax(values < 0))
        raise UserInputError(f"{path}: row {first + at:,}: {name}: {values[at]} is negative")
    return values


def _check_order(uid: np.ndarray, stamp: np.ndarray, last: tuple[int, int] | None, path: Path, first: int
                 ) -> tuple[int, int]:
    """Rows sorted by (uid, timestamp) within the batch and after the previous row ``last``; returns the last."""
    before = last or (int(uid[0]), int(stamp[0]))
    du, dt = np.diff(uid, prepend=before[0]), np.diff(stamp, prepend=before[1])
    bad = (du < 0) | ((du == 0) & (dt < 0))
    if bad.any():
        at = int(np.argmax(bad))
        prev = (uid[at - 1], stamp[at - 1]) if at else before
        sorted_ = "the rows must be sorted by uid, then timestamp (as Yambda's flat files are)"
        if du[at] < 0:
            raise UserInputError(f"{path}: row {first + at:,}: uid: {uid[at]} comes after {prev[0]}; {sorted_}")
        raise UserInputError(f"{path}: row {first + at:,}: timestamp: {stamp[at]} is earlier than the previous "
                             f"row's {prev[1]} of the same uid {uid[at]}; {sorted_}")
    return int(uid[-1]), int(stamp[-1])


def _event_codes(column: pa.Array, path: Path, first: int) -> np.ndarray:
    """Index in :data:`EVENT_TYPES` of each row's ``event_type`` (plain or dictionary-encoded strings)."""
    if column.null_count:
        raise UserInputError(f"{path}: row {first + _null_row(column):,}: event_type: missing value (null)")
    if pa.types.is_dictionary(column.type):
        codes = _codes(column.dictionary)[column.indices.to_numpy(zero_copy_only=False)]
    else:
        codes = _codes(column)
    if len(codes) and codes.min() < 0:
        at = int(np.argmax(codes < 0))
        raise UserInputError(f"{path}: row {first + at:,}: event_type: unknown event {column[at].as_py()!r} "
                             f"(Yambda's: {', '.join(EVENT_TYPES)})")
    return codes


def _codes(strings: pa.Array) -> np.ndarray:
    """Index of each string in :data:`EVENT_TYPES`, -1 where it is none of them."""
    index = pc.index_in(strings.cast(pa.string()), value_set=pa.array(EVENT_TYPES))
    return index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _listen_ratios(column: pa.Array, listen: np.ndarray, path: Path, first: int) -> np.ndarray:
    """``played_ratio_pct`` of the batch as int64 (0 where null), refusing a listen without one or below 0."""
    ratio = column.fill_null(0).to_numpy().astype(np.int64, copy=False)
    if column.null_count:
        missing = listen & ~column.is_valid().to_numpy(zero_copy_only=False)
        if missing.any():
            raise UserInputError(f"{path}: row {first + int(np.argmax(missing)):,}: played_ratio_pct: missing "
                                 "value (null) for a listen")
    negative = listen & (ratio < 0)
    if negative.any():
        at = int(np.argmax(negative))
        raise UserInputError(f"{path}: row {first + at:,}: played_ratio_pct: {ratio[at]} is negative")
    return ratio


@dataclass(frozen=True)
class ItemMap:
    """A mapping file: its ``path``, its distinct raw item ids ``items`` (sorted, int64 [K]), each one's raw
    artist or album id ``ids`` (int64 [K]: its last row) and how many items it lists more than once."""

    path: Path
    items: np.ndarray
    ids: np.ndarray
    repeated: int

    def lookup(self, item: np.ndarray) -> np.ndarray:
        """The raw artist or album id of each raw item id ``item`` [n]; -1 for an item the file does not list."""
        at = np.minimum(np.searchsorted(self.items, item), len(self.items) - 1)
        return np.where(self.items[at] == item, self.ids[at], -1)


class ItemSide:
    """Dense artist (or album) ids per event, kept per dense item id: a mapping lookup (a binary search over
    millions of ids: microseconds each) happens once per item, when it first appears, and an event's id is then a
    gather. ``index``: the dense ids, 1.. in order of first appearance (0: the item has none)."""

    def __init__(self, mapping: ItemMap) -> None:
        self.mapping, self.index = mapping, ItemIndex()
        self.of_item = np.zeros(1, np.int32)  # dense side id of each dense item id (row 0: padding)

    def of(self, dense: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Side ids ``[n]`` int32 of events with dense item ids ``dense`` and raw ones ``raw`` (both [n])."""
        new = dense >= len(self.of_item)
        if new.any():  # dense ids are numbered on: the new ones are len(of_item), len(of_item) + 1, ...
            _, first = np.unique(dense[new], return_index=True)
            side = self.mapping.lookup(raw[new][first])
            ids = np.zeros(len(side), np.int32)
            ids[side >= 0] = self.index.ids(side[side >= 0])
            self.of_item = np.concatenate([self.of_item, ids])
        return self.of_item[dense]


def _item_map(path: Path, column: str) -> ItemMap:
    """The mapping file ``path`` (``item_id`` and ``column``) read whole: ~40 bytes per row while sorted,
    16 per distinct item kept."""
    parquet = _open(path, ["item_id", column])
    items, ids, first = [], [], 0
    for batch in _batches(parquet, path, ["item_id", column]):
        items.append(_ints(batch, "item_id", path, first))
        ids.append(_ints(batch, column, path, first))
        first += batch.num_rows
    item = np.concatenate(items)
    del items
    order = np.argsort(item, kind="stable")  # stable: an item's rows stay in file order
    item = item[order]
    last = np.flatnonzero(np.append(item[1:] != item[:-1], True))  # the last row of each item
    rows = np.diff(last, prepend=-1)
    return ItemMap(path, item[last], np.concatenate(ids)[order[last]], int(np.count_nonzero(rows > 1)))
