"""Building blocks shared by the models: MLPs, the dense-feature inputs, field stacking, initialisation."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlrs_bench.models.base import linear_flops

DenseFeatures = Literal["field", "per_feature"]
InitScheme = Literal["xavier_normal", "he_normal", "torch"]


def mlp(in_features: int, widths: list[int], dropout: float = 0.0) -> nn.Module:
    """Linear + ReLU layers of ``widths`` (identity when ``widths`` is empty).

    With ``dropout`` > 0 every hidden layer is Linear → ReLU → Dropout(``dropout``), the order of
    FuxiCTR's ``MLP_Block`` (fuxictr/pytorch/layers/blocks/mlp_block.py) and DeepCTR's ``DNN``
    (deepctr/layers/core.py); without, TorchRec's ``MLP`` (Linear + ReLU).
    """
    if not widths:
        return nn.Identity()
    if not dropout:
        return MLP(in_features, widths, activation="relu")
    layers: list[nn.Module] = []
    for a, b in zip([in_features, *widths], widths):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Head(nn.Module):
    """A hidden MLP then a Linear to one logit: ``[B, in_features]`` → ``[B]``.

    Args:
        in_features: input width.
        hidden: hidden widths (ReLU); may be empty (a logistic regression).
        dropout: dropout after every hidden layer (:func:`mlp`); none on the input or the logit.
    """

    def __init__(self, in_features: int, hidden: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.sizes = [in_features, *hidden, 1]
        self.hidden = mlp(in_features, hidden, dropout)
        self.out = nn.Linear(self.sizes[-2], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x)).squeeze(-1)

    def flops(self) -> int:
        return linear_flops(self.sizes)


def hidden(layers: list[int]) -> list[int]:
    """The hidden widths of a suite MLP spec that ends in the logit (``[..., 1]``)."""
    return layers[:-1] if layers and layers[-1] == 1 else layers


def rows(pooled: KeyedTensor, num_fields: int) -> torch.Tensor:
    """The pooled table rows of a KeyedTensor as ``[B, num_fields, W]``: W = d, d + 1 with a per-id
    first-order column, rounded up to a multiple of 4 under fbgemm's sharded kernels (the padding is
    never read)."""
    return pooled.values().unflatten(1, (num_fields, -1))  # no branch on shapes: TorchRec's pipeline FX-traces it


def fields(pooled: KeyedTensor, num_fields: int, dim: int) -> torch.Tensor:
    """The pooled embeddings of a KeyedTensor as ``[B, num_fields, dim]`` (the first d columns)."""
    return rows(pooled, num_fields)[..., :dim]


class FirstOrder(nn.Module):
    """FM's first-order term with a weight per id: b + Σ_f w[x_f] + Σ_k u_k x_k → ``[B]``.

    w is column d of every table row (:meth:`WithFirstOrder.table_width`), pooled as the embedding
    (a multi-hot bag sums its ids' weights under ``compressor.pooling: sum``, averages them under mean);
    ``sum_bags`` lists the multi-hot features whose mean-pooled weight is multiplied back by the bag's
    length, so that their bags sum their weights as FuxiCTR's 1-wide first-order tables do
    (``first_order_pooling: sum``). u ``[num_dense]`` is the dense features' weight (FuxiCTR's numeric
    ``Linear(1, 1, bias=False)`` per feature) and b a bias initialised to 0, as FuxiCTR's
    ``LogisticRegression`` (fuxictr/pytorch/layers/blocks/logistic_regression.py). u starts as
    ``nn.Linear(1, 1)``'s weight would, U(-1, 1), until :func:`init_weights` says otherwise.

    Args:
        num_dense: dense input features.
        num_sparse: F.
        dim: d, the column that holds w.
        sum_bags: positions (in the F features) of the bags whose weights are summed, not averaged.
    """

    def __init__(self, num_dense: int, num_sparse: int, dim: int, sum_bags: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.num_sparse, self.d = num_sparse, dim
        self.dense_weight = nn.Parameter(torch.empty(num_dense).uniform_(-1.0, 1.0))
        self.bias = nn.Parameter(torch.zeros(1))
        mask = torch.zeros(num_sparse, dtype=torch.bool)
        mask[list(sum_bags)] = True
        self.register_buffer("sum_bags", mask if sum_bags else None, persistent=False)

    def forward(self, dense: torch.Tensor, pooled: KeyedTensor, x: torch.Tensor,
                sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``dense`` ``[B, num_dense]``, the F pooled rows (width > d) and their bags ``sparse`` → ``[B]``
        (``x`` unused)."""
        w = rows(pooled, self.num_sparse)[..., self.d]  # [B, F]
        if self.sum_bags is not None:  # mean × length = sum; lengths are key-major [F, B]
            lengths = sparse.lengths().unflatten(0, (self.num_sparse, -1)).t().to(w.dtype)
            w = torch.where(self.sum_bags, w * lengths, w)
        return w.sum(1) + dense @ self.dense_weight + self.bias

    def flops(self) -> int:
        return 2 * (self.num_sparse + self.dense_weight.numel())


