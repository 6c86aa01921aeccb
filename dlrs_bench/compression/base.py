"""The compressor interface and exact memory accounting.

Every method builds an ``nn.Module`` whose ``forward(features: KeyedJaggedTensor)``
returns a ``KeyedTensor`` with one pooled ``[B, embedding_dim]`` block per feature, in
the order and with the keys of the full ``EmbeddingBagCollection`` it replaces, so any
model accepts any method. Each module also reports, per table, the learnable floats it
allocated (:class:`TableAccount`).

Compression ratio (DESIGN.md) = sum_t n_t * d_t of the uncompressed tables divided by the
learnable floats actually allocated for them; tables left full count at full size; hash
seeds and fixed random coefficients are buffers, not parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.config.schema import CompressorOptions
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.registry import COMPRESSORS


@dataclass(frozen=True)
class TableAccount:
    """Learnable floats allocated for one table (``params``) against its full size ``rows * dim``."""

    name: str
    rows: int
    dim: int
    params: int
    compressed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def uncompressed_params(self) -> int:
        return self.rows * self.dim


@dataclass(frozen=True)
class EmbeddingAccount:
    """The ``embedding`` section of a result file."""

    uncompressed_params: int
    params: int
    bytes: int
    compression_ratio: float
    requested_ratio: float | None
    per_table: list[TableAccount]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_table"] = [
            {**asdict(t), "ratio": t.uncompressed_params / t.params if t.params else None} for t in self.per_table
        ]
        return out


class CompressedEmbedding(Protocol):
    """What every compressor module offers besides ``forward(KJT) -> KeyedTensor``."""

    def table_accounts(self) -> list[TableAccount]: ...


class CompressorPlugin(Protocol):
    Options: ClassVar[type[CompressorOptions]]

    @staticmethod
    def build(
        features: list[SparseFeature], dim: int, options: Any, device: torch.device
    ) -> nn.Module: ...


def build_embeddings(
    features: list[SparseFeature], dim: int, options: CompressorOptions, device: torch.device
) -> nn.Module:
    """The embedding module of ``options.kind`` over ``features``, each of dimension ``dim``."""
    options.check_dim(dim)
    return COMPRESSORS.get(options.kind).build(features, dim, options, device)


def account(module: nn.Module, requested_ratio: float | None = None) -> EmbeddingAccount:
    """Accounting of ``module``, checked against the parameters it really holds."""
    tables = module.table_accounts()
    params = sum(t.params for t in tables)
    held = [p for p in module.parameters() if p.requires_grad]
    actual = sum(p.numel() for p in held)
    if actual != params:
        raise RuntimeError(f"{type(module).__name__} reports {params} parameters but holds {actual}")
    uncompressed = sum(t.uncompressed_params for t in tables)
    return EmbeddingAccount(
        uncompressed_params=uncompressed,
        params=params,
        bytes=sum(p.numel() * p.element_size() for p in held),
        compression_ratio=uncompressed / params,
        requested_ratio=requested_ratio,
        per_table=tables,
    )


def check_keys(features: KeyedJaggedTensor, expected: list[str]) -> None:
    """Raise if ``features`` does not carry exactly the ``expected`` keys in order."""
    if features.keys() != expected:
        raise ValueError(f"embedding expects features {expected}, got {features.keys()}")


def tables(features: list[SparseFeature]) -> list[tuple[str, int]]:
    """(name, rows) of each feature's table, as compressor plans take them."""
    return [(f.name, f.cardinality) for f in features]
