"""Reading result files back: from files and folders, skipping ``history/``; numbers as readers see them.

Many numbers of a result may be null (a failed or diverged run, a section that does not apply) and
files written before strict JSON may hold NaN or an infinity where a number was not measured:
readers take every number through :func:`number`, which gives a finite float or None.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlrs_bench.errors import UserInputError
from dlrs_bench.results.schema import MAX_RESULT_BYTES, ResultFile


def result_paths(paths: list[Path]) -> list[Path]:
    """Result files among ``paths``: files as given, folders searched for ``seed*.json``
    (older results moved to ``history/`` are left out)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("seed*.json")) if "history" not in p.parts and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise UserInputError(f"{path}: no such file or folder")
    if not found:
        raise UserInputError(f"no result files (seed*.json) in {', '.join(map(str, paths))}")
    return found


def load_results(paths: list[Path]) -> list[ResultFile]:
    """Every result file under ``paths``, validated against the result schema."""
    return [read_result(path) for path in result_paths(paths)]


def read_result(path: Path) -> ResultFile:
    """The result file ``path``, validated; a user error naming it when it cannot be read, is larger
    than :data:`MAX_RESULT_BYTES` (checked before it is read) or is not a result this version reads."""
    text = _bounded_text(path)
    try:
        return ResultFile.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"])) or "(file)"
        message = first["msg"].removeprefix("Value error, ")
        raise UserInputError(f"{path}: not a dlrs-bench result file ({field}: {message})") from None


def _bounded_text(path: Path) -> str:
    """The text of ``path`` if it holds at most :data:`MAX_RESULT_BYTES` bytes of UTF-8."""
    try:
        size = path.stat().st_size
        if size <= MAX_RESULT_BYTES:
            with path.open("rb") as f:
                data = f.read(MAX_RESULT_BYTES + 1)  # the file may have grown since stat
            size = len(data)
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror or e}") from None
    if size > MAX_RESULT_BYTES:
        raise UserInputError(f"{path}: not a dlrs-bench result file ({size:,} bytes; a result file holds at most "
                             f"{MAX_RESULT_BYTES:,})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path}: not a dlrs-bench result file ((file): {e})") from None


def number(value: Any) -> float | None:
    """``value`` as a finite float; None for null, NaN, an infinity, a number too large for a float
    or anything else that is not a number (readers show it as missing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def cache_identity(dataset: Any) -> str | None:
    """The identity of the dataset cache a dataset section records (a result's ``dataset``, or a dataset's
    ``summary()``): ``dataset["cache"]["identity"]``, else None (a result of an earlier version)."""
    cache = dataset.get("cache") if isinstance(dataset, dict) else None
    identity = cache.get("identity") if isinstance(cache, dict) else None
    return identity if isinstance(identity, str) else None


def label(result: ResultFile) -> str:
    """The scenario's display label, else its id."""
    text = (result.model_extra or {}).get("label")
    return text if isinstance(text, str) and text else result.scenario_id


def spec_section(result: ResultFile, key: str) -> dict[str, Any]:
    """``result.scenario[key]`` when it is a mapping, else ``{}`` (the scenario is free-form in the schema)."""
    section = result.scenario.get(key)
    return section if isinstance(section, dict) else {}


def method(result: ResultFile) -> str:
    """The compressor kind of the result's scenario (``unknown`` when the scenario does not name one)."""
    kind = spec_section(result, "compressor").get("kind")
    return str(kind) if kind is not None else "unknown"
