"""finml works on the project it is run in — found like the Pulumi CLI finds it — not on the one it was installed
from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cli_harness import KMS_PROGRAM, ROOT, assert_clean_failure, make_project, run_inprocess

DEV = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()


def copy_project(dest: Path) -> Path:
    """The working tree as a clone would have it: tracked and untracked-but-not-ignored files only."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def break_key(stack_file: Path, old: str, new: str) -> int:
    """Rename one key; returns its 1-based line."""
    lines = stack_file.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(rf"^\s*{re.escape(old)}:", line):
            lines[i] = line.replace(f"{old}:", f"{new}:", 1)
            stack_file.write_text("".join(lines))
            return i + 1
    raise AssertionError(f"{old} not in {stack_file}")


def test_project_is_found_upward_from_a_subdirectory(tmp_path):
    project = make_project(tmp_path / "proj", {"dev": DEV})
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    result = run_inprocess("--cwd", str(deep), "config", "check", "--stack", "dev")
    assert result.returncode == 0, result.stderr
    assert str(project / "stacks" / "Pulumi.dev.yaml") in result.stdout


def test_stack_config_dir_is_honoured(tmp_path):
    project = make_project(tmp_path / "proj")
    (project / "Pulumi.yaml").write_text("name: finml\nruntime: python\nstackConfigDir: config/envs\n")
    (project / "config" / "envs").mkdir(parents=True)
    (project / "config" / "envs" / "Pulumi.qa.yaml").write_text(DEV)
    result = run_inprocess("--cwd", str(project), "config", "check", "--all")
    assert result.returncode == 0, result.stderr
    assert str(project / "config" / "envs" / "Pulumi.qa.yaml") in result.stdout


def test_no_project_is_one_line_exit_2(tmp_path):
    result = run_inprocess("--cwd", str(tmp_path), "config", "check", "--stack", "dev")
    assert_clean_failure(result, "no Pulumi project found in", "Pulumi.yaml")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_cwd_is_exit_2(tmp_path):
    assert_clean_failure(run_inprocess("--cwd", str(tmp_path / "nope"), "config", "check", "--stack", "dev"),
                         "not a directory")


def test_preview_from_a_subdirectory_writes_the_projects_build_dir(tmp_path):
    """Not ./build of the subdirectory, and never a plan of another run: the plan checked is the one just made."""
    project = copy_project(tmp_path / "clone")
    sub = project / "ansible"
    stale = sub / "build" / "dev"
    stale.mkdir(parents=True)
    (stale / "plan.json").write_text("{stale}")
    result = run_inprocess("--cwd", str(sub), "preview", "--stack", "dev", "--program", str(KMS_PROGRAM))
    assert result.returncode == 0, result.stderr
    assert (project / "build" / "dev" / "plan.json").is_file()
    assert (project / "build" / "dev" / "policy.json").is_file()
    assert (stale / "plan.json").read_text() == "{stale}"


# ------------------------------------------------------------------------------------------------ installed finml


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """finml installed non-editable (`pip install .`) from clone A into a fresh venv; dependencies come from the
    shared environment through a plain path entry (no downloads, and not its editable finml)."""
    base = tmp_path_factory.mktemp("install")
    clone_a = copy_project(base / "clone-a")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", str(clone_a)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import finml; print(finml.__file__)"],
                           capture_output=True, text=True, cwd=base, check=True).stdout.strip()
    assert where.startswith(str(purelib)), f"finml imported from {where}, not the non-editable install"
    shutil.rmtree(clone_a)  # nothing may depend on the clone it was installed from
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("old, new, key", [
    ("vpcCidr", "vpcCidrs", "finml:platform.sites.aws:eu-central-1.network.vpcCidrs"),
    ("finml:platform", "finml:platfrom", "finml:platfrom"),
])
def test_installed_finml_checks_the_clone_it_runs_in(installed, tmp_path, old, new, key):
    clone_b = copy_project(tmp_path / "clone-b")
    stack_file = clone_b / "stacks" / "Pulumi.dev.yaml"
    line = break_key(stack_file, old, new)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(installed / "bin" / "finml"), "preview", "--stack", "dev"], cwd=clone_b / "ansible",
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{stack_file}:{line}: {key}:" in proc.stderr, proc.stderr
    assert not (clone_b / "build" / "dev").exists()
