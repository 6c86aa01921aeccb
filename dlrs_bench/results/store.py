"""Where result files live: ``DIR/<suite>/<scenario_id>/seed<k>.json`` (+ ``.mllog`` event log).

Writes are atomic (temporary file, then rename). A result is never overwritten: an older
file at the same path is moved to ``history/`` beside it, named by its start time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dlrs_bench.results.schema import ResultFile

FINISHED = ("reached", "not_reached")


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
        """The stored result if that run finished (reached or not_reached), else None."""
        path = self.path(suite, scenario_id, seed)
        if not path.exists():
            return None
        try:
            result = self.load(path)
        except ValueError:
            return None
        return result if result.status in FINISHED else None

    def write(self, result: dict[str, Any]) -> Path:
        """Validate ``result`` against the schema and write it atomically; returns its path."""
        ResultFile.model_validate(result)
        path = self.path(result["suite"], result["scenario_id"], result["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._archive(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2, allow_nan=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def archive_event_log(self, suite: str, scenario_id: str, seed: int) -> None:
        """Move an older event log aside before a new run of the same (scenario, seed) starts."""
        self._archive(self.event_log_path(suite, scenario_id, seed))

    @staticmethod
    def _archive(path: Path) -> None:
        if not path.exists():
            return
        history = path.parent / "history"
        history.mkdir(exist_ok=True)
        stamp = int(path.stat().st_mtime * 1000)
        target = history / f"{path.stem}-{stamp}{path.suffix}"
        n = 1
        while target.exists():
            target, n = history / f"{path.stem}-{stamp}-{n}{path.suffix}", n + 1
        os.replace(path, target)
