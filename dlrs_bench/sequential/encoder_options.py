"""Options of the sequence encoders (dlrs_bench/sequential/hstu.py, sasrec.py); no torch import.

Defaults are generative-recommenders' (meta-recsys/generative-recommenders) for MovieLens-1M:
``configs/ml-1m/hstu-sampled-softmax-n128-final.gin`` and ``sasrec-sampled-softmax-n128-final.gin``
(2 blocks, 1 head, d_qk = d_v = d = 50, dropout 0.2) with the code defaults they leave alone
(``research/modeling/sequential/encoder_utils.py``, ``hstu.py``, ``trainer/train.py``); the dlrmv4
form's bucket counts are ``modules/dlrm_hstu.py``'s (``HSTUPositionalEncoder(8192, 2048)``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from dlrs_bench.config.schema import StrictModel

#: A dropout probability.
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class HSTUOptions(StrictModel):
    """HSTU (dlrs_bench/sequential/hstu.py). ``form``: ``paper`` = the research code behind the paper's
    public-dataset tables (``SequentialTransductionUnitJagged``, relative position + time attention bias);
    ``dlrmv4`` = the current ``STULayer`` (MLPerf dlrmv4's), position and time embeddings on the input."""

    num_layers: PositiveInt = Field(2, description="ml-1m gin: hstu_encoder.num_blocks = 2")
    num_heads: PositiveInt = Field(1, description="ml-1m gin: hstu_encoder.num_heads = 1")
    dqk: PositiveInt | None = Field(
        None, description="query/key width per head; None: dim // num_heads (ml-1m gin: dqk = 50 = d, 1 head; "
                          "the -large gin: 25 = d / 2, 2 heads)")
    dv: PositiveInt | None = Field(
        None, description="value (U, V) width per head; None: dim // num_heads (ml-1m gin: dv = 50 = d)")
    form: Literal["paper", "dlrmv4"] = Field(
        "paper", description="paper: research/modeling/sequential/hstu.py; dlrmv4: modules/stu.py STULayer")
    relative_bias: bool = Field(
        True, description="use timestamps. paper: the relative position + time attention bias (hstu_encoder's "
                          "enable_relative_attention_bias = True; False drops both, as the reference); dlrmv4: "
                          "the time-since-query embedding on the input (False keeps the position embedding)")
    position_buckets: PositiveInt | None = Field(
        None, description="dlrmv4 only: rows of the input position table (None: 8192, dlrm_hstu.py); the paper "
                          "form's relative-position bias has 2 max_len - 1 entries")
    time_buckets: PositiveInt | None = Field(
        None, description="time buckets (the tables have one more row). None: paper 128 (hstu.py, num_buckets=128), "
                          "dlrmv4 2048 (dlrm_hstu.py)")
    input_dropout: Dropout = Field(
        0.2, description="after the input encoding (ml-1m gin: train_fn.dropout_rate = 0.2; dlrmv4: "
                         "DlrmHSTUConfig.hstu_input_dropout_ratio = 0.2)")
    linear_dropout: Dropout = Field(
        0.2, description="before the output projection (ml-1m gin: hstu_encoder.linear_dropout_rate = 0.2; dlrmv4: "
                         "hstu_linear_dropout_rate = 0.2)")
    attn_dropout: Dropout = Field(
        0.0, description="on the attention weights (hstu_encoder's attn_dropout_rate = 0.0; the paper-form "
                         "reference stores it but never applies it, STULayer passes 0 to hstu_mha)")

    @model_validator(mode="after")
    def _position_buckets_dlrmv4(self) -> HSTUOptions:
        if self.position_buckets is not None and self.form == "paper":
            raise ValueError("position_buckets is the dlrmv4 form's input table; the paper form's relative-position "
                             "bias has 2 max_len - 1 entries (remove it, or set form: dlrmv4)")
        return self

    def qk_dim(self, dim: int) -> int:
        return self.dqk or dim // self.num_heads

    def v_dim(self, dim: int) -> int:
        return self.dv or dim // self.num_heads

    def num_time_buckets(self) -> int:
        return self.time_buckets or (128 if self.form == "paper" else 2048)

    def num_position_buckets(self) -> int:
        return self.position_buckets or 8192


class SASRecOptions(StrictModel):
    """SASRec (dlrs_bench/sequential/sasrec.py) as generative-recommenders'
    ``research/modeling/sequential/sasrec.py``."""

    num_layers: PositiveInt = Field(2, description="ml-1m gin: sasrec_encoder.num_blocks = 2")
    num_heads: PositiveInt = Field(1, description="ml-1m gin: sasrec_encoder.num_heads = 1; must divide dim")
    ffn_dim: PositiveInt | None = Field(
        None, description="point-wise FFN width; None: dim (ml-1m gin: ffn_hidden_dim = 50 = d)")
    ffn_activation: Literal["relu", "gelu"] = Field("relu", description="ml-1m gin: ffn_activation_fn = relu")
    input_dropout: Dropout = Field(
        0.2, description="after the position embedding (ml-1m gin: train_fn.dropout_rate = 0.2)")
    dropout: Dropout = Field(
        0.2, description="attention weights and both FFN outputs (ml-1m gin: ffn_dropout_rate = 0.2)")

    def hidden_dim(self, dim: int) -> int:
        return self.ffn_dim or dim
