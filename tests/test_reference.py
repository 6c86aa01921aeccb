"""Reference tables: every published table validates, values match the sources, bad files fail clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import line_of

from dlrs_bench.compare.reference import (
    METRICS,
    ReferenceClaim,
    ReferenceTable,
    load_reference,
    load_references,
)
from dlrs_bench.errors import UserInputError

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference_results"
FILES = sorted(REFERENCE_DIR.glob("*.yaml"))

VALID = """\
source: Someone et al., A paper, 2024
table: Table 1
dataset: criteo-kaggle
rows:
  - {model: dlrm, compressor: none, ratio: 1, metric: auc, value: 0.80, units: AUC}
  - model: dlrm
    compressor: robe
    ratio: 10
    metric: auc
    value: 0.79
    units: AUC
"""


def table(name: str) -> ReferenceTable:
    return load_reference(REFERENCE_DIR / name)


def one(t: ReferenceTable, metric: str, **keys: object):
    rows = t.find(metric, **keys)
    assert len(rows) == 1, f"{t.path}: {len(rows)} rows for {metric} {keys}"
    return rows[0]


def load_error(path: Path) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        load_reference(path)
    err = info.value
    for line in err.lines:  # every problem names the file and a line
        assert re.match(rf"^{re.escape(str(path))}:\d+: ", line), line
    return err


# ------------------------------------------------------------------ the published tables


def test_there_are_at_least_six_reference_files():
    assert len(FILES) >= 6, FILES
    names = {p.name for p in FILES}
    assert {
        "seed002_table2_lookup_ms.yaml",
        "seed002_table3_criteo_kaggle.yaml",
        "seed002_table4_criteo_tb.yaml",
        "seed003_table1_scaling_laws.yaml",
        "seed000_claims.yaml",
        "bars_open_benchmark.yaml",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_reference_file_validates(path: Path):
    t = load_reference(path)
    assert t.path == path
    assert t.source.strip() and t.table.strip()
    assert t.rows or t.claims
    for row in t.rows:
        assert row.units.strip(), f"{path.name}: a row without units"
        assert row.dataset, f"{path.name}: a row without a dataset"


def test_load_references_reads_the_whole_directory():
    tables = load_references(REFERENCE_DIR)
    assert [t.path for t in tables] == FILES


def test_provenance_names_the_sources():
    assert "Desai" in table("seed002_table3_criteo_kaggle.yaml").source
    assert table("seed002_table2_lookup_ms.yaml").hardware.startswith("NVIDIA Quadro RTX 8000")
    assert "Understanding Scaling Laws for Recommendation Models" in table("seed003_table1_scaling_laws.yaml").source
    assert "Ardalani" in table("seed003_table1_scaling_laws.yaml").source
    assert "Zhan" in table("seed000_claims.yaml").source
    assert "Zhu" in table("bars_open_benchmark.yaml").source
    for path in FILES:
        assert load_reference(path).table


def test_table3_spot_checks():
    t = table("seed002_table3_criteo_kaggle.yaml")
    assert t.dataset == "criteo-kaggle"
    assert len(t.rows) == 6 * 5 * 2  # 6 models x 5 ratios x (AUC, epochs to target)
    dlrm_1000 = one(t, "auc", model="dlrm", ratio=1000)
    assert (dlrm_1000.value, dlrm_1000.compressor, dlrm_1000.tolerance) == (0.8048, "robe", 0.002)
    assert one(t, "auc", model="dlrm", ratio=1).compressor == "none"
    assert one(t, "auc", model="xdeepfm", ratio=10000).value == 0.7950
    assert one(t, "auc", model="fibinet", ratio=10).value == 0.8021
    epochs = one(t, "epochs_to_target", model="autoint", ratio=10000)
    assert (epochs.value, epochs.target.value) == (14.93, 0.7968)
    not_reached = one(t, "epochs_to_target", model="dlrm", ratio=10000)
    assert not_reached.reached is False and not_reached.value is None
    assert one(t, "epochs_to_target", model="fibinet", ratio=10).value == 0.93
    assert sum(r.reached is False for r in t.rows) == 5  # every model but AutoInt misses at 10000x
    assert dlrm_1000.accepts(0.8030) and not dlrm_1000.accepts(0.8020)


def test_table4_spot_checks():
    t = table("seed002_table4_criteo_tb.yaml")
    assert one(t, "epochs_to_target", ratio=10000).value == 4.55
    assert one(t, "epochs_to_target", ratio=100000).reached is False
    assert one(t, "epochs_to_target", ratio=1).target.value == 0.8025
    assert one(t, "time_per_1000_iters_s", ratio=1).value == 50.6
    assert one(t, "relative_time", ratio=100).value == 1.19
    assert one(t, "inference_time_s", gpus=8).value == 203
    assert not t.find("time_per_1000_iters_s", ratio=100000)  # '–' in the paper: no row


def test_table2_spot_checks():
    t = table("seed002_table2_lookup_ms.yaml")
    forward = one(t, "forward_ms")
    assert (forward.low, forward.high, forward.ratio) == (0.27, 0.40, None)
    assert one(t, "backward_ms", ratio=10, rows=4_000_000).value == 2.55
    assert one(t, "backward_ms", ratio=10, rows=128_000_000).value == 69.73
    dense = one(t, "backward_ms", ratio=10000)
    assert (dense.gradient, dense.low, dense.high) == ("dense", 0.35, 0.47)
    sparse = one(t, "backward_ms", gradient="sparse")
    assert sparse.value == 2.5 and sparse.accepts(2.62) and not sparse.accepts(3.0)
    assert all(c.over == "chunk" and c.order[0] == [16, 32] for c in t.claims)


def test_seed003_spot_checks():
    t = table("seed003_table1_scaling_laws.yaml")
    beta = one(t, "beta", resource="data", split=None)
    assert (beta.low, beta.high) == (0.09, 0.12)
    assert beta.accepts(0.1) and not beta.accepts(0.2)
    assert one(t, "alpha", resource="data").value == 0.07
    assert (one(t, "beta", resource="parameters").low, one(t, "beta", resource="parameters").high) == (0.4, 7.6)
    assert one(t, "gamma", resource="compute").value == 0.98
    assert one(t, "r2", resource="parameters").value == 0.9
    assert one(t, "saturated", resource="parameters").reached is True
    assert one(t, "saturated", resource="data").reached is False
    orders = {c.where["resource"]: c.order for c in t.claims if c.kind == "ordering"}
    assert orders == {
        "data": [["V"], ["H"], ["O"], ["M"]],
        "parameters": [["V", "H", "O", "M"]],
        "compute": [["M"], ["O"], ["H"]],
    }
    phases = {c.where["resource"]: c.saturated for c in t.claims if c.kind == "phase"}
    assert phases == {"data": False, "parameters": True, "compute": False}  # Table 1's "saturated" column


def test_seed000_claims():
    ordering, fusion, scaling = table("seed000_claims.yaml").claims
    assert (ordering.kind, ordering.metric, ordering.over) == ("ordering", "auc", "compressor")
    assert ordering.order == [["qr"], ["memcom", "bch"], ["hashing"]]
    assert ordering.ratios == [4, 16, 64, 256, 1024] and ordering.levels == {"qr": {"fusion": "mult"}}
    assert (fusion.kind, fusion.over, fusion.better, fusion.worse) == ("comparison", "fusion", "mult", ["add", "fc"])
    assert (scaling.metric, scaling.better, scaling.worse, scaling.where) == (
        "beta", "wukong", ["dlrm"], {"resource": "parameters"})


def test_bars_spot_checks():
    t = table("bars_open_benchmark.yaml")
    assert len(t.rows) == 7 * 6 - 2  # DLRM has no x4_001 entries
    assert one(t, "auc", model="dcnv2", dataset="Criteo_x1").value == 0.8142
    assert one(t, "auc", model="fibinet", dataset="MovielensLatest_x1").value == 0.9576
    assert one(t, "auc", model="autoint+", dataset="Avazu_x4_001").value == 0.7902
    assert not t.find("auc", model="dlrm", dataset="Criteo_x4_001")
    assert {r.dataset for r in t.rows} == {
        "Criteo_x1", "Avazu_x1", "Frappe_x1", "MovielensLatest_x1", "Criteo_x4_001", "Avazu_x4_001",
    }  # fmt: skip


# ------------------------------------------------------------------ claims are checkable


def test_ordering_claim_violations():
    claim = table("seed000_claims.yaml").claims[0]
    assert claim.violations({"qr": 0.80, "memcom": 0.79, "bch": 0.795, "hashing": 0.75}) == []
    problems = claim.violations({"qr": 0.78, "memcom": 0.79, "bch": 0.77, "hashing": 0.75})
    assert problems == ["compressor=qr (0.78) does not beat compressor=memcom (0.79) on auc"]
    assert claim.violations({"qr": 0.8}) == [
        "no measurement for compressor=memcom",
        "no measurement for compressor=bch",
        "no measurement for compressor=hashing",
    ]


def test_claim_direction_and_tolerance():
    chunk = table("seed002_table2_lookup_ms.yaml").claims[0]  # forward_ms: lower is better
    assert chunk.violations({1: 0.8, 4: 0.6, 16: 0.31, 32: 0.31}) == []
    assert chunk.violations({1: 0.8, 4: 0.6, 16: 0.31, 32: 0.40})  # 16 and 32 not within 0.02
    assert chunk.violations({1: 0.5, 4: 0.6, 16: 0.31, 32: 0.31})  # chunk 1 faster than 4
    fusion = table("seed000_claims.yaml").claims[1]
    assert fusion.violations({"mult": 0.8, "add": 0.79, "fc": 0.78}) == []
    assert fusion.violations({"mult": 0.8, "add": 0.81, "fc": 0.78}) == [
        "fusion=mult (0.8) does not beat fusion=add (0.81) on auc"
    ]


def test_claim_shape_is_checked():
    base = {"kind": "ordering", "statement": "s", "metric": "auc", "over": "compressor"}
    with pytest.raises(ValueError, match="order"):
        ReferenceClaim.model_validate({**base, "better": "qr", "worse": ["hashing"]})
    with pytest.raises(ValueError, match="no better direction"):
        ReferenceClaim.model_validate({**base, "metric": "alpha", "order": [["qr"], ["hashing"]]})
    with pytest.raises(ValueError, match="listed twice"):
        ReferenceClaim.model_validate({**base, "order": [["qr"], ["qr"]]})


def test_every_metric_has_a_direction_entry():
    assert {"auc", "logloss", "ne", "epochs_to_target", "time_per_1000_iters_s", "forward_ms", "backward_ms",
            "relative_time", "alpha", "beta", "gamma", "r2"} <= set(METRICS)  # fmt: skip
    assert METRICS["auc"] == "higher" and METRICS["ne"] == "lower"


# ------------------------------------------------------------------ invalid files


def test_valid_minimal_file_loads(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    t = load_reference(path)
    assert [r.dataset for r in t.rows] == ["criteo-kaggle", "criteo-kaggle"]


def test_unknown_key_names_file_line_and_field(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("    value: 0.79\n", "    value: 0.79\n    colour: blue\n"))
    err = load_error(path)
    assert len(err.lines) == 1
    assert err.lines[0] == f"{path}:{line_of(path, 'colour:')}: rows[1].colour: unknown key"
    assert str(err) == err.lines[0]


def test_unknown_top_level_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID + "year: 2024\n")
    err = load_error(path)
    assert err.lines == [f"{path}:{line_of(path, 'year:')}: year: unknown key"]


def test_missing_value_names_the_row(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("    value: 0.79\n", ""))
    err = load_error(path)
    assert err.lines == [
        f"{path}:{line_of(path, '- model: dlrm')}: rows[1]: missing measurement: give value, low/high, or reached"
    ]


def test_missing_units_and_source(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("source: Someone et al., A paper, 2024\n", "").replace(", units: AUC}", "}"))
    err = load_error(path)
    assert f"{path}:1: source: Field required" in err.lines
    assert f"{path}:{line_of(path, 'ratio: 1,')}: rows[0].units: Field required" in err.lines


def test_bad_metric_name_suggests_the_closest(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("    metric: auc\n", "    metric: acu\n"))
    err = load_error(path)
    line = err.lines[0]
    assert line.startswith(f"{path}:{line_of(path, 'metric: acu')}: rows[1].metric: unknown metric 'acu'")
    assert "did you mean 'auc'" in line


def test_wrong_type_and_impossible_values(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("ratio: 10\n", "ratio: -10\n").replace("value: 0.79", "value: high"))
    err = load_error(path)
    assert any(line.startswith(f"{path}:{line_of(path, 'ratio: -10')}: rows[1].ratio: ") for line in err.lines)
    assert any(line.startswith(f"{path}:{line_of(path, 'value: high')}: rows[1].value: ") for line in err.lines)


def test_inconsistent_measurements(tmp_path: Path):
    cases = {
        "value: 0.80, low: 0.7": "give value or low/high, not both",
        "low: 0.9, high: 0.8": "low (0.9) is above high (0.8)",
        "reached: false": "reached is for",
    }
    for i, (fields, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(VALID.replace("value: 0.80", fields))
        err = load_error(path)
        assert message in err.lines[0] and ": rows[0]: " in err.lines[0], err.lines


def test_epochs_to_target_needs_a_target(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    row = "metric: epochs_to_target, reached: false, units: epochs"
    path.write_text(VALID.replace("metric: auc, value: 0.80, units: AUC", row))
    assert "needs the target" in load_error(path).lines[0]


def test_duplicate_rows_and_missing_dataset(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    path.write_text(VALID.replace("ratio: 10\n", "ratio: 1\n").replace("compressor: robe\n", "compressor: none\n"))
    assert "rows[1] repeats rows[0]" in load_error(path).lines[0]
    path = tmp_path / "nodata.yaml"
    path.write_text(VALID.replace("dataset: criteo-kaggle\n", ""))
    assert ": rows[0]: no dataset" in load_error(path).lines[0]


def test_claim_errors_name_the_claim(tmp_path: Path):
    path = tmp_path / "claims.yaml"
    path.write_text(
        "source: s\ntable: t\nclaims:\n"
        "  - kind: ordering\n    statement: s\n    metric: auc\n    over: colour\n    order: [[a], [b]]\n"
    )
    err = load_error(path)
    assert err.lines[0].startswith(f"{path}:{line_of(path, 'over: colour')}: claims[0].over: must be a match key")


def test_yaml_syntax_error_and_non_mapping(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("source: [unclosed\n")
    assert "YAML syntax error" in load_error(path).lines[0]
    path.write_text("- just\n- a list\n")
    assert "must be a mapping" in load_error(path).lines[0]


def test_load_references_collects_every_bad_file(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(VALID + "year: 1\n")
    (tmp_path / "b.yaml").write_text(VALID.replace("metric: auc,", "metric: acu,"))
    (tmp_path / "c.yaml").write_text(VALID)
    (tmp_path / "README.md").write_text("not a table\n")
    with pytest.raises(UserInputError) as info:
        load_references(tmp_path)
    lines = info.value.lines
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'a.yaml'}:") and lines[1].startswith(f"{tmp_path / 'b.yaml'}:")
    with pytest.raises(UserInputError, match="no such reference file or directory"):
        load_references(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no reference tables"):
        load_references(tmp_path / "empty")


# ------------------------------------------------------------------ dataset sizes (issue 14)


def test_every_table_with_quality_rows_states_its_dataset_sizes():
    """compare --reference judges a quality row only against runs on as many rows: every shipped table with
    AUC / NE / LogLoss rows on a public dataset says how many (seed 003's production data is not public)."""
    for path in FILES:
        t = load_reference(path)
        for row in t.rows:
            if row.metric in ("auc", "ne", "logloss"):
                assert t.size_of(row) is not None, f"{path.name}: no dataset_sizes for {row.dataset}"


def test_dataset_size_spot_checks():
    t3 = table("seed002_table3_criteo_kaggle.yaml")
    (row, *_) = t3.find("auc", model="dlrm")
    assert t3.size_of(row).rows == 45_840_617 and "REFERENCE.md" in t3.size_of(row).source
    t4 = table("seed002_table4_criteo_tb.yaml")
    assert t4.dataset_sizes["criteo-tb"].rows == 4_195_197_692 + 178_274_637
    bars = table("bars_open_benchmark.yaml")
    assert {k: v.rows for k, v in bars.dataset_sizes.items()} == {
        "Criteo_x1": 45_840_617, "Avazu_x1": 40_428_967, "Frappe_x1": 288_609, "MovielensLatest_x1": 2_006_859,
        "Criteo_x4_001": 45_840_617, "Avazu_x4_001": 40_428_967}


def test_dataset_sizes_are_checked(tmp_path: Path):
    path = tmp_path / "sizes.yaml"
    path.write_text(VALID.replace("rows:\n", "dataset_sizes:\n  criteo-kagle: {rows: 5, source: x}\nrows:\n", 1))
    assert "dataset_sizes names criteo-kagle, which no row uses" in load_error(path).lines[0]
    path.write_text(VALID.replace("rows:\n", "dataset_sizes:\n  criteo-kaggle: {rows: 0, source: x}\nrows:\n", 1))
    assert ":5: dataset_sizes.criteo-kaggle.rows: Input should be greater than 0" in load_error(path).lines[0]
    path.write_text(VALID.replace("rows:\n", "dataset_sizes:\n  criteo-kaggle: {rows: 5}\nrows:\n", 1))
    assert "dataset_sizes.criteo-kaggle.source: Field required" in load_error(path).lines[0]
