"""Under CI=true a skipped real-part test (marked slow or sshhosts) fails the run, whoever wrote it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from cli_harness import ROOT

TESTS = '''
import pytest

@pytest.mark.slow
def test_server_part():
    pytest.skip("no server on this machine")

@pytest.fixture
def hosts():
    pytest.skip("not root")

@pytest.mark.sshhosts
def test_hosts_part(hosts):
    pass

def test_ordinary_skip():
    pytest.skip("not a real part")
'''


def _run(tmp_path, ci: str | None):
    shutil.copyfile(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_parts.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                           "markers=slow: x\nsshhosts: y", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_skips_fail_under_ci(tmp_path):
    proc = _run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 skipped, 1 error" in proc.stdout, proc.stdout
    assert "test_server_part is a real-part test (marked slow) and was skipped under CI=true" in proc.stdout


def test_skips_stay_skips_outside_ci(tmp_path):
    proc = _run(tmp_path, None)
    assert proc.returncode == 0 and "3 skipped" in proc.stdout, proc.stdout
