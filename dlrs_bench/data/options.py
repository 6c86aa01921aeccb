"""Options of every dataset, and what each can tell of its data without reading rows (no torch).

``check_data`` is what ``dlrs-bench validate`` (and ``run``, before training anything) learns of a
scenario's data: the (name, rows) of every table — so compressors can plan against the real table
sizes — and the rows of the train split, or an error naming the file for data that is missing,
damaged or of another dataset, or synthetic data this machine has not the memory to generate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from dlrs_bench.config.schema import READ_FIELDS, DataFacts, DatasetOptions, Seed
from dlrs_bench.data.shapes import KAGGLE_CARDINALITIES, MLPERF_MULTI_HOT, TERABYTE_CARDINALITIES
from dlrs_bench.data.splits import SplitFractions, train_rows
from dlrs_bench.errors import UserInputError

if TYPE_CHECKING:
    from dlrs_bench.data.cache import Cache, Manifest

#: (name, rows) of one table.
Table = tuple[str, int]

BUNDLED = Path(__file__).parent / "bundled" / "ml-latest-small"


#: The bundled copy's tables and ratings (rows, all splits together); tests check them against the
#: dataset built from it.
BUNDLED_TABLES: list[Table] = [("user", 610), ("movie", 9742), ("genres", 20), ("year", 107)]
BUNDLED_ROWS = 100_836
#: The bundled copy's tables with ``vocabulary: train`` (ids seen in train + padding + OOV rows), by split
#: (protocol, fractions, seed; temporal splits have no seed); tests check them against the built dataset.
BUNDLED_TRAIN_TABLES: dict[tuple[str, tuple[float, float, float], int | None], list[Table]] = {
    ("random", (0.8, 0.1, 0.1), 0): [("user", 612), ("movie", 8974), ("genres", 22), ("year", 109)],
    ("temporal", (0.8, 0.1, 0.1), None): [("user", 524), ("movie", 7869), ("genres", 22), ("year", 107)],
}


def fraction_train_rows(rows: int, fractions: tuple[float, float, float]) -> int:
    """Train rows of a split of ``rows`` by ``fractions``: ``floor(fraction * rows)`` for val and test,
    train the rest (as :func:`dlrs_bench.data.splits.split_rows` cuts them)."""
    return rows - int(fractions[1] * rows) - int(fractions[2] * rows)


class MovieLensOptions(DatasetOptions):
    name: Literal["movielens-latest-small"] = "movielens-latest-small"
    path: str | None = Field(None, description="folder with ratings.csv and movies.csv; default: the bundled copy")
    split: Literal["random", "temporal"] = "random"
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    split_seed: Seed = 0
    label_threshold: float = Field(4.0, gt=0.5, le=5.0)
    vocabulary: Literal["all", "train"] = Field(
        "all", description="all: each table's ids over every row; train: FuxiCTR's, the ids seen in the train "
                           "split + a padding row (0) + an OOV row (last) for ids unseen in train")

    def check_data(self) -> DataFacts:
        """The bundled tables and train rows; for a folder of your own, only that its two files are there."""
        if self.path is None:
            return DataFacts(self.bundled_tables(), fraction_train_rows(BUNDLED_ROWS, self.split_fractions))
        for name in ("ratings.csv", "movies.csv"):
            if not (Path(self.path) / name).is_file():
                raise UserInputError(f"{Path(self.path) / name}: no such file")
        return DataFacts()

    def bundled_tables(self) -> list[Table] | None:
        """The bundled copy's tables under this vocabulary and split (None: a train vocabulary of a split
        without stored sizes, known once the dataset is built)."""
        if self.vocabulary == "all":
            return BUNDLED_TABLES
        split = (self.split, tuple(self.split_fractions), self.split_seed if self.split == "random" else None)
        return BUNDLED_TRAIN_TABLES.get(split)


#: Table-size presets: the DLRM Criteo Kaggle cardinalities and TorchRec's Terabyte ones (40M cap).
CARDINALITY_PRESETS = {"criteo-kaggle": KAGGLE_CARDINALITIES, "criteo-tb": TERABYTE_CARDINALITIES}


#: Options that only select or order rows when reading (not part of what is generated).
READ_OPTIONS = READ_FIELDS | {"name", "path"}
#: Rows the synthetic generator draws at a time (data/synthetic.py; its pilot sample is one such chunk).
CHUNK_ROWS = 1 << 16
#: Rows of one table at most: its ids must fit in int64.
MAX_TABLE_ROWS = 2**63 - 1


class SyntheticOptions(DatasetOptions):
    name: Literal["synthetic"] = "synthetic"
    path: str | None = Field(None, description="a cache written by `dlrs-bench data prepare synthetic` (its "
                             "manifest then holds the generation options; set none of them here)")
    rows: PositiveInt = Field(100_000, description="rows generated, all splits together")
    cardinalities: list[PositiveInt] | Literal["criteo-kaggle", "criteo-tb"] = Field(
        default_factory=lambda: [10_000, 1_000, 100, 10], description="rows per table, or a Criteo preset"
    )
    cardinality_scale: float = Field(1.0, gt=0, le=1, description="multiply every table size (at least 2 rows)")
    multi_hot_sizes: list[PositiveInt] | Literal["mlperf"] | None = Field(
        None, description="ids per bag per table (default 1); 'mlperf' = MLPerf DLRM-DCNv2 sizes"
    )
    zipf_exponent: NonNegativeFloat = Field(1.05, description="0 = uniform ids")
    num_dense: NonNegativeInt = 13
    teacher_dim: PositiveInt = 8
    signal: float = Field(1.5, gt=0, description="std of the teacher logit before the bias")
    base_ctr: float = Field(0.25, gt=0, lt=1)
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    seed: Seed = Field(0, description="data seed (rows and teacher), independent of training seeds")

    def table_sizes(self) -> list[int]:
        """Rows per table after the preset and ``cardinality_scale``."""
        base = CARDINALITY_PRESETS[self.cardinalities] if isinstance(self.cardinalities, str) else self.cardinalities
        return [max(2, math.ceil(n * self.cardinality_scale)) for n in base] if self.cardinality_scale < 1 else base

    def bag_sizes(self) -> list[int]:
        """Ids per bag per table."""
        if self.multi_hot_sizes == "mlperf":
            return MLPERF_MULTI_HOT
        return self.multi_hot_sizes or [1] * len(self.table_sizes())

    def check_data(self) -> DataFacts:
        """The tables and train rows: from the cache's manifest with ``path``, else from the options once
        this machine is found to have the memory to generate the rows."""
        if self.path is not None:
            with synthetic_cache(self.path) as cache:
                manifest = cache.manifest
            start, stop = manifest.splits["train"]
            return DataFacts(list(manifest.features.items()), stop - start)
        self.check_memory()
        return DataFacts([(f"t{i}", n) for i, n in enumerate(self.table_sizes())],
                         fraction_train_rows(self.rows, self.split_fractions))

    def generation(self) -> dict[str, Any]:
        """The options that decide the rows (recorded in the cache manifest)."""
        return self.model_dump(mode="json", exclude=READ_OPTIONS)

    def teacher_bytes(self) -> int:
        """Bytes of the teacher's tables (data/synthetic.py ``Teacher``): per id a float64 CDF entry, its
        permuted id (int32; int64 from 2^31 ids), a float32 effect and a float32 ``teacher_dim``-vector;
        plus the float64 ranks and weights of the largest table while its CDF is made (16 bytes an id)."""
        sizes = self.table_sizes()
        per_id = 8 + 4 + 4 * self.teacher_dim
        return sum(n * (per_id + (4 if n < 2**31 else 8)) for n in sizes) + 16 * max(sizes)

    def chunk_bytes(self) -> int:
        """Bytes one thread works with while it draws :data:`CHUNK_ROWS` rows (``Teacher.rows``): per row the
        running sum and a table's pooled vector (float64, ``teacher_dim`` each) beside the larger of the widest
        bag's gathered teacher vectors (float32) and the pooled vector's square; the widest bag's uniforms,
        ranks and ids (int64); every bag's ids twice (the columns, then joined) and the dense features
        (float32, then float64)."""
        bags, k = self.bag_sizes(), self.teacher_dim
        vectors = 16 * k + max(4 * max(bags) * k, 8 * k)
        return CHUNK_ROWS * (vectors + 24 * max(bags) + 16 * sum(bags) + 12 * self.num_dense + 64)

    def generation_bytes(self, workers: int = 1) -> int:
        """Peak bytes of generating the rows with ``workers`` threads (an estimate of the largest
        allocations): the teacher, a chunk drawn by each thread, and the ``2 x workers`` drawn chunks
        waiting to be written (labels, dense features, ids, teacher logits)."""
        drawn = CHUNK_ROWS * (1 + 4 * self.num_dense + 8 * sum(self.bag_sizes()) + 8)
        return self.teacher_bytes() + workers * (self.chunk_bytes() + 2 * drawn)

    def check_memory(self, workers: int = 1) -> None:
        """Raise ``UserInputError`` when generating the rows with ``workers`` threads needs more memory
        than this machine has available, naming the options that size it."""
        need, available = self.generation_bytes(workers), psutil.virtual_memory().available
        if need <= available:
            return
        ids = sum(self.table_sizes())
        raise UserInputError(
            f"generating this synthetic data needs about {_size(need)} of memory, more than the {_size(available)} "
            f"available on this machine: {_size(self.teacher_bytes())} for the teacher's tables (cardinalities: "
            f"{ids:,} ids in all, teacher_dim {self.teacher_dim}) and {_size(need - self.teacher_bytes())} for "
            f"drawing rows ({workers} thread(s); teacher_dim, multi_hot_sizes, num_dense)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """With ``path`` the generation options come from the cache's manifest and cannot be given, so a
        dump leaves them out: it validates again (a result's stored scenario, a rank's job)."""
        data = handler(self)
        return data if self.path is None else {k: v for k, v in data.items() if k in READ_OPTIONS}

    @field_validator("cardinalities")
    @classmethod
    def _tables(cls, v: list[int] | str) -> list[int] | str:
        """At least one table, each with ids that fit in int64."""
        if isinstance(v, list) and not v:
            raise ValueError("give at least one table")
        if isinstance(v, list) and max(v) > MAX_TABLE_ROWS:
            raise ValueError(f"a table has at most {MAX_TABLE_ROWS:,} rows (2^63 - 1: its ids are int64)")
        return v

    @model_validator(mode="after")
    def _every_split_has_rows(self) -> SyntheticOptions:
        n_val, n_test = (int(f * self.rows) for f in self.split_fractions[1:])
        if self.path is None and min(n_val, n_test) < 1:
            raise ValueError(f"rows {self.rows} split by split_fractions {list(self.split_fractions)} leave {n_val} "
                             f"val and {n_test} test rows; every split needs at least one (more rows)")
        return self

    @model_validator(mode="after")
    def _shapes(self) -> SyntheticOptions:
        if len(self.bag_sizes()) != len(self.table_sizes()):
            raise ValueError(
                f"multi_hot_sizes has {len(self.bag_sizes())} entries, cardinalities {len(self.table_sizes())}"
            )
        if self.path is not None:
            given = sorted(self.model_fields_set - READ_OPTIONS)
            if given:
                raise ValueError(f"with path, the generation options come from the cache's manifest; remove "
                                 f"{', '.join(given)}")
        return self


SplitProtocol = Literal["dlrm-7day", "last-day", "random", "temporal"]


class PreparedOptions(DatasetOptions):
    path: str = Field(description="folder written by `dlrs-bench data prepare`")
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    split_seed: Seed = 2018
    multi_hot_sizes: list[PositiveInt] | Literal["mlperf"] | None = Field(
        None, description="MLPerf-style multi-hot synthesis: ids per bag per table ('mlperf' = DLRM-DCNv2 sizes)"
    )

    def check_data(self) -> DataFacts:
        """The cache's tables and the train rows of the split protocol."""
        with prepared_cache(self) as cache:
            manifest = cache.manifest
        bag_sizes(self, manifest)
        train_end = check_split(manifest, self)
        ranges = self.split in ("dlrm-7day", "last-day")  # train on rows [0, train_end)
        train = train_end if ranges else fraction_train_rows(manifest.rows, self.split_fractions)
        return DataFacts(list(manifest.features.items()), train)


