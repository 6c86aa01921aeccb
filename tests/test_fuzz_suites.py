"""Fuzzing `dlrs-bench validate` with mutants of every suite in suites/.

Each suite file gets one mutant of every kind below (plus a few with several mutations at once),
generated from a fixed seed, and is validated in-process through typer's CliRunner. Whatever the
mutant holds, validate must end within seconds with exit 0 (still a valid suite) or exit 2 with one
``error: FILE:LINE: ...`` line per problem — never exit 1, an exception or a traceback.
"""

from __future__ import annotations

import copy
import math
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dlrs_bench.cli import app

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").glob("*.yaml"))
SEED = 12
#: Each mutant must be validated within this many seconds (a hang is stopped at DEADLINE_S).
LIMIT_S, DEADLINE_S = 5.0, 30.0
#: Mutants with several random mutations at once, per suite.
MIXED = 3

runner = CliRunner()
Loc = tuple[str | int, ...]


# ------------------------------------------------------------------------------------------ mutations


def nodes(data: Any, at: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every (path, value) under ``data``, the root included."""
    yield at, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from nodes(value, (*at, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from nodes(value, (*at, i))


def parent_of(data: Any, at: Loc) -> Any:
    for key in at[:-1]:
        data = data[key]
    return data


def pick(rng: random.Random, data: Any, keep: Callable[[Loc, Any], bool]) -> Loc | None:
    choices = [at for at, value in nodes(data) if keep(at, value)]
    return rng.choice(choices) if choices else None


def is_key(at: Loc, _: Any) -> bool:
    return bool(at) and isinstance(at[-1], str)


def is_number(_: Loc, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def where(at: Loc) -> str:
    return ".".join(map(str, at)) or "(top)"


SENTINEL = "__FUZZ_VALUE__"


def with_raw_value(rng: random.Random, data: dict[str, Any], raw: str) -> tuple[str, str]:
    """``data`` dumped with a random value replaced by the YAML text ``raw`` (an alias, deep nesting)."""
    at = pick(rng, data, lambda a, v: bool(a) and not isinstance(v, dict | list)) or ("name",)
    parent_of(data, at)[at[-1]] = SENTINEL
    return dump(data).replace(SENTINEL, raw, 1), where(at)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def typo(rng: random.Random, key: str) -> str:
    if len(key) < 2:
        return key + key
    i = rng.randrange(len(key) - 1)
    return rng.choice([key[:i] + key[i + 1:],  # a letter dropped
                       key[:i] + key[i + 1] + key[i] + key[i + 2:],  # two swapped
                       key[:i] + key[i] + key[i:],  # one doubled
                       key.upper()])


OTHER_TYPES: list[Any] = ["text", 7, -3, 0.5, [1, "a"], {"k": 1}, None, True, [], {}, ""]


def m_delete_key(rng, data, text):
    at = pick(rng, data, is_key)
    del parent_of(data, at)[at[-1]]
    return dump(data), f"deleted {where(at)}"


def m_change_type(rng, data, text):
    at = pick(rng, data, lambda a, v: bool(a))
    old = parent_of(data, at)[at[-1]]
    new = rng.choice([v for v in OTHER_TYPES if type(v) is not type(old)])
    parent_of(data, at)[at[-1]] = copy.deepcopy(new)
    return dump(data), f"{where(at)}: {type(old).__name__} -> {new!r}"


def m_unknown_key(rng, data, text):
    at = pick(rng, data, lambda a, v: isinstance(v, dict))
    parent_of(data, (*at, "x"))[f"unknown_{rng.randrange(100)}"] = rng.choice(OTHER_TYPES)
    return dump(data), f"unknown key in {where(at)}"


#: Keys that are not text: a list, a mapping, and scalars YAML reads as another type.
NON_TEXT_KEYS = ["[a, b]", "{a: 1}", "true", "3", "~", "1.5", "2024-01-01"]


def m_non_text_key(rng, data, text):
    at = pick(rng, data, lambda a, v: isinstance(v, dict))
    parent_of(data, (*at, "x"))[SENTINEL] = 1
    key = rng.choice(NON_TEXT_KEYS)
    return dump(data).replace(SENTINEL, key, 1), f"key {key} in {where(at)}"


def m_typo_key(rng, data, text):
    at = pick(rng, data, is_key)
    parent = parent_of(data, at)
    new = typo(rng, at[-1])
    if new in parent:
        new += "x"
    parent_items = [(new if k == at[-1] else k, v) for k, v in parent.items()]
    parent.clear()
    parent.update(parent_items)
    return dump(data), f"{where(at)} -> {new!r}"


def m_duplicate_key(rng, data, text):
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if re.match(r"\s*-?\s*[A-Za-z_][\w.-]*:", line)]
    i = rng.choice(keyed)
    line = re.sub(r"^(\s*)-(\s*)", lambda m: m.group(1) + " " + m.group(2), lines[i])  # the list item's next key
    lines.insert(i + 1, line if line.endswith("\n") else line + "\n")
    return "".join(lines), f"line {i + 1} duplicated"


def m_huge_number(rng, data, text):
    at = pick(rng, data, is_number) or pick(rng, data, lambda a, v: bool(a) and not isinstance(v, dict | list))
    value = rng.choice([10**23, 1e23, 2**70, -(2**70), 2**64, 10**400, 1e308])
    parent_of(data, at)[at[-1]] = value
    shown = f"{value:g}" if isinstance(value, float) else f"{'-' if value < 0 else ''}~2**{abs(value).bit_length() - 1}"
    return dump(data), f"{where(at)} = {shown}"


def m_negative(rng, data, text):
    at = pick(rng, data, is_number)
    value = parent_of(data, at)[at[-1]]
    parent_of(data, at)[at[-1]] = -abs(value) if value else -1
    return dump(data), f"{where(at)} negative"


def m_non_finite(rng, data, text):
    at = pick(rng, data, is_number) or ("defaults", "train", "lr")
    value = rng.choice([math.inf, -math.inf, math.nan])
    parent_of(data, at)[at[-1]] = value
    return dump(data), f"{where(at)} = {value}"


def m_empty(rng, data, text):
    content = rng.choice(["", "\n", "# only a comment\n", "---\n", "...\n", "~\n", "[]\n", "0\n"])
    return content, f"file is {content!r}"


def m_truncate(rng, data, text):
    raw = text.encode("utf-8")
    cut = rng.randrange(1, len(raw))
    return raw[:cut], f"truncated at byte {cut}"


CONTROL = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x85, 0xFEFF, 0xFFFE)]


def m_control_character(rng, data, text):
    i = rng.randrange(len(text))
    char = rng.choice(CONTROL)
    return text[:i] + char + text[i:], f"U+{ord(char):04X} at character {i}"


def m_invalid_utf8(rng, data, text):
    raw = text.encode("utf-8")
    i = rng.randrange(len(raw))
    byte = rng.choice([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    return raw[:i] + byte + raw[i:], f"{byte!r} at byte {i}"


def m_deep_nesting(rng, data, text):
    depth = rng.choice([65, 200, 1000, 5000, 20000])
    kind = rng.choice(["list", "mapping"])
    raw = "[" * depth + "1" + "]" * depth if kind == "list" else "{a: " * depth + "1" + "}" * depth
    content, at = with_raw_value(rng, data, raw)
    return content, f"{at}: {kind} nested {depth} deep"


def m_alias_bomb(rng, data, text):
    width, levels = rng.choice([(9, 9), (10, 8), (4, 30)])
    parts = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels)]
    content, at = with_raw_value(rng, data, "[" + ", ".join(parts) + "]")
    return content, f"{at}: alias bomb {width}^{levels}"


def m_self_alias(rng, data, text):
    raw = rng.choice(["&s [*s]", "&s {a: *s}", "&s [1, [2, *s]]"])
    content, at = with_raw_value(rng, data, raw)
    return content, f"{at}: {raw}"


def m_duplicate_scenario_names(rng, data, text):
    scenarios = data.get("scenarios")
    if isinstance(scenarios, list) and len(scenarios) >= 2 and all(isinstance(s, dict) for s in scenarios):
        i, j = rng.sample(range(len(scenarios)), 2)
        name = scenarios[i].get("name", "twin")
        scenarios[i]["name"] = scenarios[j]["name"] = name
        return dump(data), f"scenarios[{i}] and [{j}] named {name!r}"
    data["scenarios"] = [{"name": "twin", "seeds": [1]}, {"name": "twin", "seeds": [2]}]
    return dump(data), "two scenarios named 'twin'"


def m_long_string(rng, data, text):
    at = pick(rng, data, lambda a, v: bool(a) and isinstance(v, str)) or ("name",)
    size = rng.choice([1000, 100_000, 2_000_000])
    parent_of(data, at)[at[-1]] = rng.choice("xé") * size
    return dump(data), f"{where(at)}: {size:,} characters"


MUTATIONS: dict[str, Callable[[random.Random, Any, str], tuple[str | bytes, str]]] = {
    name.removeprefix("m_"): fn for name, fn in list(globals().items()) if name.startswith("m_")
}
#: Mutations of the parsed document that can be applied several at once.
STACKABLE = ("delete_key", "change_type", "unknown_key", "typo_key", "huge_number", "negative", "non_finite",
             "duplicate_scenario_names")


@dataclass(frozen=True)
class Mutant:
    suite: Path
    kind: str
    content: bytes
    what: str

    @property
    def id(self) -> str:
        return f"{self.suite.stem}-{self.kind}"


def make_mutants() -> list[Mutant]:
    out = []
    for suite in SUITES:
        text = suite.read_text(encoding="utf-8")
        plan = [(kind, (kind,)) for kind in MUTATIONS]
        for n in range(MIXED):
            stack = random.Random(f"{SEED}-{suite.stem}-mixed-{n}").sample(STACKABLE, 3)
            plan.append((f"mixed{n}", tuple(stack)))
        for name, kinds in plan:
            rng = random.Random(f"{SEED}-{suite.stem}-{name}")
            content: str | bytes = text
            notes = []
            for kind in kinds:
                data = yaml.safe_load(content)
                content, what = MUTATIONS[kind](rng, data, content)
                notes.append(what)
            raw = content.encode("utf-8") if isinstance(content, str) else content
            out.append(Mutant(suite, name, raw, "; ".join(notes)))
    return out


MUTANTS = make_mutants()


# --------------------------------------------------------------------------------------------- checks


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (a hang fails the test instead of stalling CI)."""
    def expire(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds:g} s")

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def validate(*args: str | Path) -> tuple[Any, float]:
    started = time.perf_counter()
    with deadline(DEADLINE_S):
        result = runner.invoke(app, ["validate", *map(str, args)])
    return result, time.perf_counter() - started


def problems(result: Any, path: Path, elapsed: float) -> list[str]:
    """How ``result`` of ``validate path`` breaks the contract (empty when it keeps it)."""
    out = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        out.append(f"raised {type(result.exception).__name__}: {result.exception}")
    if result.exit_code not in (0, 2):
        out.append(f"exit code {result.exit_code}")
    if "Traceback" in result.output:
        out.append("a traceback in the output")
    if elapsed > LIMIT_S:
        out.append(f"took {elapsed:.1f} s")
    if result.exit_code == 2:
        located = re.compile(rf"error: {re.escape(str(path))}:\d+: \S")
        lines = [line for line in result.output.splitlines() if line.strip()]
        if not lines:
            out.append("exit 2 without a message")
        out += [f"no file:line in {line[:200]!r}" for line in lines if not located.match(line)]
    return out


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_validate_a_mutant_exits_0_or_2_with_file_and_line(mutant: Mutant, tmp_path: Path) -> None:
    path = tmp_path / f"{mutant.id}.yaml"
    path.write_bytes(mutant.content)
    result, elapsed = validate(path)
    found = problems(result, path, elapsed)
    if found:
        pytest.fail(f"{mutant.id} ({mutant.what}): " + "; ".join(found) + "\n" + result.output[-3000:])


def test_the_mutants_cover_every_suite_and_kind():
    assert {m.suite for m in MUTANTS} == set(SUITES) and len(SUITES) >= 10
    assert len(MUTANTS) == len(SUITES) * (len(MUTATIONS) + MIXED)
    assert len({m.content for m in MUTANTS}) > 0.95 * len(MUTANTS)  # the mutations really differ


def needs_the_data(output: str) -> bool:
    """Every error of ``output`` is about a dataset's files that are not on this machine."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    return bool(errors) and all(re.search(r"\.path: .*(not a prepared dataset|no such|does not exist|not found)", e)
                                for e in errors)


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_every_bundled_suite_validates(suite: Path) -> None:
    """Exit 0; a suite whose dataset is not on this machine (a prepared Criteo cache) exits 2 naming the
    missing dataset path only, and exits 0 with the flag that skips the checks of this machine's data."""
    result, _ = validate(suite)
    assert not problems(result, suite, 0.0), result.output
    if result.exit_code == 0:
        return
    assert needs_the_data(result.output), result.output
    flags = [f for f in ("--portable", "--skip-data") if f in runner.invoke(app, ["validate", "--help"]).output]
    if flags:
        portable, _ = validate(flags[0], suite)
        assert portable.exit_code == 0, portable.output
