"""Options of every compressor and the plan each one makes for given tables (no torch).

A plan is what a method allocates for each table — rows, digits, blocks, rank, dimension — chosen
from the requested ratio by arithmetic alone, so ``dlrs-bench validate`` can refuse a ratio a table
cannot reach before anything is built, and ``build`` (in each method's module) allocates exactly
the plan. Tables with ``threshold`` rows or fewer stay full (plan ``None``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, PositiveInt

from dlrs_bench.config.schema import CompressorOptions

#: (name, rows) of one table.
Table = tuple[str, int]

#: A ratio is reachable when the closest configuration is within this factor of it.
RATIO_TOLERANCE = 1.5


def closest_config(candidates: list[tuple[int, Any]], full_params: int, ratio: float, where: str) -> Any:
    """The configuration whose achieved ratio ``full_params / params`` is closest to ``ratio``
    (in log scale) among ``candidates`` = [(params, config), ...].

    Raises ``ValueError`` naming ``where`` and the reachable range when even the closest is
    more than ``RATIO_TOLERANCE`` away: a ratio the method cannot reach is an error, never a
    silent fallback.
    """
    scored = [(abs(math.log(full_params / p / ratio)), p, c) for p, c in candidates if p > 0]
    if not scored:
        raise ValueError(f"{where}: no configuration")
    distance, params, config = min(scored, key=lambda s: s[0])
    if distance > math.log(RATIO_TOLERANCE):
        low, high = min(full_params / p for _, p, _ in scored), max(full_params / p for _, p, _ in scored)
        reach = f"reachable: {low:.3g}x to {high:.3g}x" if high > low * 1.0005 else f"it gives {low:.3g}x"
        raise ValueError(f"{where}: cannot reach ratio {ratio:g} ({reach}); choose a reachable ratio or "
                         "raise `threshold` to leave this table full")
    return config


def compressed_rows(rows: int, ratio: float) -> int:
    """Rows left when ``rows`` are divided by ``ratio`` (at least one)."""
    return max(1, math.ceil(rows / ratio))


#: Methods whose parameters are not rows of tables: they keep their paper's start, and refuse any
#: ``model.embedding_init`` but the default (dlrs_bench/models/init.py).
PAPER_INITS = {
    "tt": "its cores keep TT-Rec's N(0, s²) start, s matched to a row variance of 1 / (3 n)",
    "robe": "its shared array keeps ROBE-Z's U(±sqrt(1 / n)) start, n = rows of its largest table",
}


def init_refusal(kind: str, scheme: str) -> str:
    """Why compressor ``kind`` (a key of :data:`PAPER_INITS`) cannot start from ``embedding_init`` ``scheme``."""
    return (f"compressor {kind} cannot start from embedding_init {scheme}: its parameters are not rows of tables "
            f"({PAPER_INITS[kind]}; its tables left full follow it); remove model.embedding_init or choose "
            "another compressor")


def refuse_init(kind: str, scheme: str) -> None:
    """Raise ``ValueError`` for any ``embedding_init`` of compressor ``kind`` but the default ``uniform``."""
    if scheme != "uniform":
        raise ValueError(init_refusal(kind, scheme))


class PerTableOptions(CompressorOptions):
    """A method that compresses each table above the threshold on its own."""

    ratio: float = Field(gt=1.0, description="requested ratio per compressed table")

    def plan(self, tables: Sequence[Table], dim: int) -> list[Any]:
        """Each table's configuration (``None``: left full) at embedding dimension ``dim``.

        Raises:
            ValueError: naming the table, when the method cannot reach ``ratio`` on it.
        """
        self.check_dim(dim)
        return [self.table_plan(n, dim, f"{self.kind} on table {name} ({n:,} rows)") if n > self.threshold else None
                for name, n in tables]

    def table_plan(self, n: int, dim: int, where: str) -> Any:
        raise NotImplementedError


class FullOptions(CompressorOptions):
    kind: Literal["none"] = "none"

    def plan(self, tables: Sequence[Table], dim: int) -> list[Any]:
        return [None] * len(tables)


class HashingOptions(PerTableOptions):
    kind: Literal["hashing"] = "hashing"
    ratio: float = Field(gt=1.0, description="requested compression ratio n / m of each compressed table")
    hash: Literal["modulo", "universal"] = "modulo"
    hash_seed: int = 0

    def table_plan(self, n: int, dim: int, where: str) -> int:
        """Buckets m = ceil(n / ratio); a table too small for the ratio (n / m too far from it) is refused."""
        m = compressed_rows(n, self.ratio)
        return closest_config([(m * dim, m)], n * dim, self.ratio, where)


def qr_rows(n: int, radix: int, levels: int) -> list[int]:
    """Rows of each level's table for ``n`` ids: radix for the first k-1 digits, the quotient last."""
    return [radix] * (levels - 1) + [math.ceil(n / radix ** (levels - 1))]


