"""The retrieval task: item lookups through any compressor, the sampled softmax and catalogue scores by
hand, popularity's counts, history exclusion, validation across task families, and whole runs through
``dlrs-bench run`` on synthetic sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dlrs_bench.cli import app
from dlrs_bench.compression.base import build_embeddings
from dlrs_bench.config.schema import validate_scenario
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.registry import COMPRESSORS
from dlrs_bench.sequential.batches import SeqBatch
from dlrs_bench.sequential.encoder_options import SASRecOptions
from dlrs_bench.sequential.model_options import SASRecModelOptions
from dlrs_bench.sequential.retrieval import MASKED, Popularity, SequentialRetrieval, lookup
from dlrs_bench.sequential.sasrec import SASRecEncoder
from dlrs_bench.sequential.task import excluded_items

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D = 30, 8
CPU = torch.device("cpu")


def table(kind: str = "none", **options) -> torch.nn.Module:
    compressor = COMPRESSORS.get(kind).Options(kind=kind, **options)
    torch.manual_seed(0)
    return build_embeddings([SparseFeature("item", N)], D, compressor, CPU)


def batch() -> SeqBatch:
    """Two histories (lengths 3 and 1), their next items at every position and the times."""
    return SeqBatch(items=torch.tensor([[4, 9, 2], [7, 0, 0]]), timestamps=torch.tensor([[10, 20, 30], [5, 0, 0]]),
                    lengths=torch.tensor([3, 1]), users=torch.tensor([0, 1]),
                    targets=torch.tensor([[9, 2, 11], [3, 0, 0]]), next_time=torch.tensor([40, 8]),
                    target=torch.tensor([11, 3]), seen_values=torch.tensor([4, 9, 2, 7]),
                    seen_offsets=torch.tensor([0, 3, 4]))


def model(negatives: str = "shared", similarity: str = "cosine") -> SequentialRetrieval:
    options = SASRecModelOptions(embedding_dim=D, max_sequence_length=4, num_negatives=5, negatives=negatives,
                                 similarity=similarity, input_dropout=0, dropout=0)
    torch.manual_seed(1)
    encoder = SASRecEncoder(SASRecOptions(input_dropout=0, dropout=0), D, 5)
    return SequentialRetrieval(table(), encoder, options, N).eval()


def test_a_lookup_is_one_row_per_id_through_any_compressor():
    full = table()
    ids = torch.tensor([[3, 0], [29, 3]])
    torch.testing.assert_close(lookup(full, ids), full.embedding_bags["t_item"].weight[ids])
    hashed = table("hashing", ratio=3)  # 10 rows: id x → row x mod 10
    rows = hashed.ebc.embedding_bags["t_item"].weight
    torch.testing.assert_close(lookup(hashed, ids), rows[ids % 10])


@pytest.mark.parametrize("negatives", ["shared", "per_position"])
def test_the_loss_is_the_sampled_softmax_of_every_next_item(negatives):
    """Summed over the positions (the step divides by the global batch's positions)."""
    net, b = model(negatives), batch()
    net.sampler.manual_seed(7)
    got = net.loss(b)
    u = net.states(b)[b.targets > 0]  # 4 positions: 3 of the first user, 1 of the second
    positive = torch.tensor([9, 2, 11, 3])
    weight = F.normalize(net.embeddings.embedding_bags["t_item"].weight, dim=-1)
    shape = (5,) if negatives == "shared" else (4, 5)
    drawn = torch.randint(1, N, shape, generator=torch.Generator().manual_seed(7))
    neg = weight[drawn]
    neg_logits = u @ neg.T if negatives == "shared" else torch.einsum("pd,pkd->pk", u, neg)
    clash = positive[:, None] == (drawn[None, :] if negatives == "shared" else drawn)
    logits = torch.cat([(u * weight[positive]).sum(-1, keepdim=True), neg_logits.masked_fill(clash, MASKED)], 1)
    want = F.cross_entropy(logits / 0.05, torch.zeros(4, dtype=torch.long), reduction="sum")
    torch.testing.assert_close(got, want)


def test_states_are_unit_vectors_and_score_the_whole_catalogue():
    net, b = model(), batch()
    states = net.states(b)
    torch.testing.assert_close(states[0].norm(dim=-1), torch.ones(3))
    catalogue = net.catalogue()
    assert catalogue.shape == (N, D)
    scores = net.scores(b, catalogue)
    want = torch.stack([states[0, 2], states[1, 0]]) @ catalogue.T  # the state after each whole history
    torch.testing.assert_close(scores, want)
    assert model(similarity="dot").states(b)[0].norm(dim=-1).sub(1).abs().max() > 1e-3


def test_the_next_items_time_reaches_the_encoder():
    """The encoder reads the predicted item's time at ``timestamps[b, lengths[b]]`` (HSTU's relative time
    bias): ``states`` puts ``next_time`` there, even in a row that fills the batch's width."""
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, lengths, timestamps):
            seen["timestamps"] = timestamps
            return x

    net = SequentialRetrieval(table(), Probe(), SASRecModelOptions(embedding_dim=D), N)
    net.states(batch())
    assert seen["timestamps"].tolist() == [[10, 20, 30, 40], [5, 8, 0, 0]]


