"""The sequence encoders (dlrs_bench/sequential/hstu.py, sasrec.py): causality, padding, the formulas
against hand-written one-layer versions, time buckets, FLOP and parameter counts by hand. The check
against generative-recommenders' own code is tools/gr_layers.py (run here when its mirror is present)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from dlrs_bench.sequential.encoder_options import HSTUOptions, SASRecOptions
from dlrs_bench.sequential.hstu import HSTUEncoder, dlrmv4_time_bucket, paper_time_bucket
from dlrs_bench.sequential.sasrec import SASRecEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
#: Where the ``fetch`` tool puts generative-recommenders' mirror; GR_GIT_DIR overrides.
GR_GIT_DIR = os.environ.get("GR_GIT_DIR", "/work/.mirror/meta-recsys+generative-recommenders/repo")

NO_DROPOUT = {"input_dropout": 0.0, "linear_dropout": 0.0}


def batch(b: int = 3, s: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x N(0, 1), lengths [s, s - 2, 1, ...], timestamps increasing by 1 s .. 1 day."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([s, s - 2, 1, s - 1][:b])
    x = torch.randn(b, s, d, generator=gen, dtype=torch.float64)
    timestamps = 1_700_000_000 + torch.randint(1, 86_400, (b, s), generator=gen).cumsum(1)
    return x, lengths, timestamps


def encoders(d: int = 8, max_len: int = 8, **hstu: object) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "paper": HSTUEncoder(HSTUOptions(num_heads=2, **hstu), d, max_len).double().eval(),
        "dlrmv4": HSTUEncoder(HSTUOptions(form="dlrmv4", num_heads=2, **hstu), d, max_len).double().eval(),
        "sasrec": SASRecEncoder(SASRecOptions(num_heads=2), d, max_len).double().eval(),
    }


def ln(v: torch.Tensor, eps: float) -> torch.Tensor:
    return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + eps)


def silu(z: torch.Tensor) -> torch.Tensor:
    return z * torch.sigmoid(z)


# ---------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", ["paper", "dlrmv4", "sasrec"])
def test_outputs_before_a_position_ignore_every_item_from_it_on(name):
    model = encoders()[name]
    x, lengths, ts = batch()
    before = model(x, lengths, ts)
    k = 3
    x2, ts2 = x.clone(), ts.clone()
    x2[:, k:] = torch.randn_like(x2[:, k:])
    if name != "dlrmv4":  # the paper form reads t_k at position k - 1; dlrmv4 reads t_{L-1} everywhere
        ts2[:, k + 1:] += 12_345
    after = model(x2, lengths, ts2)
    assert torch.equal(after[:, :k], before[:, :k])
    assert not torch.allclose(after[0, k], before[0, k])


def test_paper_form_query_time_is_the_next_items_timestamp():
    """Position i's time bias reads t_{i+1} (the reference's layout: the target's time at ``length``)."""
    model = encoders()["paper"]
    x, lengths, ts = batch()
    before = model(x, lengths, ts)
    ts2 = ts.clone()
    ts2[:, 3] += 100_000
    after = model(x, lengths, ts2)
    assert torch.equal(after[:, :2], before[:, :2])
    assert not torch.allclose(after[0, 2], before[0, 2])  # t_3 is position 2's query time
    row = 1  # length 4: t_4 (padding position 4) is its last position's query time, t_5 is nothing
    ts3 = ts.clone()
    ts3[row, 4] += 100_000
    assert not torch.allclose(model(x, lengths, ts3)[row, 3], before[row, 3])
    ts3 = ts.clone()
    ts3[row, 5] += 100_000
    assert torch.equal(model(x, lengths, ts3), before)


def test_dlrmv4_form_counts_positions_from_the_end_and_times_from_the_last_item():
    """HSTUPositionalEncoder: position L - i and time t_{L-1} - t_i, so the last item moves every input."""
    model = encoders()["dlrmv4"]
    x, lengths, ts = batch()
    before = model(x, lengths, ts)
    ts2 = ts.clone()
    ts2[0, 5] += 1_000_000  # row 0's last item
    assert not torch.allclose(model(x, lengths, ts2)[0, 0], before[0, 0])
    shorter = model(x, torch.tensor([5, 4, 1]), ts)
    assert not torch.allclose(shorter[0, 0], before[0, 0])


