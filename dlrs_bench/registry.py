"""One lazy registry type for datasets, models and compressors.

Entries are registered by import path (``"package.module:Attribute"``) so that listing them
imports nothing heavy; the object is imported on first use. Unknown names fail with a
"did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dlrs_bench.errors import UserInputError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module.path:Attribute" of the plugin
    options: str  # "module.path:Attribute" of its options model, in a module that does not import torch
    help: str


class Registry(Generic[T]):
    """A named collection of lazily imported plugins of one kind (``kind`` names it in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, options: str, help: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, options, help)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def suggest(self, name: str) -> str:
        """A human hint for an unknown ``name``: the closest registered names, or all of them."""
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "known: " + ", ".join(self.names())

    def get(self, name: str) -> T:
        """The plugin ``name`` (imports its module, and torch with it)."""
        return _load(self._entry(name).target)

    def options(self, name: str) -> Any:
        """The options model of plugin ``name`` (imports no torch)."""
        return _load(self._entry(name).options)

    def _entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UserInputError(f"unknown {self.kind} {name!r}; {self.suggest(name)}")
        return self._entries[name]


def _load(target: str) -> Any:
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


# The three plugin kinds of a scenario. Implementations live next to their interfaces;
# see dlrs_bench/data, dlrs_bench/models and dlrs_bench/compression.
DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model")
COMPRESSORS: Registry = Registry("compressor")

