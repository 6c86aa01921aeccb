"""Train FuxiCTR's model_zoo models on dlrs-bench's bundled MovieLens, same splits and features, and judge parity.

FuxiCTR runs in its own virtual environment and is never a dependency of dlrs-bench: the data go
from one to the other as CSV files. Five subcommands (``run`` is the default):

- ``zoo``: copy the models from a FuxiCTR git checkout (or mirror) into ``--dest`` (any Python; the
  models live only in FuxiCTR's GitHub ``model_zoo``, not in the pip package);
- ``export``: write dlrs-bench's MovieLens splits (train / val / test exactly as dlrs-bench reads
  them) as CSV files (dlrs-bench's Python: it imports ``dlrs_bench``);
- ``run``: export (through ``--dlrs-python``, every time: the data are always dlrs-bench's current
  ones), preprocess with FuxiCTR's FeatureProcessor, train every model for every seed, print a table
  and write a JSON file (FuxiCTR's Python);
- ``dlrs``: dlrs-bench's side: ``suites/fuxictr_match.yaml`` under the same protocol, with FuxiCTR's
  training options (its schedule, clipping, init, vocabularies) switched on, or some of them off
  (``--without``), run by ``dlrs-bench run`` (dlrs-bench's Python);
- ``table``: the side-by-side of both, judged in both directions (any Python).

The protocol is the same on both sides and given on the command line (``--embedding-dim``,
``--batch-size``, ``--lr``, ``--epochs``; default d = 16, batch 512, Adam lr 1e-3, 2 epochs), with the
validation AUC after every epoch and the best epoch's weights evaluated on valid and test. Every model
uses its ``<Model>_default`` template of the zoo's ``config/model_config.yaml`` with the protocol on top,
and FuxiCTR's own training: the learning rate ÷ 10 after an epoch whose validation AUC does not improve
(``--no-reduce-lr-on-plateau`` switches it off), gradient clipping at norm 10 (``--max-gradient-norm``).
Features as FuxiCTR does them: one embedding per id (categorical), a masked mean over the genres
(sequence, FuxiCTR's default encoder), one ``Linear(1, d, bias=False)`` per dense feature (numeric; the
values are dlrs-bench's, already standardised with train statistics). The vocabularies are FuxiCTR's:
the ids seen in train plus padding and OOV. The one change to FuxiCTR: the train split's shuffle is
seeded (see :func:`seeded_loader_class`), so that a seed gives the same run twice.

Reproduce (from the repository root)::

    python3.11 -m venv /tmp/fuxi-venv
    /tmp/fuxi-venv/bin/pip install torch==2.13.0 fuxictr==2.3.10 "polars<2"
    git clone https://github.com/reczoo/FuxiCTR /tmp/FuxiCTR
    python3 tools/fuxictr_compare.py zoo --git-dir /tmp/FuxiCTR/.git --rev 5c42ceb --dest /tmp/fuxi-zoo
    nice -n 10 /tmp/fuxi-venv/bin/python tools/fuxictr_compare.py --zoo /tmp/fuxi-zoo --seeds 0 1 2 \\
        --out build/fuxictr.json
    .venv/bin/python tools/fuxictr_compare.py dlrs --results build/fuxictr_match
    python3 tools/fuxictr_compare.py table --fuxictr build/fuxictr.json --results build/fuxictr_match

and under another protocol, the same flags on both sides (``table`` refuses runs of different protocols)::

    /tmp/fuxi-venv/bin/python tools/fuxictr_compare.py --zoo /tmp/fuxi-zoo --embedding-dim 32 --batch-size 1024 \\
        --lr 2e-3 --epochs 3 --out build/fuxictr_d32.json
    .venv/bin/python tools/fuxictr_compare.py dlrs --embedding-dim 32 --batch-size 1024 --lr 2e-3 --epochs 3 \\
        --results build/fuxictr_match_d32
    python3 tools/fuxictr_compare.py table --fuxictr build/fuxictr_d32.json --results build/fuxictr_match_d32

A subset of the variants can be run on its own (``--models WuKong --out build/fuxictr_wukong.json``)
and read beside the others (``table --fuxictr build/fuxictr.json build/fuxictr_wukong.json``).

(5c42ceb is the commit that set FuxiCTR's version to 2.3.10; GitHub has no v2.3.10 tag. fuxictr 2.3.10
reads CSV with polars' ``dtypes=``, which polars 2 removed.) The zoo can
also be named by the environment variable ``FUXICTR_ZOO``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import inspect
import io
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Zoo folders copied by ``zoo``, by model class.
ZOO_MODELS = {
    "DCNv2": "DCNv2",
    "DeepFM": "DeepFM/DeepFM_torch",
    "xDeepFM": "xDeepFM",
    "FiBiNET": "FiBiNET",
    "AutoInt": "AutoInt",
    "WuKong": "WuKong",
}

@dataclass(frozen=True)
class Protocol:
    """What both sides train with: embedding d, batch size, Adam's learning rate, epochs (one evaluation on
    valid after each, the best epoch's validation AUC reported) and seeds."""

    embedding_dim: int = 16
    batch_size: int = 512
    lr: float = 1e-3
    epochs: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)

    @classmethod
    def of(cls, args: argparse.Namespace) -> Protocol:
        return cls(args.embedding_dim, args.batch_size, args.lr, args.epochs, tuple(args.seeds))

    def fuxictr(self) -> dict[str, Any]:
        """The protocol as FuxiCTR's parameters, set over every template."""
        return {"embedding_dim": self.embedding_dim, "learning_rate": self.lr, "optimizer": "adam",
                "batch_size": self.batch_size, "epochs": self.epochs,
                "eval_steps": None,  # evaluate on valid once per epoch
                "monitor": "AUC", "monitor_mode": "max"}  # the templates monitor AUC - logloss; the best AUC

    def to_json(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "batch_size": self.batch_size, "lr": self.lr,
                "epochs": self.epochs, "seeds": list(self.seeds)}


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The protocol's flags (the same for ``run`` and ``dlrs``)."""
    defaults = Protocol()
    parser.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam's learning rate")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="one evaluation on valid after each")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a zoo model class with its template and overrides."""

    name: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


