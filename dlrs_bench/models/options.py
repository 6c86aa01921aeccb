"""Options of every model (no torch: ``dlrs-bench validate`` reads them without building a model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from dlrs_bench.config.schema import ModelOptions


class WithBottomMLP(ModelOptions):
    """Options of models that map the dense features to one extra field of size d (DLRM's bottom MLP)."""

    bottom_mlp: list[PositiveInt] = Field(default_factory=lambda: [64, 16], min_length=1)

    @model_validator(mode="after")
    def _bottom_ends_in_dim(self) -> WithBottomMLP:
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(f"bottom_mlp must end in embedding_dim ({self.embedding_dim}), got {self.bottom_mlp}")
        return self

    def bottom(self) -> list[int]:
        """Bottom MLP widths after scaling: hidden layers by ``scale.mlp``, the last = scaled d."""
        return self.widths(self.bottom_mlp[:-1]) + [self.dim]


def logit_mlp(layers: list[int]) -> list[int]:
    """Validator helper: an MLP spec that must end in the logit."""
    if layers[-1] != 1:
        raise ValueError(f"must end in 1 (the logit), got {layers}")
    return layers


class DLRMOptions(ModelOptions):
    name: Literal["dlrm"] = "dlrm"
    bottom_mlp: list[PositiveInt] = Field(default_factory=lambda: [64, 16], min_length=1)
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [64, 32, 1], min_length=2)

    @model_validator(mode="after")
    def _shapes(self) -> DLRMOptions:
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(
                f"bottom_mlp must end in embedding_dim ({self.embedding_dim}), got {self.bottom_mlp}"
            )
        if self.top_mlp[-1] != 1:
            raise ValueError(f"top_mlp must end in 1 (the logit), got {self.top_mlp}")
        return self

    def bottom(self) -> list[int]:
        """Bottom MLP widths after scaling: hidden layers by ``scale.mlp``, the last = scaled d."""
        return self.widths(self.bottom_mlp[:-1]) + [self.dim]

    def top(self) -> list[int]:
        return self.widths(self.top_mlp, over_arch=True)


class DCNv2Options(WithBottomMLP):
    name: Literal["dcnv2"] = "dcnv2"
    cross_layers: PositiveInt = 3
    low_rank: PositiveInt | None = Field(None, description="rank r of W = U V; unset = full W")
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [256, 128, 1], min_length=1)

    _top_ends_in_logit = field_validator("top_mlp")(logit_mlp)


class DeepFMOptions(WithBottomMLP):
    name: Literal["deepfm"] = "deepfm"
    dnn: list[PositiveInt] = Field(default_factory=lambda: [400, 400, 400, 1], min_length=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)

    _dnn_ends_in_logit = field_validator("dnn")(logit_mlp)


class AutoIntOptions(WithBottomMLP):
    name: Literal["autoint"] = "autoint"
    attention_layers: PositiveInt = 3
    heads: PositiveInt = 2
    attention_dim: PositiveInt = Field(8, description="width of each head")
    dnn: list[PositiveInt] = Field(default_factory=list, description="AutoInt+ DNN widths ending in 1; [] = AutoInt")

    @field_validator("dnn")
    @classmethod
    def _dnn(cls, v: list[int]) -> list[int]:
        if v and v[-1] != 1:
            raise ValueError(f"must be empty or end in 1 (the logit), got {v}")
        return v


class XDeepFMOptions(WithBottomMLP):
    """xDeepFM (dlrs_bench/models/xdeepfm.py). The CIN defaults are the paper's linear CIN (Lian et al.
    2018, eq. 6) as FuxiCTR implements it (fuxictr/pytorch/layers/interactions/
    compressed_interaction_net.py: Conv1d with bias, no activation, no split); DeepCTR's CIN
    (deepctr/layers/interaction.py) defaults to ``relu`` and ``split_half`` on."""

    name: Literal["xdeepfm"] = "xdeepfm"
    cin: list[PositiveInt] = Field(default_factory=lambda: [200, 200, 200], min_length=1,
                                   description="feature maps H_k of each CIN layer")
    cin_activation: Literal["identity", "relu"] = Field(
        "identity", description="after each CIN layer; identity: paper eq. 6 and FuxiCTR (DeepCTR: relu)")
    cin_bias: bool = Field(True, description="a bias per feature map (FuxiCTR's Conv1d and DeepCTR have one)")
    split_half: bool = Field(
        False, description="each CIN layer but the last sends half its maps on, half to the output "
                           "(DeepCTR's default True; FuxiCTR and the paper's eq. 6: no split)")
    dnn: list[PositiveInt] = Field(default_factory=lambda: [400, 400, 400, 1], min_length=1)

    _dnn_ends_in_logit = field_validator("dnn")(logit_mlp)

    @model_validator(mode="after")
    def _split_half_even(self) -> XDeepFMOptions:
        widths = self.widths(self.cin)
        if self.split_half and any(h % 2 for h in widths[:-1]):
            raise ValueError(f"split_half needs an even number of maps in every CIN layer but the last "
                             f"(after scale.mlp), got {widths}")
        return self


class FiBiNETOptions(WithBottomMLP):
    """FiBiNET (dlrs_bench/models/fibinet.py). Defaults: ``reduction`` 3 and ``bilinear``
    field_interaction as FuxiCTR (model_zoo/FiBiNET/src/FiBiNET.py and config/model_config.yaml) and
    DeepCTR (deepctr/models/fibinet.py, ``bilinear_type='interaction'``); ``excitation`` relu as the
    paper and FuxiCTR's SqueezeExcitation (which also offers sigmoid)."""

    name: Literal["fibinet"] = "fibinet"
    reduction: PositiveInt = Field(3, description="SENET reduction ratio r: max(1, m // r) hidden units")
    excitation: Literal["relu", "sigmoid"] = Field("relu", description="activation of the SENET output")
    bilinear: Literal["field_all", "field_each", "field_interaction"] = Field(
        "field_interaction", description="W shared by all pairs / one per left field i / one per pair (i, j)")
    dnn: list[PositiveInt] = Field(default_factory=lambda: [400, 400, 400, 1], min_length=1)

    _dnn_ends_in_logit = field_validator("dnn")(logit_mlp)


class WukongOptions(ModelOptions):
    name: Literal["wukong"] = "wukong"
    num_layers: PositiveInt = 3
    n_f: PositiveInt = Field(16, description="embeddings produced by each FMB")
    n_l: PositiveInt = Field(16, description="embeddings produced by each LCB")
    k: PositiveInt = Field(24, description="rank of the optimized FM projection Y")
    fmb_mlp: list[PositiveInt] = Field(default_factory=lambda: [512, 512], description="FMB hidden widths")
    dense_embeddings: PositiveInt = Field(1, description="embeddings made from the dense features")
    bottom_mlp: list[PositiveInt] = Field(default_factory=lambda: [64], description="hidden widths dense → embeddings")
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [512, 512, 1], min_length=1)

    _top_ends_in_logit = field_validator("top_mlp")(logit_mlp)
