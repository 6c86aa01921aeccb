"""Train / val / test splits of a sequence cache, as views: per sample a user and an event position.

Sample i of a split is the prefix ``events[offsets[u]:positions[i]]`` of user ``u = users[i]``
(absolute event indexes into the cache's columns). A training sample trains on that whole prefix
(inputs all but its last event, targets shifted by one); an evaluation sample predicts the event at
``positions[i]`` from that prefix (its history). Both arrays are int64, one entry per sample: a
split copies no events.

Protocols:

- :func:`leave_last_out` (SASRec, BERT4Rec, HSTU): per user with >= 3 events, test predicts the last
  event from all earlier ones, val the second-to-last from the events before it, and train is the
  sequence without the last two events. Users with fewer than 3 events are not evaluated; their whole
  sequence trains (2 events: one target) or, with 1 event, nothing can (dropped). Train samples need
  >= 2 events (a user with exactly 3 is evaluated but has no train target).
- :func:`temporal` (MLPerf dlrmv4: 300 days train, 30-min gap, 1 test day): train is every user's
  events with ``t < train_end``; test targets are the events with ``train_end + gap_s <= t < test_end``,
  each predicted from all of its user's earlier events (train period, gap and earlier test events: all
  before the target in time order, none after it). Val is a window ``[train_end - val_s, train_end)``
  carved from the end of the training period (train then stops at ``train_end - val_s``), or, with
  ``val_s = 0``, the test split itself (recorded as such). Targets with no earlier event are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dlrs_bench.sequential.cache import SequenceCache
from dlrs_bench.sequential.data_options import SequenceSplitOptions

#: Events per block when a split scans timestamps (bounded memory on any cache).
SCAN_EVENTS = 1 << 22


@dataclass(frozen=True)
class SequenceSplit:
    """One split: ``users`` int64 [n] user rows, ``positions`` int64 [n] event indexes (see the module
    docstring); ``training``: samples are whole prefixes (else: targets at ``positions``)."""

    cache: SequenceCache
    name: str
    users: np.ndarray
    positions: np.ndarray
    training: bool
    protocol: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def starts(self, samples: np.ndarray | slice = slice(None)) -> np.ndarray:
        """First event index of each sample's prefix (its user's first event)."""
        return np.asarray(self.cache.offsets[self.users[samples]])

    def describe(self) -> dict[str, Any]:
        """What a result file records of this split: the protocol (rule, bounds, dropped users or targets)
        and this split's samples and events in their prefixes."""
        prefix = self.positions - self.starts() if len(self) else np.zeros(0, np.int64)
        return {**self.protocol, "split": self.name, "samples": len(self), "users": int(len(np.unique(self.users))),
                "prefix_events": int(prefix.sum()), "kind": "train" if self.training else "eval"}


def leave_last_out(cache: SequenceCache) -> dict[str, SequenceSplit]:
    """The SASRec/HSTU split (see the module docstring): train, val and test."""
    offsets = np.asarray(cache.offsets)
    lengths = np.diff(offsets)
    ends = offsets[1:]
    evaluated = np.flatnonzero(lengths >= 3)
    # train prefix: all but the last two events of evaluated users; the whole sequence of 2-event users
    train_stop = np.where(lengths >= 3, ends - 2, ends)
    trained = np.flatnonzero(train_stop - offsets[:-1] >= 2)
    protocol = {
        "protocol": "leave-last-out",
        "rule": "users with >= 3 events: test = last event from all earlier ones, val = second-to-last from the "
                "events before it, train = the sequence without the last two; users with 2 events train on both "
                "and are not evaluated; users with 1 event are dropped",
        "users_evaluated": len(evaluated), "users_train_only": int(np.sum(lengths == 2)),
        "users_dropped": int(np.sum(lengths == 1)), "users_evaluated_without_train_target": int(np.sum(lengths == 3)),
    }
    return {
        "train": SequenceSplit(cache, "train", trained, train_stop[trained], True, protocol),
        "val": SequenceSplit(cache, "val", evaluated, ends[evaluated] - 2, False, protocol),
        "test": SequenceSplit(cache, "test", evaluated, ends[evaluated] - 1, False, protocol),
    }


