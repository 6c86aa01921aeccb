"""What the training engine asks of a task family, and the registry of families.

The engine (:func:`dlrs_bench.engine.train.train`: time to target, evaluation cadence, budgets,
schedules, divergence, MLPerf log, resume, signals) is one and generic; a task family supplies how a
scenario becomes a model ready to train, how training batches are read and how a model is evaluated.
A dataset names its family (``DatasetOptions.task``) and a model the families it serves
(``ModelOptions.tasks``); validation refuses a mismatch. Families:

- ``ctr``: click-through rate — dense features and pooled bags, binary labels, AUC / LogLoss / NE
  (:class:`dlrs_bench.engine.train.CTRTask`);
- ``retrieval``: sequential next-item retrieval — user histories, sampled softmax, HR@K / NDCG@K /
  MRR over the whole catalogue (:class:`dlrs_bench.sequential.task.RetrievalTask`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from dlrs_bench.config.schema import Scenario
from dlrs_bench.engine.distributed import Ranks
from dlrs_bench.registry import Registry


class Task(Protocol):
    """One task family, as the engine drives it."""

    #: The keys of an evaluation, in the order results list them.
    metric_names: tuple[str, ...]
    #: The metric whose non-finite value means the model's predictions are not finite.
    finite_metric: str

    def prepare(self, spec: Scenario, dataset: Any, device: torch.device, ranks: Ranks) -> Any:
        """The model and optimizer ready to train on this rank (a :class:`~dlrs_bench.engine.train.Prepared`)."""
        ...

    def train_split(self, spec: Scenario, dataset: Any) -> Any:
        """The training samples of ``spec`` (``len()`` of it is an epoch)."""
        ...

    def train_batches(self, spec: Scenario, dataset: Any, seed: int, ranks: Ranks,
                      device: torch.device) -> Iterator[Any]:
        """One epoch of this rank's training batches (closable), in the order ``seed`` gives."""
        ...

    def evaluate(self, model: nn.Module, spec: Scenario, dataset: Any, device: torch.device,
                 ranks: Ranks) -> dict[str, float]:
        """Every metric of ``metric_names`` over the whole evaluation split (exact across ranks)."""
        ...


TASKS: Registry = Registry("task")
TASKS.register("ctr", "dlrs_bench.engine.train:CTRTask", "dlrs_bench.config.schema:StrictModel",
               "Click-through rate: dense features and pooled bags, binary labels; AUC, LogLoss, NE")
TASKS.register("retrieval", "dlrs_bench.sequential.task:RetrievalTask", "dlrs_bench.config.schema:StrictModel",
               "Sequential next-item retrieval: user histories, sampled softmax; HR@K, NDCG@K, MRR")
