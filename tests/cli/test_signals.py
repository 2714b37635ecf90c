"""SIGTERM/SIGINT during `finml preview --all`: every process of the run's groups stops, the previous outputs stay
byte-identical, and finml exits 143/130.

Cheap but honest: two small stacks (copies of dev), the KMS-only program and the real policy pack, so one run takes
a few seconds; the 20 moments are seeded and spread over a measured run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_harness import KMS_PROGRAM, ROOT

MOMENTS = 20
SEED = 20261201


def _argv(stacks: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "finml.cli", "--stacks-dir", str(stacks), "preview", "--all", "--program",
            str(KMS_PROGRAM), "--out", str(out)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _snapshot(out: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under `out` (hidden ones too) with its mode and, for files, its bytes."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        found[rel] = (path.lstat().st_mode, path.read_bytes() if path.is_file() else None)
    return found


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, pgrp, state) from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _groups_of_run(root_pid: int) -> set[int]:
    table = _proc_table()
    groups, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table:
            groups.add(table[pid][1])
            todo.extend(p for p, (ppid, _, _) in table.items() if ppid == pid)
    return groups


def _alive_in(groups: set[int]) -> list[int]:
    return [pid for pid, (_, pgrp, state) in _proc_table().items() if pgrp in groups and state != "Z"]


@pytest.fixture(scope="module")
def small_stacks(tmp_path_factory) -> Path:
    stacks = tmp_path_factory.mktemp("stacks")
    dev = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    for name in ("alpha", "beta"):
        (stacks / f"Pulumi.{name}.yaml").write_text(dev)
    return stacks


@pytest.fixture(scope="module")
def baseline(small_stacks, tmp_path_factory) -> tuple[Path, float, dict]:
    out = tmp_path_factory.mktemp("signals") / "build"
    started = time.monotonic()
    proc = subprocess.run(_argv(small_stacks, out), capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    duration = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    os.chmod(out / "alpha" / "policy.json", 0o640)  # a mode the next runs must keep
    return out, duration, _snapshot(out)


def _interrupt(small_stacks: Path, out: Path, delay: float, sig: int) -> tuple[int | None, set[int]]:
    proc = subprocess.Popen(_argv(small_stacks, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT, start_new_session=True)
    groups: set[int] = set()
    try:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            groups |= _groups_of_run(proc.pid)
            time.sleep(0.05)
        if proc.poll() is not None:
            return None, groups  # finished before this moment: nothing to interrupt
        groups |= _groups_of_run(proc.pid)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # finml dumps its threads' stacks
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"finml did not stop within 60s of {signal.Signals(sig).name} at {delay:.2f}s:\n"
                                 + proc.stderr.read()[-8000:]) from None
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr, stderr
        return proc.returncode, groups
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


@pytest.mark.slow
def test_sigterm_at_20_moments_stops_the_run_and_keeps_the_previous_outputs(small_stacks, baseline):
    out, duration, before = baseline
    rng = random.Random(SEED)
    moments = sorted(rng.uniform(0.1, 0.95) * duration for _ in range(MOMENTS))
    interrupted = 0
    for moment in moments:
        # The baseline's duration was measured once; a run can be faster now (less load). A moment past the run's
        # end interrupts nothing, so it is tried again earlier, at most three times.
        for attempt in range(4):
            code, groups = _interrupt(small_stacks, out, moment, signal.SIGTERM)
            time.sleep(0.2)
            assert not _alive_in(groups), (f"processes of the run left after SIGTERM at {moment:.2f}s: "
                                           f"{_alive_in(groups)}")
            assert _snapshot(out) == before, f"outputs changed by a run stopped at {moment:.2f}s"
            if code is not None:
                assert code == 143, f"SIGTERM at {moment:.2f}s: exit {code}"
                interrupted += 1
                break
            moment *= 0.6
    assert interrupted >= MOMENTS * 3 // 4, f"only {interrupted} of {MOMENTS} moments hit a running preview"


@pytest.mark.slow
def test_sigint_is_exit_130(small_stacks, baseline):
    out, duration, before = baseline
    code, groups = _interrupt(small_stacks, out, duration * 0.5, signal.SIGINT)
    time.sleep(0.2)
    assert code == 130 and not _alive_in(groups)
    assert _snapshot(out) == before
