"""generative-recommenders' HSTU (paper and dlrmv4 forms) and SASRec against dlrs-bench's, layer by layer,
with copied weights.

Run with dlrs-bench's Python, given a git mirror of meta-recsys/generative-recommenders (the ``fetch``
of ``github:meta-recsys/generative-recommenders``, or any clone's ``.git``)::

    nice .venv/bin/python tools/gr_layers.py --git-dir /work/.mirror/meta-recsys+generative-recommenders/repo

The reference files are exported at ``--commit`` (default ``PINNED``) into a temporary directory with
``git archive`` and imported from there (torch, fbgemm_gpu's CPU ops and torchrec from this venv). Only
the pure-PyTorch paths run: the reference modules are told ``HammerKernel.PYTORCH``. Three imports the
CPU venv lacks are stubbed while the reference is imported, then removed from ``sys.modules``:

* ``triton``, ``triton.runtime``, ``triton.runtime.autotuner`` and ``generative_recommenders.ops.triton.*``
  (the GPU kernels: ``common.py`` and the ``ops/*.py`` dispatchers import them at module level);
* ``torchrec.modules.sorted_index_select`` (``ops/pytorch/pt_jagged.py`` imports a helper newer than
  torchrec 1.8; no op used here calls it).

Every stubbed name is an object that raises if called, so a stubbed kernel that ran would fail the
tool rather than pass it. torchrec and torch._dynamo are imported first so that torch never sees the
stub ``triton``.

What it compares, in float32, eval mode (no dropout), B = 4, random lengths (one full row), item
embeddings N(0, 1) with random padding content, increasing timestamps (gaps e^U(0, 14) seconds, so the
time buckets vary), d = 32 and 64 (``--dims``), 1 and 2 heads, 2 layers:

* paper form: the reference ``HSTU`` (``LearnablePositionalEmbeddingInputFeaturesPreprocessor``,
  ``SequentialTransductionUnitJagged``, ``RelativeBucketedTimeAndPositionBasedBias``) against
  ``HSTUEncoder(form="paper")``: the input encoding, each layer on the same input, and the whole
  encoder; once with S = max_len = 20 and once with S = 20 < max_len = 24 (the reference padded to
  24). As the reference's training data, position ``length`` holds the next item's timestamp.
* dlrmv4 form: ``HSTUPositionalEncoder`` + ``STULayer``s (``target_aware`` with no targets, as
  ``DlrmHSTU`` passes ``num_targets``; N = the batch's longest, as ``fx_infer_max_len``) against
  ``HSTUEncoder(form="dlrmv4")``;
* SASRec: the reference ``SASRec`` against ``SASRecEncoder``: the input encoding, each block, the encoder.

The reference's relative-bias weights, LayerNorm affines and biases start at 0.02-scale or at ones /
zeros; they are redrawn (N(0, 0.5²), 1 + N(0, 0.1²), N(0, 0.1²)) before copying so that every term
shows in the output. The output post-processor (L2 norm) is the task's, not the encoder's: the
reference models get ``nn.Identity``. Exit status 1 if a max |difference| exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import io
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlrs_bench.sequential.encoder_options import HSTUOptions, SASRecOptions  # noqa: E402
from dlrs_bench.sequential.hstu import HSTUEncoder  # noqa: E402
from dlrs_bench.sequential.sasrec import SASRecEncoder  # noqa: E402

#: generative-recommenders' main on 2026-07-22 ("Enable multirow concat/split 2D jagged kernels on H100").
PINNED = "db1bf8f2e8f6a92a738dafd52a245eafb25a222b"
#: The reference files the three encoders import (``ops/triton`` is stubbed, not exported).
EXPORTED = [
    "generative_recommenders/__init__.py",
    "generative_recommenders/common.py",
    "generative_recommenders/ops/utils.py",
    "generative_recommenders/ops/layer_norm.py",
    "generative_recommenders/ops/mm.py",
    "generative_recommenders/ops/jagged_tensors.py",
    "generative_recommenders/ops/position.py",
    "generative_recommenders/ops/hstu_attention.py",
    "generative_recommenders/ops/hstu_compute.py",
    "generative_recommenders/ops/pytorch",
    "generative_recommenders/modules/__init__.py",
    "generative_recommenders/modules/stu.py",
    "generative_recommenders/modules/positional_encoder.py",
    "generative_recommenders/research/modeling",
    "generative_recommenders/research/rails/similarities/module.py",
]
#: The reference classes used, by module.
REFERENCE = {
    "HammerKernel": "generative_recommenders.common",
    "HammerModule": "generative_recommenders.common",
    "HSTUPositionalEncoder": "generative_recommenders.modules.positional_encoder",
    "STULayer": "generative_recommenders.modules.stu",
    "STULayerConfig": "generative_recommenders.modules.stu",
    "STUStack": "generative_recommenders.modules.stu",
    "LocalEmbeddingModule": "generative_recommenders.research.modeling.sequential.embedding_modules",
    "HSTU": "generative_recommenders.research.modeling.sequential.hstu",
    "LearnablePositionalEmbeddingInputFeaturesPreprocessor":
        "generative_recommenders.research.modeling.sequential.input_features_preprocessors",
    "SASRec": "generative_recommenders.research.modeling.sequential.sasrec",
}
STUBBED_EXACT = {"triton", "triton.runtime", "triton.runtime.autotuner", "torchrec.modules.sorted_index_select"}
STUBBED_PREFIX = "generative_recommenders.ops.triton"


class _Unavailable:
    """A stubbed name: raises if the reference ever calls it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.name} is a stub of tools/gr_layers.py (a GPU or newer-torchrec path ran)")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the stubbed modules: every public attribute is an ``_Unavailable``."""

    @staticmethod
    def stubbed(name: str) -> bool:
        return name in STUBBED_EXACT or name == STUBBED_PREFIX or name.startswith(STUBBED_PREFIX + ".")

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if self.stubbed(name) else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(attr: str) -> _Unavailable:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Unavailable(f"{spec.name}.{attr}")

        module.__getattr__ = attribute  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_reference(git_dir: str, commit: str, into: Path) -> types.SimpleNamespace:
    """Export ``EXPORTED`` at ``commit`` into ``into`` and import the reference classes."""
    archive = subprocess.run(["git", "--git-dir", git_dir, "archive", commit, *EXPORTED], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    import torch._dynamo  # noqa: F401  (before the stub triton exists)
    import torchrec  # noqa: F401
    finder = _StubFinder()
    sys.path.insert(0, str(into))
    sys.meta_path.insert(0, finder)
    try:
        found = {name: getattr(importlib.import_module(module), name) for name, module in REFERENCE.items()}
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if finder.stubbed(n)]:
            del sys.modules[name]
    return types.SimpleNamespace(**found)


