"""Suite files: validation errors with file:line, matrix expansion, scenario ids."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import line_of, tiny_suite

from dlrs_bench.compression.full import FullOptions
from dlrs_bench.compression.hashing import HashingOptions
from dlrs_bench.config.expand import load_suite
from dlrs_bench.errors import UserInputError

HEADER = """\
name: t
defaults:
  dataset: {name: synthetic, rows: 2000}
  model: {name: dlrm, embedding_dim: 8, bottom_mlp: [16, 8], top_mlp: [16, 1]}
  target: {metric: auc, value: 0.6}
"""


def load_error(path: Path) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    err = info.value
    assert err.lines, "a UserInputError must list at least one problem"
    for line in err.lines:  # every problem is reported as file:line: ...
        assert re.match(rf"^{re.escape(str(path))}:\d+: ", line), line
    return err


def find(err: UserInputError, *needles: str) -> str:
    """The one reported line containing every needle."""
    hits = [line for line in err.lines if all(n in line for n in needles)]
    assert hits, f"no error line contains {needles}: {err.lines}"
    return hits[0]


# ---------------------------------------------------------------- unknown keys, with exact lines


def test_unknown_top_level_key_reports_its_line(write_suite):
    path = write_suite(HEADER + "colour: blue\n")
    err = load_error(path)
    line = find(err, "colour")
    assert line.startswith(f"{path}:{line_of(path, 'colour:')}: ")
    assert "unknown key" in line


def test_unknown_key_in_defaults_train_reports_line_and_field(write_suite):
    path = write_suite(HEADER + "  train:\n    batch_size: 64\n    learning_rate: 0.1\n")
    err = load_error(path)
    line = find(err, "learning_rate")
    assert line.startswith(f"{path}:{line_of(path, 'learning_rate:')}: ")
    assert "defaults.train.learning_rate" in line
    assert "unknown key" in line


def test_unknown_key_in_matrix_compressor_entry_reports_its_line(write_suite):
    path = write_suite(
        HEADER
        + """\
matrix:
  compressor:
    - {kind: none}
    - kind: hashing
      ratio: 4
      rato: 2
"""
    )
    err = load_error(path)
    line = find(err, "rato")
    assert line.startswith(f"{path}:{line_of(path, 'rato:')}: "), line
    assert "matrix.compressor[1].rato" in line  # the field path as written in the file
    assert "unknown key" in line
    assert len(err.lines) == 1, err.lines  # the valid alternative {kind: none} is not blamed


def test_unknown_key_in_a_scenarios_entry(write_suite):
    path = write_suite(
        HEADER
        + """\
scenarios:
  - train: {lr: 0.1}
  - train: {lr: 0.2, momentum: 0.9}
