"""Avazu and MovieLens raw formats through `prepare` and the prepared dataset plugins."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from dlrs_bench.data.avazu import HEADER, SPARSE, AvazuFormat
from dlrs_bench.data.base import build_dataset
from dlrs_bench.data.cache import open_cache
from dlrs_bench.data.movielens_raw import MovieLensFormat
from dlrs_bench.data.prepare import PrepareOptions, prepare
from dlrs_bench.data.prepared import AvazuOptions, MovieLensPreparedOptions
from dlrs_bench.errors import UserInputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AVAZU_SAMPLE = SHARED / "avazu-sample" / "avazu_train_head1999.csv"
OPTIONS = PrepareOptions(workers=1, chunk_rows=16)


def avazu_row(i: int, click: int, hour: str) -> str:
    values = [str(10**18 + i), str(click), hour, "1005", str(i % 3), f"{i % 7:08x}", "f3845767", "28905ebd",
              "ecad2386", "7801e8d9", "07d7df22", "a99f214a", f"{i:08x}", "711ee120", "1", str(i % 2),
              "15706", "320", "50", "1722", "0", "35", "-1", "79"]
    return ",".join(values)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_avazu_rows_labels_and_hour_features(tmp_path: Path) -> None:
    hours = ["14102100", "14102523", "14102612"]  # 2014-10-21 Tue, 2014-10-25 Sat, 2014-10-26 Sun
    lines = [HEADER] + [avazu_row(i, i % 2, hours[i % 3]) for i in range(30)]
    manifest = prepare(AvazuFormat(), [write(tmp_path / "a.csv", lines)], tmp_path / "out", OPTIONS)
    assert manifest.rows == 30 and manifest.ctr == pytest.approx(15 / 30)
    assert list(manifest.features) == SPARSE and manifest.num_dense == 0
    _, labels, _, sparse = open_cache(tmp_path / "out").columns()
    assert labels.tolist() == [i % 2 for i in range(30)]
    hour_col, weekday_col, weekend_col = (SPARSE.index(c) for c in ("hour_of_day", "weekday", "weekend"))
    # dlrm numbering: ids are ranks of the sorted distinct raw values
    assert manifest.features["hour_of_day"] == 3 and manifest.features["weekend"] == 2
    assert sparse[:3, hour_col].tolist() == [0, 2, 1]  # hours 0, 23, 12 → ranks 0, 2, 1
    weekdays = [datetime.date(2014, 10, d).weekday() for d in (21, 25, 26)]  # 1, 5, 6
    assert sparse[:3, weekday_col].tolist() == [sorted(set(weekdays)).index(w) for w in weekdays]
    assert sparse[:3, weekend_col].tolist() == [0, 1, 1]
    assert manifest.features["device_ip"] == 30  # one distinct hash per row


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        (lambda: avazu_row(3, 2, "14102100"), "click"),
        (lambda: avazu_row(3, 0, "1410210"), "hour"),
        (lambda: avazu_row(3, 0, "14023100"), "date"),
        (lambda: "1,0,14102100,1005", "fields"),
    ],
)
def test_avazu_bad_lines_name_file_and_line(tmp_path: Path, bad_line, problem: str) -> None:
    lines = [HEADER, avazu_row(0, 0, "14102100"), avazu_row(1, 1, "14102100"), bad_line()]
    path = write(tmp_path / "bad.csv", lines)
    with pytest.raises(UserInputError, match=rf"bad\.csv:4: .*{problem}"):
        prepare(AvazuFormat(), [path], tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()
    skipped = prepare(AvazuFormat(), [path], tmp_path / "out2", OPTIONS.model_copy(update={"on_error": "skip"}))
    assert skipped.rows == 2 and skipped.skipped["count"] == 1
    assert skipped.skipped["examples"][0].startswith(f"{path}:4:")


def test_avazu_header_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "nohdr.csv", [avazu_row(0, 0, "14102100")])
    with pytest.raises(UserInputError, match=r"nohdr\.csv:1: expected the Avazu header"):
        prepare(AvazuFormat(), [path], tmp_path / "out", OPTIONS)


def test_movielens_1m_dat_and_random_split(tmp_path: Path) -> None:
    lines = [f"{1 + i % 5}::{100 + i % 7}::{[1, 3, 4, 5][i % 4]}::{978300000 + i}" for i in range(40)]
    manifest = prepare(MovieLensFormat("ml-1m"), [write(tmp_path / "ratings.dat", lines)], tmp_path / "ml", OPTIONS)
    assert manifest.rows == 40 and manifest.ctr == pytest.approx(0.5)  # ratings 4 and 5 are positive
    assert manifest.features == {"user": 5, "movie": 7}
    ds = build_dataset(MovieLensPreparedOptions(path=str(tmp_path / "ml"), split_seed=1))
    assert {k: len(s) for k, s in ds.splits.items()} == {"train": 32, "val": 4, "test": 4}
    assert ds.num_dense == 1 and float(ds.splits["train"].to_memory().dense.unique()) == 1.0  # the constant bias input


def test_movielens_csv_bad_rating_names_line(tmp_path: Path) -> None:
    lines = ["userId,movieId,rating,timestamp", "1,10,4.0,964982703", "1,11,x,964982703"]
    with pytest.raises(UserInputError, match=r"ratings\.csv:3: .*rating"):
        prepare(MovieLensFormat("ml-20m"), [write(tmp_path / "ratings.csv", lines)], tmp_path / "out", OPTIONS)


def test_prepared_dataset_name_must_match(tmp_path: Path) -> None:
    lines = [f"{i}::{i}::5::{i}" for i in range(10)]
    prepare(MovieLensFormat("ml-1m"), [write(tmp_path / "r.dat", lines)], tmp_path / "ml", OPTIONS)
    with pytest.raises(UserInputError, match="holds a prepared 'movielens', not 'avazu'"):
        build_dataset(AvazuOptions(path=str(tmp_path / "ml")))


@pytest.mark.skipif(not AVAZU_SAMPLE.exists(), reason=f"real Avazu sample not found in shared data ({AVAZU_SAMPLE})")
def test_real_avazu_sample_prepares_and_trains(tmp_path: Path) -> None:
    manifest = prepare(AvazuFormat(), [AVAZU_SAMPLE], tmp_path / "avazu", PrepareOptions(workers=2))
    assert manifest.rows == 1999 and manifest.ctr == pytest.approx(0.165, abs=5e-4)

    from dlrs_bench.config.schema import validate_scenario
    from dlrs_bench.engine.train import train
    from dlrs_bench.measure.mllog import EventLog

    spec, errors = validate_scenario({
        "dataset": {"name": "avazu", "path": str(tmp_path / "avazu")},
        "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [8], "top_mlp": [16, 1]},
        "train": {"batch_size": 128, "max_epochs": 2, "lr": 0.01},
        "target": {"metric": "auc", "value": 0.99},
    })
    assert not errors
    ds = build_dataset(spec.dataset)
    import torch

    outcome = train(spec, ds, 0, torch.device("cpu"), EventLog(tmp_path / "log.mllog"))
    assert np.isfinite(outcome.metrics["auc"]) and outcome.metrics["auc"] > 0.5
    assert outcome.target["reached"] is False and outcome.timing["steps"] == 2 * 13  # 1,599 train rows / 128
