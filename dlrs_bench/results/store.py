"""Where result files live: ``DIR/<suite>/<scenario_id>/seed<k>.json`` (+ ``.mllog`` event log).

Writes are atomic (temporary file, then rename). A result is never overwritten: an older
file at the same path is moved to ``history/`` beside it, named by its start time. Writers of the
same scenario folder (two suites, two ``dlrs-bench run`` processes) take turns through a lock file
in it, so none loses a result or trips over another's move.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        return ResultFile.model_validate_json(path.read_text(encoding="utf-8"))

    def finished(self, suite: str, scenario_id: str, seed: int) -> ResultFile | None:
        """The stored result if that run finished (reached, not_reached, diverged) and the file is really the
        result of (suite, scenario_id, seed) — not, say, another scenario's copied there — else None."""
        path = self.path(suite, scenario_id, seed)
        if not path.is_file():
            return None
        try:
            result = self.load(path)
        except (ValueError, OSError):
            return None
        if (result.suite, result.scenario_id, result.seed) != (suite, scenario_id, seed):
            return None
        return result if result.status in FINISHED else None

    def write(self, result: dict[str, Any]) -> Path:
        """Validate ``result`` against the schema and write it atomically as strict JSON (a NaN or
        infinite number, e.g. the AUC of a one-class split, becomes null); returns its path."""
        result = _finite(result)
        ResultFile.model_validate(result)
        path = self.path(result["suite"], result["scenario_id"], result["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent):
            self._archive(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(result, f, indent=2, allow_nan=False)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return path

    def archive_event_log(self, suite: str, scenario_id: str, seed: int) -> Path | None:
        """Move an older event log aside before a new run of the same (scenario, seed) starts;
        returns where it went (None: there was none)."""
        path = self.event_log_path(suite, scenario_id, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent):
            return self._archive(path)

    def restore_event_log(self, suite: str, scenario_id: str, seed: int, older: Path | None) -> None:
        """Undo :meth:`archive_event_log` for a run that was interrupted: its own log is removed and
        ``older`` (what the archive moved aside) put back."""
        path = self.event_log_path(suite, scenario_id, seed)
        with _locked(path.parent):
            path.unlink(missing_ok=True)
            if older is not None and older.is_file():
                os.replace(older, path)

    @staticmethod
    def _archive(path: Path) -> Path | None:
        if not path.exists():
            return None
        history = path.parent / "history"
        history.mkdir(exist_ok=True)
        stamp = int(path.stat().st_mtime * 1000)
        target = history / f"{path.stem}-{stamp}{path.suffix}"
        n = 1
        while target.exists():
            target, n = history / f"{path.stem}-{stamp}-{n}{path.suffix}", n + 1
        os.replace(path, target)
        return target


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
