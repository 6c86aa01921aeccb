"""An MLPerf-style event log: one ``:::MLLOG {json}`` line per event.

Fields follow MLPerf's logging format: ``namespace``, ``time_ms`` (Unix epoch ms),
``event_type`` (``POINT_IN_TIME``, ``INTERVAL_START``, ``INTERVAL_END``), ``key``, ``value``,
``metadata``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    """Appends MLLOG lines to ``path`` (flushed per line, so a crash keeps what happened; the
    runner moves an older log aside first, and rank 0 of a distributed run appends to it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def event(self, key: str, value: Any = None, event_type: str = "POINT_IN_TIME", **metadata: Any) -> None:
        record = {"namespace": "", "time_ms": int(time.time() * 1000), "event_type": event_type,
                  "key": key, "value": value, "metadata": metadata}
        self._file.write(":::MLLOG " + json.dumps(record) + "\n")
        self._file.flush()

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        self.event(key, value, "INTERVAL_START", **metadata)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        self.event(key, value, "INTERVAL_END", **metadata)

    def close(self) -> None:
        self._file.close()


class NullEventLog(EventLog):
    """The log of ranks other than 0: nothing is written."""

    def __init__(self) -> None:
        pass

    def event(self, key: str, value: Any = None, event_type: str = "POINT_IN_TIME", **metadata: Any) -> None:
        pass

    def close(self) -> None:
        pass
