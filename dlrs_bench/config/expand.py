"""Suite files → resolved scenarios.

A scenario is ``defaults`` with one alternative of every ``matrix`` axis merged over it
(cartesian product), or with one entry of ``scenarios`` merged over it. Matrix axes may be
dotted (``model.embedding_dim``). Merging is deep, except that a plugin block whose
``name``/``kind`` changes is replaced, not merged (so is ``train.lr_schedule`` whose ``kind``
changes). Every resolved value remembers the file line it came from, so validation errors point
at the line that caused them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlrs_bench.config.checks import MachineChecks
from dlrs_bench.config.schema import PLUGIN_BLOCKS, Loc, MLPerfSpec, Scenario, SuiteFile, _message, validate_scenario
from dlrs_bench.config.yaml_lines import line_of, load_yaml
from dlrs_bench.errors import UserInputError

#: Scenarios one suite may expand to (a matrix is a product: a few long axes grow fast).
MAX_SCENARIOS = 10_000

#: Resolved-scenario path → path in the YAML document it came from.
Origins = dict[Loc, Loc]


@dataclass(frozen=True)
class ResolvedScenario:
    """One validated scenario of a suite, with its stable id and a short display label."""

    suite: str
    scenario_id: str
    label: str
    spec: Scenario
    source: str  # "file:line" of the matrix combination or scenario entry
    mlperf: MLPerfSpec = MLPerfSpec()  # the suite's ``mlperf`` block (how its event logs present themselves)


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    scenarios: list[ResolvedScenario]


def scenario_id(spec: Scenario) -> str:
    """A short stable hash of the resolved spec.

    Values equal to their defaults are left out (so writing a default explicitly or omitting it
    gives the same id, and new options with defaults keep old ids); the dataset, model and
    compressor names always count.
    """
    payload = spec.model_dump(mode="json", exclude_defaults=True, exclude={"name", "seeds"})
    for block, key in PLUGIN_BLOCKS.items():
        payload.setdefault(block, {})[key] = getattr(getattr(spec, block), key)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def load_suite(path: str | Path, machine_checks: bool = True) -> Suite:
    """Load, expand and validate a suite; raise :class:`UserInputError` listing every problem.

    With ``machine_checks`` each scenario is also checked against its data and this machine's cores
    (:mod:`dlrs_bench.config.checks`)."""
    path = Path(path)
    machine = MachineChecks() if machine_checks else None
    data, lines = load_yaml(path, text_keys=True)

    def where(doc_path: Loc) -> int:
        return line_of(lines, doc_path)

    if not isinstance(data, dict):
        raise UserInputError(f"{path}:{where(())}: a suite file must be a mapping (name, defaults, matrix, ...)")
    try:
        suite = SuiteFile.model_validate(data)
    except ValidationError as e:
        errs = [f"{path}:{where(tuple(x['loc']))}: {_dotted(tuple(x['loc']))}: {_message(x, SuiteFile)}"
                for x in e.errors()]
        raise UserInputError(errs[0], errs) from None

    runs = math.prod(len(v) for v in suite.matrix.values()) * bool(suite.matrix) + len(suite.scenarios)
    if runs > MAX_SCENARIOS:
        raise UserInputError(f"{path}:{where(('matrix',) if suite.matrix else ())}: the suite expands to {runs:,} "
                             f"scenarios; at most {MAX_SCENARIOS:,} (split it into several suites)")
    candidates = list(_expand(suite))
    errors: list[str] = []
    resolved: list[ResolvedScenario] = []
    first_seen: dict[str, str] = {}
    for raw, origins, label, source_path in candidates:
        source = f"{path}:{where(source_path)}"
        spec, problems = validate_scenario(raw)
        if spec is not None and machine is not None:
            problems = machine.errors(spec)
        for loc, msg in problems:
            doc_path = _origin(loc, origins)  # where the offending value was written, if it was
            line = f"{path}:{where(doc_path or source_path)}: {_dotted(doc_path or loc)}: {msg}"
            if line not in errors:
                errors.append(line)
        if spec is None or problems:
            continue
        sid = scenario_id(spec)
        if sid in first_seen:
            errors.append(f"{source}: resolves to the same scenario as {first_seen[sid]} (id {sid})")
            continue
        first_seen[sid] = source
        resolved.append(ResolvedScenario(suite.name, sid, spec.name or label or suite.name, spec, source, suite.mlperf))
    if errors:
        raise UserInputError(errors[0], errors)
    return Suite(suite.name, suite.description, path, resolved)


def _expand(suite: SuiteFile):
    """Yield (merged dict, origins, label, document path of the combination) per candidate."""
    base, base_origins = copy.deepcopy(suite.defaults), {}
    _record(base_origins, (), base, ("defaults",))
    if not suite.matrix and not suite.scenarios:
        yield base, base_origins, "", ("defaults",)
    axes = list(suite.matrix.items())
    for combo in [] if not axes else itertools.product(*(range(len(values)) for _, values in axes)):
        merged, origins = copy.deepcopy(base), dict(base_origins)
        labels = []
        for (axis, values), i in zip(axes, combo):
            target = tuple(axis.split("."))
            _apply(merged, origins, target, values[i], ("matrix", axis, i))
            labels.append(_label(target, values[i], values))
        yield merged, origins, " ".join(labels), ("matrix", axes[0][0], combo[0])
    for i, entry in enumerate(suite.scenarios):
        merged, origins = copy.deepcopy(base), dict(base_origins)
        for key, value in entry.items():
            _apply(merged, origins, (key,), value, ("scenarios", i, key))
        label = " ".join(_label((k,), v) for k, v in entry.items() if k != "name")
        yield merged, origins, label, ("scenarios", i)


#: Blocks replaced, not merged, when their key changes: the plugin blocks and the learning-rate schedule.
SWITCHED_BLOCKS: dict[Loc, str] = {**{(block,): key for block, key in PLUGIN_BLOCKS.items()},
                                   ("train", "lr_schedule"): "kind"}


def _apply(tree: dict, origins: Origins, at: Loc, value: Any, source: Loc) -> None:
    """Merge ``value`` into ``tree`` at path ``at``, recording where each leaf came from."""
    parent = tree
    for depth, key in enumerate(at[:-1]):
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
            origins[at[: depth + 1]] = source
        parent = parent[key]
    key = at[-1]
    current = parent.get(key)
    tag = SWITCHED_BLOCKS.get(at)
    switching = tag is not None and isinstance(current, dict) and isinstance(value, dict) \
        and tag in value and value[tag] != current.get(tag)
    if isinstance(current, dict) and isinstance(value, dict) and not switching:
        origins.setdefault(at, source)
        for k, v in value.items():
            _apply(tree, origins, (*at, k), v, (*source, k))
        return
    for p in [p for p in origins if p[: len(at)] == at]:
        del origins[p]
    parent[key] = copy.deepcopy(value)
    _record(origins, at, value, source)


def _record(origins: Origins, at: Loc, value: Any, source: Loc) -> None:
    origins[at] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _record(origins, (*at, k), v, (*source, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(origins, (*at, i), v, (*source, i))


def _origin(loc: Loc, origins: Origins) -> Loc | None:
    """The document path of the longest prefix of ``loc`` that came from the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return (*origins[loc[:n]], *loc[n:])
    return None


def _dotted(loc: Loc) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top)"


def _label(at: Loc, value: Any, alternatives: list[Any] | None = None) -> str:
    """A compact label for one matrix choice: ``hashing(ratio=4)`` or ``embedding_dim=8``.

    For a mapping, keys that do not tell this alternative apart are left out: among alternatives
    of the same ``kind``/``name``, the keys that vary between them; for a kind/name that appears
    once, the keys no other alternative has with the same value.
    """
    if not isinstance(value, dict):
        return f"{at[-1]}={value}"
    head = next((str(value[k]) for k in ("kind", "name") if k in value), "")
    others = [a for a in alternatives or [] if isinstance(a, dict) and a is not value]
    same = [a for a in others if _head(a) == _head(value)]

    def telling(key: str) -> bool:
        if same:
            return any(a.get(key, _MISSING) != value[key] for a in same)
        return not any(a.get(key, _MISSING) == value[key] for a in others)

    rest = ",".join(f"{k}={value[k]}" for k in value if k not in ("kind", "name") and telling(k))
    return f"{head}({rest})" if head and rest else head or f"{at[-1]}({rest})"


def _head(value: dict[str, Any]) -> Any:
    return value.get("kind", value.get("name"))


_MISSING = object()
