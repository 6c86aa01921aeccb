"""Raw formats by dataset name (for ``dlrs-bench data prepare``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlrs_bench.errors import UserInputError


def _criteo(name: str) -> Callable[[str, str], Any]:
    def make(dense_transform: str, movielens_variant: str) -> Any:
        from dlrs_bench.data.criteo import CriteoFormat

        return CriteoFormat(name, dense_transform)  # type: ignore[arg-type]

    return make


def _avazu(dense_transform: str, movielens_variant: str) -> Any:
    from dlrs_bench.data.avazu import AvazuFormat

    return AvazuFormat()


def _movielens(dense_transform: str, movielens_variant: str) -> Any:
    from dlrs_bench.data.movielens_raw import MovieLensFormat

    return MovieLensFormat(movielens_variant)


#: name → factory(dense_transform, movielens_variant); imported lazily.
FORMATS: dict[str, Callable[[str, str], Any]] = {
    "criteo-kaggle": _criteo("criteo-kaggle"),
    "criteo-tb": _criteo("criteo-tb"),
    "avazu": _avazu,
    "movielens": _movielens,
}


def raw_format(name: str, dense_transform: str = "dlrm", movielens_variant: str = "ml-20m") -> Any:
    """The :class:`~dlrs_bench.data.prepare.RawFormat` that reads ``name``'s raw files."""
    if dense_transform not in ("dlrm", "torchrec"):
        raise UserInputError(f"--dense-transform: expected dlrm or torchrec, got {dense_transform!r}")
    if name not in FORMATS:
        raise UserInputError(f"no raw format {name!r}; known: {', '.join(FORMATS)}")
    try:
        return FORMATS[name](dense_transform, movielens_variant)
    except ValueError as e:  # e.g. an unknown MovieLens variant
        raise UserInputError(f"--movielens-variant: {e}") from None