"""
    )
    err = load_error(path)
    line = find(err, "momentum")
    assert line.startswith(f"{path}:{line_of(path, 'momentum')}: ")


# ---------------------------------------------------------------- wrong types and values


def test_wrong_type_batch_size(write_suite):
    path = write_suite(HEADER + "  train:\n    batch_size: big\n")
    err = load_error(path)
    line = find(err, "batch_size")
    assert line.startswith(f"{path}:{line_of(path, 'batch_size:')}: ")
    assert "train.batch_size" in line
    assert "'big'" in line  # the offending input is quoted


def test_negative_learning_rate(write_suite):
    path = write_suite(HEADER + "  train:\n    lr: -0.01\n")
    err = load_error(path)
    line = find(err, "lr")
    assert line.startswith(f"{path}:{line_of(path, 'lr: -0.01')}: ")
    assert "train.lr" in line and "greater than 0" in line


@pytest.mark.parametrize("value", [1.2, 0.4, 0.5, 1.0])
def test_target_auc_outside_open_interval(write_suite, value):
    text = HEADER.replace("value: 0.6", f"value: {value}")
    path = write_suite(text)
    err = load_error(path)
    line = find(err, "target")
    assert line.startswith(f"{path}:{line_of(path, 'target:')}: ")
    assert "(0.5, 1)" in line and str(value) in line


def test_target_logloss_must_be_positive(write_suite):
    path = write_suite(HEADER.replace("{metric: auc, value: 0.6}", "{metric: logloss, value: -0.3}"))
    err = load_error(path)
    assert "logloss must be > 0" in find(err, "target")


def test_hashing_ratio_must_exceed_one(write_suite):
    path = write_suite(HEADER + "matrix:\n  compressor:\n    - {kind: hashing, ratio: 0.5}\n")
    err = load_error(path)
    line = find(err, "ratio")
    assert line.startswith(f"{path}:{line_of(path, 'ratio: 0.5')}: ")
    assert "matrix.compressor[0].ratio" in line and "greater than 1" in line and "0.5" in line


def test_hashing_ratio_is_required(write_suite):
    path = write_suite(HEADER + "matrix:\n  compressor:\n    - {kind: hashing}\n")
    err = load_error(path)
    assert "Field required" in find(err, "matrix.compressor[0].ratio")


def test_bottom_mlp_must_end_in_embedding_dim(write_suite):
    path = write_suite(HEADER.replace("bottom_mlp: [16, 8]", "bottom_mlp: [16, 4]"))
    err = load_error(path)
    line = find(err, "bottom_mlp")
    assert line.startswith(f"{path}:{line_of(path, 'model:')}: ")
    assert "embedding_dim (8)" in line and "[16, 4]" in line


def test_top_mlp_must_end_in_one(write_suite):
    path = write_suite(HEADER.replace("top_mlp: [16, 1]", "top_mlp: [16, 2]"))
    err = load_error(path)
    assert "top_mlp must end in 1" in find(err, "model")


def test_seeds_must_be_distinct(write_suite):
    path = write_suite(HEADER + "  seeds: [0, 1, 0]\n")
    err = load_error(path)
    assert "seeds must be distinct" in find(err, "seeds")


# ---------------------------------------------------------------- YAML-level problems


def test_yaml_syntax_error_reports_line(write_suite):
    path = write_suite(HEADER + "  train:\n    batch_size: 64\n    lr: a: b\n")
    err = load_error(path)
    assert len(err.lines) == 1
    assert err.lines[0].startswith(f"{path}:{line_of(path, 'lr: a: b')}: ")
    assert "YAML syntax error" in err.lines[0]


def test_unclosed_flow_mapping_is_a_syntax_error(write_suite):
    path = write_suite("name: t\ndefaults:\n  model: {name: dlrm, embedding_dim: 8\n  target: {value: 0.6}\n")
    err = load_error(path)
    assert "YAML syntax error" in err.lines[0]


def test_duplicate_yaml_key_is_an_error(write_suite):
    path = write_suite(HEADER + "  train:\n    lr: 0.1\n    batch_size: 64\n    lr: 0.2\n")
    err = load_error(path)
    line = err.lines[0]
    assert line.startswith(f"{path}:{line_of(path, 'lr: 0.2')}: ")
    assert "duplicate key" in line
    assert f"first defined on line {line_of(path, 'lr: 0.1')}" in line
    assert "defaults.train.lr" in line


def test_empty_file_and_non_mapping(write_suite):
    err = load_error(write_suite("", "empty.yaml"))
    assert "empty" in err.lines[0]
    err = load_error(write_suite("- 1\n- 2\n", "list.yaml"))
    assert "must be a mapping" in err.lines[0]


def test_missing_file_is_user_input_error(tmp_path):
    with pytest.raises(UserInputError, match="cannot read"):
        load_suite(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- unknown plugin names


@pytest.mark.parametrize(
    "old, new, suggestion",
    [
        ("{name: synthetic, rows: 2000}", "{name: synthetc, rows: 2000}", "'synthetic'"),
        ("name: dlrm,", "name: dlrn,", "'dlrm'"),
    ],
)
def test_unknown_dataset_or_model_suggests_the_closest_name(write_suite, old, new, suggestion):
    path = write_suite(HEADER.replace(old, new))
    err = load_error(path)
    line = find(err, "did you mean")
    assert suggestion in line
    assert line.startswith(f"{path}:{line_of(path, new.split(',')[0].strip('{'))}: ")


def test_unknown_compressor_suggests_hashing(write_suite):
    path = write_suite(HEADER + "matrix:\n  compressor:\n    - {kind: none}\n    - {kind: hashng, ratio: 4}\n")
    err = load_error(path)
    line = find(err, "hashng")
    assert "did you mean 'hashing'" in line
    assert line.startswith(f"{path}:{line_of(path, 'hashng')}: ")
    assert "matrix.compressor[1].kind" in line


def test_empty_matrix_axis_is_an_error(write_suite):
    path = write_suite(HEADER + "matrix:\n  compressor: []\n")
    err = load_error(path)
    assert "lists no alternatives" in find(err, "compressor")


@pytest.mark.parametrize("extra,world", [("  gpus: 2\n", 2), ("  processes: 3\n", 3), ("", 1)])
def test_world_size_comes_from_gpus_or_processes(write_suite, extra, world):
    suite = load_suite(write_suite(HEADER + extra), machine_checks=False)  # any core count
    assert suite.scenarios[0].spec.world_size == world


def test_processes_with_gpus_is_an_error(write_suite):
    path = write_suite(HEADER + "  gpus: 2\n  processes: 2\n")
    line = find(load_error(path), "processes is for CPU runs only")
    assert line.startswith(f"{path}:")


def test_batch_smaller_than_world_is_an_error(write_suite):
    path = write_suite(HEADER + "  processes: 4\n  train: {batch_size: 2}\n")
    assert "batch_size 2 is smaller than the 4 ranks" in find(load_error(path), "batch_size")


def test_distributed_options_are_validated_with_lines(write_suite):
    path = write_suite(HEADER + "  processes: 2\n"
                       "  distributed: {sharding_types: [table_wise, diagonal], timeut_s: 5}\n")
    err = load_error(path)
    bad_type = find(err, "distributed.sharding_types")
    assert "diagonal" in bad_type and "table_wise" in bad_type
    assert "unknown key" in find(err, "distributed.timeut_s")


def test_distributed_defaults_do_not_change_scenario_ids(write_suite):
    plain = load_suite(write_suite(HEADER, "a.yaml")).scenarios[0].scenario_id
    explicit = load_suite(write_suite(HEADER + "  distributed: {timeout_s: 300}\n", "b.yaml")).scenarios[0].scenario_id
    assert plain == explicit


def test_negative_gpus_is_an_error(write_suite):
    path = write_suite(HEADER + "  gpus: -1\n")
    err = load_error(path)
    line = find(err, "gpus")
    assert line.startswith(f"{path}:{line_of(path, 'gpus: -1')}: defaults.gpus: ")
    assert "greater than or equal to 0" in line


# ---------------------------------------------------------------- matrix expansion


def test_matrix_is_a_cartesian_product_of_compressors_and_model_dicts(write_suite):
    suite = tiny_suite(
        matrix={
            "compressor": [{"kind": "none"}, {"kind": "hashing", "ratio": 4}],
            "model": [{"embedding_dim": 8, "bottom_mlp": [16, 8]}, {"embedding_dim": 4, "bottom_mlp": [16, 4]}],
        }
    )
    loaded = load_suite(write_suite(suite))
    assert len(loaded.scenarios) == 4
    combos = {(s.spec.compressor.kind, s.spec.model.embedding_dim) for s in loaded.scenarios}
    assert combos == {("none", 8), ("none", 4), ("hashing", 8), ("hashing", 4)}
    for s in loaded.scenarios:
        assert s.spec.model.name == "dlrm"  # merged over defaults, not replaced
        assert s.spec.model.top_mlp == [16, 1]
        assert s.spec.model.bottom_mlp[-1] == s.spec.model.embedding_dim
    assert len({s.scenario_id for s in loaded.scenarios}) == 4
    assert len({s.label for s in loaded.scenarios}) == 4


def test_dotted_matrix_keys_set_nested_values(write_suite):
    suite = tiny_suite(
        matrix={
            "compressor": [{"kind": "none"}, {"kind": "hashing", "ratio": 4}],
            "train.lr": [0.1, 0.02],
            "dataset.signal": [1.0],
        }
    )
    loaded = load_suite(write_suite(suite))
    assert len(loaded.scenarios) == 4
    assert sorted(s.spec.train.lr for s in loaded.scenarios) == [0.02, 0.02, 0.1, 0.1]
    for s in loaded.scenarios:
        assert s.spec.train.batch_size == 128  # sibling keys of the dotted one are kept
        assert s.spec.train.max_epochs == 2
        assert s.spec.dataset.signal == 1.0
        assert s.spec.dataset.rows == 3000
    labels = {s.label for s in loaded.scenarios}
    assert any("lr=0.1" in label for label in labels)


def test_dotted_embedding_dim_axis(write_suite):
    suite = tiny_suite()
    suite["defaults"]["model"]["bottom_mlp"] = [4]  # overridden by the matrix below
    suite["matrix"] = {
        "compressor": [{"kind": "none"}, {"kind": "hashing", "ratio": 4}],
        "model.embedding_dim": [4, 8],
        "model.bottom_mlp": [[4], [8]],
    }
    path = write_suite(suite)
    # embedding_dim 4 with bottom_mlp [8] (and 8 with [4]) cannot be valid: reported, with lines
    err = load_error(path)
    assert all("bottom_mlp must end in embedding_dim" in line for line in err.lines)
    suite["matrix"]["model.bottom_mlp"] = [[16]]
    suite["matrix"]["model.embedding_dim"] = [16]
    suite["matrix"]["model.top_mlp"] = [[8, 1], [32, 1]]
    loaded = load_suite(write_suite(suite, "ok.yaml"))
    assert len(loaded.scenarios) == 4
    assert {s.spec.model.embedding_dim for s in loaded.scenarios} == {16}
    assert sorted(s.spec.model.top_mlp[0] for s in loaded.scenarios) == [8, 8, 32, 32]


def test_switching_compressor_kind_replaces_the_block(write_suite):
    suite = tiny_suite()
    suite["defaults"]["compressor"] = {"kind": "hashing", "ratio": 4, "hash": "universal"}
    suite["matrix"] = {"compressor": [{"kind": "none"}, {"ratio": 8}]}
    loaded = load_suite(write_suite(suite))
    assert len(loaded.scenarios) == 2
    none, hashing = loaded.scenarios
    assert isinstance(none.spec.compressor, FullOptions)
    assert "ratio" not in none.spec.compressor.model_dump()
    # same kind: merged, so hash: universal from the defaults survives
    assert isinstance(hashing.spec.compressor, HashingOptions)
    assert hashing.spec.compressor.ratio == 8
    assert hashing.spec.compressor.hash == "universal"


def test_scenarios_entries_merge_over_defaults(write_suite):
    suite = tiny_suite()
    del suite["matrix"]
    suite["scenarios"] = [
        {"name": "fast", "train": {"lr": 0.1}},
        {"compressor": {"kind": "hashing", "ratio": 2}},
    ]
    loaded = load_suite(write_suite(suite))
    # `scenarios:` *instead of* `matrix:` (DESIGN.md): exactly the listed scenarios
    assert len(loaded.scenarios) == 2, [s.label for s in loaded.scenarios]
    fast, hashed = loaded.scenarios
    assert fast.label == "fast" and fast.spec.name == "fast"
    assert fast.spec.train.lr == 0.1 and fast.spec.train.batch_size == 128
    assert hashed.spec.compressor.ratio == 2
    assert hashed.spec.train.lr == 0.01


def test_scenarios_beside_matrix_are_added(write_suite):
    suite = tiny_suite(scenarios=[{"train": {"lr": 0.3}}])
    loaded = load_suite(write_suite(suite))
    assert len(loaded.scenarios) == 3
    assert [s.spec.train.lr for s in loaded.scenarios] == [0.01, 0.01, 0.3]


def test_defaults_alone_make_one_scenario(write_suite):
    suite = tiny_suite()
    del suite["matrix"]
    loaded = load_suite(write_suite(suite))
    assert len(loaded.scenarios) == 1
    assert loaded.scenarios[0].spec.compressor.kind == "none"


def test_duplicate_scenarios_are_an_error(write_suite):
    suite = tiny_suite(
        matrix={"compressor": [{"kind": "hashing", "ratio": 4}, {"kind": "hashing", "ratio": 4, "hash": "modulo"}]}
    )
    path = write_suite(suite)
    err = load_error(path)
    line = find(err, "same scenario")
    assert line.startswith(f"{path}:")


def test_duplicate_scenarios_entries_are_an_error(write_suite):
    suite = tiny_suite(matrix={"train.lr": [0.05]})
    suite["scenarios"] = [{"train": {"lr": 0.1}}, {"name": "again", "train": {"lr": 0.1}}]
    path = write_suite(suite)
    err = load_error(path)
    line = find(err, "same scenario")
    assert line.startswith(f"{path}:{line_of(path, 'name: again')}: ")
    assert len(err.lines) == 1, err.lines


# ---------------------------------------------------------------- scenario ids

EXPLICIT = """\
name: explicit
description: every default written out, keys in another order
defaults:
  target: {value: 0.6, metric: auc}
  train: {optimizer: adam, batch_size: 512, lr: 0.001, eval_every: 0.5, warmup_iters: 10}
  model: {top_mlp: [64, 32, 1], bottom_mlp: [32, 16], embedding_dim: 16, name: dlrm}
  dataset: {seed: 0, name: synthetic, rows: 2000, zipf_exponent: 1.05}
  gpus: 0
  processes: 1
  seeds: [0]