@pytest.mark.parametrize("name", ["paper", "dlrmv4", "sasrec"])
def test_padding_rows_are_zero_and_their_content_is_ignored(name):
    model = encoders()[name]
    x, lengths, ts = batch()
    out = model(x, lengths, ts)
    valid = torch.arange(6) < lengths.unsqueeze(1)
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))
    assert out[valid].abs().min() > 0
    x2, ts2 = x.clone(), ts.clone()
    x2[~valid] = float("nan")
    ts2[torch.arange(6) > lengths.unsqueeze(1)] = 7  # > length: position ``length`` is the paper's query time
    out2 = model(x2, lengths, ts2)
    assert torch.equal(out2, out)


@pytest.mark.parametrize("name", ["paper", "dlrmv4", "sasrec"])
def test_gradients_reach_every_parameter_and_only_the_valid_inputs(name):
    """(SASRec's key bias adds q·b_k to every score of a row: softmax ignores it, its gradient is 0.)"""
    model = encoders()[name].train()
    x, lengths, ts = batch()
    x.requires_grad_(True)
    model(x, lengths, ts).pow(2).sum().backward()
    for pname, p in model.named_parameters():
        grad = p.grad if not pname.endswith("in_proj_bias") else torch.cat([p.grad[:8], p.grad[16:]])
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, pname
    valid = torch.arange(6) < lengths.unsqueeze(1)
    assert torch.equal(x.grad[~valid], torch.zeros_like(x.grad[~valid]))
    assert (x.grad[valid].abs().sum(-1) > 0).all()


def test_the_two_hstu_forms_are_different_functions():
    torch.manual_seed(0)
    paper = HSTUEncoder(HSTUOptions(num_layers=1, **NO_DROPOUT), 8, 8).double().eval()
    dlrmv4 = HSTUEncoder(HSTUOptions(num_layers=1, form="dlrmv4", **NO_DROPOUT), 8, 8).double().eval()
    x, lengths, ts = batch()
    assert not torch.allclose(paper(x, lengths, ts), dlrmv4(x, lengths, ts), atol=1e-2)
    assert {n for n, _ in paper.named_parameters()} != {n for n, _ in dlrmv4.named_parameters()}
    assert dlrmv4.layers[0].out.in_features == 3 * paper.layers[0].out.in_features  # [U, a, U ⊙ LN(a)]


def test_timestamps_are_required_only_with_relative_bias():
    x, lengths, _ = batch()
    for name, model in encoders(relative_bias=False).items():
        assert model(x, lengths, None).shape == x.shape, name
        if name != "sasrec":
            assert not any("time" in n or "bias.position" in n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="needs timestamps"):
        encoders()["paper"](x, lengths, None)
    with pytest.raises(ValueError, match="at most 4"):
        HSTUEncoder(HSTUOptions(), 8, 4)(x, lengths, None)


def test_options_defaults_and_refusals():
    paper, dlrmv4 = HSTUOptions(), HSTUOptions(form="dlrmv4")
    assert (paper.num_layers, paper.num_heads, paper.input_dropout, paper.linear_dropout, paper.attn_dropout) == (
        2, 1, 0.2, 0.2, 0.0)
    assert (paper.num_time_buckets(), dlrmv4.num_time_buckets(), dlrmv4.num_position_buckets()) == (128, 2048, 8192)
    assert HSTUOptions(num_heads=2).qk_dim(50) == HSTUOptions(num_heads=2).v_dim(50) == 25  # the -large gin
    assert HSTUOptions(dqk=7).qk_dim(50) == 7
    with pytest.raises(ValidationError, match="position_buckets"):
        HSTUOptions(position_buckets=16)
    with pytest.raises(ValidationError):
        HSTUOptions(form="softmax")
    sasrec = SASRecOptions()
    assert (sasrec.num_layers, sasrec.num_heads, sasrec.hidden_dim(50), sasrec.dropout) == (2, 1, 50, 0.2)
    with pytest.raises(ValueError, match="must divide"):
        SASRecEncoder(SASRecOptions(num_heads=3), 8, 8)


# ---------------------------------------------------------------- formulas by hand


