"""Row splits shared by the dataset plugins (numpy only inside ``split_rows``: suite validation reads
``SplitFractions`` and ``train_rows`` without it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BeforeValidator

if TYPE_CHECKING:
    import numpy as np


def _check_fractions(v: tuple[float, float, float]) -> tuple[float, float, float]:
    if min(v) <= 0 or abs(sum(v) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be three positive numbers summing to 1, got {list(v)}")
    return v


#: train / val / test fractions of a split, as a suite option (a YAML or JSON list).
SplitFractions = Annotated[tuple[float, float, float],
                           BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
                           AfterValidator(_check_fractions)]


def split_rows(
    n: int, fractions: tuple[float, float, float], seed: int | None, order_key: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Row indexes (int64) of train / val / test.

    With ``order_key`` the rows are sorted by it (stable) and cut in that order, so every
    test row comes after every train row (a temporal split); otherwise they are shuffled
    with ``seed``. Sizes are ``floor(fraction * n)`` for val and test, the rest is train.
    """
    import numpy as np

    if order_key is not None:
        order = np.argsort(order_key, kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(fractions[1] * n), int(fractions[2] * n)
    n_train = n - n_val - n_test
    cuts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {k: np.sort(v) if order_key is None else v for k, v in cuts.items()}


def train_rows(rows: int, parts: list[int], split: str) -> int:
    """Rows ``[0, r)`` that the range protocol ``split`` trains on (all rows for the others): what a
    prepare-time shuffle may permute without mixing training and evaluation rows.

    ``dlrm-7day``: the first 6 of 7 equal "days" (extras to the first ones); ``last-day``: every
    input file (``parts``) but the last."""
    if split == "dlrm-7day":
        size, extra = divmod(rows, 7)
        return sum(size + (1 if d < extra else 0) for d in range(6))
    if split == "last-day":
        if len(parts) < 2:
            raise ValueError("split 'last-day' needs at least two prepared input files (days)")
        return rows - parts[-1]
    return rows