class CriteoKaggleOptions(PreparedOptions):
    name: Literal["criteo-kaggle"] = "criteo-kaggle"
    split: SplitProtocol = "dlrm-7day"


class CriteoTerabyteOptions(PreparedOptions):
    name: Literal["criteo-tb"] = "criteo-tb"
    split: SplitProtocol = "last-day"


class AvazuOptions(PreparedOptions):
    name: Literal["avazu"] = "avazu"
    split: SplitProtocol = "random"


class MovieLensPreparedOptions(PreparedOptions):
    name: Literal["movielens"] = "movielens"
    split: SplitProtocol = "random"


def bag_sizes(options: PreparedOptions, manifest: Manifest) -> list[int]:
    """Ids per bag of each feature to synthesise from its stored id (1 = the prepared data as is); a
    cache that stores bags (MLPerf's materialised ones) takes no ``multi_hot_sizes``."""
    num_features = len(manifest.features)
    if options.multi_hot_sizes is not None and manifest.bags:
        stored = f"MLPerf's materialised bags ({manifest.multi_hot.files})" if manifest.multi_hot else "multi-hot bags"
        raise UserInputError(f"{options.path}: multi_hot_sizes: this cache stores {stored}; remove multi_hot_sizes "
                             "(it synthesises bags from one-hot ids)")
    sizes = MLPERF_MULTI_HOT if options.multi_hot_sizes == "mlperf" else options.multi_hot_sizes or [1] * num_features
    if len(sizes) != num_features:
        raise UserInputError(f"multi_hot_sizes has {len(sizes)} entries for {num_features} sparse features")
    return list(sizes)


