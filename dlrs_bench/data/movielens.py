"""MovieLens ml-latest-small as a CTR task (bundled with dlrs-bench).

Label: ``rating >= label_threshold`` (4.0 by default: 48.2% positives). Sparse features:
``user``, ``movie``, ``genres`` (multi-hot), ``year`` (release year from the title).
Dense features (4, standardised with train statistics): log(1 + ratings of the user in
train), log(1 + ratings of the movie in train), rating time in years, movie age at rating.
Splits: seeded random 80/10/10 or temporal (sorted by timestamp, the last rows are test).
Vocabularies (``vocabulary``): ``all``, the ids of every row (each table 0..n-1); ``train``, FuxiCTR's:
row 0 a padding row no bag looks up, the ids seen in the train split 1..k (by train count, most frequent
first, ties by id), k + 1 the OOV row of every id unseen in train (val and test ids read as OOV).
The rows are written on first use to a cache (:mod:`dlrs_bench.data.local_cache`), each split a row
range in the order above, and read from it like every other dataset.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from dlrs_bench.config.schema import READ_FIELDS
from dlrs_bench.data.base import CTRDataset, dataset_from_cache
from dlrs_bench.data.cache import CacheWriter, Manifest, bag_positions, describe_inputs, now
from dlrs_bench.data.local_cache import first_use_cache
from dlrs_bench.data.options import BUNDLED, MovieLensOptions
from dlrs_bench.data.rows import RowSet
from dlrs_bench.data.splits import split_rows
from dlrs_bench.errors import UserInputError

SECONDS_PER_YEAR = 365.25 * 24 * 3600
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


#: Bump when the rows written for given options change (old first-use caches are then rebuilt).
BUILD_VERSION = 1


class MovieLensLatestSmall:
    Options = MovieLensOptions

    @staticmethod
    def build(options: MovieLensOptions) -> CTRDataset:
        folder = Path(options.path) if options.path else BUNDLED
        files = [folder / "ratings.csv", folder / "movies.csv"]
        # the default vocabulary is left out of the key: caches written before the option stay valid
        exclude = READ_FIELDS | ({"vocabulary"} if options.vocabulary == "all" else set())
        key = {"version": BUILD_VERSION, **options.model_dump(mode="json", exclude=exclude),
               "files": [[str(f.resolve()), *_stat(f)] for f in files]}
        cache = first_use_cache(options.name, key, lambda out: _write_cache(options, folder, out))
        splits = {k: RowSet(*bounds) for k, bounds in cache.manifest.splits.items()}
        return dataset_from_cache(options, cache, splits, cache.manifest.info)


def _stat(path: Path) -> list[int]:
    """(bytes, mtime ns) of ``path``, so an edited file gets a new cache."""
    try:
        st = path.stat()
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    return [st.st_size, st.st_mtime_ns]


def _write_cache(options: MovieLensOptions, folder: Path, out: Path) -> None:
    """Build the CTR rows from the CSV files and write them to the cache ``out``, train rows first,
    then val, then test (each split a row range)."""
    users, movies, ratings, stamps = _read_ratings(folder / "ratings.csv")
    movie_ids, genres, years = _read_movies(folder / "movies.csv")

    movie_index = {m: i for i, m in enumerate(movie_ids)}
    try:
        movie_row = np.array([movie_index[m] for m in movies], dtype=np.int64)
    except KeyError as e:
        raise UserInputError(f"{folder / 'ratings.csv'}: movieId {e.args[0]} is not in movies.csv") from None
    user_values, user_row = np.unique(users, return_inverse=True)
    genre_vocab = sorted({g for gs in genres for g in gs})
    genre_index = {g: i for i, g in enumerate(genre_vocab)}
    year_vocab = sorted({y for y in years if y is not None})
    year_index = {y: i + 1 for i, y in enumerate(year_vocab)}  # 0 = unknown year
    movie_year_id = np.array([year_index.get(y, 0) for y in years], dtype=np.int64)
    movie_year = np.array([np.nan if y is None else y for y in years], dtype=np.float64)

    labels = (ratings >= options.label_threshold).astype(np.uint8)
    order_key = stamps if options.split == "temporal" else None
    rows = split_rows(len(labels), options.split_fractions, options.split_seed, order_key)

    train = rows["train"]
    user_count = np.bincount(user_row[train], minlength=len(user_values))
    movie_count = np.bincount(movie_row[train], minlength=len(movie_ids))
    rating_year = 1970.0 + stamps / SECONDS_PER_YEAR
    age = rating_year - movie_year[movie_row]
    age = np.where(np.isnan(age), np.nanmedian(age[train]), age)
    dense = np.stack([np.log1p(user_count[user_row]), np.log1p(movie_count[movie_row]), rating_year, age], axis=1)
    mean, std = dense[train].mean(0), dense[train].std(0) + 1e-6
    dense = ((dense - mean) / std).astype(np.float32)

    genre_lists = [np.array([genre_index[g] for g in gs], dtype=np.int64) for gs in genres]
    genre_lengths = np.array([len(g) for g in genre_lists], dtype=np.int64)
    genre_offsets = np.concatenate([[0], np.cumsum(genre_lengths)])
    ids = {"user": user_row, "movie": movie_row, "genres": np.concatenate(genre_lists),
           "year": movie_year_id[movie_row]}  # genres: the ids of every movie's bag, one after the other
    train_ids = {"user": user_row[train], "movie": movie_row[train], "year": ids["year"][train],
                 "genres": ids["genres"][bag_positions(genre_offsets, movie_row[train])[0]]}
    sizes = {"user": len(user_values), "movie": len(movie_ids), "genres": len(genre_vocab),
             "year": len(year_vocab) + 1}
    ids, features = VOCABULARIES[options.vocabulary](ids, train_ids, sizes)
    genre_flat = ids["genres"]
    sparse = np.stack([ids["user"], ids["movie"], ids["year"]], axis=1)  # user, movie, year; genres jagged
    bounds, at = {}, 0
    with CacheWriter(out, dense.shape[1], 3, jagged=("genres",)) as writer:
        for name in ("train", "val", "test"):
            r = rows[name]
            positions, lengths = bag_positions(genre_offsets, movie_row[r])
            writer.append(labels[r], dense[r], sparse[r], {"genres": (lengths, genre_flat[positions])})
            bounds[name] = (at, at + len(r))
            at += len(r)
        # columns: user, movie, year in sparse; genres (variable length) in bags/ — keep the feature order
        manifest = Manifest(
            dataset=options.name, rows=writer.rows, num_dense=dense.shape[1],
            features={k: features[k] for k in ("user", "movie", "genres", "year")},
            sparse_dtype="int32", ctr=float(labels.mean()), parts=[writer.rows],
            options={"label_threshold": options.label_threshold}, inputs=describe_inputs(
                [folder / "ratings.csv", folder / "movies.csv"]),
            skipped={"policy": "error", "count": 0, "examples": []}, created_at=now(),
            bags={"genres": 0}, splits=bounds,
            info={"source": str(folder), "label": f"rating >= {options.label_threshold}",
                  "split": {"protocol": options.split, "fractions": list(options.split_fractions),
                            "seed": options.split_seed if options.split == "random" else None},
                  **VOCABULARY_INFO[options.vocabulary]})
        writer.commit(manifest, "int32")


Ids = dict[str, np.ndarray]


def all_ids(ids: Ids, train_ids: Ids, sizes: dict[str, int]) -> tuple[Ids, dict[str, int]]:
    """The ids as read (every table 0..n-1 over all rows) and the table sizes."""
    return ids, sizes


def train_vocabulary(train: np.ndarray, size: int) -> np.ndarray:
    """New id of each old id 0..size-1 ([size] int64): the ids in ``train`` 1..k by count (most frequent
    first, ties by id), every other id k + 1 (OOV); 0 is the padding row, never an id."""
    counts = np.bincount(train, minlength=size)
    seen = np.flatnonzero(counts)
    order = seen[np.lexsort((seen, -counts[seen]))]
    mapping = np.full(size, len(order) + 1, dtype=np.int64)
    mapping[order] = np.arange(1, len(order) + 1)
    return mapping


def train_only_ids(ids: Ids, train_ids: Ids, sizes: dict[str, int]) -> tuple[Ids, dict[str, int]]:
    """The ids renumbered by the train split's vocabulary of each table, and the table sizes: the ids
    seen in train + 2 (padding and OOV rows), as FuxiCTR's tokenizer allocates them."""
    maps = {k: train_vocabulary(train_ids[k], sizes[k]) for k in ids}
    return {k: maps[k][v] for k, v in ids.items()}, {k: len(np.unique(train_ids[k])) + 2 for k in ids}


