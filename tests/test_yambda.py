"""Yambda's multi_event.parquet into a sequence cache: tiny files in Yambda's exact schema and dtypes, prepared
and checked by hand (users, events, item ids, action bits, artist / album side columns, seconds, the
manifest), streamed in batches smaller than a user, the ``yambda`` dataset's options, a popularity run on
the cache, and every bad input refused through the CLI with exit 2 naming the file, the column and the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dlrs_bench.cli import EXIT_INVALID, app
from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential import yambda
from dlrs_bench.sequential.cache import SequenceCache
from dlrs_bench.sequential.dataset_options import YambdaOptions
from dlrs_bench.sequential.yambda import prepare_yambda

# (uid, timestamp, item_id, is_organic, played_ratio_pct, track_length_seconds, event_type), sorted by
# (uid, timestamp) with a user's events at one time in make_multievent's order (listen before like)
ROWS = [
    (100, 10, 5000, 1, 80, 200, "listen"),    # row 0: listen+
    (100, 10, 5000, 1, None, None, "like"),   # row 1
    (100, 15, 6000, 0, 20, 180, "listen"),    # row 2: skip
    (100, 20, 6000, 0, None, None, "dislike"),
    (100, 25, 5000, 1, 50, 200, "listen"),    # row 4: listen+ at exactly 50, a re-listen
    (200, 5, 7000, 1, 49, 100, "listen"),     # row 5: skip at 49
    (200, 30, 5000, 1, None, None, "unlike"),
    (200, 37, 8000, 1, 100, 150, "listen"),   # row 7: off the 5 s grid
    (300, 40, 7000, 0, None, None, "dislike"),  # user 300 has no listen or like
    (300, 45, 7000, 0, None, None, "undislike"),
    (400, 0, 9000, 1, 150, 120, "listen"),    # row 10: > 100 % (rewound)
    (400, 60, 9000, 1, None, None, "like"),
    (400, 65, 6000, 1, 0, 180, "listen"),
]
COLUMNS = ("uid", "timestamp", "item_id", "is_organic", "played_ratio_pct", "track_length_seconds", "event_type")
TYPES = {"uid": pa.uint32(), "timestamp": pa.uint32(), "item_id": pa.uint32(), "is_organic": pa.uint8(),
         "played_ratio_pct": pa.uint16(), "track_length_seconds": pa.uint32()}
ARTISTS = [(11, 5000), (12, 6000), (13, 7000), (11, 8000), (14, 6000)]  # 6000 twice: its last row (14) counts
ALBUMS = [(21, 5000), (22, 9000)]
LP, LIKE, SKIP = 1, 2, 4


def events_table(rows=ROWS, dictionary: bool = True, **types: pa.DataType) -> pa.Table:
    """``rows`` as Yambda's multi_event.parquet has them: event_type a dictionary of strings (polars' Enum)."""
    data = {name: pa.array([r[i] for r in rows], type=types.get(name, TYPES.get(name)))
            for i, name in enumerate(COLUMNS[:-1])}
    kinds = pa.array([r[-1] for r in rows], type=pa.string())
    data["event_type"] = kinds.dictionary_encode() if dictionary else kinds
    return pa.table(data)


def write_raw(folder: Path, table: pa.Table | None = None, mappings: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(events_table() if table is None else table, folder / "multi_event.parquet")
    if mappings:
        for name, rows in (("artist", ARTISTS), ("album", ALBUMS)):
            pq.write_table(pa.table({f"{name}_id": pa.array([r[0] for r in rows], pa.uint32()),
                                     "item_id": pa.array([r[1] for r in rows], pa.uint32())}),
                           folder / f"{name}_item_mapping.parquet")
    return folder


def test_prepare_writes_listens_and_likes_with_dlrmv4_action_bits(tmp_path):
    cache = SequenceCache.open(prepare_yambda(write_raw(tmp_path / "raw"), tmp_path / "c"))
    m = cache.manifest
    assert (m.users, m.events, m.items) == (3, 9, 6)  # user 300 (a dislike and an undislike) is left out
    assert cache.users.tolist() == [100, 200, 400] and cache.lengths().tolist() == [4, 2, 3]
    assert cache.item_ids.tolist() == [-1, 5000, 6000, 7000, 8000, 9000]  # dense ids by first appearance
    assert cache.items.tolist() == [1, 1, 2, 1, 3, 4, 5, 5, 2]
    assert cache.timestamps.tolist() == [10, 10, 15, 25, 5, 37, 0, 60, 65]  # seconds, as Yambda's
    assert cache.actions.tolist() == [LP, LIKE, SKIP, LP, SKIP, LP, LP, LIKE, SKIP]
    assert m.actions == {"listen_plus": 0, "like": 1, "skip": 2} and m.actions_seen == LP | LIKE | SKIP
    # artists 11, 14 (6000's last row), 13 → 1, 2, 3 in order of appearance; 9000 has none (0)
    assert cache.side["artist"].tolist() == [1, 1, 2, 1, 3, 1, 0, 0, 2] and m.side["artist"] == 4
    assert cache.side["album"].tolist() == [1, 1, 0, 1, 0, 0, 2, 2, 0] and m.side["album"] == 3
    source = m.source
    assert source["dataset"] == "yambda" and source["events"] == ["listen", "like"] and source["rows_read"] == 13
    assert source["events_kept"] == {"listen": 7, "like": 2}
    assert source["events_dropped"] == {"dislike": 2, "unlike": 1, "undislike": 1}
    assert source["timestamps"]["seconds_per_unit"] == 1 and source["timestamps"]["grid_s"] == 5
    assert source["timestamps"]["off_grid"] == 1 and "Yambda's own clock" in source["timestamps"]["unit"]
    assert source["side"]["artist"]["items_listed_several_times"] == 1  # 6000
    assert source["side"]["album"]["items_listed_several_times"] == 0
    assert [Path(i["path"]).name for i in source["inputs"]] == ["multi_event.parquet", "artist_item_mapping.parquet",
                                                                "album_item_mapping.parquet"]


def test_every_event_type_has_its_own_bit_and_plain_strings_read_the_same(tmp_path):
    raw = write_raw(tmp_path / "raw", events_table(dictionary=False), mappings=False)
    cache = SequenceCache.open(prepare_yambda(raw, tmp_path / "c", events=yambda.EVENT_TYPES))
    assert cache.users.tolist() == [100, 200, 300, 400] and cache.manifest.events == 13
    assert cache.actions.tolist() == [LP, LIKE, SKIP, 8, LP, SKIP, 16, LP, 8, 32, LP, LIKE, SKIP]
    assert cache.manifest.actions == yambda.ACTIONS and cache.manifest.side == {}
    only_likes = SequenceCache.open(prepare_yambda(raw / "multi_event.parquet", tmp_path / "l", events=("like",)))
    assert only_likes.users.tolist() == [100, 400] and only_likes.actions.tolist() == [LIKE, LIKE]
    assert only_likes.manifest.actions == {"like": 1}


def test_users_spanning_batches_give_the_same_cache(tmp_path, monkeypatch):
    raw = write_raw(tmp_path / "raw")
    whole = SequenceCache.open(prepare_yambda(raw, tmp_path / "whole"))
    monkeypatch.setattr(yambda, "BATCH_ROWS", 2)
    pieces = SequenceCache.open(prepare_yambda(raw, tmp_path / "pieces"))
    for name in ("offsets", "items", "timestamps", "actions", "users", "item_ids"):
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name))
    for name in ("artist", "album"):
        np.testing.assert_array_equal(pieces.side[name], whole.side[name])


def test_yambda_options_default_to_yambdas_split_and_keep_seen_items(tmp_path):
    options = YambdaOptions(path=str(tmp_path))
    assert options.exclude_seen is False
    split = options.split
    assert (split.protocol, split.train_end, split.gap_s, split.test_end, split.val_s) == \
        ("temporal", 25_911_800, 1_800, 26_000_000, 0)  # test = the last day before Yambda's LAST_TIMESTAMP
    assert YambdaOptions(path=str(tmp_path), exclude_seen=True).exclude_seen is True
    with pytest.raises(UserInputError, match="no manifest.json"):
        options.check_data()


def test_a_popularity_run_trains_on_the_prepared_cache(tmp_path):
    import torch

    from dlrs_bench.config.schema import validate_scenario
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.engine.train import train
    from dlrs_bench.measure.mllog import EventLog

    cache = prepare_yambda(write_raw(tmp_path / "raw"), tmp_path / "c")
    spec, errors = validate_scenario({
        "dataset": {"name": "yambda", "path": str(cache),
                    "split": {"protocol": "temporal", "train_end": 30, "gap_s": 0, "test_end": 70}},
        "model": {"name": "popularity"}, "train": {"batch_size": 1, "max_epochs": 1},
        "target": {"metric": "ndcg@10", "value": 0.9}})
    assert not errors and spec.dataset.exclude_seen is False
    dataset = build_dataset(spec.dataset)
    assert dataset.summary()["events"] == 9 and dataset.info["time_range_s"] == (0, 65)
    assert len(dataset.splits["train"]) == 1 and len(dataset.splits["test"]) == 3  # user 100; t = 37, 60, 65
    outcome = train(spec, dataset, 0, torch.device("cpu"), EventLog(tmp_path / "log.mllog"))
    assert 0 <= outcome.metrics["ndcg@10"] <= 1 and outcome.target["reached"] is False


def test_a_cache_of_other_sequences_is_not_yambda(tmp_path):
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.sequential.movielens import prepare_movielens_sequences

    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.dat").write_text("1::10::5::100\n1::11::4::200\n")
    prepare_movielens_sequences(tmp_path / "ml", tmp_path / "c")
    with pytest.raises(UserInputError, match="holds prepared 'movielens' sequences, not yambda"):
        build_dataset(YambdaOptions(path=str(tmp_path / "c")))


def prepare_cli(*args: str):
    return CliRunner().invoke(app, ["data", "prepare", "yambda", *args])


def test_the_cli_prepares_and_prints_a_summary(tmp_path):
    raw = write_raw(tmp_path / "raw")
    result = prepare_cli("--raw", str(raw), "--out", str(tmp_path / "c"), "--events", "listen, like,dislike")
    assert result.exit_code == 0, result.output
    assert "4 users, 11 events, 5 items" in result.output
    assert SequenceCache.open(tmp_path / "c").manifest.source["events"] == ["listen", "like", "dislike"]


def unsorted() -> list[tuple]:
    rows = list(ROWS)
    rows[2], rows[4] = rows[4], rows[2]  # user 100: t = 25 before t = 15
    return rows


def bad_inputs(raw: Path) -> dict[str, tuple[pa.Table | None, str]]:
    """name -> (the events table, what the message says besides the file)."""
    table = events_table()
    return {
        "missing column": (table.drop_columns(["timestamp"]), "column 'timestamp' is missing"),
        "wrong type": (events_table(timestamp=pa.float64()),
                       "column 'timestamp': expected integers (Yambda: uint32), got double"),
        "event_type not text": (table.set_column(6, "event_type", pa.array(range(13), pa.int8())),
                                "column 'event_type': expected strings (Yambda: a dictionary of strings), got int8"),
        "unsorted timestamps": (events_table(unsorted()),
                                "row 3: timestamp: 20 is earlier than the previous row's 25 of the same uid 100"),
        "unsorted users": (events_table(ROWS[5:8] + ROWS[:5]), "row 3: uid: 100 comes after 200"),
        "negative timestamp": (events_table([(100, -5, *ROWS[0][2:])] + ROWS[1:], timestamp=pa.int64()),
                               "row 0: timestamp: -5 is negative"),
        "null uid": (events_table(ROWS[:3] + [(None, *ROWS[3][1:])] + ROWS[4:]), "row 3: uid: missing value (null)"),
        "listen without a ratio": (events_table(ROWS[:5] + [(*ROWS[5][:4], None, 100, "listen")] + ROWS[6:]),
                                   "row 5: played_ratio_pct: missing value (null) for a listen"),
        "unknown event": (events_table(ROWS[:7] + [(*ROWS[7][:6], "skip")] + ROWS[8:]),
                          "row 7: event_type: unknown event 'skip'"),
        "empty file": (events_table([]), "the file has no rows"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path())))
def test_bad_events_files_exit_2_naming_file_column_and_row(tmp_path, case):
    table, message = bad_inputs(tmp_path)[case]
    raw = write_raw(tmp_path / "raw", table)
    result = prepare_cli("--raw", str(raw), "--out", str(tmp_path / "c"))
    assert result.exit_code == EXIT_INVALID, result.output
    assert f"{raw / 'multi_event.parquet'}: " in result.output and message in result.output
    assert not (tmp_path / "c").exists() and [p.name for p in tmp_path.iterdir()] == ["raw"]  # nothing left behind


def test_missing_and_unreadable_files_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = prepare_cli("--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "c"))
    assert result.exit_code == EXIT_INVALID
    assert f"{tmp_path / 'empty' / 'multi_event.parquet'}: missing" in result.output
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "multi_event.parquet").write_text("uid,item_id\n1,2\n")
    result = prepare_cli("--raw", str(tmp_path / "text"), "--out", str(tmp_path / "c"))
    assert result.exit_code == EXIT_INVALID and "multi_event.parquet: not a parquet file" in result.output
    raw = write_raw(tmp_path / "raw")
    pq.write_table(pa.table({"artist": pa.array([1], pa.uint32()), "item_id": pa.array([5000], pa.uint32())}),
                   raw / "artist_item_mapping.parquet")
    result = prepare_cli("--raw", str(raw), "--out", str(tmp_path / "c"))
    assert result.exit_code == EXIT_INVALID
    assert f"{raw / 'artist_item_mapping.parquet'}: column 'artist_id' is missing" in result.output


@pytest.mark.parametrize("args, message", [
    (["--events", "listen,skip"], "--events: 'skip': expected one or more of listen, like, dislike, unlike, undislike"),
    (["--rows", "5"], "--rows: not for yambda"),
    (["--shuffle-seed", "1"], "--shuffle-seed: not for yambda"),
    (["--format", "mlperf-multihot"], "--format: not for yambda"),
    (["--raw", "x"], "--raw: yambda takes one folder"),
])
def test_flags_that_do_not_apply_exit_2(tmp_path, args, message):
    raw = write_raw(tmp_path / "raw")
    result = prepare_cli("--raw", str(raw), "--out", str(tmp_path / "c"), *args)
    assert result.exit_code == EXIT_INVALID and message in result.output, result.output


def test_events_is_only_for_yambda(tmp_path):
    result = CliRunner().invoke(app, ["data", "prepare", "synthetic", "--rows", "10", "--events", "like",
                                      "--out", str(tmp_path / "c")])
    assert result.exit_code == EXIT_INVALID and "--events: only for yambda" in result.output
