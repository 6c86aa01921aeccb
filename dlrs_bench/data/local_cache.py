"""Caches that datasets build on first use (bundled MovieLens, synthetic), keyed by their options.

They live in ``$DLRS_BENCH_CACHE`` (default ``~/.cache/dlrs-bench``), one folder per dataset and
options, ``<dataset>-<hash of the options>``; a lock file makes concurrent first uses (two suites,
N ranks) build a cache once while the others wait. Delete a folder to rebuild it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrs_bench.data.cache import Cache, open_cache
from dlrs_bench.errors import UserInputError

ENV = "DLRS_BENCH_CACHE"


def cache_root() -> Path:
    """The folder of first-use caches: ``$DLRS_BENCH_CACHE`` or ``~/.cache/dlrs-bench``."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "dlrs-bench")


def first_use_folder(root: Path | None, name: str, key: dict[str, Any], write: Callable[[Path], Any]) -> Path:
    """The folder of the cache ``name`` built from ``key`` (JSON-able options): ``<root>/<name>-<hash of key>``,
    written by ``write(folder)`` (which must create ``folder`` complete) the first time; a lock makes concurrent
    first uses build it once. ``root``: default :func:`cache_root`."""
    root = Path(root) if root is not None else cache_root()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / f"{name}-{digest}"
    if not (folder / "manifest.json").is_file():
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = (root / f".{folder.name}.lock").open("w")
        except OSError as e:
            raise UserInputError(f"{root}: cannot write the dataset cache ({e.strerror}); set {ENV} to a writable "
                                 "folder") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "manifest.json").is_file():
                write(folder)
    return folder


def first_use_cache(dataset: str, key: dict[str, Any], write: Callable[[Path], None]) -> Cache:
    """The CTR cache of ``dataset`` built with ``key`` (JSON-able options), written by ``write(folder)``
    (which must create ``folder`` complete, e.g. through a CacheWriter) the first time."""
    return open_cache(first_use_folder(None, dataset, key, write))
