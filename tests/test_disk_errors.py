"""A full, read-only or otherwise refusing disk never hides a result nor leaves half a file: the results
folder keeps every finished result (and its event log) through a refused write at any step, commands end
with one line and exit 2, and result readers refuse what no run writes.

Faults are injected by shims that need no privileges (``os.open``, ``os.write``, ``os.fsync``,
``os.replace``, ``Path.mkdir`` raising the OS's error); where this machine lets a test mount a small tmpfs, the
same cases also run on a really full or read-only disk.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_suite
from test_cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, invoke, write

from dlrs_bench.data.base import CTRDataset
from dlrs_bench.errors import UserInputError
from dlrs_bench.files import write_atomic
from dlrs_bench.measure.mllog import EventLog
from dlrs_bench.results.schema import MAX_EVAL_POINTS, MAX_RESULT_BYTES
from dlrs_bench.results.store import ResultStore

MESSAGES = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
            errno.EACCES: "Permission denied"}


def refused(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# ---------------------------------------------------------------- a stored run to break


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """A results folder holding one finished run of the tiny suite's ``none`` scenario."""
    root = tmp_path_factory.mktemp("first")
    suite = write(root / "tiny.yaml", tiny_suite())
    result = invoke("run", suite, "--results-dir", root / "r", "--filter", "none")
    assert result.exit_code == EXIT_OK, result.output
    return root


@pytest.fixture
def stored(first_run, tmp_path) -> dict[str, Any]:
    """A copy of :func:`first_run` in this test's folder: its suite file, results folder, scenario
    folder and the bytes of its ``seed0.json`` and ``seed0.mllog``."""
    shutil.copytree(first_run, tmp_path / "run")
    results = tmp_path / "run" / "r"
    (folder,) = (results / "tiny").iterdir()
    return {"suite": tmp_path / "run" / "tiny.yaml", "results": results, "folder": folder,
            "json": (folder / "seed0.json").read_bytes(), "log": (folder / "seed0.mllog").read_bytes()}


def assert_kept(stored: dict[str, Any]) -> None:
    """The older result and event log are where they were, whole, readable, and nothing else was left."""
    folder = stored["folder"]
    assert (folder / "seed0.json").read_bytes() == stored["json"]
    assert (folder / "seed0.mllog").read_bytes() == stored["log"]
    ResultStore(stored["results"]).load(folder / "seed0.json")
    left = sorted(p.name for p in folder.iterdir() if p.name not in (".lock", "seed0.json", "seed0.mllog"))
    assert left in ([], ["history"]), left
    assert not list((folder / "history").iterdir()) if (folder / "history").is_dir() else True


def one_line(output: str) -> str:
    """The output's only error message, from ``error:`` on, whitespace joined (the console may wrap a
    long line); asserts there is exactly one and no traceback."""
    assert "Traceback" not in output
    text = " ".join(output.split())
    assert text.count("error:") == 1, output
    return text[text.index("error:"):]


# ---------------------------------------------------------------- fault-injecting shims


def under(root: Path) -> Callable[[int], bool]:
    """Whether a file descriptor is a file below ``root`` (shims fail only there)."""
    def test(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(str(root))
        except OSError:
            return False
    return test


def fail_write_at(monkeypatch, root: Path, offset: int, code: int = errno.ENOSPC) -> None:
    """``os.write`` on files below ``root`` refuses once ``offset`` bytes of a file are written
    (writing what fits before it)."""
    real, inside, written = os.write, under(root), {}

    def write_(fd: int, data: Any) -> int:
        if not inside(fd):
            return real(fd, data)
        room = offset - written.get(fd, 0)
        if room <= 0:
            raise refused(code)
        n = real(fd, bytes(data[:room]))
        written[fd] = written.get(fd, 0) + n
        return n
    monkeypatch.setattr(os, "write", write_)


def fail_nth(monkeypatch, owner: Any, name: str, n: int, code: int, root: Path | None = None) -> None:
    """``owner.name`` raises ``code``'s OSError on its ``n``-th call (1-based) about a path below ``root``
    (None: any call), works otherwise."""
    real, calls = getattr(owner, name), []

    def call(*args: Any, **kwargs: Any) -> Any:
        where = str(kwargs.get("dir") or (args[0] if args else ""))
        if root is None or where.startswith(str(root)):
            calls.append(args)
            if len(calls) == n:
                raise refused(code)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, call)