DATASETS.register(
    "movielens-latest-small",
    "dlrs_bench.data.movielens:MovieLensLatestSmall",
    "dlrs_bench.data.options:MovieLensOptions",
    "MovieLens ml-latest-small (bundled): 100,836 ratings as CTR (rating >= 4), user/movie/genres/year",
)
DATASETS.register(
    "synthetic",
    "dlrs_bench.data.synthetic:Synthetic",
    "dlrs_bench.data.options:SyntheticOptions",
    "Generated CTR data: Zipf ids, multi-hot bags, labels from a hidden teacher (known AUC/NE ceiling)",
)
DATASETS.register(
    "criteo-kaggle",
    "dlrs_bench.data.prepared:CriteoKaggle",
    "dlrs_bench.data.options:CriteoKaggleOptions",
    "Criteo Kaggle (45.8M rows, 13 dense, 26 sparse) from a prepared cache; DLRM 7-day split",
)
DATASETS.register(
    "criteo-tb",
    "dlrs_bench.data.prepared:CriteoTerabyte",
    "dlrs_bench.data.options:CriteoTerabyteOptions",
    "Criteo Terabyte (day_0..day_23) from a prepared cache; last day halved into val and test",
)
DATASETS.register(
    "avazu",
    "dlrs_bench.data.prepared:Avazu",
    "dlrs_bench.data.options:AvazuOptions",
    "Avazu (40.4M rows, 24 categorical incl. hour-of-day/weekday/weekend) from a prepared cache; 8:1:1 split",
)
DATASETS.register(
    "movielens",
    "dlrs_bench.data.prepared:MovieLensPrepared",
    "dlrs_bench.data.options:MovieLensPreparedOptions",
    "MovieLens ml-1m / ml-20m / ml-25m / latest from a prepared cache (user, movie; rating >= 4)",
)
DATASETS.register(
    "movielens-sequences",
    "dlrs_bench.sequential.datasets:MovieLensSequences",
    "dlrs_bench.sequential.dataset_options:MovieLensSequencesOptions",
    "MovieLens ratings as user sequences (bundled ml-latest-small, or ML-1M / ML-20M folders); retrieval",
)
DATASETS.register(
    "yambda",
    "dlrs_bench.sequential.datasets:Yambda",
    "dlrs_bench.sequential.dataset_options:YambdaOptions",
    "Yambda (Yandex Music) listens and likes as user sequences, from `data prepare yambda`; retrieval",
)
DATASETS.register(
    "synthetic-sequences",
    "dlrs_bench.sequential.datasets:SyntheticSequences",
    "dlrs_bench.sequential.dataset_options:SyntheticSequencesOptions",
    "Generated user sequences: drifting interests over item categories, a known ceiling; retrieval",
)
MODELS.register(
    "dlrm",
    "dlrs_bench.models.dlrm:DLRMBuilder",
    "dlrs_bench.models.options:DLRMOptions",
    "DLRM (Naumov et al. 2019): bottom MLP, pairwise dot interactions, top MLP (TorchRec arches)",
)
MODELS.register(
    "dcnv2",
    "dlrs_bench.models.dcnv2:DCNv2Builder",
    "dlrs_bench.models.options:DCNv2Options",
    "DCN-v2 (Wang et al. 2021): full, low-rank or mixture-of-experts cross layers and a DNN, stacked or parallel",
)
MODELS.register(
    "wukong",
    "dlrs_bench.models.wukong:WukongBuilder",
    "dlrs_bench.models.options:WukongOptions",
    "Wukong (Zhang et al. ICML'24): stacked FMB (optimized FM, rank k) + LCB layers; n_F, n_L, k, layers",
)
MODELS.register(
    "deepfm",
    "dlrs_bench.models.deepfm:DeepFMBuilder",
    "dlrs_bench.models.options:DeepFMOptions",
    "DeepFM (Guo et al. 2017): first order + FM + DNN over the fields",
)
MODELS.register(
    "autoint",
    "dlrs_bench.models.autoint:AutoIntBuilder",
    "dlrs_bench.models.options:AutoIntOptions",
    "AutoInt (Song et al. 2019): multi-head self-attention over fields; AutoInt+ with a DNN",
)
MODELS.register(
    "xdeepfm",
    "dlrs_bench.models.xdeepfm:XDeepFMBuilder",
    "dlrs_bench.models.options:XDeepFMOptions",
    "xDeepFM (Lian et al. 2018): linear + compressed interaction network (CIN) + DNN",
)
MODELS.register(
    "fibinet",
    "dlrs_bench.models.fibinet:FiBiNETBuilder",
    "dlrs_bench.models.options:FiBiNETOptions",
    "FiBiNET (Huang et al. 2019): SENET field weights + bilinear interactions + DNN",
)
MODELS.register(
    "hstu",
    "dlrs_bench.sequential.builders:HSTUBuilder",
    "dlrs_bench.sequential.model_options:HSTUModelOptions",
    "HSTU (Zhai et al. ICML'24): pointwise-attention sequential transducer; retrieval (paper or dlrmv4 form)",
)
MODELS.register(
    "sasrec",
    "dlrs_bench.sequential.builders:SASRecBuilder",
    "dlrs_bench.sequential.model_options:SASRecModelOptions",
    "SASRec (Kang & McAuley ICDM'18): causal self-attention over the history; retrieval",
)
MODELS.register(
    "popularity",
    "dlrs_bench.sequential.builders:PopularityBuilder",
    "dlrs_bench.sequential.model_options:PopularityOptions",
    "Items ranked by their training count, no parameters: the floor of the retrieval task",
)
COMPRESSORS.register(
    "none",
    "dlrs_bench.compression.full:Full",
    "dlrs_bench.compression.options:FullOptions",
    "Full tables: a TorchRec EmbeddingBagCollection (ratio 1)",
)
COMPRESSORS.register(
    "hashing",
    "dlrs_bench.compression.hashing:Hashing",
    "dlrs_bench.compression.options:HashingOptions",
    "Hashing trick: ids hashed (modulo or universal hash) into n/ratio rows per table",
)
COMPRESSORS.register(
    "qr",
    "dlrs_bench.compression.qr:QR",
    "dlrs_bench.compression.options:QROptions",
    "Quotient-remainder (Shi et al. KDD'20): k-level mixed-radix digits, fusion mult/add/concat",
)
COMPRESSORS.register(
    "memcom",
    "dlrs_bench.compression.memcom:MEmCom",
    "dlrs_bench.compression.options:MEmComOptions",
    "MEmCom (Pansare et al. MLSys'22): shared table U[x mod m] times a learned scalar per id",
)
COMPRESSORS.register(
    "bch",
    "dlrs_bench.compression.bch:BCH",
    "dlrs_bench.compression.options:BCHOptions",
    "Binary code hashing (Yan et al. CIKM'21): id bits in blocks, one table per block, sum or concat",
)
COMPRESSORS.register(
    "robe",
    "dlrs_bench.compression.robe:ROBE",
    "dlrs_bench.compression.options:ROBEOptions",
    "ROBE-Z (Desai et al.): one shared 1-D array, chunked universal hashing; dense or sparse gradient",
)
COMPRESSORS.register(
    "tt",
    "dlrs_bench.compression.tt:TT",
    "dlrs_bench.compression.options:TTOptions",
    "TT-Rec (Yin et al. MLSys'21): three tensor-train cores per table, rank chosen by the ratio",
)
COMPRESSORS.register(
    "md",
    "dlrs_bench.compression.md:MD",
    "dlrs_bench.compression.options:MDOptions",
    "Mixed dimension (Ginart et al.): d_t ∝ n_t^-alpha in powers of two, projected back to d",
)
