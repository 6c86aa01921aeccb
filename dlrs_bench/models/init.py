"""How embedding tables start: ``model.embedding_init`` (dlrs_bench/models/options.py).

``uniform`` (the default) leaves every table as built: TorchRec's U(±sqrt(1 / n)) (unsharded
``EmbeddingBagCollection`` and fbgemm's fused kernels under DMP alike) and each compressor's own start.
``normal`` and ``xavier`` overwrite the tables a compressor exposes (``init_tables()``: rows of tables)
and the sharded full tables of a ``DistributedModelParallel`` (their local shards in its state dict).

Every table is drawn on the CPU from its own generator, seeded by the run's seed (``torch.initial_seed()``,
set by the engine's ``seed_everything``) and the table's name, in blocks of :data:`BLOCK_ROWS` rows,
each from a generator of its own: a shard of any rows and columns reads exactly the floats of the same
rows of the unsharded table, so 1 and N ranks, sharded or not, start from the same tables.

A table of ``width`` floats per row (d, or d + 1 with a per-id first-order weight) is drawn as one
[rows, width] matrix: the first-order weight starts like the embedding (FuxiCTR's LogisticRegression,
a 1-wide FeatureEmbedding, starts at its default N(0, 1e-4²), the same as ``normal``). Columns past
``width`` (the rows fbgemm stores padded to a multiple of 4) are zero and never read. Where the dataset
has a padding row (``dataset.vocabulary: train``) and a table's rows are ids, row 0 is zero and the
scheme covers rows 1.. (FuxiCTR's ``embedding_initializer(weight[1:, :])``).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Rows drawn from one generator: the unit that shards share.
BLOCK_ROWS = 1 << 16

#: A full table in a DMP state dict: ``...embedding_bags.<table>.weight``.
SHARDED_TABLE = re.compile(r"(?:^|\.)embedding_bags\.([^.]+)\.weight$")


@dataclass(frozen=True)
class InitTable:
    """A table an init scheme starts: ``weight`` [rows, stored width]; ``ids_are_rows``: row i is id i's
    vector (a full table: row 0 is the padding row where the dataset has one)."""

    name: str
    weight: torch.Tensor
    ids_are_rows: bool


#: scheme kind -> (options, rows drawn, width) -> a callable drawing [n, width] from a generator.
Sampler = Callable[[int, torch.Generator], torch.Tensor]


def normal_sampler(options: Any, rows: int, width: int) -> Sampler:
    """N(0, std²) draws of ``width`` floats per row."""
    return lambda n, g: torch.randn(n, width, generator=g) * options.std


def xavier_sampler(options: Any, rows: int, width: int) -> Sampler:
    """Xavier-uniform over a [rows, width] matrix: U(±sqrt(6 / (rows + width)))."""
    bound = math.sqrt(6.0 / (rows + width))
    return lambda n, g: torch.empty(n, width).uniform_(-bound, bound, generator=g)


def truncated_normal_sampler(options: Any, rows: int, width: int) -> Sampler:
    """N(0, std²) draws truncated to ±2 std (``torch.nn.init.trunc_normal_``)."""
    std = options.std
    return lambda n, g: nn.init.trunc_normal_(torch.empty(n, width), std=std, a=-2 * std, b=2 * std, generator=g)


SAMPLERS: dict[str, Callable[[Any, int, int], Sampler]] = {
    "normal": normal_sampler, "truncated_normal": truncated_normal_sampler, "xavier": xavier_sampler}


def has_padding_row(info: dict[str, Any]) -> bool:
    """Whether the dataset's ids start at 1, row 0 a padding row (``info`` of a CTRDataset)."""
    return info.get("vocabulary", {}).get("padding_row") == 0