matrix:
  compressor:
    - {hash: modulo, kind: hashing, ratio: 4, threshold: 0, pooling: sum}
"""

IMPLICIT = """\
name: implicit
defaults:
  dataset: {name: synthetic, rows: 2000}
  model: {name: dlrm, bottom_mlp: [32, 16]}
  target: {value: 0.6}
matrix:
  compressor:
    - {kind: hashing, ratio: 4}
"""


def ids(path: Path) -> list[str]:
    return [s.scenario_id for s in load_suite(path).scenarios]


def test_scenario_id_is_stable_across_loads(write_suite):
    path = write_suite(tiny_suite())
    first, second = ids(path), ids(path)
    assert first == second
    assert all(re.fullmatch(r"[0-9a-f]{6,16}", i) for i in first)


def test_scenario_id_ignores_explicit_defaults_and_key_order(write_suite):
    assert ids(write_suite(EXPLICIT, "a.yaml")) == ids(write_suite(IMPLICIT, "b.yaml"))


def test_scenario_id_changes_with_a_value(write_suite):
    base = ids(write_suite(IMPLICIT, "a.yaml"))
    for old, new in [("ratio: 4", "ratio: 5"), ("rows: 2000", "rows: 2001"),
                     ("value: 0.6", "value: 0.61"),
                     ("{kind: hashing, ratio: 4}", "{kind: hashing, ratio: 4, hash: universal}")]:
        assert ids(write_suite(IMPLICIT.replace(old, new), "b.yaml")) != base, (old, new)


def test_scenario_id_excludes_seeds_and_name(write_suite):
    a = write_suite(IMPLICIT.replace("target: {value: 0.6}", "target: {value: 0.6}\n  seeds: [0, 1, 2]"), "a.yaml")
    b = write_suite(IMPLICIT.replace("name: implicit", "name: other").replace(
        "{kind: hashing, ratio: 4}", "{kind: hashing, ratio: 4}\nscenarios: []"), "b.yaml")
    c = write_suite(IMPLICIT.replace("target: {value: 0.6}", "target: {value: 0.6}\n  name: shown\n  seeds: [7]"),
                    "c.yaml")
    assert ids(a) == ids(b) == ids(c)
    assert load_suite(c).scenarios[0].label == "shown"


def test_scenario_id_compressor_omitted_equals_explicit_none(write_suite):
    omitted = tiny_suite(matrix={"train.lr": [0.01]})
    explicit = tiny_suite(matrix={"train.lr": [0.01]})
    explicit["defaults"]["compressor"] = {"kind": "none"}
    assert ids(write_suite(omitted, "a.yaml")) == ids(write_suite(explicit, "b.yaml"))


def test_scenario_id_differs_between_datasets_with_default_options(write_suite):
    """Two scenarios that differ only in the dataset's name are different scenarios."""
    suite = tiny_suite(matrix={"dataset": [{"name": "synthetic"}, {"name": "movielens-latest-small"}]})
    suite["defaults"]["dataset"] = {"name": "synthetic"}
    loaded = load_suite(write_suite(suite))
    assert [s.spec.dataset.name for s in loaded.scenarios] == ["synthetic", "movielens-latest-small"]
    assert loaded.scenarios[0].scenario_id != loaded.scenarios[1].scenario_id


