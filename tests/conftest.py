"""Shared fixtures: suite files written into tmp_path, a tiny synthetic suite, small helpers."""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

#: Data small enough that a whole scenario trains in well under a second on one CPU core.
TINY_DATASET: dict[str, Any] = {
    "name": "synthetic",
    "rows": 3000,
    "cardinalities": [64, 32, 16],
    "num_dense": 4,
    "signal": 2.0,
    "seed": 0,
}
TINY_MODEL: dict[str, Any] = {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [16, 1]}
TINY_TRAIN: dict[str, Any] = {"batch_size": 128, "lr": 0.01, "max_epochs": 2, "eval_every": 0.25, "warmup_iters": 2}


def tiny_suite(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A complete, valid suite dict on tiny synthetic data: ``none`` and ``hashing`` at ratio 4.

    The target (AUC 0.55) is low enough that the full model reaches it within the budget.
    Keyword arguments replace top-level keys (``matrix=...``, ``defaults=...``, ``scenarios=...``).
    """
    suite: dict[str, Any] = {
        "name": name,
        "description": "tiny synthetic suite for tests",
        "defaults": {
            "dataset": copy.deepcopy(TINY_DATASET),
            "model": copy.deepcopy(TINY_MODEL),
            "train": copy.deepcopy(TINY_TRAIN),
            "target": {"metric": "auc", "value": 0.55},
            "gpus": 0,
            "seeds": [0],
        },
        "matrix": {"compressor": [{"kind": "none"}, {"kind": "hashing", "ratio": 4}]},
    }
    suite.update(overrides)
    return suite


def train_one_rank(overrides: dict[str, Any], steps: int = 5) -> tuple[Any, list[float]]:
    """The tiny suite's scenario with ``overrides`` (Adagrad: fbgemm's fused CPU kernels) prepared in
    a one-rank process group (DMP for full tables) and trained ``steps`` batches: (Prepared, losses)."""
    from dlrs_bench.config.schema import validate_scenario
    from dlrs_bench.data.base import build_dataset
    from dlrs_bench.data.batching import iter_batches
    from dlrs_bench.engine.distributed import one_rank_group
    from dlrs_bench.engine.train import prepare

    suite = tiny_suite()["defaults"]
    spec, errors = validate_scenario({**suite, "train": {**suite["train"], "optimizer": "adagrad"}, **overrides})
    assert not errors, errors
    dataset = build_dataset(spec.dataset)
    device = torch.device("cpu")
    with one_rank_group(device) as ranks:
        prepared = prepare(spec, dataset, device, ranks)
        batches = iter_batches(dataset.splits["train"], 128, dataset.feature_names, seed=0)
        losses = [float(prepared.pipeline.progress(batches)) for _ in range(steps)]
    return prepared, losses


def broken_movielens(folder: Path, broken: str = "ratings.csv") -> Path:
    """A MovieLens folder whose files are there (so ``validate`` passes) but whose ``broken`` file
    fails to parse when a run reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    movie = "xx" if broken == "movies.csv" else "1"
    rating = "xx" if broken == "ratings.csv" else "1"
    (folder / "ratings.csv").write_text(f"userId,movieId,rating,timestamp\n1,{rating},4.0,964982703\n")
    (folder / "movies.csv").write_text(f"movieId,title,genres\n{movie},Toy Story (1995),Adventure\n")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only spin, and slow a module down a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_suite_dict() -> dict[str, Any]:
    return tiny_suite()


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """``write_suite(content, filename="suite.yaml") -> Path``.

    ``content`` is either YAML text (dedented, so it can be written indented in a test) or a
    dict, dumped as block-style YAML.
    """

    def write(content: str | dict[str, Any], filename: str = "suite.yaml") -> Path:
        path = tmp_path / filename
        if isinstance(content, dict):
            text = yaml.safe_dump(content, sort_keys=False, default_flow_style=False)
        else:
            text = textwrap.dedent(content).lstrip("\n")
        path.write_text(text, encoding="utf-8")
        return path

    return write


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line of ``path`` containing ``needle``."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} (occurrence {occurrence}) not found in {path}")


@pytest.fixture(autouse=True, scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """First-use dataset caches (MovieLens, synthetic) of this test session, in a temporary folder
    (subprocesses inherit it through the environment)."""
    import os

    folder = tmp_path_factory.mktemp("dataset-cache")
    os.environ["DLRS_BENCH_CACHE"] = str(folder)
    return folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests are skipped (with a reason) on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
