"""Synthetic user sequences from a hidden teacher whose best possible hr@K / ndcg@K is known.

The teacher: items 1..I fall into C categories (a seeded permutation dealt round-robin, so sizes
differ by at most one); within a category the item of popularity rank r (0-based) has probability
q ∝ (r + 1)^-s (Zipf). Each user has an interest θ ~ Dirichlet(α·1_C) over categories and a current
category z. Event t:

1. (t > 0) with probability ``drift`` the interest is redrawn: θ ~ Dirichlet(α·1_C);
2. z is kept with probability ``stay`` (t > 0), else drawn from θ;
3. the item is drawn from category z by q.

So the next event's distribution given the hidden state (θ, z) after event t - 1 is
p(i) = π(c(i))·q(i) with π = stay·onehot(z) + (1 - stay)·((1 - drift)·θ + drift/C). A ranker that
knows the state and sorts items by p is Bayes-optimal; its expected hr@K is the sum of the K
largest p and its expected ndcg@K is Σ_{r<K} p_(r) / log2(r + 2) (one relevant item). These are
computed exactly (no sampling of the target) for the leave-last-out val and test targets (the
second-to-last and last event of each user with >= 3 events) of the first :data:`CEILING_USERS`
users (users are i.i.d., so they are a random sample; the standard error of the mean is recorded),
averaged, and recorded in the manifest's ``source.ceiling``: an upper bound for any model, which sees
only the history, not the state. Items
may repeat within a user (draws with replacement): evaluate synthetic data without excluding seen items,
or the ceiling does not apply.

Event lengths are ``min_length`` + geometric (or fixed); timestamps start uniformly within
``start_span_s`` of ``start_time`` and advance by 1 + an exponential gap (mean ``mean_gap_s``).
Users are generated in chunks (users per chunk fixed by the options), each from its own random
stream seeded by (``seed``, chunk), so any number of users is written in bounded memory and the
output depends on the options only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrs_bench.sequential.cache import SequenceCacheWriter, first_use
from dlrs_bench.sequential.data_options import CEILING_KS, SyntheticSequenceOptions

#: Events per generation chunk on average, and at most (a chunk holds at least one user).
CHUNK_EVENTS, CHUNK_MAX_EVENTS = 1 << 20, 1 << 24
#: Users whose val and test targets the ceiling is computed over (users are i.i.d.: the first ones).
CEILING_USERS = 4_096
#: Floats per block of the ceiling computation (targets x categories x max K).
CEILING_BLOCK = 1 << 22
#: Bump when the sequences generated for given options change (first-use caches are then rebuilt).
BUILD_VERSION = 1


class SequenceTeacher:
    """The hidden model of one options set: item categories, popularity and the next-event law."""

    def __init__(self, options: SyntheticSequenceOptions) -> None:
        self.options = o = options
        rng = np.random.default_rng([o.seed, 0])
        dealt = np.arange(o.items) % o.categories  # position k of the permutation -> category k mod C
        order = np.argsort(dealt, kind="stable")
        self.sizes = np.bincount(dealt, minlength=o.categories)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.items = (rng.permutation(o.items) + 1)[order]  # category by category, by popularity rank
        rank = np.arange(o.items) - np.repeat(self.starts, self.sizes)
        q = (rank + 1.0) ** -o.zipf_exponent
        q /= np.repeat(np.add.reduceat(q, self.starts), self.sizes)
        cdf = np.cumsum(q) - np.repeat(np.cumsum(q)[self.starts] - q[self.starts], self.sizes)
        self.keys = np.repeat(np.arange(o.categories), self.sizes) + cdf  # category c's items in (c, c + 1]
        k = max(CEILING_KS)
        self.top_q = np.zeros((o.categories, k))  # [C, K] the K most popular items' q of each category
        keep = rank < k
        self.top_q[np.repeat(np.arange(o.categories), self.sizes)[keep], rank[keep]] = q[keep]

    def category_law(self, theta: np.ndarray, current: np.ndarray) -> np.ndarray:
        """π ``[m, C]``: the next event's category law given the interest ``theta`` ``[m, C]`` and current
        category ``current`` ``[m]`` after the previous event."""
        o = self.options
        law = (1 - o.stay) * ((1 - o.drift) * theta + o.drift / o.categories)
        law[np.arange(len(current)), current] += o.stay
        return law

    def expected_metrics(self, law: np.ndarray) -> dict[str, np.ndarray]:
        """Per target ``[m]``: expected hr@K and ndcg@K of ranking items by p = π(c(i))·q(i), ``law`` = π."""
        import torch  # topk: 5x faster than np.partition + np.sort here

        k = self.top_q.shape[1]
        out: dict[str, list[np.ndarray]] = {f"{m}@{kk}": [] for kk in CEILING_KS for m in ("hr", "ndcg")}
        step = max(1, CEILING_BLOCK // self.top_q.size)
        discount = 1 / np.log2(np.arange(2, k + 2))
        for lo in range(0, len(law), step):
            p = (law[lo : lo + step, :, None] * self.top_q[None]).reshape(-1, self.top_q.size)
            top = torch.topk(torch.from_numpy(p), k, dim=1).values.numpy()  # [m, K], descending
            for kk in CEILING_KS:
                out[f"hr@{kk}"].append(top[:, :kk].sum(1))
                out[f"ndcg@{kk}"].append(top[:, :kk] @ discount[:kk])
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

    def chunk(self, index: int, first: int, users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, dict]]:
        """Chunk ``index`` of ``users`` users from user ``first``: (lengths ``[n]``, items ``[E_c]`` int32,
        timestamps ``[E_c]``, {"val"|"test": expected metrics ``[m]`` of the targets of its users below
        :data:`CEILING_USERS`})."""
        o = self.options
        rng = np.random.default_rng([o.seed, 1, index])
        lengths = self._lengths(rng, users)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        gaps = 1 + np.floor(rng.exponential(max(o.mean_gap_s - 1, 0), offsets[-1])).astype(np.int64)
        gaps[offsets[:-1]] = o.start_time + rng.integers(0, o.start_span_s + 1, users)
        times = np.cumsum(gaps)
        times -= np.repeat(times[offsets[:-1]] - gaps[offsets[:-1]], lengths)
        order = np.argsort(-lengths, kind="stable")  # longest first: the users active at step t are a prefix
        descending = -lengths[order]  # ascending, for searchsorted
        starts = offsets[order]
        theta = rng.dirichlet(np.full(o.categories, o.concentration), users)
        current = self.draw_categories(rng, theta)
        items = np.empty(offsets[-1], np.int32)
        items[starts] = self.draw_items(rng, current)
        longest = int(lengths.max()) if users else 0
        active = np.searchsorted(descending, -np.arange(longest + 2), side="left").tolist()  # [t]: length > t
        states: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"val": [], "test": []}
        for t in range(1, longest):
            n = active[t]
            for name, back in (("val", 2), ("test", 1)):  # users whose target of that split is event t
                lo, hi = active[t + back], active[t + back - 1]  # length == t + back
                due = lo + np.flatnonzero(first + order[lo:hi] < CEILING_USERS) if t + back >= 3 else []
                if len(due):
                    states[name].append((theta[due], current[due]))
            jump = np.flatnonzero(rng.random(n) < o.drift)
            theta[jump] = rng.dirichlet(np.full(o.categories, o.concentration), len(jump))
            moved = np.flatnonzero(rng.random(n) >= o.stay)
            current[moved] = self.draw_categories(rng, theta[moved])
            items[starts[:n] + t] = self.draw_items(rng, current[:n])
        metrics = {name: self.expected_metrics(self.category_law(np.concatenate([s[0] for s in parts]),
                                                                  np.concatenate([s[1] for s in parts])))
                   for name, parts in states.items() if parts}
        return lengths, items, times, metrics

    def _lengths(self, rng: np.random.Generator, users: int) -> np.ndarray:
        o = self.options
        if o.length == "fixed":
            return np.full(users, int(o.mean_length), np.int64)
        extra = rng.geometric(1 / (o.mean_length - o.min_length + 1), users) - 1
        return np.minimum(o.min_length + extra, o.max_length).astype(np.int64)


def users_per_chunk(options: SyntheticSequenceOptions) -> int:
    """Users of each generation chunk: about :data:`CHUNK_EVENTS` events on average, and at most
    :data:`CHUNK_MAX_EVENTS` events (or interest entries) however long the sequences drawn."""
    typical = CHUNK_EVENTS // max(int(options.mean_length), 1)
    return max(1, min(options.users, typical, CHUNK_MAX_EVENTS // max(options.max_length, options.categories)))


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
                n = len(values["hr@1"])
                ceiling[name] = {"targets": n, **{m: float(v.mean()) for m, v in values.items()},
                                 "std_err": {m: float(v.std() / np.sqrt(n)) for m, v in values.items()}}
        source = {
            "dataset": "synthetic-sequences", "build_version": BUILD_VERSION, "options": options.generation(),
            "ceiling": {"split": "leave-last-out", "ranker": "Bayes-optimal given the teacher's hidden state "
                        "(an upper bound for any model of the history)",
                        "method": f"exact expectation per target, averaged over the targets of the first "
                                  f"{CEILING_USERS:,} users (std_err: of that mean over users)",
                        "seen_items": "not excluded (items may repeat)", **ceiling},
        }
        return writer.close(source, items=options.items + 1)


def synthetic_sequences(options: SyntheticSequenceOptions, cache_root: Path | None = None) -> Path:
    """The cache folder of ``options``, generated on first use (see :func:`~dlrs_bench.sequential.cache.first_use`)."""
    key = {"version": BUILD_VERSION, **options.generation()}
    return first_use(cache_root, "synthetic-sequences", key, lambda out: write_synthetic_sequences(options, out))