class FieldsLinear(nn.Module):
    """``first_order: fields``: one Linear over the flattened fields ``x`` ``[B, m, d]`` → ``[B]``
    (m d weights + a bias; an ablation of the per-id term)."""

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_fields * dim, 1)

    def forward(self, dense: torch.Tensor, pooled: KeyedTensor, x: torch.Tensor,
                sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).squeeze(-1)

    def flops(self) -> int:
        return 2 * self.linear.in_features


def multi_hot_positions(features: list[Any]) -> tuple[int, ...]:
    """Positions of the multi-hot features (``SparseFeature.multi_hot``) in ``features``."""
    return tuple(i for i, f in enumerate(features) if f.multi_hot)


def first_order_term(options: Any, num_dense: int, num_sparse: int, num_fields: int,
                     bags: tuple[int, ...] = ()) -> FirstOrder | FieldsLinear:
    """The first-order term a model's ``first_order`` option names (``WithFirstOrder``); ``bags`` are
    the positions of the multi-hot features (summed under ``first_order_pooling: sum``)."""
    if options.first_order == "per_id":
        return FirstOrder(num_dense, num_sparse, options.dim, bags if options.first_order_pooling == "sum" else ())
    return FieldsLinear(num_fields, options.dim)


class FieldInputs(nn.Module):
    """Dense features and pooled embeddings as fields ``[B, m, d]``, the dense fields first.

    ``dense_features``:

    - ``field``: the dense features go through the bottom MLP (ReLU after every layer, TorchRec's
      ``MLP`` as DLRM's dense arch) to one d-vector, one field: m = F + 1;
    - ``per_feature``: dense feature k becomes its own field e_k = v_k x_k with a learned v_k ``[d]``
      (``Linear(1, d, bias=False)`` per feature, as FuxiCTR's numeric ``FeatureEmbedding`` and the
      AutoInt paper's eq. 4): m = F + num_dense. Stored as one ``[num_dense, d]`` weight; initialised
      as ``nn.Linear(1, d)`` would be, U(-1, 1), until :func:`init_weights` says otherwise.

    Args:
        num_dense: dense input features.
        num_sparse: F.
        bottom: bottom MLP widths, ending in d (``per_feature`` reads only d, the last).
        dense_features: ``field`` or ``per_feature``.

    Attributes:
        num_fields: m.
    """

    def __init__(self, num_dense: int, num_sparse: int, bottom: list[int],
                 dense_features: DenseFeatures = "field") -> None:
        super().__init__()
        self.num_dense, self.num_sparse, self.d, self.bottom = num_dense, num_sparse, bottom[-1], bottom
        self.dense_features = dense_features
        if dense_features == "field":
            if num_dense < 1:
                raise ValueError("dense_features: field needs at least one dense feature for its bottom MLP")
            self.num_fields = num_sparse + 1
            self.dense_arch = MLP(num_dense, bottom, activation="relu")
        elif dense_features == "per_feature":
            self.num_fields = num_sparse + num_dense
            self.dense_weight = nn.Parameter(torch.empty(num_dense, self.d).uniform_(-1.0, 1.0))
        else:
            raise ValueError(f"dense_features must be 'field' or 'per_feature', got {dense_features!r}")

    @classmethod
    def from_options(cls, num_dense: int, num_sparse: int, options: Any) -> FieldInputs:
        """From a model's options (``WithBottomMLP``: ``dense_features``, ``bottom()`` and ``dim``)."""
        if options.dense_features == "per_feature":
            return cls(num_dense, num_sparse, [options.dim], "per_feature")
        return cls(num_dense, num_sparse, options.bottom(), "field")

    def dense_fields(self, dense: torch.Tensor) -> torch.Tensor:
        """``[B, num_dense]`` → ``[B, 1, d]`` (field) or ``[B, num_dense, d]`` (per_feature)."""
        if self.dense_features == "field":
            return self.dense_arch(dense).unsqueeze(1)
        return dense.unsqueeze(2) * self.dense_weight

    def forward(self, dense: torch.Tensor, pooled: KeyedTensor) -> torch.Tensor:
        """``dense`` ``[B, num_dense]`` and F pooled embeddings → ``[B, m, d]``."""
        return torch.cat([self.dense_fields(dense), fields(pooled, self.num_sparse, self.d)], dim=1)

    def flops(self) -> int:
        """The bottom MLP's (``per_feature`` is elementwise, not counted)."""
        return linear_flops([self.num_dense, *self.bottom]) if self.dense_features == "field" else 0