SUITES = Path(__file__).resolve().parent.parent / "suites"


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_suites_are_valid(path):
    """Every bundled suite is valid anywhere (``portable``) and on this machine, except for the data it
    names that this machine lacks (a prepared Criteo cache), which must be the only error."""
    loaded = load_suite(path, machine_checks=False)
    assert loaded.scenarios
    assert len({s.scenario_id for s in loaded.scenarios}) == len(loaded.scenarios)
    paths = {p for s in loaded.scenarios if (p := getattr(s.spec.dataset, "path", None))}
    missing = sorted(p for p in paths if not (Path(p) / "manifest.json").is_file())
    if not missing:
        assert [s.scenario_id for s in load_suite(path).scenarios] == [s.scenario_id for s in loaded.scenarios]
        return
    with pytest.raises(UserInputError) as e:
        load_suite(path)
    expected = f"dataset.path: {missing[0]}: not a prepared dataset"
    assert e.value.lines and all(expected in line for line in e.value.lines)


def test_bundled_quickstart_suite_is_valid():
    path = SUITES / "quickstart.yaml"
    loaded = load_suite(path)
    assert loaded.name == "quickstart"
    assert [s.spec.compressor.kind for s in loaded.scenarios] == ["none", "hashing", "hashing", "hashing"]
    assert [getattr(s.spec.compressor, "ratio", None) for s in loaded.scenarios] == [None, 2, 4, 16]
    assert len({s.scenario_id for s in loaded.scenarios}) == 4


