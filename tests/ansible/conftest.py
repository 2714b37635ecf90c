"""Fixtures for the on-prem Ansible tests: real SSH test hosts, a generated inventory, and playbook runs.

The ``converged`` session fixture starts the test hosts (tests/ansible/hosts.py), writes the inventory through
``finml.inventory``, and runs site.yml three times — converge, idempotence (changed=0), ``--check`` — recording each
run's PLAY RECAP and the harness timings (printed in the terminal summary and written to .testhosts/timings.json).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parents[1]), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import hosts as testhosts  # noqa: E402
from ansible_harness import (  # noqa: E402
    NODE_SCENARIOS,
    TIMINGS,
    Converged,
    _timed_run,
    write_inventory,
)


@pytest.fixture(scope="session")
def test_hosts():
    if shutil.which("debootstrap") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("SSH test hosts need root, debootstrap and unshare (see ansible/README.md)")
    started = time.monotonic()
    rootfs_existed = (testhosts.rootfs_cache_dir() / ".finml-complete").exists()
    rootfs = testhosts.build_rootfs()
    TIMINGS["rootfs (cached)" if rootfs_existed else "rootfs debootstrap"] = time.monotonic() - started
    run_dir = testhosts.TESTHOSTS_DIR / "run"
    key = testhosts.generate_client_key(run_dir)
    started_hosts: list[testhosts.TestHost] = []
    try:
        for index, name in enumerate(NODE_SCENARIOS, start=1):
            address = f"{testhosts.ADDRESS_PREFIX}{index}"
            host = testhosts.TestHost(name, address, testhosts.free_port(address), run_dir / name, key)
            mark = time.monotonic()
            host.create(rootfs)
            host.start()
            TIMINGS[f"host {name} copy+start"] = time.monotonic() - mark
            started_hosts.append(host)
        yield {host.name: host for host in started_hosts}
    finally:
        testhosts.tear_down(started_hosts)


@pytest.fixture(scope="session")
def test_inventories(test_hosts, tmp_path_factory) -> list[Path]:
    """[generated inventory, test overlay (connection, secrets, fake NVML)] for the running test hosts."""
    return write_inventory(tmp_path_factory.mktemp("inventory"), list(test_hosts.values()))


@pytest.fixture(scope="session")
def converged(test_hosts, test_inventories) -> Converged:
    inventories = test_inventories
    state = Converged(test_hosts, inventories)
    state.runs["converge"] = _timed_run("converge", inventories)
    if state.runs["converge"].result.returncode == 0:
        state.runs["idempotence"] = _timed_run("idempotence", inventories)
        state.runs["check"] = _timed_run("check", inventories, "--check")
    return state


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TIMINGS:
        return
    terminalreporter.section("finml ansible harness timings")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:40s} {seconds:7.1f}s")
    testhosts.TESTHOSTS_DIR.mkdir(parents=True, exist_ok=True)
    (testhosts.TESTHOSTS_DIR / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
