"""Raw formats by dataset name (for ``dlrs-bench data prepare``)."""

from __future__ import annotations

from typing import Any

from dlrs_bench.errors import UserInputError


def raw_format(name: str, dense_transform: str = "dlrm", movielens_variant: str = "ml-20m") -> Any:
    """The :class:`~dlrs_bench.data.prepare.RawFormat` that reads ``name``'s raw files."""
    if dense_transform not in ("dlrm", "torchrec"):
        raise UserInputError(f"--dense-transform: expected dlrm or torchrec, got {dense_transform!r}")
    if name in ("criteo-kaggle", "criteo-tb"):
        from dlrs_bench.data.criteo import CriteoFormat

        return CriteoFormat(name, dense_transform)  # type: ignore[arg-type]
    if name == "avazu":
        from dlrs_bench.data.avazu import AvazuFormat

        return AvazuFormat()
    if name == "movielens":
        from dlrs_bench.data.movielens_raw import MovieLensFormat

        return MovieLensFormat(movielens_variant)
    raise UserInputError(f"no raw format {name!r}")