@pytest.mark.parametrize(("delta", "bucket"), [
    (0, 0), (1, 0), (-1, 0), (2, 2),  # ln 2 / 0.301 = 2.30
    (60, 13), (-60, 13),  # |Δ|: ln 60 / 0.301 = 13.6
    (3_600, 27), (86_400, 37), (31_536_000, 57),  # an hour, a day (37.8), a year (57.4)
    (10**18, 128),  # ln 1e18 / 0.301 = 137.7, clipped
])
def test_paper_time_buckets(delta, bucket):
    assert paper_time_bucket(torch.tensor([delta]), 128).item() == bucket


@pytest.mark.parametrize(("delta", "bucket"), [
    (-5, 0), (0, 0), (59, 0), (60, 1), (239, 1), (240, 2),  # ⌊√(Δ / 60)⌋
    (3_600, 7), (86_400, 37), (10**9, 2048),  # √60 = 7.7, √1440 = 37.9, √(1.7e7) clipped
])
def test_dlrmv4_time_buckets(delta, bucket):
    assert dlrmv4_time_bucket(torch.tensor([delta]), 2048).item() == bucket


def hand_timestamps() -> torch.Tensor:
    """Gaps far from every bucket boundary: 100 s, 5,000 s, 90,000 s, 400 s (row 0); row 1 has length 2."""
    return torch.tensor([[0, 100, 5_100, 95_100, 95_500], [0, 7_000, 7_300, 0, 0]]) + 1_000_000_000


def test_paper_form_by_hand():
    """One layer, one head, d = d_qk = d_v = 4, max_len 6, S 5: every term written out per position."""
    torch.manual_seed(1)
    d, max_len = 4, 6
    model = HSTUEncoder(HSTUOptions(num_layers=1, **NO_DROPOUT), d, max_len).double().eval()
    layer = model.layers[0]
    with torch.no_grad():
        layer.bias.position.normal_()
        layer.bias.time.normal_()
    x = torch.randn(2, 5, d, dtype=torch.float64)
    lengths, ts = torch.tensor([5, 2]), hand_timestamps()
    out = model(x, lengths, ts)
    w = layer.uvqk.weight.detach().T
    w_pos, w_time = layer.bias.position.detach(), layer.bias.time.detach()
    for b in range(2):
        n = int(lengths[b])
        x0 = [x[b, i] * math.sqrt(d) + model.inputs.positions.weight[i].detach() for i in range(n)]
        u, v, q, k = zip(*(silu(ln(xi, 1e-6) @ w).split(d) for xi in x0))
        for i in range(n):
            query_time = int(ts[b, min(i + 1, 4)])
            a = torch.zeros(d, dtype=torch.float64)
            for j in range(i + 1):
                bucket = min(int(math.log(max(abs(query_time - int(ts[b, j])), 1)) / 0.301), 128)
                a += silu(q[i] @ k[j] + w_pos[max_len - 1 + j - i] + w_time[bucket]) / max_len * v[j]
            expected = layer.out.weight.detach() @ (u[i] * ln(a, 1e-6)) + layer.out.bias.detach() + x0[i]
            torch.testing.assert_close(out[b, i], expected, rtol=0, atol=1e-12)
        assert torch.equal(out[b, n:], torch.zeros_like(out[b, n:]))


def test_dlrmv4_form_by_hand():
    """One layer, one head, d = 4, 3 position and 5 time buckets (both clip), LayerNorm affines and the
    U/V/Q/K bias redrawn: the input encoding and the layer written out per position."""
    torch.manual_seed(2)
    d = 4
    options = HSTUOptions(num_layers=1, form="dlrmv4", position_buckets=3, time_buckets=5, **NO_DROPOUT)
    model = HSTUEncoder(options, d, 5).double().eval()
    layer = model.layers[0]
    with torch.no_grad():
        for p in [layer.input_norm.weight, layer.input_norm.bias, layer.uvqk.bias, layer.output_norm.weight,
                  layer.output_norm.bias]:
            p.normal_()
    x = torch.randn(2, 5, d, dtype=torch.float64)
    lengths, ts = torch.tensor([5, 2]), hand_timestamps()
    out = model(x, lengths, ts)
    n_div = 5  # max(lengths)
    pos, times = model.inputs.positions.weight.detach(), model.inputs.times.weight.detach()
    w, bias = layer.uvqk.weight.detach().T, layer.uvqk.bias.detach()
    g_in, b_in = layer.input_norm.weight.detach(), layer.input_norm.bias.detach()
    g_out, b_out = layer.output_norm.weight.detach(), layer.output_norm.bias.detach()
    for b in range(2):
        n = int(lengths[b])
        last = int(ts[b, n - 1])
        x0 = [x[b, i] * math.sqrt(d) + times[min(int(math.sqrt(max(last - int(ts[b, i]), 0) / 60)), 5)]
              + pos[min(n - i, 2)] for i in range(n)]
        u, v, q, k = zip(*(((ln(xi, 1e-6) * g_in + b_in) @ w + bias).split(d) for xi in x0))
        u = [silu(ui) for ui in u]
        for i in range(n):
            a = sum(silu(q[i] @ k[j] / math.sqrt(d)) / n_div * v[j] for j in range(i + 1))
            y = u[i] * (ln(a, 1e-6) * g_out + b_out)
            expected = layer.out.weight.detach() @ torch.cat([u[i], a, y]) + x0[i]
            torch.testing.assert_close(out[b, i], expected, rtol=0, atol=1e-12)
        assert torch.equal(out[b, n:], torch.zeros_like(out[b, n:]))


