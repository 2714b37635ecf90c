"""Child processes of a run, each in its own process group, and what SIGINT/SIGTERM do to them.

Every process a command starts (the mock-run program, the policy pack's gRPC server) is started with
`start_new_session=True` and registered here. On SIGINT or SIGTERM the handler kills every registered group at once
(SIGTERM, then SIGKILL after a short grace) before anything else unwinds, then raises :class:`Interrupted`, so
`finally` blocks discard half-written outputs and the command exits 128 + signal (130 / 143).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

GRACE_S = 3.0
_groups: dict[int, subprocess.Popen] = {}
_spawning = False
_pending: list[int] = []


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived; BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a child in its own process group and remember it until it is reaped."""
    with deferred_signals():  # a signal now waits until the child is registered, so it cannot be orphaned
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        _groups[proc.pid] = proc
    return proc


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for a few steps that must not be cut in half (registering a child, swapping outputs)."""
    global _spawning
    outer = _spawning
    _spawning = True
    try:
        yield
    finally:
        _spawning = outer
    if not outer and _pending:
        _handler(_pending.pop(), None)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """Stop `proc`'s whole process group (TERM, then KILL) and reap it."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            break
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    forget(proc)


def forget(proc: subprocess.Popen) -> None:
    _groups.pop(proc.pid, None)


def stop_all() -> None:
    procs = list(_groups.values())
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
            time.sleep(0.02)
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _groups.clear()


def _handler(signum: int, frame: Any) -> None:
    if _spawning:
        _pending.append(signum)
        return
    # Ignore further signals while cleaning up, so a second Ctrl-C cannot leave orphans behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_all()
    raise Interrupted(signum)


def install_handlers() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)
        import faulthandler

        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where a hung run waits
        except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (embedded use)
            pass
