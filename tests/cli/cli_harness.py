"""Run the finml CLI in-process (fast, for corpora and fuzzing) or as a subprocess (signals, installs)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MINI_PACK = ROOT / "tests" / "fixtures" / "packs" / "mini"
KMS_PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "kms_only.py"
EXIT_CODES = {0, 1, 2}  # what a user may ever see from bad input: pass, violations, bad input (3 = crash/env)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_inprocess(*argv: str) -> Result:
    """`finml ARGV` in this process; signal handlers and profile caches are restored afterwards."""
    from finml import cli
    from gpu_profiles import clear_cache

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    clear_cache()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        clear_cache()
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*argv: str, cwd: Path = ROOT, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "finml.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def assert_clean_failure(result, *fragments: str, code: int = 2) -> None:
    text = result.stderr
    assert "Traceback" not in text and "internal error" not in text, text
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{result.stdout[-2000:]}\n{text}"
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


def make_project(where: Path, stacks: dict[str, str] | None = None, with_profiles: bool = False) -> Path:
    """A minimal finml project: Pulumi.yaml (stackConfigDir: stacks) and the given stack files."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "Pulumi.yaml").write_text("name: finml\nruntime: python\nstackConfigDir: stacks\n")
    (where / "stacks").mkdir(exist_ok=True)
    for name, text in (stacks or {}).items():
        (where / "stacks" / f"Pulumi.{name}.yaml").write_text(text)
    if with_profiles:
        shutil.copytree(ROOT / "gpu_profiles", where / "gpu_profiles",
                        ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    return where
