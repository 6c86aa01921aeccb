"""DCN-V2 (Wang et al., WWW'21): a cross network and a DNN, stacked or parallel.

x0 = the fields flattened, ``[B, N]`` with N = m d (:class:`FieldInputs`: m = F + num_dense with
``dense_features: per_feature``, F + 1 with ``field``). ``cross_layers`` layers of

- full (paper eq. 1, TorchRec's ``CrossNet``): x_{l+1} = x0 ∘ (W_l x_l + b_l) + x_l, W_l ``[N, N]``;
- ``low_rank`` r (eq. 2, TorchRec's ``LowRankCrossNet``): W_l = U_l V_l^T, U_l, V_l ``[N, r]``;
- ``experts`` K with ``low_rank`` r (eqs. 3-4, TorchRec's ``LowRankMixtureCrossNet``):
  x_{l+1} = Σ_i G_i(x_l) E_i(x_l) + x_l, E_i(x_l) = x0 ∘ (U_l^i g(C_l^i g(V_l^{iT} x_l)) + b_l), with
  C_l^i ``[r, r]``, g = ``expert_activation``, the gates G(x) = softmax_i(w_i^T x) (w_i ``[N]``, no bias,
  shared by the layers; skipped when K = 1), as FuxiCTR's CrossNetMix.

``structure``: ``stacked`` x_final = DNN(x_L) (the paper's f_deep ∘ f_cross, TorchRec's DLRM_DCN);
``parallel`` x_final = [x_L; DNN(x0)]. The logit is w^T x_final + b. The DNN is ``top_mlp``'s hidden
widths (ReLU, ``dropout`` after every hidden layer); stacked with no hidden width is the cross
network alone. Dense layers are initialised by ``init`` (:func:`init_weights`); the cross kernels
are TorchRec's Xavier-normal (zero biases), re-drawn per ``init`` when it is ``he_normal``.
Defaults and their sources: ``DCNv2Options`` (dlrs_bench/models/options.py).

Dense parameters (N = m d, h the DNN's hidden widths):
  inputs (per_feature: num_dense d; field: the bottom MLP)
  + L (N^2 + N) full | L (2 N r + N) low-rank | L (K (2 N r + r^2) + N) + (K N if K > 1) mixture
  + Σ Linear(h_i → h_{i+1}) over [N, *h] + final Linear: (h[-1] or N) + 1 stacked, N + h[-1] + 1 parallel.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet, LowRankMixtureCrossNet
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops
from dlrs_bench.models.layers import FieldInputs, hidden, init_kernel, init_weights, mlp
from dlrs_bench.models.options import DCNv2Options

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def cross_network(width: int, options: DCNv2Options) -> nn.Module:
    """The cross network of ``options`` over ``[B, width]`` (full, low-rank or mixture)."""
    if options.experts is not None:
        assert options.low_rank is not None  # DCNv2Options refuses experts without low_rank
        return LowRankMixtureCrossNet(width, options.cross_layers, num_experts=options.experts,
                                      low_rank=options.low_rank, activation=ACTIVATIONS[options.expert_activation])
    if options.low_rank is not None:
        return LowRankCrossNet(width, options.cross_layers, options.low_rank)
    return CrossNet(width, options.cross_layers)


def cross_kernels(cross: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of a TorchRec cross network, each ``[out, in]`` or ``[K, out, in]`` (the
    last axis is the input: ``CrossNet`` and the mixture multiply ``kernel @ x``, ``LowRankCrossNet``
    applies ``F.linear(x, kernel)``); not its biases nor the mixture's gates (Linear layers)."""
    names = ("kernels", "W_kernels", "V_kernels", "U_kernels", "C_kernels")
    return [p for name in names if hasattr(cross, name) for p in getattr(cross, name)]


class DCNv2(nn.Module):
    """DCN-V2 over ``embeddings``; ``forward(dense [B, num_dense], KJT) -> logits [B]``."""

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DCNv2Options) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.inputs = FieldInputs.from_options(num_dense, num_sparse, options)
        self.width = n = self.inputs.num_fields * options.dim
        self.structure, self.cross_layers = options.structure, options.cross_layers
        self.rank, self.experts = options.low_rank, options.experts
        self.cross = cross_network(n, options)
        self.hidden = hidden(options.widths(options.top_mlp, over_arch=True))
        self.dnn = mlp(n, self.hidden, options.dropout)
        last = self.hidden[-1] if self.hidden else n
        self.out = nn.Linear(n + last if self.structure == "parallel" else last, 1)
        init_weights(self, options.init, skip=embeddings)
        if options.experts is not None and options.init == "xavier_normal":
            # FuxiCTR's CrossNetMix draws V as [K, N, r] (Xavier fans N r and K r); TorchRec holds V^T [K, r, N]
            for v in self.cross.V_kernels:
                init_kernel(v, "xavier_normal", n * options.low_rank, options.experts * options.low_rank)
        if options.init == "he_normal":  # the paper's init for every kernel, the cross network's too
            for kernel in cross_kernels(self.cross):
                for w in kernel.reshape(-1, *kernel.shape[-2:]):
                    init_kernel(w, "he_normal", w.shape[-1], w.shape[-2])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x0 = self.inputs(dense, self.embeddings(sparse)).flatten(1)
        crossed = self.cross(x0)
        if self.structure == "stacked":
            final = self.dnn(crossed)
        else:
            final = torch.cat([crossed, self.dnn(x0)], dim=1)
        return self.out(final).squeeze(-1)

    def cross_flops(self) -> int:
        """Matrix-multiplication FLOPs of the cross network, per sample."""
        n, r, k = self.width, self.rank, self.experts
        if k is not None:
            assert r is not None
            per_layer = k * (2 * r * n + 2 * r * r + 2 * n * r)  # V^T x, C ·, U ·
            if k > 1:
                per_layer += k * 2 * n + 2 * n * k  # the gates, then the gated sum of the experts
            return self.cross_layers * per_layer
        return self.cross_layers * (2 * 2 * n * r if r is not None else 2 * n * n)

    def flops_per_sample(self) -> int:
        return (self.inputs.flops() + self.cross_flops() + linear_flops([self.width, *self.hidden])
                + 2 * self.out.in_features)


class DCNv2Builder:
    Options = DCNv2Options

    @staticmethod
    def build(options: DCNv2Options, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DCNv2:
        return DCNv2(num_dense, len(features), embeddings, options)
