"""Datasets built from scenario options, once per process for all subsets of the same data."""

from __future__ import annotations

import json
import time
from typing import Any

from dlrs_bench.data.base import SUBSET_FIELDS
from dlrs_bench.registry import DATASETS


class DatasetCache:
    """Datasets built once, keyed by their resolved options without the subset fields."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def get(self, options: Any) -> tuple[Any, float]:
        """The dataset (a CTRDataset or SequenceDataset, with its train subset) and the seconds spent
        building it now; the full dataset is built once for all subsets of it."""
        t0 = time.perf_counter()
        key = json.dumps(options.model_dump(mode="json", exclude=SUBSET_FIELDS), sort_keys=True)
        if key not in self._built:
            self._built[key] = DATASETS.get(options.name).build(options)
        return self._built[key].subset(options), time.perf_counter() - t0
