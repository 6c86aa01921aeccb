"""Ctrl-C, SIGTERM and kill -9 on real ``dlrs-bench`` processes: the whole suite stops with 128 +
the signal number and one line, the run in flight leaves nothing, and no child process outlives
the command (parent-death signals), nor a killed writer's ``.partial-<pid>`` folder the next one.

Each command runs in a session of its own (``start_new_session``), so a signal reaches only what
a test aims it at: the command alone (``kill``) or its whole process group (a terminal's Ctrl-C).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import tiny_suite

from dlrs_bench.lifecycle import Interrupted, alive, interruptible, remove_stale

DLRS_BENCH = Path(sys.executable).with_name("dlrs-bench")
#: Long enough for a slow, busy machine to start torch and two gloo ranks.
STARTUP_S = 180


def as_from_a_terminal() -> None:
    """In the child before it runs dlrs-bench: SIGINT as a terminal leaves it (default action, not blocked),
    whatever this test process's state — an ignored or blocked signal is inherited through exec, and in long
    runs of the whole suite this process was seen with SIGINT ignored, which made the command deaf to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Command:
    """A ``dlrs-bench`` process in its own session, started as from a terminal; stdout and stderr go to
    files."""

    def __init__(self, tmp: Path, *args: Any) -> None:
        self.out, self.err = tmp / "stdout.txt", tmp / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([str(DLRS_BENCH), *map(str, args)], stdout=out, stderr=err,
                                         start_new_session=True, env={**os.environ, "COLUMNS": "200"},
                                         preexec_fn=as_from_a_terminal)
        self.pid = self.proc.pid

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + STARTUP_S
        while not ready():
            assert self.proc.poll() is None, f"ended ({self.proc.returncode}) before {what}:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"no {what} after {STARTUP_S} s:\n{self.stderr()}"
            time.sleep(0.05)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def finish(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.err.read_text()

    def kill_all(self) -> None:
        """Clean up after a failed test: the whole session."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def command(tmp_path):
    started: list[Command] = []

    def start(*args: Any) -> Command:
        cmd = Command(tmp_path, *args)
        started.append(cmd)
        return cmd

    yield start
    for cmd in started:
        if cmd.proc.poll() is None:
            cmd.kill_all()


def gone_soon(processes: list[psutil.Process], within: float = 10) -> list[psutil.Process]:
    """Those of ``processes`` still running (not zombies) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        running = [p for p in processes if _running(p)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def long_suite(name: str, *scenarios: dict[str, Any]) -> dict[str, Any]:
    """The tiny suite with a budget no test waits for (200 epochs, no early stop)."""
    suite = tiny_suite(name, matrix={}, scenarios=list(scenarios))
    suite["defaults"]["train"].update(optimizer="adagrad", lr=0.05, max_epochs=200, stop_at_target=False)
    return suite


def write(path: Path, suite: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def evaluated(folder: Path, ranks: bool = False) -> Callable[[], bool]:
    """True once a run of the suite ``folder`` (``ranks``: one on launched ranks) has evaluated: it
    trains (on ranks that are set up). A run writes its event log under a temporary name until its
    result is written."""
    def ready() -> bool:
        return any("eval_accuracy" in log.read_text(errors="replace")
                   for log in folder.glob("*/.seed0.mllog.partial-*")
                   if not ranks or (log.parent / "seed0.ranks").is_dir())
    return ready


def left_in(scenario: Path) -> list[str]:
    """What a scenario folder holds besides its lock file and rank logs."""
    return sorted(p.name for p in scenario.iterdir() if p.name not in (".lock", "seed0.ranks"))


# ---------------------------------------------------------------- run


def test_ctrl_c_during_a_two_rank_scenario_stops_the_whole_suite(tmp_path, command):
    suite = long_suite("sig",
                       {"name": "first", "compressor": {"kind": "none"}, "train": {"max_epochs": 1}},
                       {"name": "ranks", "compressor": {"kind": "none"}, "processes": 2},
                       {"name": "after", "compressor": {"kind": "hashing", "ratio": 2}, "train": {"max_epochs": 1}})
    folder = tmp_path / "r" / "sig"
    run = command("run", write(tmp_path / "sig.yaml", suite), "--results-dir", tmp_path / "r")
    run.wait_for(evaluated(folder, ranks=True), "training on the ranks")
    (first,) = folder.glob("*/seed0.json")
    before = first.read_bytes()
    children = run.descendants()
    assert len(children) >= 2  # the ranks (and multiprocessing's resource tracker)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group

    assert run.finish() == 128 + signal.SIGINT
    assert not gone_soon(children), "child processes outlived the command"
    err = run.stderr()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert ("interrupted by SIGINT: stopped suite sig at scenario ranks (" in err and "seed 0, which is not recorded; "
            f"1 result(s) of this run kept in {folder}; rerun with --resume to continue" in err), err
    assert first.read_bytes() == before and json.loads(before)["status"] in ("reached", "not_reached")
    (ranks,) = (p.parent for p in folder.glob("*/seed0.ranks"))
    assert left_in(ranks) == [], "the interrupted run left a result, a temporary file or its event log"
    logs = list(ranks.rglob("*.log"))
    assert len(logs) == 4  # stdout and stderr of 2 ranks: they ended quietly (SIGTERM from the launcher)
    assert not [log for log in logs if "Traceback" in log.read_text(errors="replace")]
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.parent.name, ranks.name]), "'after' ran"


def test_sigterm_of_a_single_process_run_exits_143_with_one_line(tmp_path, command):
    folder = tmp_path / "r" / "one"
    suite = long_suite("one", {"name": "long", "compressor": {"kind": "none"}})
    run = command("run", write(tmp_path / "one.yaml", suite), "--results-dir", tmp_path / "r")
    run.wait_for(evaluated(folder), "training")
    run.proc.send_signal(signal.SIGTERM)  # `kill PID`: the command alone

    assert run.finish() == 128 + signal.SIGTERM
    err = run.stderr()
    assert "Traceback" not in err
    assert ("interrupted by SIGTERM: stopped suite one at scenario long (" in err
            and "0 result(s) of this run kept" in err), err
    (scenario,) = folder.iterdir()
    assert left_in(scenario) == []


def test_an_interrupted_rerun_leaves_the_earlier_event_log_in_place(tmp_path, command):
    """A run writes its event log under a temporary name, which replaces the earlier log only with its
    result: interrupted, it leaves the earlier log where it was and no temporary file."""
    folder = tmp_path / "r" / "again"
    path = write(tmp_path / "again.yaml", long_suite("again", {"name": "long", "compressor": {"kind": "none"}}))
    run = command("run", path, "--results-dir", tmp_path / "r")
    run.wait_for(evaluated(folder), "training")
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT
    (scenario,) = folder.iterdir()
    assert left_in(scenario) == []

    log = scenario / "seed0.mllog"
    log.write_text("earlier\n")
    run = command("run", path, "--results-dir", tmp_path / "r")
    run.wait_for(evaluated(folder), "training")
    assert log.read_text() == "earlier\n"
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT
    assert log.read_text() == "earlier\n" and left_in(scenario) == ["seed0.mllog"]


def test_kill_9_of_run_takes_the_ranks_and_helpers_with_it(tmp_path, command):
    folder = tmp_path / "r" / "k"
    suite = long_suite("k", {"name": "ranks", "compressor": {"kind": "none"}, "processes": 2})
    run = command("run", write(tmp_path / "k.yaml", suite), "--results-dir", tmp_path / "r")
    run.wait_for(evaluated(folder, ranks=True), "training on the ranks")
    children = run.descendants()
    assert len(children) >= 2
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    running = gone_soon(children, within=5)
    assert not running, f"still running 5 s after kill -9: {running}"


# ---------------------------------------------------------------- data prepare


def raw_criteo(path: Path, rows: int) -> Path:
    """``rows`` Criteo lines (1,000 distinct ones repeated): enough for a prepare of a few seconds."""
    rng = random.Random(0)
    lines = ["\t".join([str(rng.randint(0, 1)), *(str(rng.randint(0, 99)) for _ in range(13)),
                        *(f"{rng.getrandbits(32):08x}" for _ in range(26))]) for _ in range(1000)]
    block = "\n".join(lines) + "\n"
    path.write_text(block * (rows // 1000), encoding="utf-8")
    return path


def prepare_with_two_workers(tmp_path, command):
    """A ``data prepare`` of a 100,000-row raw file on two parser workers, once both run:
    (raw file, --out, the process, its partial folder, its workers)."""
    raw = raw_criteo(tmp_path / "raw.tsv", 100_000)
    out = tmp_path / "cache"
    prep = command("data", "prepare", "criteo-kaggle", "--raw", raw, "--out", out, "--workers", 2)
    partial = tmp_path / f".cache.partial-{prep.pid}"
    prep.wait_for(lambda: partial.is_dir() and len(prep.descendants()) == 2, "two parser workers")
    workers = prep.descendants()
    return raw, out, prep, partial, workers


def test_kill_9_of_data_prepare_takes_its_workers_and_the_next_prepare_removes_the_partial_folder(
        tmp_path, command):
    raw, out, prep, partial, workers = prepare_with_two_workers(tmp_path, command)
    prep.proc.kill()
    assert prep.finish() == -signal.SIGKILL
    assert not gone_soon(workers, within=10), "parser workers outlived a killed data prepare"
    assert partial.is_dir()  # nothing could clean up after kill -9 ...

    again = subprocess.run([str(DLRS_BENCH), "data", "prepare", "criteo-kaggle", "--raw", str(raw), "--out", str(out),
                            "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not partial.exists()  # ... the next prepare into the same place did
    assert (out / "manifest.json").is_file()
    assert not list(tmp_path.glob(".cache.partial-*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_data_prepare_cleanly(tmp_path, command, sig):
    raw, out, prep, partial, workers = prepare_with_two_workers(tmp_path, command)
    if sig == signal.SIGINT:
        os.killpg(prep.pid, sig)  # Ctrl-C: the workers get it too, and leave it to their parent
    else:
        prep.proc.send_signal(sig)
    assert prep.finish() == 128 + sig, prep.stderr()
    assert not gone_soon(workers, within=5)
    err = prep.stderr()
    assert "Traceback" not in err
    assert f"interrupted by {sig.name}: stopped preparing {out}" in err
    assert not out.exists() and not partial.exists()


# ---------------------------------------------------------------- the pieces


def test_interruptible_raises_once_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert caught.value.exit_code == 143 and caught.value.name == "SIGTERM"
    assert not isinstance(caught.value, Exception)  # `except Exception` (a failed scenario) lets it through
    assert signal.getsignal(signal.SIGTERM) is before
    with interruptible():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except Interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping is ignored
            time.sleep(0.2)


def test_interruptible_leaves_an_ignored_signal_ignored():
    """A shell starts a script's background job (`command &`) with SIGINT ignored: Ctrl-C is not for it."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_signal_during_an_import_is_raised_after_it(tmp_path, monkeypatch):
    """Raising in the middle of an import can leave a half-imported torch that crashes the interpreter
    at exit; the signal waits until the import is done."""
    module = tmp_path / "slow_to_import.py"
    module.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.3)\n"
                      "DONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Interrupted), interruptible():
        import slow_to_import

        assert slow_to_import.DONE
        time.sleep(2)
    assert "slow_to_import" in sys.modules  # a failed import would have been taken out
    del sys.modules["slow_to_import"]


def test_remove_stale_keeps_folders_of_live_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".c.partial-{dead.pid}").mkdir()
    (tmp_path / f".c.partial-{os.getpid()}").mkdir()  # this very process
    (tmp_path / f".c.partial-{os.getppid()}").mkdir()  # alive
    (tmp_path / ".c.partial-x").mkdir()
    assert not alive(dead.pid) and alive(os.getppid())
    assert remove_stale(tmp_path, ".c.partial-") == [tmp_path / f".c.partial-{dead.pid}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".c.partial-{os.getpid()}", f".c.partial-{os.getppid()}", ".c.partial-x"])

