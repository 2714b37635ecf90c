"""Plans of the four real stacks, made once per test session by the real CLI (`finml preview --all`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (mutants.py) beside this file

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("aws-eu-prod", "dev", "hybrid-prod", "onprem-dc1")


@pytest.fixture(scope="session")
def preview_all(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("preview")
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "preview", "--all", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    return out, proc


@pytest.fixture(scope="session")
def stack_plans(preview_all) -> dict[str, Path]:
    out, proc = preview_all
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {name: out / name / "plan.json" for name in STACKS}