# ---------------------------------------------------------------- data


def make_batch(dim: int, s: int, width: int, gen: torch.Generator, full: bool,
               max_log_gap: float = 14.0) -> dict[str, torch.Tensor]:
    """B = 4 rows of ``width`` positions (the reference's padded width; dlrs-bench sees the first ``s``):
    lengths in [1, s] (``full``: the first row has s, else all < s so that position ``length`` holds
    the next item's timestamp), x N(0, 1) everywhere, timestamps increasing by e^U(0, max_log_gap) s up
    to position ``length`` and 0 after it (research/modeling/sequential/features.py's layout)."""
    b = 4
    lengths = torch.randint(1, s if full else s - 1, (b,), generator=gen)
    lengths[0] = s if full else s - 1
    x = torch.randn(b, width, dim, generator=gen)
    gaps = torch.exp(torch.rand(b, width, generator=gen) * max_log_gap).long() + 1
    timestamps = 1_000_000_000 + gaps.cumsum(1)
    positions = torch.arange(width)
    timestamps = torch.where(positions <= lengths.unsqueeze(1), timestamps, 0)
    ids = (positions < lengths.unsqueeze(1)).long()
    return {"lengths": lengths, "x": x, "timestamps": timestamps, "ids": ids}


def jagged(padded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    return torch.ops.fbgemm.dense_to_jagged(padded, [offsets])[0], offsets


def valid_rows(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return jagged(padded.contiguous(), lengths)[0]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def redraw(module: nn.Module) -> None:
    """Redraw the reference's small or constant parameters so that every term shows (module docstring)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "_pos_w" in name or "_ts_w" in name:
                p.normal_(std=0.5)
            elif "norm_weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif "norm_bias" in name or "beta" in name or name.endswith("_o.bias"):
                p.normal_(std=0.1)


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


# ---------------------------------------------------------------- the three encoders


def check_paper(ref: Any, dim: int, heads: int, s: int, max_len: int, gen: torch.Generator) -> list[tuple[str, float]]:
    """The paper form, reference padded to ``max_len``, dlrs-bench on ``s`` positions."""
    head_dim = dim // heads
    model = quiet(
        ref.HSTU, max_sequence_len=max_len - 1, max_output_len=1, embedding_dim=dim, num_blocks=2, num_heads=heads,
        linear_dim=head_dim, attention_dim=head_dim, normalization="rel_bias", linear_config="uvqk",
        linear_activation="silu", linear_dropout_rate=0.2, attn_dropout_rate=0.0,
        embedding_module=quiet(ref.LocalEmbeddingModule, num_items=10, item_embedding_dim=dim),
        similarity_module=nn.Identity(),
        input_features_preproc_module=ref.LearnablePositionalEmbeddingInputFeaturesPreprocessor(max_len, dim, 0.2),
        output_postproc_module=nn.Identity(), verbose=False).eval()
    redraw(model)
    ours = HSTUEncoder(HSTUOptions(num_heads=heads), dim, max_len).eval()
    with torch.no_grad():
        ours.inputs.positions.weight.copy_(model._input_features_preproc._pos_emb.weight)
        for mine, theirs in zip(ours.layers, model._hstu._attention_layers):
            mine.uvqk.weight.copy_(theirs._uvqk.t())
            mine.out.load_state_dict(theirs._o.state_dict())
            mine.bias.position.copy_(theirs._rel_attn_bias._pos_w)
            mine.bias.time.copy_(theirs._rel_attn_bias._ts_w)
    batch = make_batch(dim, s, max_len, gen, full=s == max_len)
    lengths, x, ts, ids = batch["lengths"], batch["x"], batch["timestamps"], batch["ids"]
    rows: list[tuple[str, float]] = []
    with torch.no_grad():
        _, theirs_in, _ = model._input_features_preproc(lengths, ids, x, {"timestamps": ts})
        valid = (torch.arange(s) < lengths.unsqueeze(1)).unsqueeze(-1)
        rows.append(("input encoding", max_diff(ours.inputs(x[:, :s], valid), theirs_in[:, :s])))
        h = theirs_in
        mask = 1.0 - model._attn_mask.float()
        for i, (mine, theirs) in enumerate(zip(ours.layers, model._hstu._attention_layers)):
            hj, offsets = jagged(h, lengths)
            theirs_out, _ = theirs(x=hj, x_offsets=offsets, all_timestamps=ts, invalid_attn_mask=mask)
            mine_out = mine(h[:, :s], ts[:, :s])
            rows.append((f"layer {i}", max_diff(valid_rows(mine_out, lengths), theirs_out)))
            h = torch.ops.fbgemm.jagged_to_padded_dense(theirs_out, [offsets], [max_len], 0.0)
        theirs_all = model.generate_user_embeddings(lengths, ids, x, {"timestamps": ts})[0]
        rows.append(("encoder", max_diff(ours(x[:, :s], lengths, ts[:, :s]), theirs_all[:, :s])))
    rows.append(("parameters (ours - theirs)", float(count(ours) - count(model) + count(model._embedding_module))))
    return rows


def check_dlrmv4(ref: Any, dim: int, heads: int, s: int, gen: torch.Generator) -> list[tuple[str, float]]:
    """The dlrmv4 form. The reference's PyTorch input encoding caps the time buckets at
    ``ts_embeddings.size(1) - 1`` = d - 1 (pt_position.py; its Triton kernel, which trains on GPUs, at
    ``shape[0] - 1`` = 2048, dlrs-bench's): with large gaps the two differ by design, so the encoder is
    compared on gaps whose buckets stay below d - 1, and the large-gap batch against dlrs-bench built with
    ``time_buckets = d - 1``."""
    head_dim = dim // heads
    encoder = ref.HSTUPositionalEncoder(num_position_buckets=8192, num_time_buckets=2048, embedding_dim=dim,
                                        contextual_seq_len=0, is_inference=False)
    config = ref.STULayerConfig(embedding_dim=dim, num_heads=heads, hidden_dim=head_dim, attention_dim=head_dim,
                                output_dropout_ratio=0.2, causal=True, target_aware=True, contextual_seq_len=0)
    stack = ref.STUStack([ref.STULayer(config, is_inference=False) for _ in range(2)], is_inference=False)
    for m in [*encoder.modules(), *stack.modules()]:
        if isinstance(m, ref.HammerModule):
            m._hammer_kernel = ref.HammerKernel.PYTORCH
    encoder.eval()
    stack.eval()
    redraw(stack)

    def ours_copy(time_buckets: int | None) -> HSTUEncoder:
        ours = HSTUEncoder(HSTUOptions(form="dlrmv4", num_heads=heads, time_buckets=time_buckets), dim, s).eval()
        with torch.no_grad():
            ours.inputs.positions.weight.copy_(encoder._position_embeddings_weight)
            ours.inputs.times.weight.copy_(encoder._timestamp_embeddings_weight[: ours.inputs.times.num_embeddings])
            for mine, theirs in zip(ours.layers, stack._stu_layers):
                mine.input_norm.weight.copy_(theirs._input_norm_weight)
                mine.input_norm.bias.copy_(theirs._input_norm_bias)
                mine.uvqk.weight.copy_(theirs._uvqk_weight.t())
                mine.uvqk.bias.copy_(theirs._uvqk_beta)
                mine.output_norm.weight.copy_(theirs._output_norm_weight)
                mine.output_norm.bias.copy_(theirs._output_norm_bias)
                mine.out.weight.copy_(theirs._output_weight.t())
        return ours

    ours, ours_capped = ours_copy(None), ours_copy(dim - 1)
    rows: list[tuple[str, float]] = []
    for gaps, model in [("small gaps", ours), ("large gaps, d - 1 buckets", ours_capped),
                        ("large gaps, 2048 buckets", ours)]:
        batch = make_batch(dim, s, s, gen, full=True, max_log_gap=5.0 if gaps == "small gaps" else 14.0)
        lengths, x, ts = batch["lengths"], batch["x"], batch["timestamps"]
        n = int(lengths.max())
        no_targets = torch.zeros_like(lengths)
        with torch.no_grad():
            xj, offsets = jagged(x, lengths)
            tsj = jagged(ts.unsqueeze(-1), lengths)[0].squeeze(-1)
            theirs_h = encoder(max_seq_len=n, seq_lengths=lengths, seq_offsets=offsets, seq_timestamps=tsj,
                               seq_embeddings=xj, num_targets=no_targets)
            valid = (torch.arange(s) < lengths.unsqueeze(1)).unsqueeze(-1)
            mine_h = valid_rows(model.inputs(x, lengths, ts, valid), lengths)
            if gaps.endswith("2048 buckets"):
                rows.append((f"input encoding ({gaps}) [info]", max_diff(mine_h, theirs_h)))
                continue
            rows.append((f"input encoding ({gaps})", max_diff(mine_h, theirs_h)))
            for i, (mine, theirs) in enumerate(zip(model.layers, stack._stu_layers)):
                out = theirs(x=theirs_h, x_lengths=lengths, x_offsets=offsets, max_seq_len=n, num_targets=no_targets)
                h = torch.ops.fbgemm.jagged_to_padded_dense(theirs_h, [offsets], [s], 0.0)
                rows.append((f"layer {i} ({gaps})", max_diff(valid_rows(mine(h, n), lengths), out)))
                theirs_h = out
            rows.append((f"encoder ({gaps})", max_diff(valid_rows(model(x, lengths, ts), lengths), theirs_h)))
    rows.append(("parameters (ours - theirs)", float(count(ours) - count(encoder) - count(stack))))
    return rows


def check_sasrec(ref: Any, dim: int, heads: int, s: int, gen: torch.Generator) -> list[tuple[str, float]]:
    model = quiet(
        ref.SASRec, max_sequence_len=s - 1, max_output_len=1, embedding_dim=dim, num_blocks=2, num_heads=heads,
        ffn_hidden_dim=dim, ffn_activation_fn="relu", ffn_dropout_rate=0.2,
        embedding_module=quiet(ref.LocalEmbeddingModule, num_items=10, item_embedding_dim=dim),
        similarity_module=nn.Identity(),
        input_features_preproc_module=ref.LearnablePositionalEmbeddingInputFeaturesPreprocessor(s, dim, 0.2),
        output_postproc_module=nn.Identity()).eval()
    ours = SASRecEncoder(SASRecOptions(num_heads=heads), dim, s).eval()
    with torch.no_grad():
        ours.inputs.positions.weight.copy_(model._input_features_preproc._pos_emb.weight)
        for mine, attention, ffn in zip(ours.blocks, model.attention_layers, model.forward_layers):
            mine.attention.load_state_dict(attention.state_dict())
            for i in (0, 3):
                mine.ffn.net[i].weight.copy_(ffn._conv1d[i].weight.squeeze(-1))
                mine.ffn.net[i].bias.copy_(ffn._conv1d[i].bias)
    batch = make_batch(dim, s, s, gen, full=True)
    lengths, x, ts, ids = batch["lengths"], batch["x"], batch["timestamps"], batch["ids"]
    rows: list[tuple[str, float]] = []
    with torch.no_grad():
        _, h, valid_mask = model._input_features_preproc(lengths, ids, x, {"timestamps": ts})
        valid = valid_mask.bool()
        rows.append(("input encoding", max_diff(ours.inputs(x, valid), h)))
        future = torch.ones(s, s, dtype=torch.bool).triu(1)
        for i, block in enumerate(ours.blocks):
            out = model._run_one_layer(i, h.clone(), valid_mask)
            rows.append((f"block {i}", max_diff(block(h, valid, future), out)))
            h = out
        theirs_all = model.generate_user_embeddings(lengths, ids, x, {"timestamps": ts})
        rows.append(("encoder", max_diff(ours(x, lengths), theirs_all)))
    rows.append(("parameters (ours - theirs)", float(count(ours) - count(model) + count(model._embedding_module))))
    return rows


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="git directory of meta-recsys/generative-recommenders")
    parser.add_argument("--commit", default=PINNED)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        ref = import_reference(args.git_dir, args.commit, Path(tmp))
        print(f"generative-recommenders {args.commit}; float32, B = 4, 2 layers; max |ours - reference|")
        for dim in args.dims:
            for heads in (1, 2):
                gen = torch.Generator().manual_seed(args.seed)
                torch.manual_seed(args.seed)
                cases = [
                    ("hstu paper S=max_len=20", check_paper(ref, dim, heads, 20, 20, gen)),
                    ("hstu paper S=20 max_len=24", check_paper(ref, dim, heads, 20, 24, gen)),
                    ("hstu dlrmv4 S=20", check_dlrmv4(ref, dim, heads, 20, gen)),
                    ("sasrec S=20", check_sasrec(ref, dim, heads, 20, gen)),
                ]
                for case, rows in cases:
                    for what, diff in rows:
                        if what.endswith("[info]"):
                            bad = False
                        else:
                            bad = diff > args.tolerance if not what.startswith("parameters") else diff != 0
                        failed |= bad
                        value = f"{int(diff):d}" if what.startswith("parameters") else f"{diff:.2e}"
                        print(f"d={dim:<3d} heads={heads}  {case:<27s} {what:<50s} {value:>9s}"
                              f"{'  > tolerance' if bad else ''}")
    print("FAIL" if failed else f"all within {args.tolerance:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