# ---------------------------------------------------------------- the YAML loader's limits


BOMB = """name: bomb
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


@pytest.mark.parametrize("content,message", [
    (BOMB, "expands to more than 100,000 values"),
    ("name: x\nseeds: &s [*s]\n", "nested deeper than 64 levels"),
    ("name: x\ndefaults: " + "[" * 600 + "]" * 600 + "\n", "nested"),
    ("name: x\ndescription: \"a\x07b\"\n", r":2: character #x0007 is not allowed in YAML"),
    (b"name: x\ndescription: caf\xe9\n", r":2: not UTF-8 text \(byte 24: invalid continuation byte\)"),
    ("name: x\ndescription: x\n" + "# padding\n" * 120_000, r":104858: the file passes 1,048,576 bytes"),
    ("name: x\ndefaults: " + "[\n" * 3000 + "]" * 3000 + "\n", r":\d+: nested too deeply"),  # past recursion
    ("name: x\nmatrix:\n" + "".join(f"  seeds.{i}: [1, 2, 3, 4, 5, 6]\n" for i in range(8)),
     "expands to 1,679,616 scenarios"),
])
def test_the_yaml_loader_refuses_bombs_cycles_and_bad_text_quickly(tmp_path, content, message):
    import resource
    import time

    from dlrs_bench.config.expand import load_suite

    path = tmp_path / "s.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(UserInputError, match=message):
        load_suite(path)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no blow-up


def test_every_mistake_of_a_file_at_once_with_did_you_mean(tmp_path):
    from dlrs_bench.config.expand import load_suite

    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\n"
                    "defaults:\n"
                    "  dataset: {name: synthetic, rows: 3000, cardinalites: [10, 10]}\n"
                    "  model: {name: dlrm, embeding_dim: 8}\n"
                    "  train: {batchsize: 64, lr: -1}\n"
                    "  target: {value: 0.6}\n"
                    "  compresor: {kind: none}\n")
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    lines = info.value.lines
    assert len(lines) == 5, lines
    assert f"{path}:3: defaults.dataset.cardinalites: unknown key; did you mean 'cardinalities'" in lines[0]
    assert (f"{path}:4: defaults.model.embeding_dim: unknown key; did you mean 'embedding_dim' or "
            "'embedding_init'?") in lines
    assert any(line.startswith(f"{path}:5: defaults.train.batchsize: unknown key; did you mean 'batch_size'")
               for line in lines)
    assert any(line.startswith(f"{path}:5: defaults.train.lr: Input should be greater than 0") for line in lines)
    assert f"{path}:7: defaults.compresor: unknown key; did you mean 'compressor'?" in lines
    suite_level = tmp_path / "top.yaml"
    suite_level.write_text("name: x\nmatrixx: {}\n")
    with pytest.raises(UserInputError, match="matrixx: unknown key; did you mean 'matrix'"):
        load_suite(suite_level)


def test_values_that_could_only_fail_or_loop_at_run_time_are_refused_by_validate(tmp_path):
    from dlrs_bench.config.expand import load_suite

    path = tmp_path / "inf.yaml"
    path.write_text("name: " + "n" * 101 + "\n"
                    "defaults:\n"
                    "  dataset: {name: synthetic, rows: 3000, seed: 100000000000000000000000}\n"
                    "  model: {name: dlrm}\n"
                    "  train: {max_epochs: .inf, lr: .inf}\n"
                    "  target: {value: .nan}\n"
                    "  compressor: {kind: hashing, ratio: .inf}\n"
                    "  seeds: [-1]\n")
    with pytest.raises(UserInputError, match=":3: defaults.dataset.seed: 100000000000000000000000 does not fit in 64"):
        load_suite(path)  # refused when the file is read: no field takes such a number
    path.write_text(path.read_text().replace("100000000000000000000000", "7"))
    with pytest.raises(UserInputError, match="name: String should have at most 100 characters"):
        load_suite(path)
    path.write_text(path.read_text().replace("n" * 101, "inf"))
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    text = "\n".join(info.value.lines)
    for field in ("train.max_epochs", "train.lr", "target.value", "compressor.ratio"):
        assert f"defaults.{field}: Input should be a finite number" in text
    assert "defaults.seeds[0]: Input should be greater than or equal to 0" in text


# ---------------------------------------------------------------- checks against the data and the machine


MACHINE = """\
name: m
defaults:
  dataset: {name: movielens-latest-small}
  model: {name: dlrm, embedding_dim: 16, bottom_mlp: [32, 16], top_mlp: [16, 1]}
  target: {value: 0.6}