VARIANTS = [
    Variant("DCNv2 stacked", "DCNv2", {"model_structure": "stacked"}),
    Variant("DCNv2 parallel", "DCNv2", {"model_structure": "parallel"}),  # the template's structure
    Variant("DeepFM", "DeepFM"),
    Variant("xDeepFM", "xDeepFM"),
    Variant("FiBiNET", "FiBiNET"),
    Variant("AutoInt+", "AutoInt"),  # the template has dnn_hidden_units [400, 400]: AutoInt+
    Variant("WuKong", "WuKong"),  # the template as revised in FuxiCTR 2.3.8 (commit ef890c6)
]

DATASET_ID = "movielens_dlrs_bench"
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # FuxiCTR name: dlrs-bench name
LABEL = "label"


# ---------------------------------------------------------------------------------------------- zoo


def copy_zoo(git_dir: Path, rev: str, dest: Path) -> str:
    """Extract the :data:`ZOO_MODELS` folders of ``rev`` into ``dest/<Model>`` and return the commit.

    The commit is written to ``dest/ZOO_COMMIT`` (``run`` records it).
    """
    git = ["git", "--git-dir", str(git_dir)]
    commit = subprocess.run([*git, "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    for model, folder in ZOO_MODELS.items():
        prefix = f"model_zoo/{folder}/"
        archive = subprocess.run([*git, "archive", "--format=tar", commit, prefix], check=True,
                                 capture_output=True).stdout
        target = dest / model
        if target.exists():
            shutil.rmtree(target)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    out = target / member.name[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(member).read())
    (dest / "ZOO_COMMIT").write_text(commit + "\n")
    return commit


# ------------------------------------------------------------------------------------------- export


def export(dest: Path) -> dict[str, Any]:
    """Write dlrs-bench's bundled MovieLens as ``dest/{train,valid,test}.csv`` plus ``dest/export.json``.

    Columns: one per sparse feature in dlrs-bench's order (the dlrs-bench id; a multi-hot feature as
    its ids joined by ``^``), ``dense_0..`` (dlrs-bench's standardised float32 values, 9 significant
    digits: exact), ``label``. Row counts are checked against the dataset's splits.
    """
    from dlrs_bench.data.options import MovieLensOptions
    from dlrs_bench.registry import DATASETS

    dataset = DATASETS.get("movielens-latest-small").build(MovieLensOptions())
    dense_names = [f"dense_{i}" for i in range(dataset.num_dense)]
    header = [*dataset.feature_names, *dense_names, LABEL]
    dest.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    for name, source in SPLITS.items():
        split = dataset.splits[source]
        arrays = split.to_memory()
        ids = {key: (jagged.values.tolist(), jagged.offsets.tolist()) for key, jagged in arrays.sparse.items()}
        dense, labels = arrays.dense.numpy(), arrays.labels.numpy()
        with open(dest / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i in range(len(arrays)):
                sparse = ["^".join(str(v) for v in values[offsets[i]:offsets[i + 1]])
                          for values, offsets in (ids[key] for key in dataset.feature_names)]
                writer.writerow([*sparse, *(f"{x:.9g}" for x in dense[i]), int(labels[i])])
        if len(arrays) != len(split):
            raise SystemExit(f"{name}: wrote {len(arrays)} rows, the split has {len(split)}")
        rows[name] = len(arrays)
    summary = dataset.summary()
    if sum(rows.values()) != summary["cache"]["rows"]:
        raise SystemExit(f"wrote {sum(rows.values())} rows, the dataset has {summary['cache']['rows']}")
    manifest = {
        "dataset": {k: v for k, v in summary.items() if k != "cache"},
        "rows": rows,
        "sparse": [{"name": f.name, "cardinality": f.cardinality, "multi_hot": f.multi_hot}
                   for f in dataset.features],
        "dense": dense_names,
        "label": LABEL,
    }
    (dest / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------- run


def feature_cols(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """FuxiCTR's ``feature_cols`` for the exported CSV, fields in dlrs-bench's order then the dense ones."""
    cols = [{"name": f["name"], "active": True, "dtype": "str", "type": "sequence", "splitter": "^"}
            if f["multi_hot"] else {"name": f["name"], "active": True, "dtype": "str", "type": "categorical"}
            for f in manifest["sparse"]]
    return cols + [{"name": name, "active": True, "dtype": "float", "type": "numeric"} for name in manifest["dense"]]


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def load_model_class(zoo: Path, model: str) -> type:
    """The class ``model`` from ``zoo/<model>/src/<model>.py`` (loaded by path: every zoo model's
    package is called ``src``)."""
    path = zoo / model / "src" / f"{model}.py"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; copy the zoo first (see `{Path(__file__).name} zoo --help`)")
    spec = importlib.util.spec_from_file_location(f"fuxictr_zoo_{model}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, model)


def model_args(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The arguments the model's constructor gets from ``params`` (else its default)."""
    skip = {"self", "feature_map", "kwargs", "gpu", "model_id"}
    return {name: params.get(name, p.default) for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip}


def parameter_counts(model: Any) -> dict[str, int]:
    """Trainable parameters: total, the d-wide embeddings (tables and numeric ``Linear(1, d)``), the
    first-order weights (``LogisticRegression``: 1-wide tables and bias) and the rest."""
    from fuxictr.pytorch.layers import LogisticRegression

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    first_order = sum(count(m) for m in model.modules() if isinstance(m, LogisticRegression))
    total, embedding = count(model), count(model.embedding_layer)
    return {"total": total, "embedding": embedding, "first_order": first_order,
            "dense": total - embedding - first_order}


def seeded_loader_class() -> type:
    """FuxiCTR 2.3.10's ``ParquetDataLoader`` with a reproducible train order.

    2.3.10 shuffles with Ray's ``random_shuffle()`` without a seed and reads ahead with
    ``prefetch_batches=num_workers``, which (Ray 2.60) also changes the batch order from run to run;
    this subclass shuffles with the seed ``seed * 1000 + epoch`` and reads the train split without
    prefetching. Valid and test are read as FuxiCTR reads them (their order does not change the AUC).
    """
    from fuxictr.pytorch.dataloaders.parquet_dataloader import ParquetDataLoader

    class SeededParquetDataLoader(ParquetDataLoader):
        def __init__(self, *args: Any, shuffle_seed: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.shuffle_seed, self.epoch = shuffle_seed, 0

        def __iter__(self) -> Any:
            if not self.shuffle:
                return super().__iter__()
            self.epoch += 1
            dataset = self.dataset.materialize().random_shuffle(seed=self.shuffle_seed * 1000 + self.epoch)
            return iter(dataset.iter_torch_batches(batch_size=self.batch_size, drop_last=False, prefetch_batches=0))

    return SeededParquetDataLoader


def train_one(cls: type, feature_map: Any, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one model with ``params`` and ``seed``; its per-epoch validation AUC, the best epoch's
    valid and test metrics, its parameter counts and seconds."""
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    start = time.perf_counter()
    seed_everything(seed=seed)
    model = cls(feature_map, **params)
    counts = parameter_counts(model)
    history: list[float] = []
    checkpoint_and_earlystop = model.checkpoint_and_earlystop

    def record(logs: dict[str, float], min_delta: float = 1e-6) -> None:
        history.append(float(logs["AUC"]))
        checkpoint_and_earlystop(logs, min_delta)

    model.checkpoint_and_earlystop = record
    loader = seeded_loader_class()
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", data_loader=loader, shuffle_seed=seed,
                                          **params)
    model.fit(train_gen, validation_data=valid_gen, **params)  # ends with the best epoch's weights
    valid = model.evaluate(valid_gen)
    test_gen = RankDataLoader(feature_map, stage="test", data_loader=loader, **params)
    test = model.evaluate(test_gen)
    best = max(range(len(history)), key=history.__getitem__)
    if abs(valid["AUC"] - history[best]) > 1e-9:
        raise SystemExit(f"{params['model_id']}: valid AUC {valid['AUC']} after fit, best epoch had {history[best]}")
    return {"seed": seed, "valid_auc_per_epoch": history, "best_epoch": best + 1,
            "valid": {k: float(v) for k, v in valid.items()}, "test": {k: float(v) for k, v in test.items()},
            "params": counts, "seconds": round(time.perf_counter() - start, 1)}


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def training_args(params: dict[str, Any]) -> dict[str, Any]:
    """What FuxiCTR's BaseModel and ``fit`` train with: from ``params``, else their defaults."""
    from fuxictr.pytorch.models import BaseModel

    defaults = {name: p.default for method in (BaseModel.__init__, BaseModel.fit)
                for name, p in inspect.signature(method).parameters.items() if p.default is not inspect.Parameter.empty}
    keys = ("batch_size", "epochs", "optimizer", "loss", "learning_rate", "shuffle", "monitor", "monitor_mode",
            "early_stop_patience", "reduce_lr_on_plateau", "max_gradient_norm", "embedding_regularizer",
            "net_regularizer")
    return {k: params.get(k, defaults.get(k)) for k in keys}


def ignored_keys(cls: type, template: dict[str, Any]) -> set[str]:
    """Keys of ``template`` that neither the model nor FuxiCTR's BaseModel or runner read."""
    from fuxictr.pytorch.models import BaseModel

    used = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(BaseModel.__init__).parameters)
    runner = {"model", "dataset_id", "loss", "metrics", "task", "optimizer", "batch_size", "epochs", "shuffle",
              "seed", "model_root", "num_workers", "verbose", "pickle_feature_encoder", "save_best_only",
              "debug_mode", "group_id", "use_features", "feature_specs", "feature_config"}
    return set(template) - used - runner


def run(args: argparse.Namespace) -> None:
    """Export, preprocess with FuxiCTR, train every variant for every seed, write ``args.out``."""
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("ray").setLevel(logging.INFO if args.verbose else logging.ERROR)
    load_before = os.getloadavg()
    work = args.work.resolve()
    data = work / "data"
    subprocess.run([str(args.dlrs_python), str(Path(__file__).resolve()), "export", "--dest", str(data)],
                   cwd=ROOT, check=True)
    manifest = json.loads((data / "export.json").read_text())

    processed = work / "fuxictr"
    shutil.rmtree(processed, ignore_errors=True)  # FuxiCTR skips preprocessing when feature_map.json exists
    data_params: dict[str, Any] = {
        "dataset_id": DATASET_ID, "data_root": str(processed), "data_format": "csv", "min_categr_count": 1,
        "feature_cols": feature_cols(manifest), "label_col": {"name": LABEL, "dtype": "float"},
        **{f"{name}_data": str(data / f"{name}.csv") for name in SPLITS},
    }
    processor = FeatureProcessor(**data_params)
    data_params["train_data"], data_params["valid_data"], data_params["test_data"] = build_dataset(
        processor, **data_params)
    feature_map = FeatureMap(DATASET_ID, str(processed / DATASET_ID))
    protocol = Protocol.of(args)
    training = {**protocol.fuxictr(), "reduce_lr_on_plateau": args.reduce_lr_on_plateau,
                "max_gradient_norm": args.max_gradient_norm}
    feature_map.load(str(processed / DATASET_ID / "feature_map.json"), {**data_params, **training})

    (work / "checkpoints" / DATASET_ID).mkdir(parents=True, exist_ok=True)
    commit_file = args.zoo / "ZOO_COMMIT"
    results: dict[str, Any] = {}
    for variant in [v for v in VARIANTS if not args.models or v.name in args.models]:
        config = load_yaml(args.zoo / variant.model / "config" / "model_config.yaml")
        template = f"{variant.model}_default"
        cls = load_model_class(args.zoo, variant.model)
        runs = []
        for seed in protocol.seeds:
            params = {**config["Base"], **config[template], **data_params, **training, **variant.overrides,
                      "seed": seed, "gpu": -1, "verbose": 0, "model_root": str(work / "checkpoints"),
                      "model_id": f"{variant.name.replace(' ', '_')}_seed{seed}"}
            runs.append(train_one(cls, feature_map, params, seed))
            last = runs[-1]
            print(f"{variant.name:15} seed {seed}: valid AUC {last['valid']['AUC']:.4f} (epoch {last['best_epoch']}), "
                  f"test AUC {last['test']['AUC']:.4f}, {last['seconds']:.0f} s", file=sys.stderr, flush=True)
        results[variant.name] = {
            "fuxictr_model": variant.model, "template": template,
            "overrides": {**training, **variant.overrides},
            "model_args": model_args(cls, params),
            "training": training_args(params),
            "template_keys_not_used_by_model": sorted(ignored_keys(cls, config[template])),
            "params": runs[0]["params"],
            "runs": runs,
            "summary": run_summary(runs),
        }

    output = {
        "protocol": protocol.to_json(),
        "fuxictr_training": {"reduce_lr_on_plateau": args.reduce_lr_on_plateau,
                             "max_gradient_norm": args.max_gradient_norm,
                             "best": "epoch of the highest validation AUC",
                             "std": "sample standard deviation over seeds"},
        "environment": {
            "fuxictr": fuxictr.__version__, "zoo": str(args.zoo.resolve()),
            "zoo_commit": commit_file.read_text().strip() if commit_file.is_file() else None,
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_average": {"before": load_before, "after": os.getloadavg()},
            "shuffle": "FuxiCTR 2.3.10's Ray ParquetDataLoader; train: random_shuffle(seed=seed * 1000 + epoch), "
                       "no prefetching",
        },
        "data": {**manifest, "fuxictr_features": feature_map.features},
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    """Model, mean ± std of the valid and test AUC, parameter counts."""
    print(f"{'model':16} {'valid AUC':>17} {'test AUC':>17} {'params':>9} {'embedding':>9} {'1st order':>9} "
          f"{'dense':>9}")
    for name, result in results.items():
        v, t, p = result["summary"]["valid_auc"], result["summary"]["test_auc"], result["params"]
        print(f"{name:16} {v['mean']:.4f} ± {v['std']:.4f}  {t['mean']:.4f} ± {t['std']:.4f} {p['total']:9d} "
              f"{p['embedding']:9d} {p['first_order']:9d} {p['dense']:9d}")


#: dlrs-bench's model of each FuxiCTR variant: (model name, DCN-V2 structure or None).
DLRS_MODEL = {"DCNv2 stacked": ("dcnv2", "stacked"), "DCNv2 parallel": ("dcnv2", "parallel"),
              "DeepFM": ("deepfm", None), "xDeepFM": ("xdeepfm", None), "FiBiNET": ("fibinet", None),
              "AutoInt+": ("autoint", None), "WuKong": ("wukong", None)}


def run_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean ± std over ``runs`` of the validation and test AUC and LogLoss."""
    return {f"{split}_{metric.lower()}": mean_std([r[split][metric] for r in runs])
            for metric in ("AUC", "logloss") for split in ("valid", "test")}


def merge_runs(paths: list[Path]) -> dict[str, Any]:
    """The ``models`` of several JSON files written by ``run``, in order: other variants (e.g. one file per
    ``--models`` subset) or more seeds of the same variant (runs pooled, summary recomputed). Files run
    under different protocols (seeds aside), the same seed twice, or a variant configured differently in
    two files are refused."""
    merged: dict[str, Any] = {"models": {}}
    for path in paths:
        runs = json.loads(path.read_text())
        protocol = dict(runs.get("protocol") or {})
        seeds = protocol.pop("seeds", None) or []
        if "protocol" in merged:
            known = {k: v for k, v in merged["protocol"].items() if k != "seeds"}
            if protocol != known:
                raise SystemExit(f"{path}: protocol {runs.get('protocol')} differs from {paths[0]}'s "
                                 f"{merged['protocol']} (seeds aside)")
            merged["protocol"]["seeds"] = sorted(set(merged["protocol"]["seeds"]) | set(seeds))
        else:
            merged["protocol"] = {**protocol, "seeds": sorted(seeds)}
        for name, result in runs["models"].items():
            if name not in merged["models"]:
                merged["models"][name] = result
                continue
            earlier = merged["models"][name]
            if earlier["model_args"] != result["model_args"] or earlier["training"] != result["training"]:
                raise SystemExit(f"{path}: {name} is configured differently than in an earlier --fuxictr file")
            twice = {r["seed"] for r in earlier["runs"]} & {r["seed"] for r in result["runs"]}
            if twice:
                raise SystemExit(f"{path}: {name} seed(s) {sorted(twice)} also in an earlier --fuxictr file")
            pooled = earlier["runs"] + result["runs"]
            merged["models"][name] = {**earlier, "runs": pooled, "summary": run_summary(pooled)}
    return merged


#: FuxiCTR's training options that ``suites/fuxictr_match.yaml`` switches on in dlrs-bench, each with where
#: it sits in the suite: a path under ``defaults``, or under every model of the matrix (``model``).
MATCHED: dict[str, tuple[str, ...]] = {
    "schedule": ("train", "lr_schedule"),  # lr ÷ 10 after an evaluation without a better AUC
    "clipping": ("train", "clip_grad_norm"),  # global gradient norm 10
    "init": ("model", "embedding_init"),  # tables ~ N(0, 1e-4²)
    "vocabulary": ("dataset", "vocabulary"),  # the ids seen in train + padding + OOV
}
SUITE = ROOT / "suites" / "fuxictr_match.yaml"


def dlrs_suite(protocol: Protocol, without: list[str]) -> dict[str, Any]:
    """``suites/fuxictr_match.yaml`` under ``protocol``, with the :data:`MATCHED` options named in ``without``
    left at dlrs-bench's defaults."""
    suite = load_yaml(SUITE)
    defaults, models = suite["defaults"], suite["matrix"]["model"]
    defaults["train"].update(batch_size=protocol.batch_size, lr=protocol.lr, max_epochs=protocol.epochs)
    defaults["seeds"] = list(protocol.seeds)
    for block in (defaults["model"], *models):
        block["embedding_dim"] = protocol.embedding_dim
    for name in without:
        section, key = MATCHED[name]
        for block in (*models, defaults["model"]) if section == "model" else (defaults[section],):
            block.pop(key, None)
    suite["description"] = f"{suite['description']} (protocol {protocol.to_json()}; without {without or 'none'})"
    return suite


def run_dlrs(args: argparse.Namespace) -> None:
    """dlrs-bench's side: the match suite under the protocol, written beside ``args.results`` and run there."""
    import yaml

    suite = dlrs_suite(Protocol.of(args), args.without)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    path = args.results.with_name(args.results.name + ".yaml")
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    command = [str(args.dlrs_bench), "run", str(path), "--results-dir", str(args.results), "--threads",
               str(args.threads)] + (["--resume"] if args.resume else [])
    raise SystemExit(subprocess.run(command, cwd=ROOT).returncode)


def matched_options(result: dict[str, Any]) -> list[str]:
    """The :data:`MATCHED` options a dlrs-bench result's scenario has switched on."""
    scenario = result["scenario"]
    return [name for name, (section, key) in MATCHED.items()
            if scenario.get(section, {}).get(key) not in (None, "all", {"kind": "constant"}, {"kind": "uniform"})]


def result_protocol(result: dict[str, Any]) -> dict[str, Any]:
    """The protocol a dlrs-bench result ran under (its seed aside)."""
    scenario = result["scenario"]
    return {"embedding_dim": scenario["model"]["embedding_dim"], "batch_size": scenario["train"]["batch_size"],
            "lr": scenario["train"]["lr"], "epochs": scenario["train"]["max_epochs"]}


@dataclass(frozen=True)
class Parity:
    """dlrs-bench's mean best validation AUC against FuxiCTR's: ``delta`` = dlrs-bench − FuxiCTR; ``spread`` =
    twice the standard error of that difference over the seeds (√(s_f²/n_f + s_d²/n_d)); ``verdict``:
    ``match`` when |Δ| ≤ the tolerance, ``mismatch (higher|lower)`` when |Δ| exceeds both the tolerance and
    the spread (whichever side is higher: better than the reference is not parity), else ``inconclusive``
    (the seeds spread too much to tell)."""

    delta: float
    spread: float
    verdict: str

    @classmethod
    def of(cls, theirs: tuple[float, float, int], ours: list[float], tolerance: float) -> Parity:
        mean, std, n = theirs
        delta = statistics.fmean(ours) - mean
        our_std = statistics.stdev(ours) if len(ours) > 1 else 0.0
        spread = 2 * (std**2 / max(n, 1) + our_std**2 / len(ours)) ** 0.5
        if abs(delta) <= tolerance:
            verdict = "match"
        elif abs(delta) > spread:
            verdict = f"mismatch ({'higher' if delta > 0 else 'lower'})"
        else:
            verdict = "inconclusive"
        return cls(delta, spread, verdict)


def side_by_side(fuxictr: dict[str, Any], results_dir: Path, tolerance: float = 0.002) -> str:
    """A markdown table of FuxiCTR's runs (``fuxictr``: this script's JSON) against dlrs-bench's results
    under ``results_dir`` (``dlrs`` or ``dlrs-bench run suites/fuxictr_match.yaml``): best validation AUC,
    mean ± std over seeds, their difference judged in both directions (:class:`Parity`), and the trainable
    parameters (total / embedding) of each side. Results of another protocol than FuxiCTR's are refused."""
    protocol = fuxictr.get("protocol") or {}
    by_model: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    options: set[tuple[str, ...]] = set()
    for path in sorted(results_dir.rglob("seed*.json")):
        if "history" in path.parts:
            continue
        result = json.loads(path.read_text())
        if result.get("status") not in ("reached", "not_reached"):
            continue
        ran = result_protocol(result)
        differs = {k: (v, protocol.get(k)) for k, v in ran.items() if protocol.get(k) != v}
        if differs:
            raise SystemExit(f"{path}: run under another protocol than FuxiCTR's: {differs} (dlrs-bench, FuxiCTR)")
        options.add(tuple(matched_options(result)))
        model = result["scenario"]["model"]
        by_model.setdefault((model["name"], model.get("structure")), []).append(result)
    rows = [f"protocol {protocol}; dlrs-bench with FuxiCTR's "
            f"{' / '.join(', '.join(o) or 'no options' for o in sorted(options)) or '–'}", "",
            "| model | FuxiCTR val AUC | dlrs-bench val AUC | Δ | 2 SE | parity | FuxiCTR params (emb.) "
            "| dlrs-bench params (emb.) |", "|---|---|---|---|---|---|---|---|"]
    n_seeds = len(protocol.get("seeds") or [0])
    for name, result in fuxictr["models"].items():
        ours = by_model.get(DLRS_MODEL[name], [])
        theirs = result["summary"]["valid_auc"]
        if not ours:
            rows.append(f"| {name} | {theirs['mean']:.4f} ± {theirs['std']:.4f} | – | | | | | |")
            continue
        aucs = [r["best_metrics"]["auc"] for r in ours]
        parity = Parity.of((theirs["mean"], theirs["std"], len(result.get("runs") or []) or n_seeds), aucs,
                           tolerance)
        std = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        p = result["params"]
        rows.append(f"| {name} | {theirs['mean']:.4f} ± {theirs['std']:.4f} | {statistics.fmean(aucs):.4f} ± "
                    f"{std:.4f} ({len(aucs)}) | {parity.delta:+.4f} | {parity.spread:.4f} | {parity.verdict} "
                    f"| {p['total']:,} ({p['embedding'] + p['first_order']:,}) "
                    f"| {ours[0]['model']['total_params']:,} ({ours[0]['embedding']['params']:,}) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command")

    zoo = commands.add_parser("zoo", help="copy the model_zoo models from a FuxiCTR git checkout or mirror")
    zoo.add_argument("--git-dir", type=Path, required=True, help="the checkout's .git (or a bare mirror)")
    zoo.add_argument("--rev", default="HEAD", help="commit, tag or branch (default HEAD)")
    zoo.add_argument("--dest", type=Path, required=True)

    exp = commands.add_parser("export", help="write the MovieLens splits as CSV (run with dlrs-bench's Python)")
    exp.add_argument("--dest", type=Path, required=True)

    run_ = commands.add_parser("run", help="train the FuxiCTR models (the default; run with FuxiCTR's Python)")
    zoo_env = os.environ.get("FUXICTR_ZOO")
    run_.add_argument("--zoo", type=Path, default=Path(zoo_env) if zoo_env else None, required=zoo_env is None,
                      help="folder written by `zoo` (default: $FUXICTR_ZOO)")
    add_protocol_arguments(run_)
    run_.add_argument("--no-reduce-lr-on-plateau", dest="reduce_lr_on_plateau", action="store_false",
                      help="switch off FuxiCTR's lr ÷ 10 after an epoch without a better validation AUC")
    run_.add_argument("--max-gradient-norm", type=float, default=10.0, help="FuxiCTR's gradient clipping")
    run_.add_argument("--out", type=Path, default=ROOT / "build" / "fuxictr.json")
    run_.add_argument("--models", nargs="+", choices=[v.name for v in VARIANTS], help="a subset (default: all)")
    run_.add_argument("--work", type=Path, default=ROOT / "build" / "fuxictr",
                      help="exported CSVs, FuxiCTR's processed data and checkpoints")
    run_.add_argument("--dlrs-python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                      help="a Python with dlrs-bench installed, for the export")
    run_.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    run_.add_argument("--verbose", action="store_true", help="FuxiCTR's log on stderr")

    dlrs = commands.add_parser("dlrs", help="dlrs-bench's side: suites/fuxictr_match.yaml under the protocol "
                               "(run with dlrs-bench's Python)")
    add_protocol_arguments(dlrs)
    dlrs.add_argument("--without", nargs="+", default=[], choices=list(MATCHED),
                      help="leave these FuxiCTR training options at dlrs-bench's defaults (one at a time: what each "
                           "changes)")
    dlrs.add_argument("--results", type=Path, default=ROOT / "build" / "fuxictr_match",
                      help="results folder (the suite is written beside it as <folder>.yaml)")
    dlrs.add_argument("--dlrs-bench", type=Path, default=ROOT / ".venv" / "bin" / "dlrs-bench")
    dlrs.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    dlrs.add_argument("--resume", action="store_true", help="keep runs already finished in --results")

    table = commands.add_parser("table", help="the side-by-side with dlrs-bench's results (markdown)")
    table.add_argument("--fuxictr", type=Path, nargs="+", default=[ROOT / "build" / "fuxictr.json"],
                       help="written by `run`; several files (e.g. one per --models subset) are read in order")
    table.add_argument("--results", type=Path, default=ROOT / "build" / "fuxictr_match",
                       help="dlrs-bench run suites/fuxictr_match.yaml --results-dir DIR")

    argv = sys.argv[1:]
    if not argv or argv[0] not in commands.choices and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "zoo":
        print(copy_zoo(args.git_dir, args.rev, args.dest))
    elif args.command == "table":
        print(side_by_side(merge_runs(args.fuxictr), args.results))
    elif args.command == "dlrs":
        run_dlrs(args)
    elif args.command == "export":
        print(json.dumps(export(args.dest)["rows"]))
    else:
        run(args)


if __name__ == "__main__":
    main()
