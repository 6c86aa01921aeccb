"""Options of the sequential data: synthetic sequences and split protocols (pydantic only, no torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from dlrs_bench.config.schema import Seed, StrictModel


class SyntheticSequenceOptions(StrictModel):
    """Synthetic user sequences drawn from a hidden teacher (see :mod:`dlrs_bench.sequential.synthetic`)."""

    users: PositiveInt = Field(10_000, description="user sequences generated")
    items: int = Field(10_000, ge=1, lt=2**31 - 1, description="distinct items (ids 1..items; 0 is padding); a "
                       "user meets each at most once")
    categories: PositiveInt = Field(50, description="item categories (each item belongs to one)")
    length: Literal["fixed", "geometric"] = Field(
        "geometric", description="events per user: fixed = mean_length each; geometric = min_length + a geometric "
                                 "number with mean mean_length - min_length, capped at max_length")
    mean_length: PositiveFloat = 50.0
    min_length: PositiveInt = 3
    max_length: PositiveInt = 1_000
    zipf_exponent: float = Field(1.0, ge=0, description="item popularity within a category: rank^-s (0 = uniform)")
    concentration: PositiveFloat = Field(0.1, description="Dirichlet α of a user's interest over categories "
                                                          "(small = few categories per user)")
    stay: float = Field(0.5, ge=0, le=1, description="probability the next event keeps the current category")
    drift: float = Field(0.02, ge=0, le=1, description="probability per event that the user's interest is redrawn")
    mean_gap_s: float = Field(3_600.0, ge=1, description="mean seconds between a user's events (1 + exponential)")
    start_time: NonNegativeInt = Field(1_600_000_000, description="earliest first event (Unix seconds)")
    start_span_s: NonNegativeInt = Field(365 * 86_400, description="users start uniformly within this many seconds")
    seed: Seed = Field(0, description="data seed (sequences and teacher)")

    @model_validator(mode="after")
    def _lengths(self) -> SyntheticSequenceOptions:
        if self.categories > self.items:
            raise ValueError(f"categories: {self.categories:,} categories for {self.items:,} items; each needs one")
        if not self.min_length <= self.mean_length <= self.max_length:
            raise ValueError(f"mean_length: {self.mean_length:g} must lie in [min_length, max_length] = "
                             f"[{self.min_length}, {self.max_length}]")
        if self.max_length > self.items:
            raise ValueError(f"max_length: {self.max_length:,} events, but a user meets each of the {self.items:,} "
                             "items once")
        if self.length == "fixed" and self.mean_length != int(self.mean_length):
            raise ValueError(f"mean_length: fixed lengths need a whole number, got {self.mean_length:g}")
        return self

    def generation(self) -> dict[str, Any]:
        """The options that decide the sequences (recorded in the cache's ``source``)."""
        return self.model_dump(mode="json")


class SequenceSplitOptions(StrictModel):
    """How a sequence cache is split (see :mod:`dlrs_bench.sequential.splits`)."""

    protocol: Literal["leave-last-out", "temporal"] = "leave-last-out"
    train_end: int | None = Field(None, description="temporal: train on events before this time (seconds)")
    gap_s: NonNegativeInt = Field(0, description="temporal: seconds between train_end and the first test target")
    test_end: int | None = Field(None, description="temporal: test targets lie before this time (seconds)")
    val_s: NonNegativeInt = Field(0, description="temporal: val = the last val_s seconds before train_end "
                                                 "(taken out of training); 0 = val is the test split")

    @model_validator(mode="after")
    def _bounds(self) -> SequenceSplitOptions:
        temporal_fields = {"train_end": self.train_end, "test_end": self.test_end}
        if self.protocol == "leave-last-out":
            given = [k for k, v in {**temporal_fields, "gap_s": self.gap_s, "val_s": self.val_s}.items() if v]
            if given:
                raise ValueError(f"{given[0]}: only the temporal protocol takes it")
            return self
        missing = [k for k, v in temporal_fields.items() if v is None]
        if missing:
            raise ValueError(f"{missing[0]}: the temporal protocol needs it")
        if self.train_end + self.gap_s >= self.test_end:
            raise ValueError(f"test_end: {self.test_end} must come after train_end + gap_s = "
                             f"{self.train_end + self.gap_s}")
        return self
