"""Where result files live: ``DIR/<suite>/<scenario_id>/seed<k>.json`` (+ ``.mllog`` event log).

A result and its event log are replaced together and only by complete, synced new files: a run
writes its log under a temporary name (:meth:`ResultStore.start_event_log`), and when its result is
written both new files are synced, the older pair is moved to ``history/`` beside them (named by
its time) and the new pair renamed into place. A full, read-only or otherwise refusing disk at any
step leaves the older files where they were and no temporary file behind. Writers of the same
scenario folder (two suites, two ``dlrs-bench run`` processes) take turns through a lock file in
it, so none loses a result or trips over another's move.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlrs_bench.errors import UserInputError
from dlrs_bench.files import cannot_write, make_folder, sync, write_temp
from dlrs_bench.lifecycle import remove_stale
from dlrs_bench.results.collect import read_result
from dlrs_bench.results.schema import ResultFile

#: Statuses of runs that ended on their own (``--resume`` keeps them; it runs ``failed`` ones again).
FINISHED = ("reached", "not_reached", "diverged")


class ResultStore:
    """Result files of one results directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, suite: str, scenario_id: str, seed: int) -> Path:
        return self.root / suite / scenario_id / f"seed{seed}.json"

    def event_log_path(self, suite: str, scenario_id: str, seed: int) -> Path:
        return self.path(suite, scenario_id, seed).with_suffix(".mllog")

    def load(self, path: Path) -> ResultFile:
        """The result file ``path`` (a user error naming it if it is unreadable, too large or invalid)."""
        return read_result(path)

    def finished(self, suite: str, scenario_id: str, seed: int) -> ResultFile | None:
        """The stored result if that run finished (reached, not_reached, diverged) and the file is really the
        result of (suite, scenario_id, seed) — not, say, another scenario's copied there — else None."""
        path = self.path(suite, scenario_id, seed)
        if not path.is_file():
            return None
        try:
            result = self.load(path)
        except UserInputError:
            return None
        if (result.suite, result.scenario_id, result.seed) != (suite, scenario_id, seed):
            return None
        return result if result.status in FINISHED else None

    def start_event_log(self, suite: str, scenario_id: str, seed: int) -> Path:
        """Where a new run of (suite, scenario_id, seed) writes its event log until its result is written:
        a temporary name beside the older log, which stays in place. Logs of killed runs are removed."""
        final = self.event_log_path(suite, scenario_id, seed)
        make_folder(final.parent)
        prefix = f".{final.name}.partial-"
        remove_stale(final.parent, prefix)
        partial = final.parent / f"{prefix}{os.getpid()}"
        try:
            partial.unlink(missing_ok=True)  # one this process could not remove before (the log appends)
        except OSError as e:
            raise cannot_write(final, e) from None
        return partial

    @staticmethod
    def drop_event_log(partial: Path | None) -> None:
        """Remove the temporary event log of a run whose result is not written (interrupted, refused); one
        a refusing disk keeps is removed by the next run's :meth:`start_event_log`."""
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)

    def write(self, result: dict[str, Any], event_log: Path | None = None) -> Path:
        """Validate ``result`` against the schema and write it as strict JSON (a NaN or infinite number,
        e.g. the AUC of a one-class split, becomes null) with its run's ``event_log`` (from
        :meth:`start_event_log`, moved into place; None: the run wrote none). The older result and log
        go to ``history/``. Returns the result's path; a user error naming it when the disk refuses, with
        the older files untouched and the temporary ones removed."""
        result = _finite(result)
        ResultFile.model_validate(result)
        path = self.path(result["suite"], result["scenario_id"], result["seed"])
        text = json.dumps(result, indent=2, allow_nan=False) + "\n"
        try:
            make_folder(path.parent)
            with _locked(path.parent):
                _replace_pair(path, text, event_log)
        except OSError as e:
            raise cannot_write(path, e) from None
        finally:
            self.drop_event_log(event_log)
        return path


def _replace_pair(path: Path, text: str, event_log: Path | None) -> None:
    """Put ``text`` at ``path`` and ``event_log`` at its ``.mllog``, the older two moved to ``history/``:
    all of it, or (on any error, which is raised) none of it."""
    log_path = path.with_suffix(".mllog")
    temp = write_temp(path.parent, text, suffix=".json")
    done: list[tuple[Path, Path]] = []  # renames made (from, to), undone if a later step fails
    try:
        if event_log is not None:
            sync(event_log)
        for current in (log_path, path):
            _archive(current, done)
        if event_log is not None:
            _move(event_log, log_path, done)
        _move(temp, path, done)
        sync(path.parent)
    except BaseException:
        for source, target in reversed(done):
            with contextlib.suppress(OSError):
                os.replace(target, source)
        raise
    finally:
        temp.unlink(missing_ok=True)


def _move(source: Path, target: Path, done: list[tuple[Path, Path]]) -> None:
    """Rename ``source`` to ``target`` and note it in ``done``."""
    os.replace(source, target)
    done.append((source, target))


def _archive(path: Path, done: list[tuple[Path, Path]]) -> None:
    """Move ``path`` (if it exists) into ``history/`` beside it, named by its modification time (ms)."""
    if not path.exists():
        return
    history = path.parent / "history"
    make_folder(history)
    stamp = int(path.stat().st_mtime * 1000)
    target = history / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while target.exists():
        target, n = history / f"{path.stem}-{stamp}-{n}{path.suffix}", n + 1
    _move(path, target, done)
    sync(history)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive use of ``folder`` among processes (an flock on ``folder/.lock``)."""
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
