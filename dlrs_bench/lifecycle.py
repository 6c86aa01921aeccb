"""How the processes of a command end together: on a signal, and when the parent dies.

- In the main process, :func:`interruptible` turns the first SIGINT or SIGTERM into
  :class:`Interrupted`, a ``BaseException``: the per-scenario ``except Exception`` that records a
  failure and goes on lets it pass, so the whole command stops, cleaning up on the way out, and
  exits with 128 + the signal number.
- Child processes (the ranks of a distributed run, the parser pool of ``data prepare``) call
  :func:`child_setup` first: they die with their parent even when it is killed with SIGKILL
  (Linux's parent-death signal), leave SIGINT to the parent (which stops them) and end quietly
  on SIGTERM. :func:`children_start_deaf` closes the gap before that: children started inside it
  hold a terminal's Ctrl-C (sent to the whole process group) pending until they ignore it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: What stops a command: Ctrl-C and ``kill`` (SIGHUP keeps its default: the process ends and its
#: children follow through their parent-death signal).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the command stops (not an ``Exception``, so nothing records it as a
    failed scenario)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it (130, 143)."""
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread;
    later ones are ignored while the command stops (its children are stopped within seconds, and
    SIGKILL remains). A signal that arrives during an import is raised once the import is done: a
    half-imported torch can crash the interpreter as it exits. A signal set to be ignored when the
    block starts stays ignored. The previous handlers come back on exit. Does nothing outside the
    main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False
    active = True

    def again(signum: int) -> None:
        if active:
            os.kill(os.getpid(), signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:
            return
        if _importing(frame):
            timer = threading.Timer(0.05, again, (signum,))
            timer.daemon = True
            timer.start()
            return
        raised = True
        raise Interrupted(signum)

    # a signal this process was started ignoring (a script's `command &`, nohup) stays ignored
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        active = False
        for s, h in previous.items():
            signal.signal(s, h)


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import (importlib's frames are on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent ends, however it ends (Linux
    ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing). The signal fires when the parent's *thread*
    that started this process ends: start children from a thread that lives as long as they should
    (the main thread). ``parent``: the pid this process was started by (default: multiprocessing's
    parent process); if that one is already gone, this process ends now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if parent is None:
        started_by = multiprocessing.parent_process()
        parent = started_by.pid if started_by is not None else None
    if parent is not None and os.getppid() != parent:  # it died before the signal was armed
        os.kill(os.getpid(), sig)


def child_setup() -> None:
    """First thing in a child process of a dlrs-bench command (a rank, a pool worker's initializer):
    die with the parent, ignore SIGINT (the parent handles Ctrl-C and stops its children) and end
    at once, without a traceback, on SIGTERM (how the parent stops them). A SIGINT held pending by
    :func:`children_start_deaf` is discarded here."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child inherits the parent's Python handler
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def children_start_deaf() -> Iterator[None]:
    """Children started from this (main) thread within the block start with SIGINT blocked, so a
    terminal's Ctrl-C — sent to the whole process group — waits in them until :func:`child_setup`
    ignores it, instead of a ``KeyboardInterrupt`` traceback while they import. This process still
    gets it: a helper thread, started first, keeps SIGINT unblocked, and Python runs the handler in
    the main thread as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    done = threading.Event()
    receiver = threading.Thread(target=done.wait, daemon=True, name="dlrs-bench-signals")
    receiver.start()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        done.set()
        receiver.join()


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts; a zombie, dead but
    not yet reaped by its parent, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # access denied: it exists
        return True


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove the entries ``folder/<prefix><pid>`` whose process no longer exists — the temporary
    folders of writers killed before they could clean up (``kill -9``, a power cut); returns them.
    Those of live processes (another writer at work) are left alone."""
    import shutil

    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
