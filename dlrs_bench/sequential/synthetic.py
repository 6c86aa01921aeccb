"""Synthetic user sequences from a hidden teacher whose best possible hr@K / ndcg@K is known.

The teacher: items 1..I fall into C categories (a seeded permutation dealt round-robin, so sizes
differ by at most one); within a category the item of popularity rank r (0-based) has weight
q ∝ (r + 1)^-s (Zipf). Each user has an interest θ ~ Dirichlet(α·1_C) over categories and a current
category z. Event t:

1. (t > 0) with probability ``drift`` the interest is redrawn: θ ~ Dirichlet(α·1_C);
2. z is kept with probability ``stay`` (t > 0), else drawn from θ;
3. the item is drawn from category z by q;

and the whole step is drawn again while the item is one the user already has: as in MovieLens, a user
meets an item once. So, given the hidden state (θ, z) after event t - 1 and the user's items H, the
next item is i ∉ H with probability p(i) / (1 - p(H)), p(i) = π(c(i))·q(i) and
π = stay·onehot(z) + (1 - stay)·((1 - drift)·θ + drift/C). A ranker that knows the state and sorts the
items the user has not met by p is Bayes-optimal, whether or not seen items are removed before ranking
(they cannot be the target). Its expected hr@K is the sum of the K largest p(i)/(1 - p(H)), i ∉ H, and
its expected ndcg@K = Σ_{r<K} p_(r)/(1 - p(H)) / log2(r + 2) (one relevant item). They are computed
exactly (no sampling of the target) for the leave-last-out val and test targets (the second-to-last
and last event of each user with >= 3 events) of the first :func:`ceiling_users` users (users are
i.i.d., so they are a random sample; the standard error of the mean is recorded), at the cut-offs of
:data:`dlrs_bench.sequential.metrics.CUTOFFS`, and recorded in the manifest's ``source.ceiling``: an
upper bound for any model, which sees the history, not the state.

Event lengths are ``min_length`` + geometric (or fixed); timestamps start uniformly within
``start_span_s`` of ``start_time`` and advance by 1 + an exponential gap (mean ``mean_gap_s``).
Users are generated in chunks (users per chunk fixed by the options), each from its own random
stream seeded by (``seed``, chunk), so any number of users is written in bounded memory (a chunk's
events and its users' seen-item flags) and the output depends on the options only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrs_bench.data.local_cache import first_use_folder
from dlrs_bench.sequential.cache import SequenceCacheWriter
from dlrs_bench.sequential.data_options import SyntheticSequenceOptions
from dlrs_bench.sequential.metrics import CUTOFFS

#: Events per generation chunk on average, and at most (a chunk holds at least one user).
CHUNK_EVENTS, CHUNK_MAX_EVENTS = 1 << 20, 1 << 24
#: Bytes of a chunk's seen-item flags (users x items, one byte each).
CHUNK_SEEN_BYTES = 1 << 27
#: Users whose targets the ceiling is computed over, at most, and its work budget (targets x items).
CEILING_USERS, CEILING_WORK = 4_096, 1 << 25
#: Floats per block of the ceiling computation (targets x items).
CEILING_BLOCK = 1 << 22
#: Redraws of one step before the options are declared impossible (users ran out of reachable items).
MAX_REDRAWS = 10_000
#: Bump when the sequences generated for given options change (first-use caches are then rebuilt).
BUILD_VERSION = 2


class SequenceTeacher:
    """The hidden model of one options set: item categories, popularity and the next-event law."""

    def __init__(self, options: SyntheticSequenceOptions) -> None:
        self.options = o = options
        rng = np.random.default_rng([o.seed, 0])
        dealt = np.arange(o.items) % o.categories  # position k of the permutation -> category k mod C
        order = np.argsort(dealt, kind="stable")
        self.sizes = np.bincount(dealt, minlength=o.categories)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.category = np.repeat(np.arange(o.categories), self.sizes)  # [I] of each rank-order slot
        self.items = (rng.permutation(o.items) + 1)[order]  # [I] item ids, category by category, by rank
        rank = np.arange(o.items) - self.starts[self.category]
        q = (rank + 1.0) ** -o.zipf_exponent
        self.q = q / np.add.reduceat(q, self.starts)[self.category]  # [I] within-category law, rank order
        cdf = np.cumsum(self.q) - np.repeat(np.cumsum(self.q)[self.starts] - self.q[self.starts], self.sizes)
        self.keys = self.category + cdf  # category c's slots in (c, c + 1]

    def category_law(self, theta: np.ndarray, current: np.ndarray) -> np.ndarray:
        """π ``[m, C]``: the next event's category law (before excluding seen items) given the interest
        ``theta`` ``[m, C]`` and current category ``current`` ``[m]`` after the previous event."""
        o = self.options
        law = (1 - o.stay) * ((1 - o.drift) * theta + o.drift / o.categories)
        law[np.arange(len(current)), current] += o.stay
        return law

    def expected_metrics(self, law: np.ndarray, seen: np.ndarray) -> dict[str, np.ndarray]:
        """Per target ``[m]``: expected hr@K and ndcg@K of ranking the unseen items by p; ``law`` = π
        ``[m, C]``, ``seen`` ``[m, I + 1]`` bool by item id."""
        import torch  # topk: 5x faster than np.partition + np.sort here

        k = min(max(CUTOFFS), self.options.items)
        discount = 1 / np.log2(np.arange(2, k + 2))
        out: dict[str, list[np.ndarray]] = {f"{m}@{c}": [] for c in CUTOFFS for m in ("hr", "ndcg")}
        step = max(1, CEILING_BLOCK // self.options.items)
        for lo in range(0, len(law), step):
            p = law[lo : lo + step, self.category] * self.q * ~seen[lo : lo + step, self.items]  # [m, I]; seen: 0
            top = torch.topk(torch.from_numpy(p), k, dim=1).values.numpy() / p.sum(1, keepdims=True)
            for cutoff in CUTOFFS:
                out[f"hr@{cutoff}"].append(top[:, :cutoff].sum(1))
                out[f"ndcg@{cutoff}"].append(top[:, :cutoff] @ discount[:cutoff])
        return {name: np.concatenate(parts) for name, parts in out.items()}

    def draw_categories(self, rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
        """One category ``[m]`` from each row of ``theta`` ``[m, C]``."""
        cdf = np.cumsum(theta, axis=1)
        drawn = (cdf < rng.random(len(theta))[:, None] * cdf[:, -1:]).sum(axis=1)
        return np.minimum(drawn, self.options.categories - 1)

    def draw_items(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """One item ``[m]`` from each category of ``category`` by popularity."""
        at = np.searchsorted(self.keys, category + rng.random(len(category)), side="right")
        return self.items[np.clip(at, self.starts[category], self.starts[category] + self.sizes[category] - 1)]

    def step(self, rng: np.random.Generator, users: np.ndarray, theta: np.ndarray, current: np.ndarray,
             seen: np.ndarray) -> np.ndarray:
        """Event t > 0 of ``users`` (rows of the state arrays, updated in place): items ``[len(users)]``, each
        one its user has not met (the step drawn again until then)."""
        o = self.options
        items = np.empty(len(users), np.int64)
        pending = np.arange(len(users))
        for _ in range(MAX_REDRAWS):
            rows = users[pending]
            jump = rng.random(len(rows)) < o.drift
            fresh = rng.dirichlet(np.full(o.categories, o.concentration), int(jump.sum()))
            interest = theta[rows]
            interest[jump] = fresh
            category = current[rows].copy()
            moved = np.flatnonzero(rng.random(len(rows)) >= o.stay)
            category[moved] = self.draw_categories(rng, interest[moved])
            drawn = self.draw_items(rng, category)
            new = ~seen[rows, drawn]
            done = rows[new]
            theta[done], current[done], seen[done, drawn[new]] = interest[new], category[new], True
            items[pending[new]] = drawn[new]
            pending = pending[~new]
            if not len(pending):
                return items
        raise ValueError(f"synthetic sequences: {len(pending)} users found no item they had not met in {MAX_REDRAWS:,} "
                         "draws; with these options users exhaust the items they can reach (raise items, lower "
                         "max_length or stay, or raise drift)")

    def chunk(self, index: int, first: int, users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, dict]]:
        """Chunk ``index`` of ``users`` users from user ``first``: (lengths ``[n]``, items ``[E_c]`` int32,
        timestamps ``[E_c]``, {"val"|"test": expected metrics ``[m]`` of the targets of its users below
        :func:`ceiling_users`})."""
        o = self.options
        rng = np.random.default_rng([o.seed, 1, index])
        lengths = self._lengths(rng, users)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        gaps = 1 + np.floor(rng.exponential(max(o.mean_gap_s - 1, 0), offsets[-1])).astype(np.int64)
        gaps[offsets[:-1]] = o.start_time + rng.integers(0, o.start_span_s + 1, users)
        times = np.cumsum(gaps)
        times -= np.repeat(times[offsets[:-1]] - gaps[offsets[:-1]], lengths)
        order = np.argsort(-lengths, kind="stable")  # longest first: the users active at step t are a prefix
        starts = offsets[order]
        theta = rng.dirichlet(np.full(o.categories, o.concentration), users)  # state rows in that order
        current = self.draw_categories(rng, theta)
        seen = np.zeros((users, o.items + 1), bool)
        items = np.empty(offsets[-1], np.int32)
        drawn = self.draw_items(rng, current)
        items[starts], seen[np.arange(users), drawn] = drawn, True
        longest, quota = int(lengths.max()), ceiling_users(o) - first
        active = np.searchsorted(-lengths[order], -np.arange(longest + 2), side="left").tolist()  # [t]: length > t
        metrics: dict[str, list[dict[str, np.ndarray]]] = {"val": [], "test": []}
        for t in range(1, longest):
            before = {}  # the state before event t of the users whose target of a split it is
            for name, back in (("val", 2), ("test", 1)):
                lo, hi = active[t + back], active[t + back - 1]  # length == t + back
                due = lo + np.flatnonzero(order[lo:hi] < quota) if t + back >= 3 else []
                if len(due):
                    before[name] = (self.category_law(theta[due], current[due]), seen[due])
            n = active[t]
            items[starts[:n] + t] = self.step(rng, np.arange(n), theta, current, seen)
            for name, (law, met) in before.items():  # after the step: it proved an unseen item reachable
                metrics[name].append(self.expected_metrics(law, met))
        return lengths, items, times, {name: {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
                                       for name, parts in metrics.items() if parts}

    def _lengths(self, rng: np.random.Generator, users: int) -> np.ndarray:
        o = self.options
        if o.length == "fixed":
            return np.full(users, int(o.mean_length), np.int64)
        extra = rng.geometric(1 / (o.mean_length - o.min_length + 1), users) - 1
        return np.minimum(o.min_length + extra, o.max_length).astype(np.int64)


def users_per_chunk(options: SyntheticSequenceOptions) -> int:
    """Users of each generation chunk: about :data:`CHUNK_EVENTS` events on average, at most
    :data:`CHUNK_MAX_EVENTS` events (or interest entries) and :data:`CHUNK_SEEN_BYTES` of seen-item flags."""
    typical = CHUNK_EVENTS // max(int(options.mean_length), 1)
    widest = max(options.max_length, options.categories)
    return max(1, min(options.users, typical, CHUNK_MAX_EVENTS // widest, CHUNK_SEEN_BYTES // (options.items + 1)))


def ceiling_users(options: SyntheticSequenceOptions) -> int:
    """Users whose targets the ceiling averages over: the first :data:`CEILING_USERS`, fewer for catalogues so
    large that 2 targets x users x items passes :data:`CEILING_WORK` (at least 64)."""
    return min(options.users, max(64, min(CEILING_USERS, CEILING_WORK // (2 * options.items))))


def write_synthetic_sequences(options: SyntheticSequenceOptions, out: Path) -> Path:
    """Generate the sequences of ``options`` into the cache folder ``out``, chunk by chunk; returns ``out``."""
    teacher = SequenceTeacher(options)
    step = users_per_chunk(options)
    kept: dict[str, list[dict[str, np.ndarray]]] = {"val": [], "test": []}
    with SequenceCacheWriter(out) as writer:
        for index, first in enumerate(range(0, options.users, step)):
            lengths, items, times, metrics = teacher.chunk(index, first, min(step, options.users - first))
            writer.append(lengths, items, times)
            for name, values in metrics.items():
                kept[name].append(values)
        ceiling = {}
        for name, parts in kept.items():
            if parts:
                values = {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
                n = len(values[f"hr@{CUTOFFS[0]}"])
                ceiling[name] = {"targets": n, **{m: float(v.mean()) for m, v in values.items()},
                                 "std_err": {m: float(v.std() / np.sqrt(n)) for m, v in values.items()}}
        source = {
            "dataset": "synthetic-sequences", "build_version": BUILD_VERSION, "options": options.generation(),
            "repeats": "none: a user meets an item once",
            "ceiling": {"split": "leave-last-out", "ranker": "Bayes-optimal given the teacher's hidden state "
                        "(an upper bound for any model of the history), with or without seen items removed",
                        "method": f"exact expectation per target, averaged over the targets of the first "
                                  f"{ceiling_users(options):,} users (std_err: of that mean)", **ceiling},
        }
        return writer.close(source, items=options.items + 1)


def synthetic_sequences(options: SyntheticSequenceOptions, cache_root: Path | None = None) -> Path:
    """The cache folder of ``options``, generated on first use
    (:func:`~dlrs_bench.data.local_cache.first_use_folder`)."""
    key = {"version": BUILD_VERSION, **options.generation()}
    return first_use_folder(cache_root, "synthetic-sequences", key, lambda out: write_synthetic_sequences(options, out))
