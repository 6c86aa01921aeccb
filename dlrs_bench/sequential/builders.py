"""Model plugins of the retrieval task (registered as ``hstu``, ``sasrec``, ``popularity``):
``build(spec, dataset, device)`` → a model with ``loss`` / ``scores`` / ``catalogue``
(dlrs_bench/sequential/retrieval.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dlrs_bench.compression.base import build_embeddings
from dlrs_bench.config.schema import Scenario
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import start_tables
from dlrs_bench.sequential.datasets import SequenceDataset
from dlrs_bench.sequential.hstu import HSTUEncoder
from dlrs_bench.sequential.model_options import HSTUModelOptions, PopularityOptions, SASRecModelOptions
from dlrs_bench.sequential.retrieval import Popularity, SequentialRetrieval
from dlrs_bench.sequential.sasrec import SASRecEncoder

#: Training samples whose history lengths average into ``flops_per_sample``.
FLOPS_SAMPLES = 4096


def item_table(spec: Scenario, dataset: SequenceDataset, device: torch.device) -> nn.Module:
    """The ``item`` table (N rows, ``spec.compressor``), started by ``model.embedding_init``."""
    embeddings = build_embeddings([SparseFeature("item", dataset.num_items)], spec.model.table_width(),
                                  spec.compressor, device)
    start_tables(embeddings, spec.model, dataset.info)
    return embeddings


def training_lengths(dataset: SequenceDataset, max_len: int) -> torch.Tensor:
    """Input lengths (≤ ``max_len``) of up to :data:`FLOPS_SAMPLES` evenly spaced training samples."""
    train = dataset.splits["train"]
    picks = np.unique(np.linspace(0, len(train) - 1, min(len(train), FLOPS_SAMPLES)).astype(np.int64))
    lengths = train.positions[picks] - train.starts(picks) - 1
    return torch.from_numpy(np.minimum(lengths, max_len))


def retrieval_model(spec: Scenario, dataset: SequenceDataset, device: torch.device,
                    encoder: nn.Module) -> SequentialRetrieval:
    model = SequentialRetrieval(item_table(spec, dataset, device), encoder.to(device), spec.model, dataset.num_items)
    model.flops_lengths = training_lengths(dataset, spec.model.max_sequence_length)
    return model


class HSTUBuilder:
    Options = HSTUModelOptions

    @staticmethod
    def build(spec: Scenario, dataset: SequenceDataset, device: torch.device) -> SequentialRetrieval:
        o = spec.model
        return retrieval_model(spec, dataset, device, HSTUEncoder(o, o.dim, o.max_sequence_length + 1))


class SASRecBuilder:
    Options = SASRecModelOptions

    @staticmethod
    def build(spec: Scenario, dataset: SequenceDataset, device: torch.device) -> SequentialRetrieval:
        o = spec.model
        return retrieval_model(spec, dataset, device, SASRecEncoder(o, o.dim, o.max_sequence_length + 1))


class PopularityBuilder:
    Options = PopularityOptions

    @staticmethod
    def build(spec: Scenario, dataset: SequenceDataset, device: torch.device) -> Popularity:
        return Popularity(dataset.num_items).to(device)
