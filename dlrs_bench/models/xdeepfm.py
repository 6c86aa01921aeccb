"""xDeepFM (Lian et al., KDD 2018) over fields ``[B, m, d]`` (:class:`FieldInputs`): linear + CIN + DNN.

The linear term is ``first_order`` (:func:`first_order_term`): per_id, b + Σ_f w[x_f] + u · dense
(paper eq. 9's linear part, FuxiCTR's LogisticRegression), or fields, a Linear over the m d values.

CIN layer k (paper eq. 6): X^k_{h,*} = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*}), i.e. with
Z = X^{k-1} ⊗ X^0 ``[B, H_{k-1} m, d]`` (row i m + j = X^{k-1}_i ∘ X^0_j), X^k = σ(W_k Z + b_k),
W_k ``[H_k, H_{k-1} m]``, b_k ``[H_k]`` (``cin_bias``), σ = ``cin_activation``. Each layer's output
maps are sum-pooled over d and all pooled layers feed one Linear to the logit (no bias: the linear
term carries it). With ``split_half`` (DeepCTR) layer k < K keeps its first H_k / 2 maps for layer
k + 1 and sends the other H_k / 2 to the output, so H_{k-1} above is the kept count.

Defaults, with their sources:

- ``cin_activation: identity``, ``cin_bias: true``, ``split_half: false``: FuxiCTR's
  CompressedInteractionNet (fuxictr/pytorch/layers/interactions/compressed_interaction_net.py:
  ``nn.Conv1d(kernel_size=1)``, which has a bias, and no activation), linear in each layer as the
  paper's eq. 6 (which has no bias term). DeepCTR's CIN (deepctr/layers/interaction.py) has a bias
  too but defaults to ``activation='relu'`` and ``split_half=True`` (deepctr/models/xdeepfm.py).
- widths: CIN 200-200-200 and DNN 400-400-400 are this project's defaults (200 maps per CIN layer
  and 400 units per DNN layer are the setting the paper reports for Criteo); they are neither
  DeepCTR's defaults (CIN (128, 128), DNN (256, 128, 64)) nor FuxiCTR's template (CIN 32-32-32,
  DNN 500-500-500, model_zoo/xDeepFM/config/model_config.yaml).
- initialisation of the CIN and its output layer as FuxiCTR (BaseModel.reset_parameters):
  Xavier-normal weights (fan_in = H_{k-1} m, fan_out = H_k), zero biases.

Parameters: sum_k H_k (H_{k-1} m + [cin_bias]) for the CIN plus its output layer's
sum_k O_k weights, O_k = H_k / 2 for k < K under split_half, else H_k; linear num_dense + 1 (per_id,
its F id weights are in the tables) or m d + 1 (fields).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, first_order_term, hidden, init_weights, multi_hot_positions
from dlrs_bench.models.options import XDeepFMOptions


class CIN(nn.Module):
    """Compressed interaction network: ``[B, m, d]`` → ``[B, sum(O_k)]`` (sum-pooled over d).

    Args:
        m: fields.
        widths: H_k, the feature maps of each layer.
        activation: ``identity`` (paper eq. 6, FuxiCTR) or ``relu`` (DeepCTR's default).
        bias: a bias per feature map.
        split_half: DeepCTR's split (layers but the last keep H_k / 2 maps, output H_k / 2).
    """

    def __init__(self, m: int, widths: list[int], activation: str = "identity", bias: bool = True,
                 split_half: bool = False) -> None:
        super().__init__()
        if activation not in ("identity", "relu"):
            raise ValueError(f"CIN activation must be identity or relu, got {activation!r}")
        if split_half and any(h % 2 for h in widths[:-1]):
            raise ValueError(f"split_half needs an even number of maps in every CIN layer but the last, got {widths}")
        self.m, self.widths, self.activation, self.split_half = m, list(widths), activation, split_half
        last = len(widths) - 1
        #: maps each layer passes on (``kept``) and sends to the output (``out``)
        self.kept = [h // 2 if split_half and k < last else h for k, h in enumerate(widths)]
        self.out = [h - h // 2 if split_half and k < last else h for k, h in enumerate(widths)]
        self.previous = [m, *self.kept[:-1]]
        self.maps = nn.ParameterList(nn.Parameter(torch.empty(h, p * m)) for h, p in zip(widths, self.previous))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(h)) for h in widths) if bias else None
        for w in self.maps:
            nn.init.xavier_normal_(w)

    @property
    def out_features(self) -> int:
        return sum(self.out)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        b, m, d = x0.shape
        x, pooled = x0, []
        for k, w in enumerate(self.maps):
            z = (x.unsqueeze(2) * x0.unsqueeze(1)).reshape(b, -1, d)  # [B, H_{k-1} m, d]
            x = torch.matmul(w, z)  # [B, H_k, d]
            if self.biases is not None:
                x = x + self.biases[k].unsqueeze(1)
            if self.activation == "relu":
                x = torch.relu(x)
            if self.kept[k] != self.widths[k]:  # split_half: first half on, second half out
                x, direct = x[:, :self.kept[k]], x[:, self.kept[k]:]
            else:
                direct = x
            pooled.append(direct.sum(2))
        return torch.cat(pooled, dim=1)

    def flops(self, d: int) -> int:
        return sum(2 * h * p * self.m * d for h, p in zip(self.widths, self.previous))


class XDeepFM(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: XDeepFMOptions,
                 bags: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.d = options.dim
        self.embeddings = embeddings
        self.inputs = FieldInputs.from_options(num_dense, num_sparse, options)
        m = self.inputs.num_fields
        self.first_order = first_order_term(options, num_dense, num_sparse, m, bags)
        self.cin = CIN(m, options.widths(options.cin), options.cin_activation, options.cin_bias, options.split_half)
        self.cin_out = nn.Linear(self.cin.out_features, 1, bias=False)
        nn.init.xavier_normal_(self.cin_out.weight)
        self.dnn = Head(m * self.d, hidden(options.widths(options.dnn, over_arch=True)))
        init_weights(self, options.init, skip=embeddings)  # the CIN maps keep their own Xavier init

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embeddings(sparse)
        x = self.inputs(dense, pooled)
        cin = self.cin_out(self.cin(x)).squeeze(-1)
        return self.first_order(dense, pooled, x, sparse) + cin + self.dnn(x.flatten(1))

    def flops_per_sample(self) -> int:
        return (self.inputs.flops() + self.first_order.flops() + self.cin.flops(self.d)
                + 2 * self.cin_out.in_features + self.dnn.flops())


class XDeepFMBuilder:
    Options = XDeepFMOptions

    @staticmethod
    def build(options: XDeepFMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> XDeepFM:
        return XDeepFM(num_dense, len(features), embeddings, options, multi_hot_positions(features))
