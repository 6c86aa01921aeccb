"""Work computed ahead by a thread pool and consumed in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any


def in_order(pool: Executor, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], depth: int) -> Iterator[Any]:
    """``fn(*call)`` for each call, in order, at most ``depth`` submitted ahead of the consumer (so
    memory stays bounded however many calls there are)."""
    pending: deque = deque()
    try:
        for call in calls:
            pending.append(pool.submit(fn, *call))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