# ---------------------------------------------------------------- initialisation

#: Keras' truncated normal within 2 std has std 0.8796 of the untruncated one (VarianceScaling).
_TRUNCATED_STD = 0.87962566103423978


def init_kernel(weight: torch.Tensor, scheme: InitScheme, fan_in: int, fan_out: int) -> None:
    """Initialise a weight of ``fan_in`` inputs and ``fan_out`` outputs in place.

    - ``xavier_normal``: N(0, 2 / (fan_in + fan_out)), as ``torch.nn.init.xavier_normal_``;
    - ``he_normal``: Keras' He normal, a normal of std sqrt(2 / fan_in) truncated at 2 std (rescaled
      so that the truncated std is sqrt(2 / fan_in));
    - ``torch``: left as it is.
    """
    if scheme == "torch" or weight.numel() == 0:
        return
    with torch.no_grad():
        if scheme == "xavier_normal":
            weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        elif scheme == "he_normal":
            std = math.sqrt(2.0 / fan_in) / _TRUNCATED_STD
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")


def init_weights(model: nn.Module, scheme: InitScheme, skip: nn.Module | None = None) -> None:
    """Initialise the dense layers of ``model`` (not ``skip``, the embedding module) by ``scheme``.

    Every ``nn.Linear`` gets :func:`init_kernel` on its weight and a zero bias, and a
    :class:`FieldInputs` ``per_feature`` weight is initialised as the ``Linear(1, d)`` weights it
    stands for (fan_in 1, fan_out d), a :class:`FirstOrder` dense weight as ``Linear(1, 1)`` ones —
    as FuxiCTR's ``BaseModel.reset_parameters``
    (fuxictr/pytorch/models/rank_model.py: ``xavier_normal_`` on every Linear and Conv1d weight,
    biases 0, the numeric-feature ``Linear(1, d)`` included). Parameters that are not in a Linear
    (e.g. TorchRec's cross-network kernels) are the model's to initialise. ``torch`` leaves every
    layer at PyTorch's default (``nn.Linear``: Kaiming-uniform weights and uniform biases, the init
    of TorchRec's ``MLP``).
    """
    if scheme == "torch":
        return
    skipped = {id(m) for m in skip.modules()} if skip is not None else set()
    for module in model.modules():
        if id(module) in skipped:
            continue
        if isinstance(module, nn.Linear):
            init_kernel(module.weight, scheme, module.in_features, module.out_features)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, FieldInputs) and module.dense_features == "per_feature":
            for v in module.dense_weight:  # each row is one Linear(1, d) weight
                init_kernel(v, scheme, 1, module.d)
        elif isinstance(module, FirstOrder):
            for u in module.dense_weight.view(-1, 1):  # each one Linear(1, 1) weight
                init_kernel(u, scheme, 1, 1)