def test_sasrec_by_hand():
    """One block, 2 heads, d = 4, FFN 6: LN'd queries, raw keys/values, softmax over j ≤ i, residual on the
    normalised query, LN, point-wise FFN with its residual."""
    torch.manual_seed(3)
    d, heads, dh = 4, 2, 2
    model = SASRecEncoder(SASRecOptions(num_layers=1, num_heads=heads, ffn_dim=6, input_dropout=0.0, dropout=0.0),
                          d, 5).double().eval()
    block = model.blocks[0]
    x = torch.randn(2, 5, d, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    out = model(x, lengths)
    mha = block.attention
    wq, wk, wv = mha.in_proj_weight.detach().split(d)
    bq, bk, bv = mha.in_proj_bias.detach().split(d)
    lin1, lin2 = block.ffn.net[0], block.ffn.net[3]
    for b in range(2):
        n = int(lengths[b])
        x0 = x[b, :n] * 2 + model.inputs.positions.weight[:n].detach()
        q = ln(x0, 1e-8)
        qp, kp, vp = q @ wq.T + bq, x0 @ wk.T + bk, x0 @ wv.T + bv
        heads_out = []
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            scores = qp[:, cols] @ kp[:, cols].T / math.sqrt(dh)
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
            heads_out.append(torch.softmax(scores, -1) @ vp[:, cols])
        a = torch.cat(heads_out, -1) @ mha.out_proj.weight.detach().T + mha.out_proj.bias.detach()
        z = ln(q + a, 1e-8)
        expected = z + F.relu(z @ lin1.weight.detach().T + lin1.bias.detach()) @ lin2.weight.detach().T \
            + lin2.bias.detach()
        torch.testing.assert_close(out[b, :n], expected, rtol=0, atol=1e-12)
        assert torch.equal(out[b, n:], torch.zeros_like(out[b, n:]))


def test_flops_by_hand():
    """d 8, 2 heads of 4, one layer; lengths 3 and 1: 4 tokens, 3·4/2 + 1 = 7 causal pairs."""
    lengths = torch.tensor([3, 1])
    paper = HSTUEncoder(HSTUOptions(num_layers=1, num_heads=2), 8, 10)
    uvqk = 2 * 4 * 8 * (2 * 2 * (4 + 4))  # tokens × d × (2 d_v + 2 d_qk) H
    attention = 2 * 7 * 2 * (4 + 4)  # pairs × H × (d_qk for QKᵀ + d_v for AV)
    assert paper.flops(lengths) == uvqk + 2 * 4 * 8 * 8 + attention == 2784
    dlrmv4 = HSTUEncoder(HSTUOptions(num_layers=1, num_heads=2, form="dlrmv4"), 8, 10)
    assert dlrmv4.flops(lengths) == uvqk + 2 * 4 * 24 * 8 + attention == 3808  # W_o: [U, a, y] = 3 H d_v
    assert HSTUEncoder(HSTUOptions(num_layers=3, num_heads=2), 8, 10).flops(lengths) == 3 * 2784
    sasrec = SASRecEncoder(SASRecOptions(num_layers=1, num_heads=2, ffn_dim=16), 8, 10)
    assert sasrec.flops(lengths) == 2 * 4 * (4 * 8 * 8 + 2 * 8 * 16) + 2 * 7 * (8 + 8) == 4320
    assert sasrec.flops(torch.tensor([2, 0, 0])) == 2 * 2 * (4 * 64 + 2 * 128) + 2 * 3 * 16  # padding is free


def test_parameter_counts_by_hand():
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    # positions 10·8; U,V,Q,K 8·32 (no bias); W_o 8·8 + 8; relative bias 2·10 − 1 positions + 129 times
    assert count(HSTUEncoder(HSTUOptions(num_layers=1, num_heads=2), 8, 10)) == 80 + 256 + 72 + 19 + 129 == 556
    assert count(HSTUEncoder(HSTUOptions(num_layers=1, num_heads=2, relative_bias=False), 8, 10)) == 408
    # positions 16·8, times 9·8; LN 2·8; U,V,Q,K 8·32 + 32; LN 2·8; W_o 24·8 (no bias)
    dlrmv4 = HSTUEncoder(HSTUOptions(num_layers=1, num_heads=2, form="dlrmv4", position_buckets=16, time_buckets=8),
                         8, 10)
    assert count(dlrmv4) == 128 + 72 + 16 + 288 + 16 + 192 == 712
    # positions 10·8; in_proj 3·64 + 24; out_proj 64 + 8; FFN 8·16 + 16 + 16·8 + 8
    assert count(SASRecEncoder(SASRecOptions(num_layers=1, num_heads=2, ffn_dim=16), 8, 10)) == 80 + 288 + 280


# ---------------------------------------------------------------- the reference code


def test_against_generative_recommenders_when_its_mirror_is_here(tmp_path, monkeypatch):
    """tools/gr_layers.py's checks for d 32, 2 heads (the full run: all d and heads)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    if not Path(GR_GIT_DIR).is_dir():
        pytest.skip(f"no generative-recommenders mirror at {GR_GIT_DIR} (set GR_GIT_DIR); tools/gr_layers.py")
    spec = importlib.util.spec_from_file_location("gr_layers", ROOT / "tools" / "gr_layers.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    has_commit = subprocess.run(["git", "--git-dir", GR_GIT_DIR, "cat-file", "-e", tool.PINNED + "^{commit}"],
                                capture_output=True).returncode == 0
    if not has_commit:
        pytest.skip(f"the mirror at {GR_GIT_DIR} lacks the pinned commit {tool.PINNED}")
    ref = tool.import_reference(GR_GIT_DIR, tool.PINNED, tmp_path)
    gen = torch.Generator().manual_seed(0)
    rows = [*tool.check_paper(ref, 32, 2, 20, 24, gen), *tool.check_dlrmv4(ref, 32, 2, 20, gen),
            *tool.check_sasrec(ref, 32, 2, 20, gen)]
    for what, diff in rows:
        if what.startswith("parameters"):
            assert diff == 0, what
        elif not what.endswith("[info]"):
            assert diff <= 1e-5, what


def test_dlrmv4_flops_match_mlperfs_published_count():
    """MLPerf dlrmv4's configuration (3 STULayers, width 512, 4 heads, d_qk = d_v = 128) at S = 4096: its README
    (mlcommons/training PR 889, recommendation_v4/README.MD) counts 315.7 GFLOP per sample for forward plus
    backward — 3 × the forward of the UVQK and output GEMMs (77.3 + 58.0) and 3.5 × the causal attention's
    (180.4, S²/2 pairs); the forward count here, split the same way, gives the same total within 0.1%."""
    from dlrs_bench.sequential.hstu import HSTUEncoder, attention_flops

    options = HSTUOptions(form="dlrmv4", num_layers=3, num_heads=4, dqk=128, dv=128)
    encoder = HSTUEncoder(options, 512, 4096)
    lengths = torch.tensor([4096])
    forward = encoder.flops(lengths)
    attention = 3 * attention_flops(lengths, 4, 128, 128)
    gemms = forward - attention
    assert 3 * gemms / 1e9 == pytest.approx(77.3 + 58.0, rel=1e-3)
    assert 3.5 * attention / 1e9 == pytest.approx(180.4, rel=1e-3)
    assert (3 * gemms + 3.5 * attention) / 1e9 == pytest.approx(315.7, rel=1e-3)