def new_result(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored result as a new run of the same scenario would write it (another label)."""
    return {**json.loads(stored["json"]), "label": "the new run"}


def new_log(store: ResultStore, result: dict[str, Any]) -> Path:
    """A new run's temporary event log, written."""
    partial = store.start_event_log(result["suite"], result["scenario_id"], result["seed"])
    partial.write_text(":::MLLOG {\"key\": \"the new run\"}\n" * 50)
    return partial


#: Each step of a result write, refused: a shim installer given monkeypatch, the results folder and the
#: size of the new result file (bytes). The steps in order: the new result's temporary file is created,
#: written and synced, the new log synced, the older log and result moved to history/ (created, then
#: synced), the new log and result renamed into place, the folder synced.
STEPS: dict[str, Callable[[Any, Path, int], None]] = {
    "creating the temporary file": lambda mp, root, size: fail_nth(mp, os, "open", 1, errno.ENOSPC, root),
    "writing byte 0": lambda mp, root, size: fail_write_at(mp, root, 0),
    "writing byte 1": lambda mp, root, size: fail_write_at(mp, root, 1),
    "writing byte 4096": lambda mp, root, size: fail_write_at(mp, root, 4096),
    "writing the last byte": lambda mp, root, size: fail_write_at(mp, root, size - 1),
    "syncing the result": lambda mp, root, size: fail_nth(mp, os, "fsync", 1, errno.ENOSPC),
    "syncing the event log": lambda mp, root, size: fail_nth(mp, os, "fsync", 2, errno.ENOSPC),
    "creating history/": lambda mp, root, size: fail_nth(mp, Path, "mkdir", 2, errno.ENOSPC, root),
    "archiving the older log": lambda mp, root, size: fail_nth(mp, os, "replace", 1, errno.EROFS),
    "syncing history/": lambda mp, root, size: fail_nth(mp, os, "fsync", 3, errno.ENOSPC),
    "archiving the older result": lambda mp, root, size: fail_nth(mp, os, "replace", 2, errno.EROFS),
    "moving the new log into place": lambda mp, root, size: fail_nth(mp, os, "replace", 3, errno.EACCES),
    "moving the new result into place": lambda mp, root, size: fail_nth(mp, os, "replace", 4, errno.EACCES),
    "syncing the folder": lambda mp, root, size: fail_nth(mp, os, "fsync", 5, errno.ENOSPC),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_refused_result_write_keeps_the_older_result_and_event_log(stored, monkeypatch, step):
    store = ResultStore(stored["results"])
    result = new_result(stored)
    partial = new_log(store, result)
    size = len(json.dumps(result, indent=2)) + 1
    assert size > 4096
    STEPS[step](monkeypatch, stored["results"], size)
    with pytest.raises(UserInputError, match=r"cannot write .*: (No space left|Read-only|Permission denied)"):
        store.write(result, event_log=partial)
    monkeypatch.undo()
    assert_kept(stored)
    assert not partial.exists()


def test_history_that_is_a_file_refuses_the_write_and_keeps_everything(stored):
    store = ResultStore(stored["results"])
    result = new_result(stored)
    partial = new_log(store, result)
    (stored["folder"] / "history").write_text("not a folder")
    with pytest.raises(UserInputError, match="history: it is a file, not a folder"):
        store.write(result, event_log=partial)
    (stored["folder"] / "history").unlink()
    assert_kept(stored)


def test_a_complete_write_replaces_the_pair_and_archives_the_older_one(stored):
    store = ResultStore(stored["results"])
    result = new_result(stored)
    partial = new_log(store, result)
    written = partial.read_bytes()
    store.write(result, event_log=partial)
    folder = stored["folder"]
    assert json.loads((folder / "seed0.json").read_text())["label"] == "the new run"
    assert (folder / "seed0.mllog").read_bytes() == written
    assert [p.read_bytes() for p in sorted((folder / "history").glob("seed0*.json"))] == [stored["json"]]
    assert [p.read_bytes() for p in sorted((folder / "history").glob("seed0*.mllog"))] == [stored["log"]]
    assert not partial.exists() and not list(folder.glob(".tmp-*"))


def test_a_killed_runs_temporary_log_is_removed_by_the_next_run(stored):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = stored["folder"] / f".seed0.mllog.partial-{dead.pid}"
    stale.write_text("a run killed with kill -9\n")
    store = ResultStore(stored["results"])
    result = new_result(stored)
    partial = store.start_event_log(result["suite"], result["scenario_id"], 0)
    assert not stale.exists() and partial.name == f".seed0.mllog.partial-{os.getpid()}"


def test_event_log_raises_a_refused_write_once_then_drops_events(tmp_path):
    log = EventLog(tmp_path / "run.mllog")

    class Full:
        def write(self, text: str) -> int:
            raise refused(errno.ENOSPC)

        def close(self) -> None:
            raise refused(errno.ENOSPC)

    log._file = Full()  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space left"):
        log.event("train_start")
    log.event("run_error", "OSError: no space")  # the failed run's note: dropped, no second error
    log.close()


# ---------------------------------------------------------------- dlrs-bench run, end to end


def test_run_whose_result_the_disk_refuses_exits_2_and_keeps_the_older_result(stored, monkeypatch):
    fail_write_at(monkeypatch, stored["results"], 100)
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none")
    monkeypatch.undo()
    assert out.exit_code == EXIT_INVALID, out.output
    line = one_line(out.output)
    assert "seed0.json: No space left on device" in line
    assert_kept(stored)


def test_run_into_a_read_only_folder_exits_2_and_keeps_the_older_result(stored, monkeypatch):
    fail_nth(monkeypatch, os, "open", 1, errno.EROFS, stored["results"])
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none")
    monkeypatch.undo()
    assert out.exit_code == EXIT_INVALID, out.output
    assert "Read-only file system" in one_line(out.output)
    assert_kept(stored)


def test_run_whose_event_log_the_disk_refuses_is_recorded_failed(stored, monkeypatch):
    """The log fills the disk during training: the run fails (recorded, the older pair in history/)."""
    real_init = EventLog.__post_init__

    class FullAfter:
        def __init__(self, file: Any, lines: int) -> None:
            self.file, self.lines = file, lines

        def write(self, text: str) -> int:
            self.lines -= 1
            if self.lines < 0:
                raise refused(errno.ENOSPC)
            return self.file.write(text)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    def init(self: EventLog) -> None:
        real_init(self)
        if self._file is not None:
            self._file = FullAfter(self._file, 5)  # type: ignore[assignment]
    monkeypatch.setattr(EventLog, "__post_init__", init)
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none")
    monkeypatch.undo()
    assert out.exit_code == EXIT_FAILED, out.output
    data = json.loads((stored["folder"] / "seed0.json").read_text())
    assert data["status"] == "failed" and data["error"]["type"] == "OSError"
    assert "No space left on device" in data["error"]["message"]
    assert [p.read_bytes() for p in (stored["folder"] / "history").glob("seed0*.json")] == [stored["json"]]
    assert len((stored["folder"] / "seed0.mllog").read_text().splitlines()) == 5


def test_an_interrupted_rerun_leaves_the_older_result_and_log_in_place(stored, monkeypatch):
    from dlrs_bench.engine import runner
    from dlrs_bench.lifecycle import Interrupted

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise Interrupted(2)
    monkeypatch.setattr(runner, "train", interrupted)
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none")
    assert out.exit_code == 130, out.output
    assert_kept(stored)


@pytest.mark.parametrize("in_the_way", ["suite", "history"])
def test_run_with_a_file_where_a_folder_should_be_exits_2(stored, in_the_way):
    if in_the_way == "suite":
        shutil.rmtree(stored["results"] / "tiny")
        (stored["results"] / "tiny").write_text("a file")
        blocked = stored["results"] / "tiny"
    else:
        blocked = stored["folder"] / "history"
        blocked.write_text("a file")
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none")
    assert out.exit_code == EXIT_INVALID, out.output
    assert f"cannot write {blocked}" in one_line(out.output)
    if in_the_way == "history":
        blocked.unlink()
        assert_kept(stored)


# ---------------------------------------------------------------- command-line values


@pytest.mark.parametrize("threads", ["10000", "99999999999999999999"])
def test_more_threads_than_the_process_may_use_is_refused(tmp_path, threads):
    suite = write(tmp_path / "tiny.yaml", tiny_suite())
    out = invoke("run", suite, "--results-dir", tmp_path / "r", "--threads", threads)
    assert out.exit_code == EXIT_INVALID, out.output
    line = one_line(out.output)
    assert f"--threads {threads}" in line and f"may use {len(os.sched_getaffinity(0))} core(s)" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["", " ", "r/ /x"])
@pytest.mark.parametrize("command", ["run", "report", "reproduce"])
def test_an_empty_or_blank_folder_name_is_refused(tmp_path, monkeypatch, first_run, command, name):
    monkeypatch.chdir(tmp_path)
    suite = write(tmp_path / "tiny.yaml", tiny_suite())
    args = (["run", suite, "--results-dir", name] if command == "run"
            else [command, first_run / "r", "--out", name])
    out = invoke(*args)
    assert out.exit_code == EXIT_INVALID, out.output
    assert "a folder name cannot be empty or blank" in one_line(out.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


# ---------------------------------------------------------------- report, reproduce, data prepare


@pytest.mark.parametrize("command, name", [("report", "report.md"), ("reproduce", "reproduce.md")])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_report_and_reproduce_on_a_refusing_disk_exit_2_and_leave_no_half_file(first_run, tmp_path, monkeypatch,
                                                                                command, name, code):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / name).write_text("the earlier one\n")
    fail_write_at(monkeypatch, out_dir, 64, code)
    out = invoke(command, first_run / "r", "--out", out_dir)
    monkeypatch.undo()
    assert out.exit_code == EXIT_INVALID, out.output
    assert f"cannot write {out_dir}" in one_line(out.output) and MESSAGES[code] in out.output
    assert (out_dir / name).read_text() == "the earlier one\n"
    assert not list(out_dir.glob(".tmp-*"))


def test_report_into_a_read_only_folder_exits_2(first_run, tmp_path, monkeypatch):
    fail_nth(monkeypatch, Path, "mkdir", 1, errno.EROFS, tmp_path)
    out = invoke("report", first_run / "r", "--out", tmp_path / "new")
    monkeypatch.undo()
    assert out.exit_code == EXIT_INVALID, out.output
    assert f"cannot write {tmp_path / 'new'}: Read-only file system" in one_line(out.output)


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "a.md"
    write_atomic(path, "old\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user creates
    fail_write_at(monkeypatch, tmp_path, 3)
    with pytest.raises(UserInputError, match=f"cannot write {path}: No space left on device"):
        write_atomic(path, "a much longer new text\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]
    assert write_atomic(path, b"new\n").read_bytes() == b"new\n"


def test_data_prepare_on_a_full_disk_exits_2_and_removes_its_partial_folder(tmp_path, monkeypatch):
    from dlrs_bench.data import synthetic

    real = synthetic.write_synthetic

    def full(options: Any, out: Path, progress: Any, workers: int) -> Any:
        def refuse(*args: Any) -> None:
            raise refused(errno.ENOSPC)
        return real(options, out, refuse, workers)
    monkeypatch.setattr(synthetic, "write_synthetic", full)
    out = invoke("data", "prepare", "synthetic", "--out", tmp_path / "cache", "--rows", "20000", "--workers", "1")
    assert out.exit_code == EXIT_INVALID, out.output
    assert "No space left on device" in one_line(out.output) and str(tmp_path / "cache") in out.output
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- what result readers refuse


def edited(stored: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    """The stored result file, changed by ``change`` in place; its path."""
    path = stored["folder"] / "seed0.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


IMPOSSIBLE: dict[str, Callable[[dict[str, Any]], None]] = {
    "schema 2.0": lambda d: d.update(schema_version="2.0"),
    "schema 0.9": lambda d: d.update(schema_version="0.9"),
    "best AUC 7.5": lambda d: d["best_metrics"].update(auc=7.5),
    "AUC -0.1": lambda d: d["metrics"].update(auc=-0.1),
    "negative LogLoss": lambda d: d["metrics"].update(logloss=-0.3),
    "negative NE": lambda d: d["best_metrics"].update(ne=-1.0),
    "curve AUC 1.5": lambda d: d["eval_curve"][0].update(auc=1.5),
    "curve negative NE": lambda d: d["eval_curve"][-1].update(ne=-0.01),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_readers_refuse_unknown_versions_and_impossible_metrics(stored, case):
    path = edited(stored, IMPOSSIBLE[case])
    for args in (["compare", path, "--baseline", path], ["report", path, "--out", path.parent.parent / "rep"],
                 ["reproduce", path, "--out", path.parent.parent / "repro"], ["fit", path]):
        out = invoke(*args)
        assert out.exit_code == EXIT_INVALID, (args, out.output)
        assert f"{path}: not a dlrs-bench result file" in " ".join(one_line(out.output).split()), out.output
    assert ResultStore(stored["results"]).finished("tiny", stored["folder"].name, 0) is None


def test_resume_runs_again_a_result_readers_refuse(stored):
    edited(stored, IMPOSSIBLE["best AUC 7.5"])
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none", "--resume")
    assert out.exit_code == EXIT_OK, out.output
    assert "kept from an earlier run" not in out.output
    assert len(list((stored["folder"] / "history").glob("seed0*.json"))) == 1


def test_a_result_file_too_large_is_refused_before_it_is_read(stored, monkeypatch):
    path = stored["folder"] / "seed0.json"
    with path.open("r+b") as f:
        f.truncate(MAX_RESULT_BYTES + 1)  # sparse: no disk used

    def no_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("read a file larger than the bound")
    monkeypatch.setattr(Path, "read_bytes", no_read)
    monkeypatch.setattr(Path, "read_text", no_read)
    out = invoke("compare", path, "--baseline", path)
    assert out.exit_code == EXIT_INVALID, out.output
    line = " ".join(one_line(out.output).split())
    assert f"{path}: not a dlrs-bench result file ({MAX_RESULT_BYTES + 1:,} bytes" in line
    assert ResultStore(stored["results"]).finished("tiny", stored["folder"].name, 0) is None


def test_an_eval_curve_longer_than_the_bound_is_refused(stored):
    point = {"epoch": 0, "samples": 0, "time_s": 0, "auc": None, "logloss": None, "ne": None}  # under the size bound
    path = edited(stored, lambda d: d.update(eval_curve=[point] * (MAX_EVAL_POINTS + 1)))
    out = invoke("compare", path, "--baseline", path)
    assert out.exit_code == EXIT_INVALID, out.output
    assert f"{path}: not a dlrs-bench result file (eval_curve:" in " ".join(one_line(out.output).split())


# ---------------------------------------------------------------- --resume and the dataset's identity


@pytest.fixture
def identity_now(monkeypatch) -> Iterator[Callable[[str | None], None]]:
    """Sets the cache identity the datasets of this process report (None: they report none)."""
    real = CTRDataset.summary

    def set_identity(identity: str | None) -> None:
        def summary(self: CTRDataset) -> dict[str, Any]:
            out = real(self)
            out["cache"] = {**out["cache"], "identity": identity}
            return out
        monkeypatch.setattr(CTRDataset, "summary", summary)
    yield set_identity


def recorded(stored: dict[str, Any], identity: str | None) -> None:
    """The stored result, recording ``identity`` as its dataset cache's (None: no identity)."""
    def change(d: dict[str, Any]) -> None:
        d["dataset"]["cache"].pop("identity", None)
        if identity is not None:
            d["dataset"]["cache"]["identity"] = identity
    edited(stored, change)
    stored["json"] = (stored["folder"] / "seed0.json").read_bytes()


def resume(stored: dict[str, Any]) -> Any:
    out = invoke("run", stored["suite"], "--results-dir", stored["results"], "--filter", "none", "--resume")
    assert out.exit_code == EXIT_OK, out.output
    return out


def test_resume_runs_again_a_result_whose_dataset_changed(stored, identity_now):
    recorded(stored, "a")
    identity_now("b")
    out = resume(stored)
    assert "kept from an earlier run" not in out.output
    text = " ".join(out.output.split())
    assert "changed since this result (identity a → b)" in text and "re-run" in text
    assert json.loads((stored["folder"] / "seed0.json").read_text())["dataset"]["cache"]["identity"] == "b"
    assert [p.read_bytes() for p in (stored["folder"] / "history").glob("seed0*.json")] == [stored["json"]]


@pytest.mark.parametrize("then, now", [("a", "a"), (None, "b"), ("a", None)])
def test_resume_keeps_a_result_of_the_same_data_or_without_identities(stored, identity_now, then, now):
    recorded(stored, then)
    identity_now(now)
    out = resume(stored)
    assert "kept from an earlier run" in out.output and "changed since" not in out.output
    assert_kept(stored)


# ---------------------------------------------------------------- a real full or read-only disk (tmpfs)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted in ``tmp_path`` (skipped where this process may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the shims above "
                    "cover the same cases")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> None:
    """Fill the file system of ``mount`` until about ``leave`` bytes are free."""
    with (mount / "filler").open("wb") as f:
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        f.write(b"\0" * max(free - leave, 0))
        try:
            while os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize > leave:
                f.write(b"\0" * 1024)
                f.flush()
        except OSError:
            pass


@pytest.mark.parametrize("leave", [12 * 1024, 0])
def test_a_full_tmpfs_keeps_the_older_result_and_event_log(first_run, tmpfs, leave):
    shutil.copytree(first_run / "r", tmpfs / "r")
    folder = next((tmpfs / "r" / "tiny").iterdir())
    stored = {"results": tmpfs / "r", "folder": folder, "json": (folder / "seed0.json").read_bytes(),
              "log": (folder / "seed0.mllog").read_bytes()}
    fill(tmpfs, leave)
    out = invoke("run", first_run / "tiny.yaml", "--results-dir", tmpfs / "r", "--filter", "none")
    assert out.exit_code == EXIT_INVALID, out.output
    assert "No space left on device" in one_line(out.output)
    assert_kept(stored)
    (tmpfs / "filler").unlink()
    assert invoke("compare", tmpfs / "r", "--baseline", tmpfs / "r").exit_code == EXIT_OK
    assert "kept from an earlier run" in invoke("run", first_run / "tiny.yaml", "--results-dir", tmpfs / "r",
                                                "--filter", "none", "--resume").output


def test_a_read_only_tmpfs_exits_2_for_run_report_reproduce_and_prepare(first_run, tmpfs):
    shutil.copytree(first_run / "r", tmpfs / "r")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for args in (["run", first_run / "tiny.yaml", "--results-dir", tmpfs / "r", "--filter", "none"],
                 ["report", tmpfs / "r", "--out", tmpfs / "report"],
                 ["reproduce", tmpfs / "r", "--out", tmpfs / "reproduce"],
                 ["data", "prepare", "synthetic", "--out", tmpfs / "cache", "--rows", "1000", "--workers", "1"]):
        out = invoke(*args)
        assert out.exit_code == EXIT_INVALID, (args, out.output)
        assert "Read-only file system" in one_line(out.output), out.output


def test_data_prepare_on_a_full_tmpfs_exits_2_and_leaves_nothing(tmpfs):
    out = invoke("data", "prepare", "synthetic", "--out", tmpfs / "cache", "--rows", "200000", "--workers", "1")
    assert out.exit_code == EXIT_INVALID, out.output
    assert "No space left on device" in one_line(out.output)
    assert list(tmpfs.iterdir()) == []
