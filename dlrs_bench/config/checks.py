"""Checks of resolved scenarios against this machine, before anything runs (no torch).

What only the data can tell — a dataset's files are there and whole, of the right dataset and
protocol, and every table can be compressed at the requested ratio (each compressor's plan over
the real table sizes) — and the cores that ``processes`` gloo ranks need. ``dlrs-bench validate``
and ``run`` both make them; ``validate --portable`` leaves them out, for a suite meant for another
machine.
"""

from __future__ import annotations

import os

from dlrs_bench.config.schema import Loc, Scenario
from dlrs_bench.errors import UserInputError

#: (name, rows) of each table, or None where only a run can tell; or the reason the data cannot be used.
TablesOrProblem = tuple[list[tuple[str, int]] | None, str | None]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0))


class MachineChecks:
    """Checks scenarios against their data and this machine's cores; each dataset is opened once."""

    def __init__(self) -> None:
        self._tables: dict[str, TablesOrProblem] = {}

    def errors(self, scenario: Scenario) -> list[tuple[Loc, str]]:
        """The problems of ``scenario`` as (location in the scenario, message)."""
        errors: list[tuple[Loc, str]] = []
        if scenario.gpus == 0 and scenario.processes > (cores := available_cores()):
            errors.append((("processes",), f"{scenario.processes} gloo ranks need a core each; this machine gives "
                                           f"this process {cores} (its CPU affinity)"))
        tables, problem = self._check_data(scenario)
        if problem is not None:
            errors.append((("dataset", "path") if "path" in scenario.dataset.model_fields_set else ("dataset",),
                           problem))
        elif tables is not None:
            try:
                scenario.compressor.plan(tables, scenario.model.table_width())
            except ValueError as e:
                has_ratio = "ratio" in type(scenario.compressor).model_fields
                errors.append((("compressor", "ratio") if has_ratio else ("compressor",),
                               str(e) + scenario.model.table_width_note()))
        return errors

    def _check_data(self, scenario: Scenario) -> TablesOrProblem:
        key = scenario.dataset.model_dump_json()
        if key not in self._tables:
            try:
                self._tables[key] = (scenario.dataset.check_data(), None)
            except UserInputError as e:
                self._tables[key] = (None, str(e))
        return self._tables[key]
