"""CTR models over any embedding module (KJT in, KeyedTensor out), with parameter and FLOP counts."""

from dlrs_bench.models.base import ModelCounts, build_model

__all__ = ["ModelCounts", "build_model"]