class QROptions(PerTableOptions):
    kind: Literal["qr"] = "qr"
    ratio: float = Field(gt=1.0, description="requested ratio n / rows-equivalent per compressed table")
    fusion: Literal["mult", "add", "concat", "fc"] = Field(
        "mult", description="mult: product of the levels' vectors; add: sum; concat: d / k wide each; fc: the "
                            "d-wide vectors concatenated through a Linear(k d, d) per table (seed 000's fully "
                            "connected fusion)")
    levels: int | None = Field(
        None, ge=2, le=16, description="digits per id; default: the fewest that reach ratio (2 for concat)"
    )

    def check_dim(self, dim: int) -> None:
        if self.fusion == "concat" and dim % (self.levels or 2):
            raise ValueError(f"qr fusion concat needs embedding_dim divisible by levels ({self.levels or 2}), "
                             f"got {dim}")

    def table_plan(self, n: int, dim: int, where: str) -> tuple[int, int]:
        """(radix, levels) whose parameter count is closest to n d / ratio."""
        if self.levels or self.fusion == "concat":
            level_choices = [self.levels or 2]
        else:
            level_choices = list(range(2, max(3, math.ceil(math.log2(n))) + 1))
        errors = []
        for levels in level_choices:
            width = dim // levels if self.fusion == "concat" else dim
            mixer = levels * dim * dim + dim if self.fusion == "fc" else 0  # fc: the table's Linear(k d, d)
            top = max(2, math.ceil(n ** (1 / levels)) + 1)
            candidates = [(sum(qr_rows(n, c, levels)) * width + mixer, (c, levels)) for c in range(2, top + 1)]
            try:
                return closest_config(candidates, n * dim, self.ratio, f"{where} with {levels} levels")
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[-1] if len(level_choices) == 1 else f"no number of levels reaches ratio "
                         f"{self.ratio:g}; the most levels give: {errors[-1]}")


class MEmComOptions(PerTableOptions):
    kind: Literal["memcom"] = "memcom"
    ratio: float = Field(gt=1.0, description="requested ratio per compressed table; must be below embedding_dim")

    def check_dim(self, dim: int) -> None:
        if self.ratio >= dim:
            raise ValueError(
                f"memcom cannot reach ratio {self.ratio:g} at embedding_dim {dim}: with one scalar per id "
                f"its ratio n*d / (m*d + n) is always below d"
            )

    def table_plan(self, n: int, dim: int, where: str) -> int:
        """Rows m of the shared table: m = n (1 / ratio - 1 / d), params m d + n."""
        guess = max(1, round(n * (1 / self.ratio - 1 / dim)))
        candidates = [(m * dim + n, m) for m in {max(1, guess - 1), guess, min(n, guess + 1)}]
        return closest_config(candidates, n * dim, self.ratio, where)


def bch_blocks(bits: int, block_bits: int, mode: str) -> list[list[int]]:
    """The bit positions of each block for ``bits``-bit codes cut into blocks of ≤ ``block_bits``."""
    count = math.ceil(bits / block_bits)
    if mode == "succession":
        return [list(range(b * block_bits, min(bits, (b + 1) * block_bits))) for b in range(count)]
    return [list(range(b, bits, count)) for b in range(count)]


class BCHOptions(PerTableOptions):
    kind: Literal["bch"] = "bch"
    blocks: Literal["succession", "skip"] = "succession"
    fusion: Literal["sum", "concat"] = "sum"

    def table_plan(self, n: int, dim: int, where: str) -> list[list[int]]:
        """The bit positions of each block, for the block length t closest to the ratio."""
        bits = max(1, math.ceil(math.log2(n)))
        candidates = []
        for t in range(1, bits + 1):
            blocks = bch_blocks(bits, t, self.blocks)
            if self.fusion == "concat" and dim % len(blocks):
                continue
            width = dim // len(blocks) if self.fusion == "concat" else dim
            candidates.append((sum(2 ** len(b) for b in blocks) * width, blocks))
        return closest_config(candidates, n * dim, self.ratio, where)


def row_factors(n: int) -> list[int]:
    """Three near-equal factors p1 ≥ p2 ≥ p3 whose product is at least n."""
    p1 = math.ceil(n ** (1 / 3))
    p2 = math.ceil(math.sqrt(n / p1))
    return [p1, p2, math.ceil(n / (p1 * p2))]


