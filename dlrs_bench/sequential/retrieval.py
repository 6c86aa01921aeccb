"""Next-item retrieval over a sequence encoder (HSTU, SASRec): item lookups, user states, sampled
softmax, and scores over the whole catalogue.

Item embeddings come from any compressor (dlrs_bench/compression) of one table ``item``: every
position is a bag of one id, so a sum-pooled lookup returns the id's row, full or compressed alike
(``[ΣL, d]``, unpooled). The encoder turns a batch's embedded histories into user states
``[B, S, d]``; state i predicts the item at position i + 1. With ``similarity: cosine`` states and items
are L2-normalised and logits are cosine / temperature (generative-recommenders' l2_norm + dot product);
training minimises the sampled softmax of every valid position's next item against ``num_negatives``
uniformly drawn items (a draw equal to the positive is masked, as the reference's sampled softmax does);
evaluation scores the state after the whole history against every item (ids 1..N-1).

The encoders read the time of the item each position predicts at ``timestamps[b, lengths[b]]``
(dlrs_bench/sequential/hstu.py): :meth:`SequentialRetrieval.states` appends one column so that every
row has that slot and writes the batch's ``next_time`` there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.sequential.batches import SeqBatch
from dlrs_bench.sequential.model_options import RetrievalOptions

#: The masked logit of a negative equal to the positive (the reference's -5e4).
MASKED = -5e4


def lookup(embeddings: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Rows of ``ids`` (any shape, int64) from a one-table embedding module → ``ids.shape + (d,)``."""
    flat = ids.reshape(-1)
    kjt = KeyedJaggedTensor(keys=["item"], values=flat, lengths=torch.ones_like(flat, dtype=torch.int32))
    return embeddings(kjt).values().view(*ids.shape, -1)


class SequentialRetrieval(nn.Module):
    """Args:
        embeddings: a one-table (``item``, N rows) embedding module of width ≥ ``options.dim``.
        encoder: ``forward(x [B, S, d], lengths [B], timestamps [B, S]) → [B, S, d]``, built for
            ``options.max_sequence_length + 1`` positions.
        options: the head's options.
        num_items: N, the item table's rows (ids 1..N-1; 0 is padding).
    """

    def __init__(self, embeddings: nn.Module, encoder: nn.Module, options: RetrievalOptions, num_items: int) -> None:
        super().__init__()
        self.embeddings, self.encoder = embeddings, encoder
        self.options, self.num_items, self.d = options, num_items, options.dim
        self.flops_lengths: torch.Tensor | None = None  # typical history lengths, for flops_per_sample
        # negatives come from a generator of their own, seeded by the run's seed: every rank draws the same
        # shared negatives at every step (dropout draws from the global generator, differently per rank)
        self.sampler = torch.Generator().manual_seed(torch.initial_seed())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Item embeddings of ``ids`` (any shape) → ``ids.shape + (d,)``."""
        return lookup(self.embeddings, ids)[..., : self.d]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.options.similarity == "cosine" else x

    def states(self, batch: SeqBatch) -> torch.Tensor:
        """User states ``[B, S, d]`` of a batch's histories (normalised for ``cosine``)."""
        b, s = batch.items.shape
        items = F.pad(batch.items, (0, 1))  # the slot at index lengths[b] exists in every row
        times = F.pad(batch.timestamps, (0, 1)).scatter(1, batch.lengths[:, None], batch.next_time[:, None])
        h = self.encoder(self.embed(items), batch.lengths, times)[:, :s]
        return self.normalise(h)

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        """Summed sampled-softmax cross-entropy of every valid position's next item (divide by the positions,
        ``(batch.targets > 0).sum()``, for the mean)."""
        valid = batch.targets > 0  # [B, S]
        u = self.states(batch)[valid]  # [P, d]
        positive = batch.targets[valid]  # [P]
        logits_pos = (u * self.normalise(self.embed(positive))).sum(-1, keepdim=True)  # [P, 1]
        k = self.options.num_negatives
        if self.options.negatives == "shared":
            negatives = torch.randint(1, self.num_items, (k,), generator=self.sampler).to(u.device)
            logits_neg = u @ self.normalise(self.embed(negatives)).T  # [P, K]
            clash = positive[:, None] == negatives[None, :]
        else:
            negatives = torch.randint(1, self.num_items, (len(positive), k), generator=self.sampler).to(u.device)
            logits_neg = torch.einsum("pd,pkd->pk", u, self.normalise(self.embed(negatives)))
            clash = positive[:, None] == negatives
        logits = torch.cat([logits_pos, logits_neg.masked_fill(clash, MASKED)], dim=1) / self.options.temperature
        return F.cross_entropy(logits.float(), torch.zeros(len(positive), dtype=torch.long, device=u.device),
                               reduction="sum")

    def catalogue(self) -> torch.Tensor:
        """Every item's (normalised) embedding ``[N, d]`` (row 0, padding, included)."""
        return self.normalise(self.embed(torch.arange(self.num_items, device=self.device)))

    def scores(self, batch: SeqBatch, catalogue: torch.Tensor) -> torch.Tensor:
        """``[B, N]``: the state after each history against every item of ``catalogue`` (``[N, d]``)."""
        last = (batch.lengths - 1).clamp(min=0)
        u = self.states(batch)[torch.arange(len(last), device=last.device), last]  # [B, d]
        return u @ catalogue.T

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def flops_per_sample(self) -> int:
        """Forward FLOPs of one training sample at the training split's mean history length (attention
        counted with each sampled length): the encoder plus the sampled softmax's dot products."""
        lengths = self.flops_lengths if self.flops_lengths is not None else torch.tensor([1])
        encoder = self.encoder.flops(lengths) / len(lengths)
        head = 2 * self.d * (1 + self.options.num_negatives) * float(lengths.double().mean())
        return round(encoder + head)


class Popularity(nn.Module):
    """``popularity``: scores every item by its count as a training target so far (no parameters).
    Training counts each batch's targets; its loss is the batch's mean negative log-likelihood under the
    add-one-smoothed counts before the batch (the next-item model the counts define)."""

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items
        self.embeddings = nn.Module()  # no tables: counts are buffers, not parameters
        self.register_buffer("counts", torch.zeros(num_items, dtype=torch.float64))

    def count(self, batch: SeqBatch) -> torch.Tensor:
        """Add the batch's targets to the counts (on several ranks: every rank's, all-reduced); the mean NLL of
        this rank's targets under the counts before."""
        targets = batch.targets[batch.targets > 0]
        probability = (self.counts[targets] + 1) / (self.counts[1:].sum() + self.num_items - 1)
        counts = torch.bincount(targets, minlength=self.num_items).to(self.counts)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        self.counts += counts
        return -probability.log().mean().float()

    def scores(self, batch: SeqBatch, catalogue: Any) -> torch.Tensor:
        return self.counts.float().expand(len(batch), -1)

    def catalogue(self) -> None:
        return None

    def flops_per_sample(self) -> int:
        return 0
