"""FiBiNET (Huang et al., RecSys 2019) over fields ``[B, m, d]`` (:class:`FieldInputs`): SENET + bilinear + DNN.

SENET (paper §3.3, FuxiCTR's SqueezeExcitation, DeepCTR's SENETLayer): squeeze z_i = mean over d of
field i ``[B, m]``; excitation A = σ2(W2 ReLU(W1 z)), W1 ``[s, m]``, W2 ``[m, s]``, no biases,
s = max(1, m // r) (r = ``reduction``), σ2 = ``excitation`` (ReLU in the paper and by default;
FuxiCTR also offers sigmoid); re-weight V = E ∘ A.

Bilinear interaction (paper §3.4), for every pair i < j: p_ij = (v_i W_·) ∘ v_j with
``bilinear`` = ``field_all`` (one W ``[d, d]``), ``field_each`` (W_i per left field i: m - 1
matrices, as DeepCTR; FuxiCTR and the paper allocate m, the last never used) or
``field_interaction`` (W_ij per pair: m (m - 1) / 2 matrices). Two independent layers, one on E
(p) and one on V (q), as the paper, FuxiCTR and DeepCTR; [p, q] (2 · m (m - 1) / 2 vectors of d)
feed the DNN. p_ij is not symmetric in i and j (W is on the left field's side), so the field order is part
of the function: ``dense_position`` first (default) puts the dense fields before the categorical ones, as
:class:`FieldInputs` does for every model, last after them, as FuxiCTR sees them in
tools/fuxictr_compare.py (FuxiCTR stacks its fields in feature_cols order; the paper orders none). The
other layers are the same function in any order. It matters on bundled MovieLens (4 dense and 4
categorical fields): last is about 0.005 validation AUC below first at d = 32. With last and FuxiCTR's
weights copied, this model gives FuxiCTR's FiBiNET logits to 1e-6 but for the first-order term of a
multi-hot bag, which FuxiCTR sums and this model pools as the embedding (tools/fuxictr_layers.py).
The linear term (§3.6) is ``first_order`` (:func:`first_order_term`): per_id, b + Σ_f w[x_f] + u · dense,
or fields, a Linear over the flattened E.

Defaults and their sources: ``reduction`` 3, ``bilinear`` field_interaction, ``excitation`` relu:
FuxiCTR (model_zoo/FiBiNET/src/FiBiNET.py and config/model_config.yaml) and DeepCTR
(deepctr/models/fibinet.py: ``bilinear_type='interaction'``, ``reduction_ratio=3``). The DNN
400-400-400 is this project's default (DeepCTR's is (256, 128, 64), FuxiCTR's template 500-500-500).
Initialisation as FuxiCTR (BaseModel.reset_parameters and BilinearInteractionV2.init_weights):
Xavier-normal for the SENET Linears and for each bilinear weight tensor as a whole.

Parameters: SENET 2 m s; bilinear 2 n d² with n = 1, m - 1, m (m - 1) / 2; linear num_dense + 1 (per_id;
the F id weights are in the tables) or m d + 1 (fields); DNN.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, first_order_term, hidden, init_weights, multi_hot_positions
from dlrs_bench.models.options import FiBiNETOptions

BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")


class SENET(nn.Module):
    """Squeeze-excitation over fields: ``[B, m, d]`` → V = E ∘ A with A ``[B, m]``.

    Args:
        m: fields.
        reduction: r; the hidden layer has max(1, m // r) units.
        excitation: ``relu`` or ``sigmoid``, the activation of A.
    """

    def __init__(self, m: int, reduction: int, excitation: str = "relu") -> None:
        super().__init__()
        if excitation not in ("relu", "sigmoid"):
            raise ValueError(f"SENET excitation must be relu or sigmoid, got {excitation!r}")
        self.m, self.hidden = m, max(1, m // reduction)
        self.excitation = nn.Sequential(nn.Linear(m, self.hidden, bias=False), nn.ReLU(),
                                        nn.Linear(self.hidden, m, bias=False),
                                        nn.ReLU() if excitation == "relu" else nn.Sigmoid())
        for layer in (self.excitation[0], self.excitation[2]):
            nn.init.xavier_normal_(layer.weight)

    def weights(self, e: torch.Tensor) -> torch.Tensor:
        """A = σ2(W2 ReLU(W1 z)), z = mean over d: ``[B, m, d]`` → ``[B, m]``."""
        return self.excitation(e.mean(2))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e * self.weights(e).unsqueeze(2)

    def flops(self) -> int:
        return 2 * 2 * self.m * self.hidden


class Bilinear(nn.Module):
    """p_ij = (v_i W_·) ∘ v_j for every pair i < j: ``[B, m, d]`` → ``[B, m (m - 1) / 2, d]``.

    Args:
        m: fields.
        d: embedding dimension.
        kind: ``field_all`` (W), ``field_each`` (W_i, i < m - 1) or ``field_interaction`` (W_ij).
    """

    def __init__(self, m: int, d: int, kind: str = "field_interaction") -> None:
        super().__init__()
        if kind not in BILINEAR_TYPES:
            raise ValueError(f"bilinear must be one of {BILINEAR_TYPES}, got {kind!r}")
        self.m, self.d, self.kind = m, d, kind
        self.register_buffer("pairs", torch.triu_indices(m, m, offset=1), persistent=False)
        #: how many vectors are multiplied by a W: the m - 1 left fields, or each of the P pairs
        self.rows = self.pairs.shape[1] if kind == "field_interaction" else m - 1
        shape = (d, d) if kind == "field_all" else (self.rows, d, d)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = x[:, self.pairs[1]]  # [B, P, d]
        if self.kind == "field_all":  # v_i W for the fields that are ever on the left, then per pair
            left = torch.matmul(x[:, :-1], self.weight)[:, self.pairs[0]]
        elif self.kind == "field_each":  # v_i W_i
            left = torch.matmul(x[:, :-1].unsqueeze(2), self.weight).squeeze(2)[:, self.pairs[0]]
        else:  # v_i W_ij
            left = torch.matmul(x[:, self.pairs[0]].unsqueeze(2), self.weight).squeeze(2)
        return left * right

    def flops(self) -> int:
        """Matmul FLOPs of the v_i W products (the Hadamard products are not matmuls)."""
        return 2 * self.rows * self.d * self.d


class FiBiNET(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: FiBiNETOptions,
                 bags: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.inputs = FieldInputs.from_options(num_dense, num_sparse, options)
        self.m, self.d = self.inputs.num_fields, options.dim
        dense = self.m - num_sparse  # dense fields, first in FieldInputs' output
        last = torch.tensor([*range(dense, self.m), *range(dense)]) if options.dense_position == "last" else None
        self.register_buffer("order", last, persistent=False)  # None: FieldInputs' order
        self.senet = SENET(self.m, options.reduction, options.excitation)
        self.bilinear_e = Bilinear(self.m, self.d, options.bilinear)  # p: on the embeddings E
        self.bilinear_v = Bilinear(self.m, self.d, options.bilinear)  # q: on the SENET output V
        self.first_order = first_order_term(options, num_dense, num_sparse, self.m, bags)
        pairs = self.m * (self.m - 1) // 2
        self.dnn = Head(2 * pairs * self.d, hidden(options.widths(options.dnn, over_arch=True)))
        init_weights(self, options.init, skip=embeddings)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embeddings(sparse)
        e = self.inputs(dense, pooled)
        if self.order is not None:
            e = e[:, self.order]
        both = torch.cat([self.bilinear_e(e), self.bilinear_v(self.senet(e))], dim=1).flatten(1)
        return self.first_order(dense, pooled, e, sparse) + self.dnn(both)

    def flops_per_sample(self) -> int:
        return (self.inputs.flops() + self.senet.flops() + self.bilinear_e.flops() + self.bilinear_v.flops()
                + self.first_order.flops() + self.dnn.flops())


class FiBiNETBuilder:
    Options = FiBiNETOptions

    @staticmethod
    def build(options: FiBiNETOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> FiBiNET:
        return FiBiNET(num_dense, len(features), embeddings, options, multi_hot_positions(features))