def synthetic_cache(path: str) -> Cache:
    """The opened cache written by ``dlrs-bench data prepare synthetic`` at ``path`` (files checked)."""
    return _open_holding(path, lambda m: m.dataset == "synthetic" and m.splits is not None,
                         "a synthetic cache from `dlrs-bench data prepare synthetic`")


def prepared_cache(options: PreparedOptions) -> Cache:
    """The opened prepared cache ``options.path`` (files checked), which must hold ``options.name``."""
    return _open_holding(options.path, lambda m: m.dataset == options.name, repr(options.name))


def _open_holding(path: str, holds: Callable[[Manifest], bool], wanted: str) -> Cache:
    """The opened cache at ``path`` when ``holds`` its manifest, else an error naming ``wanted``."""
    from dlrs_bench.data.cache import open_cache  # numpy: only where a cache is read

    cache = open_cache(Path(path))
    if not holds(cache.manifest):
        cache.close()
        raise UserInputError(f"{path}: holds a prepared {cache.manifest.dataset!r}, not {wanted}")
    return cache


def check_split(manifest: Manifest, options: PreparedOptions) -> int:
    """Rows ``[0, r)`` the split protocol trains on, after checking the cache allows the protocol."""
    if options.split == "temporal" and manifest.shuffle is not None:
        raise UserInputError(f"{options.path}: split 'temporal' needs rows in file order, but this cache was "
                             f"shuffled when prepared (seed {manifest.shuffle.seed})")
    try:
        return train_rows(manifest.rows, manifest.parts, options.split)
    except ValueError as e:
        raise UserInputError(f"{options.path}: {e}") from None


def _size(n: int) -> str:
    """``n`` bytes in GiB (MiB below one GiB), for messages."""
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"
