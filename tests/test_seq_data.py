"""Sequence data: the cache format, splits, retrieval batches, MovieLens and synthetic sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dlrs_bench.errors import UserInputError
from dlrs_bench.sequential.batches import iter_retrieval_batches
from dlrs_bench.sequential.cache import ItemIndex, SequenceCache, SequenceCacheWriter
from dlrs_bench.sequential.data_options import SequenceSplitOptions, SyntheticSequenceOptions
from dlrs_bench.sequential.movielens import bundled_movielens_sequences, prepare_movielens_sequences
from dlrs_bench.sequential.splits import leave_last_out, make_splits, temporal, training_windows
from dlrs_bench.sequential.synthetic import SequenceTeacher, synthetic_sequences, write_synthetic_sequences


def write_cache(out: Path, sequences: list[list[int]], times: list[list[int]] | None = None) -> SequenceCache:
    """A cache of one user per list of item ids (timestamps 10 * position unless given), one chunk."""
    times = times or [[10 * i for i in range(len(s))] for s in sequences]
    with SequenceCacheWriter(out) as writer:
        writer.append([len(s) for s in sequences], np.concatenate(sequences), np.concatenate(times))
        writer.close({"test": True})
    return SequenceCache.open(out)


# ---------------------------------------------------------------- format


def test_cache_round_trips_two_chunks(tmp_path):
    out = tmp_path / "c"
    with SequenceCacheWriter(out, side=("rating",), actions={"click": 0, "like": 2}) as writer:
        writer.append(np.array([2, 1]), np.array([5, 3, 9]), np.array([1, 2, 0]), actions=np.array([1, 5, 0]),
                      side={"rating": np.array([0, 4, 10])}, users=np.array([70, 80]))
        writer.append(np.array([0, 3]), np.array([1, 1, 2]), np.array([7, 7, 8]), actions=np.array([4, 0, 1]),
                      side={"rating": np.array([1, 2, 3])}, users=np.array([90]))  # offsets form
        writer.close({"made_by": "test"}, items=12, item_ids=np.arange(12) * 10)
    cache = SequenceCache.open(out)
    m = cache.manifest
    assert (m.users, m.events, m.items, m.side, m.actions) == (3, 6, 12, {"rating": 11}, {"click": 0, "like": 2})
    assert m.ranges == {"items": (1, 9), "timestamps": (0, 8), "side.rating": (0, 10)} and m.actions_seen == 5
    assert m.source == {"made_by": "test"} and m.time_unit == "s"
    assert cache.offsets.tolist() == [0, 2, 3, 6] and cache.lengths().tolist() == [2, 1, 3]
    assert cache.items.tolist() == [5, 3, 9, 1, 1, 2] and cache.items.dtype == np.int32
    assert cache.timestamps.tolist() == [1, 2, 0, 7, 7, 8] and cache.timestamps.dtype == np.int64
    assert cache.actions.tolist() == [1, 5, 0, 4, 0, 1] and cache.side["rating"].tolist() == [0, 4, 10, 1, 2, 3]
    assert cache.users.tolist() == [70, 80, 90] and cache.item_ids.tolist() == list(range(0, 120, 10))
    assert isinstance(cache.items.base, np.memmap) and not cache.items.flags.writeable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary folder left


def test_a_failure_mid_write_leaves_nothing(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(RuntimeError), SequenceCacheWriter(out) as writer:
        writer.append([2], np.array([1, 2]), np.array([0, 1]))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="item_ids"), SequenceCacheWriter(out) as writer:  # fails inside close
        writer.append([2], np.array([1, 2]), np.array([0, 1]))
        writer.close({}, items=3, item_ids=np.arange(2))
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_chunks(tmp_path):
    with SequenceCacheWriter(tmp_path / "c") as writer:
        with pytest.raises(ValueError, match=r"user 1 \(event 1 of its sequence\) goes back in time \(9 then 8\)"):
            writer.append([1, 2], np.array([1, 2, 3]), np.array([50, 9, 8]))  # user 1 goes back; 0 -> 1 may
        with pytest.raises(ValueError, match=r"items: ids \[0, 2\] outside"):
            writer.append([2], np.array([0, 2]), np.array([0, 1]))  # 0 is padding
        with pytest.raises(ValueError, match="0 events"):
            writer.append([0, 1, 1], np.array([1, 2]), np.array([0, 1]))  # offsets with an empty user
        assert writer.events == 0
    with SequenceCacheWriter(tmp_path / "d", actions={"click": 0}) as writer:
        with pytest.raises(ValueError, match="flags 0x3 hold bits no action"):
            writer.append([2], np.array([1, 2]), np.array([0, 1]), actions=np.array([1, 3]))
        with pytest.raises(ValueError, match="actions: the writer has actions"):
            writer.append([2], np.array([1, 2]), np.array([0, 1]))


@pytest.fixture
def small_cache(tmp_path) -> Path:
    write_cache(tmp_path / "c", [[1, 2, 3], [4, 5]])
    return tmp_path / "c"


@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m.update(users=0), "users"),
    (lambda m: m.update(items=3), "ranges.items: ids [1, 5] outside the table's [1, 2]"),
    (lambda m: m.update(events=1), "events: 1 events for 2 users"),
    (lambda m: m.update(actions={"a": 1, "b": 1}), "actions: bits must be distinct"),
    (lambda m: m.update(actions_seen=3), "actions_seen"),
    (lambda m: m.update(colour="red"), "colour"),
    (lambda m: m.update(time_unit="ms"), "time_unit"),
    (lambda m: m.update(version=2), "format, version"),
    (lambda m: m["ranges"].pop("timestamps"), "ranges: expected"),
])
def test_bad_manifest_fields_are_named(small_cache, edit, field):
    path = small_cache / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserInputError) as e:
        SequenceCache.open(small_cache)
    assert str(e.value).startswith(f"{path}: ") and field in str(e.value)


def test_files_that_disagree_with_the_manifest_are_named(small_cache):
    items = small_cache / "items.npy"
    items.write_bytes(items.read_bytes()[:-4])  # truncated: one event short
    with pytest.raises(UserInputError, match=rf"{items}: 144 bytes but the manifest .* says 148; the cache is trunc"):
        SequenceCache.open(small_cache)
    np.save(items, np.array([1, 2, 3, 4, 5], np.int64))  # the right length, the wrong dtype
    with pytest.raises(UserInputError, match=rf"{items}: holds int64 \(5,\), but .* int32 \(5,\)"):
        SequenceCache.open(small_cache)
    np.save(items, np.array([1, 2, 3, 4, 5], np.int32))
    np.save(small_cache / "offsets.npy", np.array([0, 5, 5], np.int64))  # user 1 has no events
    with pytest.raises(UserInputError, match=r"offsets.npy: user 1 has 0 events"):
        SequenceCache.open(small_cache)
    (small_cache / "timestamps.npy").unlink()
    with pytest.raises(UserInputError, match=r"timestamps.npy: missing"):
        SequenceCache.open(small_cache)


def test_item_index_numbers_by_first_appearance():
    index = ItemIndex()
    assert index.ids(np.array([50, 7, 50, 9])).tolist() == [1, 2, 1, 3]
    assert index.ids(np.array([3, 9, 100, 3])).tolist() == [4, 3, 5, 4]
    assert len(index) == 6 and index.raw_ids().tolist() == [-1, 50, 7, 9, 3, 100]


# ---------------------------------------------------------------- splits


def test_leave_last_out_on_three_users(tmp_path):
    cache = write_cache(tmp_path / "c", [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]])
    splits = leave_last_out(cache)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert train.users.tolist() == [0, 1] and train.positions.tolist() == [3, 7]  # [1, 2, 3] and [6, 7]
    assert val.users.tolist() == [0, 2] and val.positions.tolist() == [3, 8]  # targets 4 and 9
    assert test.users.tolist() == [0, 2] and test.positions.tolist() == [4, 9]  # targets 5 and 10
    assert all(s.users.dtype == s.positions.dtype == np.int64 for s in splits.values())
    description = test.describe()
    assert description["protocol"] == "leave-last-out" and description["samples"] == 2
    assert (description["users_evaluated"], description["users_train_only"], description["users_dropped"],
            description["users_evaluated_without_train_target"]) == (2, 1, 0, 1)
    assert description["prefix_events"] == 4 + 2

    batch = next(iter_retrieval_batches(test, 8, 3, seed=0, shuffle=False))
    assert batch.items.tolist() == [[2, 3, 4], [8, 9, 0]] and batch.lengths.tolist() == [3, 2]
    assert batch.target.tolist() == [5, 10]
    assert batch.seen_values.tolist() == [1, 2, 3, 4, 8, 9] and batch.seen_offsets.tolist() == [0, 4, 6]
    batch = next(iter_retrieval_batches(val, 8, 3, seed=0, shuffle=False))
    assert batch.items.tolist() == [[1, 2, 3], [8, 0, 0]] and batch.target.tolist() == [4, 9]
    assert batch.timestamps.tolist() == [[0, 10, 20], [0, 0, 0]]
    batch = next(iter_retrieval_batches(train, 8, 5, seed=0, shuffle=False))
    assert batch.items.tolist() == [[1, 2], [6, 0]] and batch.targets.tolist() == [[2, 3], [7, 0]]
    assert batch.lengths.tolist() == [2, 1] and batch.target is None and batch.seen_values is None


def test_temporal_split_by_hand(tmp_path):
    times = [[0, 10, 20, 30, 40, 50], [5, 25, 45], [35, 41]]
    cache = write_cache(tmp_path / "c", [[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11]], times)
    splits = temporal(cache, train_end=30, gap_s=10, test_end=50, val_s=10)  # train < 20, val [20, 30), test [40, 50)
    assert splits["train"].users.tolist() == [0] and splits["train"].positions.tolist() == [2]  # user 1: 1 event
    assert splits["val"].positions.tolist() == [2, 7] and splits["val"].users.tolist() == [0, 1]  # t 20 and 25
    assert splits["test"].positions.tolist() == [4, 8, 10] and splits["test"].users.tolist() == [0, 1, 2]
    assert splits["test"].describe()["targets_dropped_without_history"] == {"test": 0, "val": 0}
    same = temporal(cache, train_end=30, gap_s=10, test_end=50)
    assert same["train"].positions.tolist() == [3, 8] and same["val"].positions is same["test"].positions
    assert same["val"].describe()["val"] == "the test split (val_s = 0)"
    dropped = temporal(cache, train_end=30, gap_s=0, test_end=36)  # user 2's first event (35) has no history
    assert dropped["test"].positions.tolist() == [3] and dropped["test"].describe()[
        "targets_dropped_without_history"]["test"] == 1
    with pytest.raises(ValueError, match="train_end \\+ gap_s < test_end"):
        temporal(cache, train_end=30, gap_s=20, test_end=50)


def test_temporal_split_has_no_leakage(tmp_path):
    options = SyntheticSequenceOptions(users=300, items=500, max_length=400)
    cache = SequenceCache.open(write_synthetic_sequences(options, tmp_path / "s"))
    times = np.asarray(cache.timestamps)
    train_end, test_end = int(np.quantile(times, 0.6)), int(np.quantile(times, 0.9))
    gap = 86_400
    splits = temporal(cache, train_end, gap, test_end)
    test, train = splits["test"], splits["train"]
    assert len(test) > 100 and len(train) > 100
    target_times = times[test.positions]
    assert target_times.min() >= train_end + gap and target_times.max() < test_end
    starts = test.starts()
    assert (cache.offsets[test.users] == starts).all()  # history: every earlier event of the user
    # no history event after its target: the last history event is the one before the target
    assert (times[test.positions - 1] <= target_times).all() and (test.positions > starts).all()
    for batch in iter_retrieval_batches(test, 64, 1000, seed=0, shuffle=False):
        t = batch.timestamps.numpy()
        last = t[np.arange(len(batch)), batch.lengths.numpy() - 1]
        assert (t.max(axis=1) <= last).all()
    expected = np.flatnonzero((times >= train_end + gap) & (times < test_end))
    expected = expected[expected > cache.offsets[np.searchsorted(cache.offsets, expected, side="right") - 1]]
    assert test.positions.tolist() == expected.tolist()
    stops, firsts = train.positions, cache.offsets[train.users]
    assert (times[stops - 1] < train_end).all() and (stops - firsts >= 2).all()
    ends = cache.offsets[train.users + 1]
    assert (times[stops[stops < ends]] >= train_end).all()  # the prefix holds every event before train_end


def test_split_options():
    assert SequenceSplitOptions().protocol == "leave-last-out"
    with pytest.raises(ValidationError, match="train_end: the temporal protocol needs it"):
        SequenceSplitOptions(protocol="temporal", test_end=5)
    with pytest.raises(ValidationError, match="test_end: 5 must come after"):
        SequenceSplitOptions(protocol="temporal", train_end=4, gap_s=1, test_end=5)
    with pytest.raises(ValidationError, match="gap_s: only the temporal protocol"):
        SequenceSplitOptions(gap_s=3)


# ---------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> SequenceCache:
    options = SyntheticSequenceOptions(users=400, items=300, categories=10, mean_length=30, max_length=120)
    return SequenceCache.open(write_synthetic_sequences(options, tmp_path_factory.mktemp("syn") / "c"))


def test_train_batches_are_shifted_and_padded(synthetic):
    train = leave_last_out(synthetic)["train"]
    items, times = np.asarray(synthetic.items), np.asarray(synthetic.timestamps)
    seen = 0
    for batch in iter_retrieval_batches(train, 64, 50, seed=3):
        x, y, t, n = batch.items.numpy(), batch.targets.numpy(), batch.timestamps.numpy(), batch.lengths.numpy()
        assert x.shape == y.shape == t.shape == (len(batch), n.max()) and n.max() <= 50
        for b, user in enumerate(batch.users.numpy()):
            stop = train.positions[np.flatnonzero(train.users == user)[0]]
            start = max(synthetic.offsets[user], stop - 51)
            assert n[b] == stop - start - 1
            assert x[b, : n[b]].tolist() == items[start : stop - 1].tolist()
            assert y[b, : n[b]].tolist() == items[start + 1 : stop].tolist()
            assert t[b, : n[b]].tolist() == times[start : stop - 1].tolist()
            assert (x[b, n[b] :] == 0).all() and (y[b, n[b] :] == 0).all() and (t[b, n[b] :] == 0).all()
        assert (y[:, :-1][x[:, 1:] != 0] == x[:, 1:][x[:, 1:] != 0]).all()  # targets = inputs shifted by one
        seen += len(batch)
    assert seen == len(train)


def test_ranks_partition_a_global_batch_and_seeds_repeat(synthetic):
    train = leave_last_out(synthetic)["train"]
    whole = [b.users.tolist() for b in iter_retrieval_batches(train, 48, 20, seed=5)]
    again = [b.users.tolist() for b in iter_retrieval_batches(train, 48, 20, seed=5)]
    other = [b.users.tolist() for b in iter_retrieval_batches(train, 48, 20, seed=6)]
    assert whole == again and whole != other and sorted(sum(whole, [])) == sorted(train.users.tolist())
    shards = [[b.users.tolist() for b in iter_retrieval_batches(train, 48, 20, seed=5, rank=r, world=3)]
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(whole) - len(shards[0]) == (len(whole[-1]) < 3)
    for i, users in enumerate(whole[: len(shards[0])]):
        assert [shards[r][i] for r in range(3)] == [users[r::3] for r in range(3)]
    # a training global batch smaller than the world is dropped; evaluation keeps every sample
    assert len(list(iter_retrieval_batches(train, len(train) - 1, 20, seed=0, world=2))) == 1
    test = leave_last_out(synthetic)["test"]
    shares = [list(iter_retrieval_batches(test, len(test) - 1, 20, seed=0, rank=r, world=2, shuffle=False))
              for r in range(2)]
    assert len(test) == 400 and [[len(b) for b in share] for share in shares] == [[200, 1], [199, 0]]


@pytest.mark.parametrize("split_name", ["train", "test"])
def test_row_copies_equal_gathers(synthetic, split_name, monkeypatch):
    """Long rows are copied row by row, short ones gathered at once: the same batches either way."""
    import dlrs_bench.sequential.batches as batches

    split = leave_last_out(synthetic)[split_name]
    gathered = list(iter_retrieval_batches(split, 50, 40, seed=1))
    monkeypatch.setattr(batches, "ROW_COPY_EVENTS", 0)
    copied = list(iter_retrieval_batches(split, 50, 40, seed=1))
    assert len(gathered) == len(copied) > 1
    for a, b in zip(gathered, copied):
        for name in ("items", "timestamps", "lengths", "users", "targets", "target", "seen_values", "seen_offsets"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), name


def test_eval_batches_truncate_history_but_see_all_of_it(synthetic):
    test = leave_last_out(synthetic)["test"]
    items = np.asarray(synthetic.items)
    for batch in iter_retrieval_batches(test, 100, 8, seed=0, shuffle=False):
        for b, user in enumerate(batch.users.numpy()):
            start, end = synthetic.offsets[user], synthetic.offsets[user + 1]
            assert batch.target[b] == items[end - 1]
            assert batch.items[b, : batch.lengths[b]].tolist() == items[max(start, end - 9) : end - 1].tolist()
            lo, hi = batch.seen_offsets[b : b + 2].tolist()
            assert batch.seen_values[lo:hi].tolist() == items[start : end - 1].tolist()
    batch = next(iter_retrieval_batches(test, 4, 8, seed=0)).to("cpu")
    assert batch.items.dtype == batch.seen_offsets.dtype == batch.target.dtype == torch.int64


# ---------------------------------------------------------------- MovieLens


def test_bundled_movielens_sequences(tmp_path):
    cache = SequenceCache.open(bundled_movielens_sequences(tmp_path))
    assert (cache.num_users, cache.manifest.events, cache.num_items) == (610, 100_836, 9_725)
    assert cache.users.tolist() == list(range(1, 611))
    first, last = cache.offsets[0], cache.offsets[1]
    assert last - first == 232  # user 1: `awk -F, '$1==1' ratings.csv | sort -t, -k4,4n -k2,2n`
    assert cache.item_ids[cache.items[first : first + 3]].tolist() == [804, 1210, 2018]
    assert cache.timestamps[first : first + 3].tolist() == [964980499, 964980499, 964980523]
    assert cache.side["rating"][first : first + 3].tolist() == [8, 10, 10]  # 4.0, 5.0, 5.0 stars
    assert cache.item_ids[cache.items[last - 1]] == 2492 and cache.timestamps[last - 1] == 965719662
    u610 = slice(cache.offsets[609], cache.offsets[610])
    assert cache.lengths()[609] == 1302
    assert cache.item_ids[cache.items[u610]][[0, -1]].tolist() == [318, 3917]
    assert cache.timestamps[u610][[0, -1]].tolist() == [1479541963, 1495959411]
    assert cache.manifest.source["interactions"].startswith("every rating")
    assert bundled_movielens_sequences(tmp_path) == cache.path  # built once, reopened


ML1M = ["1::1193::5::978300760", "1::661::3::978302109", "1::914::3::978301968", "2::1357::5::978298709",
        "2::661::4::978298709"]


def test_raw_ml1m_folder(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("\n".join(ML1M) + "\n")
    cache = SequenceCache.open(prepare_movielens_sequences(tmp_path / "ml-1m", tmp_path / "out"))
    assert cache.users.tolist() == [1, 2] and cache.lengths().tolist() == [3, 2]
    assert cache.item_ids[cache.items].tolist() == [1193, 914, 661, 661, 1357]  # by (time, movie) per user
    assert cache.items.tolist() == [1, 2, 3, 3, 4] and cache.item_ids.tolist() == [-1, 1193, 914, 661, 1357]
    assert cache.side["rating"].tolist() == [10, 6, 6, 8, 10]
    assert cache.timestamps.tolist() == [978300760, 978301968, 978302109, 978298709, 978298709]


@pytest.mark.parametrize(("name", "lines", "message"), [
    ("ratings.dat", [*ML1M[:3], "2::1357::5", *ML1M[4:]], r"ratings.dat:4: expected 4 '::'-separated fields, got 3"),
    ("ratings.dat", [*ML1M[:2], "1::x914::3::978301968"], r"ratings.dat:3: movieId: must be an integer, got 'x914'"),
    ("ratings.dat", [*ML1M[:2], "1::914::7::978301968"], r"ratings.dat:3: rating: must be 0 to 5 in steps of 0.5"),
    ("ratings.dat", [*ML1M, "1::5::3::978301968"], r"ratings.dat:6: userId: user 1 appears again after other"),
    ("ratings.csv", ["userId,movieId,rating,timestamp", "1,2,3.5,10", "1,3,4.25,11"],
     r"ratings.csv:3: rating: must be 0 to 5 in steps of 0.5, got '4.25'"),
    ("ratings.csv", ["user,movie,rating,timestamp", "1,2,3.5,10"], r"ratings.csv:1: expected the header"),
])
def test_malformed_raw_lines_are_errors(tmp_path, name, lines, message):
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=message):
        prepare_movielens_sequences(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_raw_users_may_span_chunks(tmp_path, monkeypatch):
    import dlrs_bench.sequential.movielens as movielens

    monkeypatch.setattr(movielens, "CHUNK_LINES", 1)  # a chunk of about one line: users span chunks
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},4.0,{100 - m}" for u in (3, 1, 2) for m in range(u + 2)]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    cache = SequenceCache.open(prepare_movielens_sequences(tmp_path, tmp_path / "out"))
    assert cache.users.tolist() == [3, 1, 2] and cache.lengths().tolist() == [5, 3, 4]
    assert cache.item_ids[cache.items[:5]].tolist() == [4, 3, 2, 1, 0]  # by time: movie m at 100 - m


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_as_configured(tmp_path):
    options = SyntheticSequenceOptions(users=500, items=400, categories=8, length="fixed", mean_length=12,
                                       max_length=12, min_length=3, stay=1.0, drift=0.0, seed=4)
    a = SequenceCache.open(write_synthetic_sequences(options, tmp_path / "a"))
    b = SequenceCache.open(write_synthetic_sequences(options, tmp_path / "b"))
    assert np.array_equal(a.items, b.items) and np.array_equal(a.timestamps, b.timestamps)
    assert a.manifest.source == b.manifest.source and a.manifest.items == 401
    c = SequenceCache.open(write_synthetic_sequences(options.model_copy(update={"seed": 5}), tmp_path / "c"))
    assert not np.array_equal(a.items, c.items)
    assert (a.lengths() == 12).all()
    teacher = SequenceTeacher(options)
    category = np.zeros(401, np.int64)
    category[teacher.items] = np.repeat(np.arange(8), teacher.sizes)
    per_user = category[np.asarray(a.items)].reshape(500, 12)
    assert (per_user == per_user[:, :1]).all()  # stay = 1, drift = 0: one category per user
    assert all(len(set(row)) == 12 for row in a.items.reshape(500, 12).tolist())  # no item twice
    assert sorted(teacher.sizes.tolist()) == [50] * 8
    assert (np.diff(a.timestamps.reshape(500, 12), axis=1) >= 1).all()


def test_synthetic_lengths_and_ceiling(tmp_path):
    options = SyntheticSequenceOptions(users=3000, items=2000, categories=20, mean_length=20, min_length=3,
                                       max_length=400)
    cache = SequenceCache.open(write_synthetic_sequences(options, tmp_path / "c"))
    lengths = cache.lengths()
    assert lengths.min() >= 3 and lengths.max() <= 400 and abs(lengths.mean() - 20) < 1.0
    ceiling = cache.manifest.source["ceiling"]
    assert ceiling["test"]["targets"] == ceiling["val"]["targets"] == 3000
    for split in ("val", "test"):
        values = [ceiling[split][f"hr@{k}"] for k in (10, 50, 200)]
        assert 0 < values[0] < values[1] < values[2] <= 1
        assert 0 < ceiling[split]["ndcg@10"] <= ceiling[split]["hr@10"]
        assert 0 < ceiling[split]["std_err"]["hr@10"] < 0.01
    starts = cache.offsets[:-1]
    assert all(len(set(cache.items[s:e].tolist())) == e - s for s, e in zip(starts[:200], cache.offsets[1:201]))
    # a ranker that knows only item popularity (from train) stays below the teacher's ceiling
    train_items = np.asarray(cache.items)[np.concatenate([np.arange(s, e - 2) for s, e in
                                                          zip(cache.offsets[:-1], cache.offsets[1:])])]
    top10 = np.argsort(-np.bincount(train_items, minlength=cache.num_items))[:10]
    popularity_hr = np.isin(np.asarray(cache.items)[cache.offsets[1:] - 1], top10).mean()
    assert popularity_hr < ceiling["test"]["hr@10"] - 0.05


def test_synthetic_ceiling_exact_case(tmp_path):
    """One category per user for ever, uniform items within it (10 of 100), never twice: the test target is
    one of the 6 items of the category the user has not met (the val target one of 7), each as likely."""
    options = SyntheticSequenceOptions(users=50, items=100, categories=10, length="fixed", mean_length=5,
                                       max_length=5, stay=1.0, drift=0.0, zipf_exponent=0.0)
    path = synthetic_sequences(options, tmp_path)
    ceiling = SequenceCache.open(path).manifest.source["ceiling"]
    for split, unseen in (("test", 6), ("val", 7)):
        assert ceiling[split]["hr@10"] == pytest.approx(1.0) and ceiling[split]["targets"] == 50
        assert ceiling[split]["ndcg@10"] == pytest.approx(sum(1 / np.log2(r + 2) for r in range(unseen)) / unseen)
    assert synthetic_sequences(options, tmp_path) == path
    with pytest.raises(ValueError, match="exhaust the items they can reach"):  # 10 items a category, 11 events
        write_synthetic_sequences(options.model_copy(update={"mean_length": 11, "max_length": 11}), tmp_path / "x")


def test_synthetic_options_are_checked():
    with pytest.raises(ValidationError, match="mean_length: 2 must lie in"):
        SyntheticSequenceOptions(mean_length=2, min_length=3)
    with pytest.raises(ValidationError, match="categories"):
        SyntheticSequenceOptions(items=5, categories=6, max_length=5, mean_length=4)
    with pytest.raises(ValidationError, match="max_length: 1,000 events, but a user meets each of the 500"):
        SyntheticSequenceOptions(items=500)
    with pytest.raises(ValidationError, match="extra"):
        SyntheticSequenceOptions(colour=1)


def test_make_splits_follows_options(small_cache):
    cache = SequenceCache.open(small_cache)
    assert make_splits(cache, SequenceSplitOptions())["test"].positions.tolist() == [2]
    temporal_splits = make_splits(cache, SequenceSplitOptions(protocol="temporal", train_end=15, test_end=30))
    assert temporal_splits["test"].positions.tolist() == [2] and temporal_splits["train"].positions.tolist() == [2, 5]


def test_training_windows_make_every_training_event_a_target_once(tmp_path):
    """``train_windows: all``: a 10-event user (train prefix events 0..7 under leave-last-out) cut into windows
    of 4 events from the end: [4, 8) → targets 5, 6, 7; [1, 5) → 2, 3, 4; [0, 2) → 1."""
    cache = write_cache(tmp_path / "c", [list(range(1, 11)), [5, 6, 7]])
    train = leave_last_out(cache)["train"]
    windows = training_windows(train, 4)
    assert windows.users.tolist() == [0, 0, 0] and windows.positions.tolist() == [8, 5, 2]  # user 1: no target
    targets = []
    for batch in iter_retrieval_batches(windows, 8, 3, seed=0, shuffle=False):
        assert batch.items.tolist() == [[5, 6, 7], [2, 3, 4], [1, 0, 0]]  # item of event e is e + 1
        assert batch.next_time.tolist() == [int(cache.timestamps[7]), int(cache.timestamps[4]),
                                             int(cache.timestamps[1])]
        targets += batch.targets[batch.targets > 0].tolist()
    assert sorted(targets) == list(range(2, 9))  # events 1..7 (items 2..8), each once
    assert "windows" in windows.describe()
