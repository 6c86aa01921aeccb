"""Checks of resolved scenarios against this machine, before anything runs (no torch).

What only the data can tell — a dataset's files are there and whole, of the right dataset and
protocol, this machine has the memory to generate synthetic rows, every table can be compressed at
the requested ratio (each compressor's plan over the real table sizes), and a batch is no larger than
the rows trained on — and the cores that ``processes`` gloo ranks need. ``dlrs-bench validate`` and
``run`` both make them; ``validate --portable`` leaves them out, for a suite meant for another machine.
"""

from __future__ import annotations

import os

from dlrs_bench.config.schema import DataFacts, Loc, Scenario
from dlrs_bench.errors import UserInputError

#: What the data tells, or the reason it cannot be used.
FactsOrProblem = tuple[DataFacts, str | None]
Errors = list[tuple[Loc, str]]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0))


class MachineChecks:
    """Checks scenarios against their data and this machine's cores; each dataset is opened once."""

    def __init__(self) -> None:
        self._facts: dict[str, FactsOrProblem] = {}

    def errors(self, scenario: Scenario) -> Errors:
        """The problems of ``scenario`` as (location in the scenario, message)."""
        errors: Errors = []
        if scenario.gpus == 0 and scenario.processes > (cores := available_cores()):
            errors.append((("processes",), f"{scenario.processes} gloo ranks need a core each; this machine gives "
                                           f"this process {cores} (its CPU affinity)"))
        facts, problem = self._check_data(scenario)
        if problem is not None:
            errors.append((("dataset", "path") if "path" in scenario.dataset.model_fields_set else ("dataset",),
                           problem))
            return errors
        return errors + _plan_errors(scenario, facts.tables) + _rows_errors(scenario, facts.train_rows)

    def _check_data(self, scenario: Scenario) -> FactsOrProblem:
        key = scenario.dataset.model_dump_json()
        if key not in self._facts:
            try:
                self._facts[key] = (scenario.dataset.check_data(), None)
            except UserInputError as e:
                self._facts[key] = (DataFacts(), str(e))
        return self._facts[key]


def _plan_errors(scenario: Scenario, tables: list[tuple[str, int]] | None) -> Errors:
    """The compressor's plan over the real table sizes, where they are known."""
    if tables is None:
        return []
    try:
        scenario.compressor.plan(tables, scenario.model.table_width())
    except ValueError as e:
        has_ratio = "ratio" in type(scenario.compressor).model_fields
        return [(("compressor", "ratio") if has_ratio else ("compressor",), str(e) + scenario.model.table_width_note())]
    return []


def _rows_errors(scenario: Scenario, train_rows: int | None) -> Errors:
    """A subset larger than the train split, or a batch larger than the rows trained on, where the train
    split's size is known."""
    if train_rows is None:
        return []
    dataset = scenario.dataset
    if dataset.num_samples is not None and dataset.num_samples > train_rows:
        return [(("dataset", "num_samples"), f"{dataset.num_samples:,} is more than the {train_rows:,} train rows "
                                             f"of {dataset.name}")]
    try:
        scenario.train.check_batch(dataset.subset_rows(train_rows))
    except ValueError as e:
        return [(("train", "batch_size"), str(e))]
    return []