def test_popularity_counts_training_targets_and_scores_by_count():
    pop, b = Popularity(N), batch()
    loss = pop.count(b)
    # before the batch every item has count 0: p = 1 / (N - 1) for each of the 4 targets
    assert float(loss) == pytest.approx(torch.log(torch.tensor(N - 1.0)).item())
    assert pop.counts[[9, 2, 11, 3]].tolist() == [1, 1, 1, 1] and pop.counts.sum() == 4
    second = pop.count(b)  # each target seen once before: p = 2 / (4 + N - 1)
    assert float(second) == pytest.approx(-torch.log(torch.tensor(2 / (4 + N - 1))).item(), rel=1e-6)
    assert pop.scores(b, None)[1, 9] == 2 and list(pop.parameters()) == []


def test_history_items_are_excluded_only_where_the_dataset_says_so():
    b = batch()
    mask = excluded_items(b, N, history=True)
    assert mask[0].nonzero().flatten().tolist() == [0, 2, 4, 9] and mask[1].nonzero().flatten().tolist() == [0, 7]
    assert excluded_items(b, N, history=False).nonzero().tolist() == [[0, 0], [1, 0]]


SEQ = {"name": "synthetic-sequences", "users": 600, "items": 300, "categories": 10, "mean_length": 20,
       "max_length": 60, "stay": 0.9, "drift": 0.0}


def scenario(**overrides):
    base = {"dataset": SEQ, "model": {"name": "sasrec", "embedding_dim": 16, "max_sequence_length": 30},
            "train": {"batch_size": 64, "max_epochs": 1}, "target": {"metric": "ndcg@10", "value": 0.5}}
    return validate_scenario({**base, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": {"name": "synthetic", "rows": 1000, "cardinalities": [10, 10]}},
     "model 'sasrec' serves the retrieval task, dataset 'synthetic' is ctr data"),
    ({"target": {"metric": "auc", "value": 0.7}}, "target.metric 'auc' is not reported by retrieval evaluations"),
    ({"target": {"metric": "ndcg@10", "value": 1.5}}, "target ndcg@10 must lie in (0, 1]"),
    ({"target": {"metric": "ndcg10", "value": 0.1}}, "unknown metric 'ndcg10'"),
    ({"dataset": {**SEQ, "shuffle": "blocks"}}, "shuffle: a CTR read order"),
])
def test_scenarios_that_mix_task_families_are_refused(overrides, message):
    spec, errors = scenario(**overrides)
    assert spec is None and message in str(errors), errors


def test_a_ctr_model_on_sequences_is_refused():
    spec, errors = scenario(model={"name": "dlrm"})
    assert spec is None and "model 'dlrm' serves the ctr task, dataset 'synthetic-sequences' is retrieval data" in str(
        errors)


@pytest.mark.slow
def test_run_trains_sequence_models_to_a_retrieval_target(tmp_path, monkeypatch):
    """``dlrs-bench run``: popularity, SASRec and HSTU on synthetic sequences whose next item mostly stays
    in the current category; every retrieval metric in ``metrics`` and the curve, and the learned models
    above the popularity floor."""
    monkeypatch.setenv("DLRS_BENCH_CACHE", str(tmp_path / "cache"))
    suite = {"name": "seq", "description": "retrieval run",
             "defaults": {"dataset": SEQ, "train": {"batch_size": 64, "lr": 0.005, "max_epochs": 20, "eval_every": 5,
                                                    "stop_at_target": False},
                          "target": {"metric": "ndcg@10", "value": 0.05}, "seeds": [0]},
             "matrix": {"model": [{"name": "popularity"},
                                  {"name": "sasrec", "embedding_dim": 16, "max_sequence_length": 30,
                                   "negatives": "shared"},
                                  {"name": "hstu", "embedding_dim": 16, "max_sequence_length": 30,
                                   "negatives": "shared"}]}}
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    results = {json.loads(p.read_text())["scenario"]["model"]["name"]: json.loads(p.read_text())
               for p in (tmp_path / "r").rglob("seed0.json")}
    assert set(results) == {"popularity", "sasrec", "hstu"}
    for name, r in results.items():
        assert r["status"] in ("reached", "not_reached"), (name, r.get("error"))
        assert set(r["metrics"]) >= {"hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr"}
        assert all(0 <= r["metrics"][k] <= 1 for k in ("hr@10", "ndcg@10", "mrr"))
        assert "ndcg@10" in r["eval_curve"][-1]
        assert r["dataset"]["task"] == "retrieval" and r["dataset"]["splits"]["val"]["samples"] == 600
    floor = results["popularity"]["best_metrics"]["ndcg@10"]
    assert results["popularity"]["model"]["total_params"] == 0
    for name in ("sasrec", "hstu"):
        assert results[name]["best_metrics"]["ndcg@10"] > floor + 0.04, (name, results[name]["best_metrics"], floor)
        assert results[name]["model"]["flops_per_sample"] > 0


