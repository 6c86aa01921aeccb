"""MovieLens ml-latest-small as a CTR task (bundled with dlrs-bench).

Label: ``rating >= label_threshold`` (4.0 by default: 48.2% positives). Sparse features:
``user``, ``movie``, ``genres`` (multi-hot), ``year`` (release year from the title).
Dense features (4, standardised with train statistics): log(1 + ratings of the user in
train), log(1 + ratings of the movie in train), rating time in years, movie age at rating.
Splits: seeded random 80/10/10 or temporal (sorted by timestamp, the last rows are test).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dlrs_bench.config.schema import DatasetOptions
from dlrs_bench.data.base import CTRDataset, CTRSplit, Jagged, SparseFeature
from dlrs_bench.data.splits import SplitFractions, split_rows
from dlrs_bench.errors import UserInputError

BUNDLED = Path(__file__).parent / "bundled" / "ml-latest-small"
SECONDS_PER_YEAR = 365.25 * 24 * 3600
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


class MovieLensOptions(DatasetOptions):
    name: Literal["movielens-latest-small"] = "movielens-latest-small"
    path: str | None = Field(None, description="folder with ratings.csv and movies.csv; default: the bundled copy")
    split: Literal["random", "temporal"] = "random"
    split_fractions: SplitFractions = (0.8, 0.1, 0.1)
    split_seed: int = 0
    label_threshold: float = Field(4.0, gt=0.5, le=5.0)


class MovieLensLatestSmall:
    Options = MovieLensOptions

    @staticmethod
    def build(options: MovieLensOptions) -> CTRDataset:
        folder = Path(options.path) if options.path else BUNDLED
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

        labels = (ratings >= options.label_threshold).astype(np.float32)
        order_key = stamps if options.split == "temporal" else None
        rows = split_rows(len(labels), options.split_fractions, options.split_seed, order_key)

        train = rows["train"]
        user_count = np.bincount(user_row[train], minlength=len(user_values))
        movie_count = np.bincount(movie_row[train], minlength=len(movie_ids))
        rating_year = 1970.0 + stamps / SECONDS_PER_YEAR
        age = rating_year - movie_year[movie_row]
        age = np.where(np.isnan(age), np.nanmedian(age[train]), age)
        dense = np.stack(
            [np.log1p(user_count[user_row]), np.log1p(movie_count[movie_row]), rating_year, age], axis=1
        )
        mean, std = dense[train].mean(0), dense[train].std(0) + 1e-6
        dense = ((dense - mean) / std).astype(np.float32)

        genre_lists = [[genre_index[g] for g in gs] for gs in genres]
        genre_lengths = np.array([len(g) for g in genre_lists], dtype=np.int64)
        genre_flat = np.array([g for gs in genre_lists for g in gs], dtype=np.int64)
        genre_offsets = np.concatenate([[0], np.cumsum(genre_lengths)])

        def make(split_rows_: np.ndarray) -> CTRSplit:
            m = movie_row[split_rows_]
            per_movie = Jagged(torch.from_numpy(genre_flat), torch.from_numpy(genre_offsets))
            return CTRSplit(
                dense=torch.from_numpy(dense[split_rows_]),
                sparse={
                    "user": Jagged.single(torch.from_numpy(user_row[split_rows_])),
                    "movie": Jagged.single(torch.from_numpy(m)),
                    "genres": per_movie.take(torch.from_numpy(m)),
                    "year": Jagged.single(torch.from_numpy(movie_year_id[m])),
                },
                labels=torch.from_numpy(labels[split_rows_]),
            )

        return CTRDataset(
            name=options.name,
            features=[
                SparseFeature("user", len(user_values)),
                SparseFeature("movie", len(movie_ids)),
                SparseFeature("genres", len(genre_vocab), multi_hot=True),
                SparseFeature("year", len(year_vocab) + 1),
            ],
            num_dense=dense.shape[1],
            splits={k: make(v) for k, v in rows.items()},
            info={
                "source": str(folder),
                "label": f"rating >= {options.label_threshold}",
                "split": {"protocol": options.split, "fractions": list(options.split_fractions),
                          "seed": options.split_seed if options.split == "random" else None},
            },
        )


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
