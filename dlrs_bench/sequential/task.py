"""The ``retrieval`` task family (dlrs_bench/engine/task.py): next-item retrieval on user sequences.

Training batches are every user's training prefix (dlrs_bench/sequential/batches.py); a step is one
sampled-softmax update (:class:`~dlrs_bench.sequential.retrieval.SequentialRetrieval`), or, for
``popularity``, one batch of counting. An evaluation ranks the whole catalogue for every sample of the
evaluation split, its history removed (dlrs_bench/sequential/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dlrs_bench.compression.base import account
from dlrs_bench.config.schema import Scenario
from dlrs_bench.engine.distributed import Ranks, all_ranks_agree
from dlrs_bench.engine.optim import OptimizerGroup, build_optimizer
from dlrs_bench.engine.train import LocalPipeline, Prepared, autocast
from dlrs_bench.models.base import count
from dlrs_bench.registry import MODELS
from dlrs_bench.sequential.batches import SeqBatch, iter_retrieval_batches
from dlrs_bench.sequential.datasets import SequenceDataset
from dlrs_bench.sequential.metrics import RETRIEVAL_METRICS, RankAccumulator, tie_aware_counts
from dlrs_bench.sequential.retrieval import Popularity
from dlrs_bench.sequential.splits import SequenceSplit, training_windows

#: The ``embedding`` section of a model without tables (popularity).
NO_TABLES = {"uncompressed_params": 0, "params": 0, "bytes": 0, "compression_ratio": 1.0, "per_table": [],
             "note": "no embedding tables"}
#: History length read by a model without ``max_sequence_length`` (popularity: every training event).
WHOLE_HISTORY = 1 << 40


class RetrievalStep(nn.Module):
    """A retrieval model's loss as one module of a batch: ``forward(batch) -> (loss, loss.detach())``,
    the forward in ``precision`` (fp32, or bf16 autocast). The loss is the mean over the global batch's
    positions: on N ranks each rank's sum is divided by the positions of all ranks and multiplied by N, so
    that DDP's average of the ranks' gradients is the gradient of that mean (one rank's loss as reported
    is then N × its share; their average, the engine's train loss, is the global mean)."""

    def __init__(self, model: nn.Module, precision: str, device_type: str, ranks: Ranks) -> None:
        super().__init__()
        self.model, self.precision, self.device_type, self.world = model, precision, device_type, ranks.world

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        positions = (batch.targets > 0).sum()
        if self.world > 1:
            dist.all_reduce(positions)
        with autocast(self.device_type, self.precision):
            loss = self.model.loss(batch) * self.world / positions.clamp(min=1)
        return loss, loss.detach()


class CountingPipeline:
    """``popularity``'s training: each step counts one batch's targets (no optimizer)."""

    def __init__(self, model: Popularity) -> None:
        self.model = model

    def progress(self, batches: Iterator[SeqBatch]) -> torch.Tensor:
        return self.model.count(next(batches))

    def eval_model(self) -> nn.Module:
        return self.model


def history_length(spec: Scenario) -> int:
    return getattr(spec.model, "max_sequence_length", WHOLE_HISTORY)


class RetrievalTask:
    """Next-item retrieval: sampled softmax in training, HR@K / NDCG@K / MRR over the catalogue."""

    metric_names = RETRIEVAL_METRICS
    finite_metric = "mrr"

    def prepare(self, spec: Scenario, dataset: SequenceDataset, device: torch.device, ranks: Ranks) -> Prepared:
        model = MODELS.get(spec.model.name).build(spec, dataset, device)
        counts = count(model).__dict__
        if isinstance(model, Popularity):
            return Prepared(CountingPipeline(model), OptimizerGroup([]), NO_TABLES, counts,
                            {} if ranks.distributed else None)
        cfg = spec.train
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.clip_grad_norm)
        step: nn.Module = RetrievalStep(model, cfg.precision, device.type, ranks)
        sparse = list(getattr(model.embeddings, "sparse_parameters", list)())
        if ranks.distributed:  # tables replicated: DDP averages the dense gradients, the sparse ones are averaged apart
            sparse_ids = {id(p) for p in sparse}
            ignored = [f"model.{n}" for n, p in model.named_parameters() if id(p) in sparse_ids]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, ignored)
            step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
        embedding = account(model.embeddings, getattr(spec.compressor, "ratio", None)).to_json()
        return Prepared(LocalPipeline(step, optimizer, sparse if ranks.distributed else None, device), optimizer,
                        embedding, counts, {} if ranks.distributed else None)  # {}: no table is sharded

    def train_split(self, spec: Scenario, dataset: SequenceDataset) -> SequenceSplit:
        """The training prefixes, or with ``train_windows: all`` every window of them."""
        train = dataset.splits["train"]
        if getattr(spec.model, "train_windows", "last") == "all":
            return training_windows(train, history_length(spec) + 1)
        return train

    def train_batches(self, spec: Scenario, dataset: SequenceDataset, seed: int, ranks: Ranks,
                      device: torch.device) -> Iterator[SeqBatch]:
        return iter_retrieval_batches(self.train_split(spec, dataset), spec.train.batch_size, history_length(spec),
                                      seed, ranks.rank, ranks.world)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, spec: Scenario, dataset: SequenceDataset, device: torch.device,
                 ranks: Ranks) -> dict[str, float]:
        cfg = spec.train
        model.eval()
        catalogue = model.catalogue()
        acc = RankAccumulator(dataset.num_items)
        finite = True
        batches = iter_retrieval_batches(dataset.splits[cfg.eval_split], cfg.eval_batch_size or cfg.batch_size,
                                         history_length(spec), 0, ranks.rank, ranks.world, shuffle=False)
        with autocast(device.type, cfg.precision):
            for batch in batches:
                if len(batch) == 0:  # a rank's share of the last batch may be empty
                    continue
                batch = batch.to(device)
                scores = model.scores(batch, catalogue).float()
                finite = finite and bool(torch.isfinite(scores).all())
                excluded = excluded_items(batch, dataset.num_items, dataset.exclude_seen)
                acc.add(*tie_aware_counts(scores, batch.target, excluded))
        model.train()
        if ranks.distributed:  # every rank scored its share: sum the sums
            acc.all_reduce(device)
            finite = not all_ranks_agree(not finite, device)
        result = acc.result()
        return result if finite else dict.fromkeys(result, float("nan"))


def excluded_items(batch: SeqBatch, num_items: int, history: bool) -> torch.Tensor:
    """``[B, N]`` bool: padding (id 0) and, with ``history``, every item of each sample's history (the
    target is never removed: :func:`~dlrs_bench.sequential.metrics.tie_aware_counts` ranks it)."""
    mask = torch.zeros(len(batch), num_items, dtype=torch.bool, device=batch.target.device)
    mask[:, 0] = True
    if not history:
        return mask
    rows = torch.repeat_interleave(torch.arange(len(batch), device=mask.device), batch.seen_offsets.diff())
    mask[rows, batch.seen_values] = True
    return mask