@pytest.mark.parametrize("kind", ["none", "hashing", "qr", "memcom", "bch", "robe", "tt", "md"])
def test_every_compressor_serves_the_item_table(kind):
    """A sequence table is one bag per position: every compressor's lookup gives one vector per id, and a
    retrieval step trains through it (a finite loss and a gradient on the compressed parameters)."""
    n = 1000
    options = {} if kind == "none" else {"ratio": 4}
    compressor = COMPRESSORS.get(kind).Options(kind=kind, **options)
    torch.manual_seed(0)
    items = build_embeddings([SparseFeature("item", n)], D, compressor, CPU)
    ids = torch.tensor([[1, 999, 1], [500, 0, 7]])
    rows = lookup(items, ids)
    assert rows.shape == (2, 3, D)
    torch.testing.assert_close(rows[0, 0], rows[0, 2])  # the same id, the same vector
    net = SequentialRetrieval(items, SASRecEncoder(SASRecOptions(), D, 5),
                              SASRecModelOptions(embedding_dim=D, max_sequence_length=4, num_negatives=5,
                                                 negatives="shared"), n)
    loss = net.loss(batch())
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in items.parameters())


@pytest.mark.slow
def test_the_movielens_demo_reaches_its_target_above_popularity(tmp_path, monkeypatch):
    """``suites/sequential_movielens.yaml``'s HSTU (seed 0) and popularity on the bundled MovieLens: HSTU
    reaches NDCG@10 0.03 on val, popularity's floor is 0.0187 (README, Sequential recommendation)."""
    import yaml

    monkeypatch.setenv("DLRS_BENCH_CACHE", str(tmp_path / "cache"))
    demo = Path(__file__).resolve().parent.parent / "suites" / "sequential_movielens.yaml"
    suite = yaml.safe_load(demo.read_text())
    suite["matrix"]["model"] = [m for m in suite["matrix"]["model"] if m["name"] in ("hstu", "popularity")]
    suite["defaults"]["seeds"] = [0]
    path = tmp_path / "demo.yaml"
    path.write_text(json.dumps(suite))
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    best = {json.loads(p.read_text())["scenario"]["model"]["name"]: json.loads(p.read_text())
            for p in (tmp_path / "r").rglob("seed0.json")}
    assert best["popularity"]["best_metrics"]["ndcg@10"] == pytest.approx(0.0187, abs=5e-4)
    assert best["hstu"]["status"] == "reached" and best["hstu"]["best_metrics"]["ndcg@10"] >= 0.03


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one(tmp_path, monkeypatch):
    """``processes: 2``: each rank trains on half of every global batch (DDP over replicated tables, the loss the
    mean over the global batch's positions, the same shared negatives on every rank) and scores half of the
    evaluation samples (sums all-reduced): the same curve as one process, up to float summation order."""
    monkeypatch.setenv("DLRS_BENCH_CACHE", str(tmp_path / "cache"))
    dataset = {**SEQ, "users": 400}
    hstu = {"name": "hstu", "embedding_dim": 16, "max_sequence_length": 30, "negatives": "shared",
            "input_dropout": 0, "linear_dropout": 0}
    suite = {"name": "ranks", "description": "1 vs 2 ranks",
             "defaults": {"dataset": dataset, "train": {"batch_size": 64, "lr": 0.005, "max_epochs": 2,
                                                        "eval_every": 1, "stop_at_target": False},
                          "target": {"metric": "ndcg@10", "value": 0.9}, "seeds": [0]},
             "matrix": {"model": [{"name": "popularity"}, hstu], "processes": [1, 2]}}
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    runs = {(r["scenario"]["model"]["name"], r["scenario"].get("processes", 1)): r
            for r in (json.loads(p.read_text()) for p in (tmp_path / "r").rglob("seed0.json"))}
    assert runs[("popularity", 2)]["metrics"] == pytest.approx(runs[("popularity", 1)]["metrics"], rel=1e-12)
    one, two = runs[("hstu", 1)], runs[("hstu", 2)]
    assert two["distributed"]["world_size"] == 2 and one["timing"]["steps"] == two["timing"]["steps"]
    for a, b in zip(one["eval_curve"], two["eval_curve"]):
        assert b["samples"] == a["samples"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["ndcg@10"] == pytest.approx(a["ndcg@10"], abs=2e-3), (a, b)