def table_seed(seed: int, name: str, block: int) -> int:
    """The seed of rows ``block * BLOCK_ROWS ..`` of table ``name`` in a run of ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 65_537 + block) % (2**63)


def draw_rows(sampler: Sampler, name: str, seed: int, start: int, stop: int, padding: bool) -> torch.Tensor:
    """Rows ``start:stop`` of table ``name`` (CPU float32 [stop - start, width]); with ``padding`` row 0
    is zero and the scheme's draws fill rows 1.. (draw j is row j + 1)."""
    first, last = max(start - padding, 0), stop - padding  # draws [first, last)
    last = max(last, first)
    blocks = range(first // BLOCK_ROWS, max(last - 1, first) // BLOCK_ROWS + 1)
    drawn = torch.cat([sampler(BLOCK_ROWS, torch.Generator().manual_seed(table_seed(seed, name, b))) for b in blocks])
    base = blocks.start * BLOCK_ROWS
    rows = drawn[first - base:last - base]
    return torch.cat([torch.zeros(1, rows.shape[1]), rows]) if padding and start == 0 else rows


def write_table(table: torch.Tensor, sampler: Sampler, name: str, seed: int, padding: bool,
                rows: tuple[int, int], cols: tuple[int, int]) -> None:
    """Write rows ``rows`` and columns ``cols`` (global [start, stop)) of table ``name`` into ``table``
    (a whole table or one shard); stored columns past the drawn width are zero."""
    values = draw_rows(sampler, name, seed, *rows, padding)
    stored = torch.zeros(len(values), max(cols[1], values.shape[1]))
    stored[:, :values.shape[1]] = values
    with torch.no_grad():
        table.copy_(stored[:, cols[0]:cols[1]].to(table.dtype))


def exposed_tables(module: nn.Module) -> Iterator[InitTable]:
    """The tables of every compressor module in ``module`` (outermost ``init_tables()`` only)."""
    if hasattr(module, "init_tables"):
        yield from module.init_tables()
        return
    for child in module.children():
        yield from exposed_tables(child)


def sharded_tables(module: nn.Module) -> Iterator[tuple[str, Any]]:
    """(table name, ShardedTensor) of every full table sharded by DMP in ``module``."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    for key, value in module.state_dict().items():
        match = SHARDED_TABLE.search(key)
        if match and isinstance(value, ShardedTensor):
            yield match.group(1), value


def scheme_of(options: Any) -> Any | None:
    """The ``embedding_init`` of model ``options`` when it overwrites tables (None: the default ``uniform``)."""
    scheme = getattr(options, "embedding_init", None)
    return scheme if scheme is not None and scheme.kind in SAMPLERS else None


def start_tables(module: nn.Module, options: Any, info: dict[str, Any]) -> None:
    """Start the tables of the compressor modules in ``module`` (a model or its embeddings, unsharded)
    from ``options.embedding_init`` (model options; ``info``: the dataset's, for its padding row)."""
    if (scheme := scheme_of(options)) is None:
        return
    seed, padding = torch.initial_seed(), has_padding_row(info)
    for table in exposed_tables(module):
        (rows, width), pad = table.weight.shape, padding and table.ids_are_rows
        sampler = SAMPLERS[scheme.kind](scheme, rows - pad, width)
        write_table(table.weight, sampler, table.name, seed, pad, (0, rows), (0, width))


def start_sharded_tables(module: nn.Module, options: Any, info: dict[str, Any]) -> None:
    """Start the full tables DMP sharded in ``module`` from ``options.embedding_init``: each rank writes
    its local shards, the same floats as :func:`start_tables` gives the unsharded table."""
    if (scheme := scheme_of(options)) is None:
        return
    seed, padding = torch.initial_seed(), has_padding_row(info)
    width = options.table_width()  # rows are stored padded to a multiple of 4 floats: the rest stays zero
    for name, tensor in sharded_tables(module):
        sampler = SAMPLERS[scheme.kind](scheme, tensor.size(0) - padding, width)
        for shard in tensor.local_shards():
            (r0, c0), (r, c) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            write_table(shard.tensor, sampler, name, seed, padding, (r0, r0 + r), (c0, c0 + c))
