"""Reading result files back: from files and folders, skipping ``history/``."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from dlrs_bench.errors import UserInputError
from dlrs_bench.results.schema import ResultFile


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
    results = []
    for path in result_paths(paths):
        try:
            results.append(ResultFile.model_validate_json(path.read_text(encoding="utf-8")))
        except OSError as e:
            raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
        except (ValidationError, ValueError) as e:  # UnicodeDecodeError (a binary file) is a ValueError
            first = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e)}
            field = ".".join(map(str, first["loc"])) or "(file)"
            raise UserInputError(f"{path}: not a dlrs-bench result file ({field}: {first['msg']})") from None
    return results
