"""Options of the retrieval models ``hstu``, ``sasrec`` and ``popularity`` (pydantic only, no torch).

The retrieval head and its training follow generative-recommenders' MovieLens configurations
(``configs/ml-1m/*-sampled-softmax-n128-final.gin``, ``research/trainer/train.py``): item embeddings
and user states L2-normalised (``l2_norm`` postprocessor), scores = cosine similarity / temperature
0.05, sampled softmax over 128 negatives drawn uniformly from the catalogue for every position (a
negative equal to the positive is masked), history truncated to the last 200 events.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from dlrs_bench.config.schema import ModelOptions
from dlrs_bench.models.options import EmbeddingInit, TruncatedNormalInit, WithEmbeddingInit
from dlrs_bench.sequential.encoder_options import HSTUOptions, SASRecOptions


class RetrievalOptions(WithEmbeddingInit):
    """What every retrieval model shares: the history length read and, for learned models, the head."""

    tasks: ClassVar[tuple[str, ...]] = ("retrieval",)

    embedding_dim: PositiveInt = Field(50, description="item embedding width d (ml-1m gin: item_embedding_dim 50)")
    max_sequence_length: PositiveInt = Field(
        200, description="history events the model reads (the last ones; ml-1m gin: max_sequence_length 200)")
    train_windows: Literal["last", "all"] = Field(
        "last", description="last: one training sample per user, the last max_sequence_length + 1 events of its "
        "training prefix (SASRec's and generative-recommenders'); all: the prefix cut into windows of that many "
        "events from its end, so every training event is a target once an epoch (long histories)")
    num_negatives: PositiveInt = Field(128, description="sampled-softmax negatives (ml-1m gin: num_negatives 128)")
    negatives: Literal["per_position", "shared"] = Field(
        "per_position", description="per_position: every position draws its own negatives (generative-recommenders' "
        "LocalNegativesSampler); shared: one draw for the whole batch (cheaper: one [K, d] lookup)")
    similarity: Literal["cosine", "dot"] = Field(
        "cosine", description="cosine: L2-normalised states and items (the reference's l2_norm); dot: raw dot product")
    temperature: PositiveFloat = Field(0.05, description="logits are similarity / temperature (ml-1m gin: 0.05)")
    embedding_init: EmbeddingInit = Field(
        TruncatedNormalInit(), description="how the item table starts (dlrs_bench/models/init.py); default "
        "truncated_normal std 0.02, the reference's; uniform, normal and xavier as the CTR models")


class HSTUModelOptions(RetrievalOptions, HSTUOptions):
    """``hstu``: HSTU layers (dlrs_bench/sequential/hstu.py) under the retrieval head."""

    name: Literal["hstu"] = "hstu"


class SASRecModelOptions(RetrievalOptions, SASRecOptions):
    """``sasrec``: SASRec blocks (dlrs_bench/sequential/sasrec.py) under the retrieval head."""

    name: Literal["sasrec"] = "sasrec"


class PopularityOptions(ModelOptions):
    """``popularity``: items ranked by how often they are a training target (no parameters): the floor a
    learned model is read against. Training is one pass of counting; ``embedding_dim`` is unused."""

    tasks: ClassVar[tuple[str, ...]] = ("retrieval",)

    name: Literal["popularity"] = "popularity"