def dim_factors(d: int) -> list[int]:
    """Three factors of d, as balanced as possible (smallest largest factor)."""
    options = [(a, b, d // (a * b)) for a, b in itertools.product(range(1, d + 1), repeat=2) if d % (a * b) == 0]
    return list(min(options, key=lambda q: (max(q), -min(q))))


def tt_params(p: list[int], q: list[int], rank: int) -> int:
    return rank * p[0] * q[0] + rank * rank * p[1] * q[1] + rank * p[2] * q[2]


class TTOptions(PerTableOptions):
    kind: Literal["tt"] = "tt"
    ratio: float = Field(gt=1.0, description="requested ratio per compressed table; chooses the TT rank")

    def check_init(self, scheme: str) -> None:
        refuse_init(self.kind, scheme)

    def table_plan(self, n: int, dim: int, where: str) -> tuple[list[int], list[int], int]:
        """(p, q, rank): row and dimension factors and the TT rank closest to the ratio."""
        p, q = row_factors(n), dim_factors(dim)
        candidates = []
        for rank in range(1, 4 * dim + 1):
            params = tt_params(p, q, rank)
            candidates.append((params, rank))
            if params > n * dim:
                break
        return p, q, closest_config(candidates, n * dim, self.ratio, where)


def md_dims(rows: list[int], dim: int, scale: float, alpha: float) -> list[int]:
    """Power-of-two dimensions 2^round(log2(scale n^-alpha)), clamped to [1, dim]."""
    return [min(dim, max(1, 2 ** round(math.log2(max(scale * n**-alpha, 1e-12))))) for n in rows]


def md_params(rows: list[int], dims: list[int], dim: int) -> int:
    return sum(n * k + (k * dim if k < dim else 0) for n, k in zip(rows, dims))


class MDOptions(CompressorOptions):
    kind: Literal["md"] = "md"
    ratio: float = Field(gt=1.0, description="sum of n d over compressed tables / their parameters")
    alpha: float = Field(0.3, ge=0.0, description="d_t ∝ n_t^-alpha")

    def check_dim(self, dim: int) -> None:
        if self.ratio >= dim:
            raise ValueError(f"md cannot reach ratio {self.ratio:g} at embedding_dim {dim}: at 1 float per row "
                             f"(plus the projection) its ratio stays below d")

    def plan(self, tables: Sequence[Table], dim: int) -> list[int | None]:
        """Each compressed table's dimension d_t (``None``: full), the ratio met over them together."""
        self.check_dim(dim)
        rows = [n for _, n in tables if n > self.threshold]
        # every scale at which some table changes dimension, plus the extremes
        boundaries = [2 ** (i + 0.5) for i in range(-1, int(math.log2(dim)) + 1)]
        scales = {k * n**self.alpha for n in rows for k in boundaries}
        candidates = [(md_params(rows, md_dims(rows, dim, s, self.alpha), dim), s) for s in sorted(scales)]
        where = f"md over {len(rows)} table(s) with more than {self.threshold} rows"
        dims = iter(md_dims(rows, dim, closest_config(candidates, sum(rows) * dim, self.ratio, where), self.alpha))
        return [next(dims) if n > self.threshold else None for _, n in tables]


class ROBEOptions(CompressorOptions):
    kind: Literal["robe"] = "robe"
    ratio: float = Field(gt=1.0, description="sum of n d over compressed tables / size of the shared array")
    chunk: PositiveInt = Field(32, description="Z: consecutive floats read per hash (1 = HashedNets)")
    gradient: Literal["dense", "sparse"] = "dense"
    hash_seed: int = 0

    def check_init(self, scheme: str) -> None:
        refuse_init(self.kind, scheme)

    def plan(self, tables: Sequence[Table], dim: int) -> list[int | None]:
        """The shared array's size M for each compressed table (``None``: full)."""
        compressed = [n > self.threshold for _, n in tables]
        if not any(compressed):
            raise ValueError(f"robe: no table has more than threshold={self.threshold} rows")
        full = sum(n * dim for (_, n), c in zip(tables, compressed) if c)
        size = round(full / self.ratio)
        if size < self.chunk:
            raise ValueError(
                f"robe: ratio {self.ratio:g} leaves {size} floats for {full:,} compressed parameters, "
                f"fewer than one chunk ({self.chunk}); the largest reachable ratio is {full / self.chunk:.4g}"
            )
        return [size if c else None for c in compressed]