scenarios:
  - {compressor: {kind: hashing, ratio: 16}}
  - {compressor: {kind: hashing, ratio: 16, threshold: 20}}
  - {compressor: {kind: qr, ratio: 100000, threshold: 1000}}
  - {processes: 64}
  - {dataset: {name: criteo-kaggle, path: %s}}
  - {dataset: {name: movielens-latest-small, path: %s}}
"""


def test_machine_checks_find_what_only_a_run_would_find(write_suite, tmp_path):
    """Unreachable ratios against the real table sizes (hashing's silent 10x on genres included), more gloo
    ranks than cores, data that is not there: each an error at the line that wrote it, all in one pass;
    ``machine_checks=False`` (validate --portable) leaves exactly these out."""
    path = write_suite(MACHINE % (tmp_path / "no-cache", tmp_path / "no-movielens"))
    lines = load_error(path).lines
    qr = lines.pop(1)
    assert qr.startswith(f"{path}:9: scenarios[2].compressor.ratio: no number of levels reaches ratio 100000")
    assert "qr on table movie (9,742 rows)" in qr
    assert lines == [
        f"{path}:7: scenarios[0].compressor.ratio: hashing on table genres (20 rows): cannot reach ratio 16 (it "
        "gives 10x); choose a reachable ratio or raise `threshold` to leave this table full",
        f"{path}:10: scenarios[3].processes: 64 gloo ranks need a core each; this machine gives this process "
        f"{len(os.sched_getaffinity(0))} (its CPU affinity)",
        f"{path}:11: scenarios[4].dataset.path: {tmp_path / 'no-cache'}: not a prepared dataset (no manifest.json); "
        "run `dlrs-bench data prepare`",
        f"{path}:12: scenarios[5].dataset.path: {tmp_path / 'no-movielens' / 'ratings.csv'}: no such file",
    ]
    assert len(load_suite(path, machine_checks=False).scenarios) == 6


@pytest.mark.parametrize("split", [{}, {"split": "temporal", "split_fractions": [0.7, 0.2, 0.1]}])
def test_bundled_movielens_tables_and_train_rows_are_what_the_dataset_builds(split):
    """validate plans compressors against these sizes, and checks batch sizes against the train rows,
    without reading the CSV files."""
    from dlrs_bench.data.options import BUNDLED_ROWS, BUNDLED_TABLES, MovieLensOptions
    from dlrs_bench.registry import DATASETS

    options = MovieLensOptions.model_validate(split)
    dataset = DATASETS.get("movielens-latest-small").build(options)
    assert BUNDLED_TABLES == [(f.name, f.cardinality) for f in dataset.features]
    assert BUNDLED_ROWS == sum(len(s) for s in dataset.splits.values())
    facts = options.check_data()
    assert (facts.tables, facts.train_rows) == (BUNDLED_TABLES, len(dataset.splits["train"]))


@pytest.mark.parametrize("kind, extra", [("hashing", {}), ("qr", {}), ("qr", {"fusion": "concat"}), ("memcom", {}),
                                         ("bch", {}), ("tt", {}), ("md", {}), ("robe", {"chunk": 4})])
@pytest.mark.parametrize("ratio", [3, 7])
def test_a_compressor_builds_exactly_what_validate_planned(kind, extra, ratio):
    """The plan validate checks is the one ``build`` allocates: same reachability, same parameters."""
    import torch

    from dlrs_bench.compression.base import account, build_embeddings, tables
    from dlrs_bench.data.base import SparseFeature
    from dlrs_bench.registry import COMPRESSORS

    features = [SparseFeature("big", 5000), SparseFeature("mid", 300), SparseFeature("small", 12)]
    options = COMPRESSORS.options(kind)(kind=kind, ratio=ratio, threshold=12, **extra)
    plan = options.plan(tables(features), 8)
    assert plan[2] is None  # at the threshold: full
    per_table = account(build_embeddings(features, 8, options, torch.device("cpu"))).per_table
    assert [t.compressed for t in per_table] == [p is not None for p in plan]


def test_numbers_that_no_field_can_hold_and_booleans_for_numbers_are_refused(write_suite):
    """Integers past 64 bits (a table of 2^71 rows, 2^65 layers) and ``true`` where a number belongs."""
    path = write_suite(HEADER.replace("rows: 2000}", "rows: 2000, cardinalities: [64, 2361183241434822606848]}")
                       + "scenarios:\n  - {model: {name: wukong, num_layers: 36893488147419103232}}\n")
    assert load_error(path).lines == [
        f"{path}:3: defaults.dataset.cardinalities.1: 2361183241434822606848 does not fit in 64 bits",
        f"{path}:7: scenarios.0.model.num_layers: 36893488147419103232 does not fit in 64 bits"]
    path = write_suite(HEADER.replace("rows: 2000}", "rows: 2000, num_dense: true}"))
    (line,) = load_error(path).lines
    assert line.startswith(f"{path}:3: defaults.dataset.num_dense: Input should be a valid integer")