#: How table ids are numbered (``MovieLensOptions.vocabulary``): (ids, train ids, sizes) -> (ids, sizes).
VOCABULARIES = {"all": all_ids, "train": train_only_ids}
#: What each numbering adds to the dataset's ``info`` (dlrs_bench/models/init.py reads the padding row).
VOCABULARY_INFO: dict[str, dict[str, object]] = {
    "all": {}, "train": {"vocabulary": {"from": "train", "padding_row": 0, "oov_row": "last"}}}


def _read_ratings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """userId, movieId, rating, timestamp columns of ``ratings.csv``; errors name file:line."""
    rows: list[tuple[int, int, float, int]] = []
    with _open(path) as f:
        header = f.readline().strip()
        if header != "userId,movieId,rating,timestamp":
            raise UserInputError(f"{path}:1: expected header 'userId,movieId,rating,timestamp', got {header!r}")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split(",")
            try:
                if len(parts) != 4:
                    raise ValueError(f"expected 4 fields, got {len(parts)}")
                rows.append((int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])))
            except ValueError as e:
                raise UserInputError(f"{path}:{lineno}: {e}") from None
    if not rows:
        raise UserInputError(f"{path}: no ratings")
    arr = np.array(rows, dtype=np.float64)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], arr[:, 3]


def _read_movies(path: Path) -> tuple[list[int], list[list[str]], list[int | None]]:
    """movieId, genre lists and release years (None when the title has none) of ``movies.csv``."""
    ids, genres, years = [], [], []
    with _open(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["movieId", "title", "genres"]:
            raise UserInputError(f"{path}:1: expected header 'movieId,title,genres', got {header!r}")
        for row in reader:
            if len(row) != 3 or not row[0].isdigit():
                raise UserInputError(f"{path}:{reader.line_num}: expected 'movieId,title,genres', got {row!r}")
            ids.append(int(row[0]))
            genres.append(row[2].split("|"))
            year = YEAR_IN_TITLE.search(row[1].strip())
            years.append(int(year.group(1)) if year else None)
    return ids, genres, years


def _open(path: Path):
    try:
        return path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
