"""The model interface: ``forward(dense [B, num_dense], sparse KJT) -> logits [B]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from torch import nn

from dlrs_bench.config.schema import ModelOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.registry import MODELS


class CTRModel(Protocol):
    """A model built by a plugin; ``embeddings`` is the (possibly compressed) embedding module."""

    embeddings: nn.Module

    def flops_per_sample(self) -> int:
        """Analytic forward FLOPs of one sample (multiply and add counted separately)."""
        ...


class ModelPlugin(Protocol):
    Options: ClassVar[type[ModelOptions]]

    @staticmethod
    def build(options: Any, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> nn.Module: ...


@dataclass(frozen=True)
class ModelCounts:
    """The ``model`` section of a result file."""

    dense_params: int  # learnable parameters outside the embedding module
    total_params: int  # dense + embedding parameters
    flops_per_sample: int


def build_model(
    options: ModelOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module
) -> nn.Module:
    """The model named by ``options.name`` around ``embeddings``."""
    return MODELS.get(options.name).build(options, num_dense, features, embeddings)


def count(model: nn.Module) -> ModelCounts:
    """Parameter counts and FLOPs of a built model."""
    embedding = {id(p) for p in model.embeddings.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    dense = sum(p.numel() for p in params if id(p) not in embedding)
    return ModelCounts(dense, sum(p.numel() for p in params), model.flops_per_sample())


def linear_flops(sizes: list[int]) -> int:
    """FLOPs of a chain of Linear layers ``sizes[0] -> sizes[1] -> ...`` (2 per multiply-add)."""
    return sum(2 * a * b for a, b in zip(sizes, sizes[1:]))