def temporal(cache: SequenceCache, train_end: int, gap_s: int, test_end: int, val_s: int = 0
             ) -> dict[str, SequenceSplit]:
    """The global temporal split (see the module docstring); times in the cache's seconds."""
    if not (val_s >= 0 and gap_s >= 0 and train_end + gap_s < test_end):
        raise ValueError(f"temporal split: need val_s >= 0, gap_s >= 0 and train_end + gap_s < test_end, got "
                         f"train_end {train_end}, gap_s {gap_s}, test_end {test_end}, val_s {val_s}")
    fit_end = train_end - val_s
    train_users, train_stops, test, val = [], [], _Targets(), _Targets()
    no_history = {"test": 0, "val": 0}
    offsets = np.asarray(cache.offsets)
    for lo, hi in _user_blocks(offsets):
        base = int(offsets[lo])
        times = np.asarray(cache.timestamps[base : int(offsets[hi])])
        local = offsets[lo : hi + 1] - base
        before = np.add.reduceat((times < fit_end).astype(np.int64), local[:-1])  # a prefix: times sorted per user
        keep = np.flatnonzero(before >= 2)
        train_users.append(lo + keep)
        train_stops.append(offsets[lo + keep] + before[keep])
        no_history["test"] += test.add(times, local, lo, base, train_end + gap_s, test_end)
        if val_s:
            no_history["val"] += val.add(times, local, lo, base, fit_end, train_end)
    users, stops = np.concatenate(train_users), np.concatenate(train_stops)
    protocol = {
        "protocol": "temporal", "time_unit": "s",
        "rule": "train = events with t < train_end - val_s; test targets = events with train_end + gap_s <= t < "
                "test_end, val targets (val_s > 0) = events with train_end - val_s <= t < train_end, each predicted "
                "from all earlier events of its user; targets without an earlier event are dropped",
        "train_end": train_end, "gap_s": gap_s, "test_end": test_end, "val_s": val_s,
        "val": "window before the gap" if val_s else "the test split (val_s = 0)",
        "targets_dropped_without_history": no_history,
    }
    test_split = SequenceSplit(cache, "test", *test.arrays(), False, protocol)
    val_split = SequenceSplit(cache, "val", *val.arrays(), False, protocol) if val_s else \
        SequenceSplit(cache, "val", test_split.users, test_split.positions, False, protocol)
    return {"train": SequenceSplit(cache, "train", users, stops, True, protocol), "val": val_split, "test": test_split}


def training_windows(split: SequenceSplit, width: int) -> SequenceSplit:
    """Every training prefix of ``split`` cut from its end into windows of up to ``width`` events, one
    training sample each: the window ending at the prefix's end, then the one ending ``width - 1`` events
    earlier, and so on, so that every event of a prefix but its first is a target exactly once (a window's
    first event is input only). ``width`` ≥ 2."""
    starts, stops = split.starts(), split.positions
    step = width - 1
    counts = -(-(stops - starts - 1) // step)  # ⌈targets / step⌉ windows per prefix
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(int(counts.sum())) - first  # 0 = the window at the prefix's end
    windows = np.repeat(stops, counts) - k * step
    return replace(split, users=np.repeat(split.users, counts), positions=windows,
                   protocol={**split.protocol, "windows": f"every {width} events of each prefix, from its end"})


def make_splits(cache: SequenceCache, options: SequenceSplitOptions) -> dict[str, SequenceSplit]:
    """The splits ``options`` names."""
    if options.protocol == "leave-last-out":
        return leave_last_out(cache)
    return temporal(cache, options.train_end, options.gap_s, options.test_end, options.val_s)


def _user_blocks(offsets: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive user ranges ``[lo, hi)`` of about :data:`SCAN_EVENTS` events each (at least one user)."""
    cuts = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), SCAN_EVENTS), side="right") - 1
    bounds = np.unique(np.concatenate([cuts, [len(offsets) - 1]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


class _Targets:
    """Evaluation targets gathered block by block."""

    def __init__(self) -> None:
        self.users: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []

    def add(self, times: np.ndarray, local: np.ndarray, first_user: int, base: int, lo: int, hi: int) -> int:
        """Add the events of a block (``times``, users from ``first_user`` at local ``offsets``, first event
        ``base``) with ``lo <= t < hi`` that have an earlier event of their user; returns those dropped."""
        at = np.flatnonzero((times >= lo) & (times < hi))
        user = np.searchsorted(local, at, side="right") - 1
        has_history = at > local[user]
        self.users.append(first_user + user[has_history])
        self.positions.append(base + at[has_history])
        return int(np.sum(~has_history))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, np.int64)
        return (np.concatenate([empty, *self.users]).astype(np.int64),
                np.concatenate([empty, *self.positions]).astype(np.int64))
