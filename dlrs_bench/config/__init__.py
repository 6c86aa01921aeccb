"""Suite files: Pydantic models, YAML loading with file:line errors, matrix expansion."""

from dlrs_bench.config.expand import ResolvedScenario, load_suite
from dlrs_bench.config.schema import Scenario, StrictModel, TargetSpec, TrainSpec

__all__ = ["ResolvedScenario", "Scenario", "StrictModel", "TargetSpec", "TrainSpec", "load_suite"]
