"""Options of every model (no torch: ``dlrs-bench validate`` reads them without building a model)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from dlrs_bench.config.schema import ModelOptions, StrictModel


class UniformInit(StrictModel):
    """TorchRec's draw, left as it is: U(±sqrt(1 / n)), n = rows of the full table (EmbeddingBagConfig's
    weight_init_min / max, which fbgemm's fused kernels draw too; the compressors' tables use the same
    bound, TT its own variance-matched cores, ROBE-Z its array)."""

    kind: Literal["uniform"] = "uniform"


class NormalInit(StrictModel):
    """N(0, std²) on every row, as FuxiCTR's FeatureEmbedding (``nn.init.normal_(std=1e-4)``); the padding
    row of a train vocabulary starts at zero."""

    kind: Literal["normal"] = "normal"
    std: PositiveFloat = Field(1e-4, description="standard deviation of every float")


class TruncatedNormalInit(StrictModel):
    """N(0, std²) truncated to ±2 std on every row (generative-recommenders' ``truncated_normal`` of its item
    tables, std 0.02); the padding row starts at zero."""

    kind: Literal["truncated_normal"] = "truncated_normal"
    std: PositiveFloat = Field(0.02, description="standard deviation before truncation at ±2 std")


class XavierInit(StrictModel):
    """Xavier-uniform over each table's [rows, width]: U(±sqrt(6 / (rows + width))) (rows: without a
    padding row, which starts at zero)."""

    kind: Literal["xavier"] = "xavier"


EmbeddingInit = Annotated[UniformInit | NormalInit | TruncatedNormalInit | XavierInit, Field(discriminator="kind")]


class WithEmbeddingInit(ModelOptions):
    """Every model: how its embedding tables start (dlrs_bench/models/init.py)."""

    embedding_init: EmbeddingInit = Field(
        UniformInit(),
        description="uniform: TorchRec's U(±sqrt(1/n)) (default); normal: N(0, std²), FuxiCTR's (std 1e-4); "
                    "truncated_normal: N(0, std²) within ±2 std (generative-recommenders', std 0.02); xavier: "
                    "Xavier-uniform over each table's [rows, width]")

    def init_scheme(self) -> str:
        return self.embedding_init.kind


class WithBottomMLP(WithEmbeddingInit):
    """Options of the field models (dlrs_bench/models/layers.py ``FieldInputs``): how the dense
    features become fields. ``field``: one field of size d through the bottom MLP (DLRM's way);
    ``per_feature``: one field e_k = v_k x_k per dense feature (FuxiCTR's numeric embedding,
    ``Linear(1, d, bias=False)``), without a bottom MLP. A subclass sets its paper's default."""

    dense_features: Literal["field", "per_feature"] = Field(
        "field", description="field: one field through bottom_mlp (DLRM); per_feature: e_k = v_k x_k per dense "
                             "feature, m = F + num_dense fields (FuxiCTR, AutoInt eq. 4)")
    bottom_mlp: list[PositiveInt] | None = Field(
        None, min_length=1, description="dense_features: field only: widths ending in embedding_dim "
                                        "(default [64, embedding_dim])")

    @model_validator(mode="after")
    def _bottom_ends_in_dim(self) -> WithBottomMLP:
        if self.bottom_mlp is None:
            return self
        if self.dense_features == "per_feature":
            raise ValueError("bottom_mlp is unused with dense_features: per_feature (each dense feature is its own "
                             "field); remove it, or set dense_features: field")
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(f"bottom_mlp must end in embedding_dim ({self.embedding_dim}), got {self.bottom_mlp}")
        return self

    def bottom(self) -> list[int]:
        """Bottom MLP widths after scaling: hidden layers by ``scale.mlp``, the last = scaled d. A
        model that calls it with ``per_feature`` builds the wrong inputs: it is refused."""
        if self.dense_features == "per_feature":
            raise ValueError(f"{self.name}: dense_features: per_feature has no bottom MLP; the model must build "
                             "its inputs with FieldInputs.from_options (dlrs_bench/models/layers.py)")
        return self.widths((self.bottom_mlp or [64, self.embedding_dim])[:-1]) + [self.dim]


class WithFirstOrder(WithBottomMLP):
    """Field models with FM's first-order (linear) term. ``per_id``: b + Σ_f w[x_f] + u · dense, one
    learned weight per id as the papers (DeepFM eq. 2's <w, x>; xDeepFM eq. 9; FiBiNET §3.6) and
    FuxiCTR's ``LogisticRegression`` (fuxictr/pytorch/layers/blocks/logistic_regression.py: a 1-wide
    embedding per feature and a bias). The weight is stored as one more column of the feature's table
    (rows of d + 1 floats), so it is pooled like the embedding, counted in the tables' size and
    compressed with them.
    ``fields``: one Linear over the flattened field embeddings, m d weights + a bias (an ablation)."""

    first_order: Literal["per_id", "fields"] = Field(
        "per_id", description="per_id: a weight per id (one more table column) + u . dense + b, as the paper "
                              "and FuxiCTR; fields: a Linear over the m d field values")

    first_order_pooling: Literal["embedding", "sum"] = Field(
        "embedding", description="per_id only: how a multi-hot bag pools its ids' first-order weights. embedding: "
                                 "as the embedding (compressor.pooling); sum: summed, as FuxiCTR's 1-wide first-order "
                                 "tables, under compressor.pooling: mean (the pooled weight times the bag's length)")

    @model_validator(mode="after")
    def _sum_needs_per_id(self) -> WithFirstOrder:
        if self.first_order_pooling == "sum" and self.first_order != "per_id":
            raise ValueError("first_order_pooling: sum is for first_order: per_id (fields has no per-id weights)")
        return self

    def table_width(self) -> int:
        return self.dim + (self.first_order == "per_id")

    def table_width_note(self) -> str:
        if self.first_order != "per_id":
            return ""
        return (f" (tables are {self.table_width()} floats wide: embedding_dim {self.dim} + a per-id first-order "
                "weight, model.first_order: per_id; first_order: fields keeps them at embedding_dim)")


def logit_mlp(layers: list[int]) -> list[int]:
    """Validator helper: an MLP spec that must end in the logit."""
    if layers[-1] != 1:
        raise ValueError(f"must end in 1 (the logit), got {layers}")
    return layers


class DLRMOptions(WithEmbeddingInit):
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


#: How the dense layers start (dlrs_bench/models/layers.py ``init_weights``): ``xavier_normal`` weights
#: and zero biases as FuxiCTR (BaseModel.reset_parameters) and DeepCTR (glorot_normal DNN kernels);
#: ``he_normal`` (Keras He normal) as the DCN-V2 paper §7.1.3; ``torch``: PyTorch's nn.Linear default
#: (TorchRec's MLP), the init before issue 13.
InitOption = Literal["xavier_normal", "he_normal", "torch"]


class DCNv2Options(WithBottomMLP):
    """DCN-V2 (dlrs_bench/models/dcnv2.py; Wang et al., WWW'21). Defaults and their sources:

    - ``dense_features`` per_feature: FuxiCTR/BARS (numeric FeatureEmbedding). The paper's x0 appends
      the normalised dense values themselves (§3.1), which no field model here offers;
    - ``structure`` parallel: FuxiCTR's DCNv2_default (model_zoo/DCNv2/config/model_config.yaml
      ``model_structure: parallel``); the paper finds the better one data dependent (§3.4; Table 6:
      stacked on Criteo, parallel on MovieLens-1M);
    - ``cross_layers`` 3: FuxiCTR's ``num_cross_layers: 3``, and the paper's §7.5 reference setting
      "3 cross layers followed by 3 hidden layers of size 512", which also gives ``top_mlp``;
    - full W (``low_rank`` unset): paper eq. 1, FuxiCTR's CrossNetV2; ``low_rank`` r: eq. 2, W = U V^T;
      ``experts`` K: the mixture of low-rank experts, eq. 3 with eq. 4's nonlinear g(C g(V^T x)),
      softmax gates, as TorchRec's LowRankMixtureCrossNet and FuxiCTR's CrossNetMix;
      ``expert_activation`` tanh as FuxiCTR's CrossNetMix and DeepCTR (the paper: "any nonlinear
      activation"; TorchRec's default is relu);
    - ``dropout`` 0: FuxiCTR's ``net_dropout: 0`` (the paper names none);
    - ``init`` xavier_normal: FuxiCTR (the reference implementation); he_normal is the paper's.
    """

    name: Literal["dcnv2"] = "dcnv2"
    dense_features: Literal["field", "per_feature"] = "per_feature"
    structure: Literal["stacked", "parallel"] = Field(
        "parallel", description="stacked: DNN on the cross output; parallel: cross and DNN side by side on x0, "
                                "concatenated before the logit")
    cross_layers: PositiveInt = 3
    low_rank: PositiveInt | None = Field(None, description="rank r of W = U V^T; unset = full W")
    experts: PositiveInt | None = Field(
        None, description="K low-rank experts per cross layer (needs low_rank), softmax-gated; unset = no mixture")
    expert_activation: Literal["tanh", "relu"] = Field("tanh", description="g of the experts (with experts)")
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [512, 512, 512, 1], min_length=1,
                                       description="DNN hidden widths, then the logit (1)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="after every DNN hidden layer")
    init: InitOption = "xavier_normal"

    _top_ends_in_logit = field_validator("top_mlp")(logit_mlp)

    @model_validator(mode="after")
    def _cross(self) -> DCNv2Options:
        if self.experts is not None and self.low_rank is None:
            raise ValueError("experts needs low_rank (the rank r of each expert)")
        if self.structure == "parallel" and len(self.top_mlp) < 2:
            raise ValueError("structure: parallel needs a DNN: top_mlp with hidden widths before the logit, "
                             f"got {self.top_mlp} (stacked with [1] is the cross network alone)")
        return self


class DeepFMOptions(WithFirstOrder):
    """DeepFM (dlrs_bench/models/deepfm.py; Guo et al., IJCAI'17). Defaults and their sources:

    - ``dense_features`` per_feature: the paper represents a continuous field by its value (§2), whose
      FM factor is then v_i x_i, as FuxiCTR's numeric embedding;
    - ``dnn`` 400-400-400 and ``dropout`` 0.5 after every hidden layer: the paper's §3.1 settings
      (those of Qu et al. 2016, shared by its deep models). Not DeepCTR's: its DeepFM defaults are
      (256, 128, 64) and dnn_dropout 0 (deepctr/models/deepfm.py); FuxiCTR's DeepFM_default template is
      [300, 300, 300] with net_dropout 0;
    - ``init`` xavier_normal: FuxiCTR, and DeepCTR's glorot_normal DNN kernels.
    """

    name: Literal["deepfm"] = "deepfm"
    dense_features: Literal["field", "per_feature"] = "per_feature"
    dnn: list[PositiveInt] = Field(default_factory=lambda: [400, 400, 400, 1], min_length=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="after every DNN hidden layer")
    init: InitOption = "xavier_normal"

    _dnn_ends_in_logit = field_validator("dnn")(logit_mlp)


class AutoIntOptions(WithBottomMLP):
    name: Literal["autoint"] = "autoint"
    init: InitOption = "xavier_normal"  # every dense Linear, as FuxiCTR (BaseModel.reset_parameters)
    dense_features: Literal["field", "per_feature"] = "per_feature"  # the paper's eq. 4: e_m = v_m x_m
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


class XDeepFMOptions(WithFirstOrder):
    """xDeepFM (dlrs_bench/models/xdeepfm.py). The CIN defaults are the paper's linear CIN (Lian et al.
    2018, eq. 6) as FuxiCTR implements it (fuxictr/pytorch/layers/interactions/
    compressed_interaction_net.py: Conv1d with bias, no activation, no split); DeepCTR's CIN
    (deepctr/layers/interaction.py) defaults to ``relu`` and ``split_half`` on."""

    name: Literal["xdeepfm"] = "xdeepfm"
    init: InitOption = "xavier_normal"  # every dense Linear, as FuxiCTR (BaseModel.reset_parameters)
    dense_features: Literal["field", "per_feature"] = "per_feature"  # as FuxiCTR/BARS (numeric FeatureEmbedding)
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


class FiBiNETOptions(WithFirstOrder):
    """FiBiNET (dlrs_bench/models/fibinet.py). Defaults: ``reduction`` 3 and ``bilinear``
    field_interaction as FuxiCTR (model_zoo/FiBiNET/src/FiBiNET.py and config/model_config.yaml) and
    DeepCTR (deepctr/models/fibinet.py, ``bilinear_type='interaction'``); ``excitation`` relu as the
    paper and FuxiCTR's SqueezeExcitation (which also offers sigmoid); ``dense_position`` first (the paper
    orders no fields; FuxiCTR takes its feature_cols' order: last in tools/fuxictr_compare.py)."""

    name: Literal["fibinet"] = "fibinet"
    init: InitOption = "xavier_normal"  # every dense Linear, as FuxiCTR (BaseModel.reset_parameters)
    dense_features: Literal["field", "per_feature"] = "per_feature"  # as FuxiCTR/BARS (numeric FeatureEmbedding)
    reduction: PositiveInt = Field(3, description="SENET reduction ratio r: max(1, m // r) hidden units")
    excitation: Literal["relu", "sigmoid"] = Field("relu", description="activation of the SENET output")
    bilinear: Literal["field_all", "field_each", "field_interaction"] = Field(
        "field_interaction", description="W shared by all pairs / one per left field i / one per pair (i, j)")
    dense_position: Literal["first", "last"] = Field(
        "first", description="where the dense fields sit among the m fields: first (FieldInputs' order) or last, "
                             "after the categorical ones (the order tools/fuxictr_compare.py gives FuxiCTR). A "
                             "bilinear pair (v_i W) ∘ v_j, i < j, is not symmetric: the order decides W's side")
    dnn: list[PositiveInt] = Field(default_factory=lambda: [400, 400, 400, 1], min_length=1)

    _dnn_ends_in_logit = field_validator("dnn")(logit_mlp)


class WukongOptions(WithEmbeddingInit):
    """Wukong (dlrs_bench/models/wukong.py; Zhang et al., ICML'24). The defaults follow the paper's
    equations; six options express FuxiCTR 2.3.10's WuKong (model_zoo/WuKong/src/WuKong.py), where it
    departs from the paper or the paper is silent: ``fmb_activation`` relu, ``y_init_std`` one,
    ``residual_bias``, ``top_batchnorm``, ``dense_features`` per_feature and ``init`` xavier_normal."""

    name: Literal["wukong"] = "wukong"
    num_layers: PositiveInt = 3
    n_f: PositiveInt = Field(16, description="embeddings produced by each FMB")
    n_l: PositiveInt = Field(16, description="embeddings produced by each LCB")
    k: PositiveInt = Field(24, description="rank of the optimized FM projection Y")
    fmb_mlp: list[PositiveInt] = Field(default_factory=lambda: [512, 512], description="FMB hidden widths")
    fmb_activation: Literal["identity", "relu"] = Field(
        "identity", description="after the FMB MLP's output layer; identity: the paper's MLP (default); relu: "
                                "FuxiCTR's (every FMB embedding >= 0)")
    y_init_std: Literal["inverse_sqrt", "one"] = Field(
        "inverse_sqrt", description="std of Y's normal init: 1/sqrt(n_in) (default) or 1, FuxiCTR's torch.randn")
    residual_bias: bool = Field(False, description="a bias in the residual projection (FuxiCTR's nn.Linear has one)")
    dense_features: Literal["mlp", "per_feature"] = Field(
        "mlp", description="mlp: dense_embeddings vectors through bottom_mlp (the paper); per_feature: e_k = v_k x_k "
                           "per dense feature, n_0 = F + num_dense (FuxiCTR's numeric embedding); dense_embeddings "
                           "and bottom_mlp stay at their defaults")
    dense_embeddings: PositiveInt = Field(1, description="dense_features: mlp: embeddings made from the dense features")
    bottom_mlp: list[PositiveInt] = Field(default_factory=lambda: [64],
                                          description="dense_features: mlp: hidden widths dense → embeddings")
    top_mlp: list[PositiveInt] = Field(default_factory=lambda: [512, 512, 1], min_length=1)
    top_batchnorm: bool = Field(False, description="BatchNorm1d after every hidden Linear of the top MLP, before its "
                                                   "ReLU (FuxiCTR's mlp_batch_norm)")
    init: InitOption = Field("torch", description="dense Linears: torch (PyTorch's default), xavier_normal weights and "
                                                  "zero biases (FuxiCTR) or he_normal; Y keeps y_init_std")

    _top_ends_in_logit = field_validator("top_mlp")(logit_mlp)

    @model_validator(mode="after")
    def _per_feature_has_no_mlp(self) -> WukongOptions:
        if self.dense_features == "per_feature" and (self.dense_embeddings != 1 or self.bottom_mlp != [64]):
            raise ValueError("dense_embeddings and bottom_mlp are unused with dense_features: per_feature (each dense "
                             "feature is its own embedding); remove them, or set dense_features: mlp")
        return self
