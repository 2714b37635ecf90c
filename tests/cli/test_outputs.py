"""Outputs: every run swaps in a complete directory, existing files keep their modes, symlinks follow the documented
policy, and output locations that cannot work are exit 2 with one clear line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cli_harness import KMS_PROGRAM, MINI_PACK, ROOT, assert_clean_failure, run_inprocess

TINY_PLAN = ROOT / "tests" / "fixtures" / "plans" / "tiny.json"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def preview(out: Path, *extra: str):
    return run_inprocess("--cwd", str(ROOT), "preview", "--stack", "dev", "--program", str(KMS_PROGRAM),
                         "--out", str(out), *extra)


@pytest.fixture(scope="module")
def previewed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "build"
    result = preview(out)
    assert result.returncode == 0, result.stderr
    return out


def test_a_run_leaves_only_its_complete_directory(previewed):
    assert sorted(p.name for p in previewed.iterdir()) == ["dev"]  # no staging directories left behind
    assert sorted(p.name for p in (previewed / "dev").iterdir()) == [
        "plan.json", "policy.html", "policy.json", "policy.junit.xml", "policy.sarif"]
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(previewed / "dev" / "plan.json") == 0o666 & ~umask, "new files get the umask's mode, not 0600"


def test_rewriting_keeps_modes_and_writes_through_a_linked_output_dir(previewed, tmp_path):
    os.chmod(previewed / "dev" / "policy.json", 0o640)
    os.chmod(previewed / "dev", 0o750)
    before = (previewed / "dev" / "plan.json").read_bytes()
    link = tmp_path / "out-link"
    link.symlink_to(previewed, target_is_directory=True)
    result = preview(link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and sorted(p.name for p in previewed.iterdir()) == ["dev"]
    assert _mode(previewed / "dev" / "policy.json") == 0o640
    assert _mode(previewed / "dev") == 0o750
    assert (previewed / "dev" / "plan.json").read_bytes() == before  # deterministic, freshly written


def test_a_symlink_inside_a_stack_directory_is_refused(tmp_path):
    out = tmp_path / "build"
    (out / "dev").mkdir(parents=True)
    (tmp_path / "elsewhere.json").write_text("{}")
    (out / "dev" / "plan.json").symlink_to(tmp_path / "elsewhere.json")
    result = preview(out)
    assert_clean_failure(result, "plan.json: is a symlink", "does not follow links")
    assert (tmp_path / "elsewhere.json").read_text() == "{}"


@pytest.mark.parametrize("make, fragment", [
    (lambda t: (t / "file").write_text("x") and t / "file", "exists and is not a directory"),
    (lambda t: (t / "file").write_text("x") and t / "file" / "sub", "cannot create the output directory"),
    (lambda t: Path("/proc/version/finml"), "cannot create the output directory"),
])
def test_unusable_out_dirs_are_exit_2(tmp_path, make, fragment):
    assert_clean_failure(preview(make(tmp_path)), fragment)


@pytest.mark.parametrize("target, fragment", [
    (lambda t: t, "is a directory"),
    (lambda t: (t / "file").write_text("x") and t / "file" / "report.json", "cannot write"),
])
def test_unusable_report_outputs_are_exit_2(tmp_path, target, fragment):
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    result = run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(TINY_PLAN), "--pack", str(MINI_PACK),
                           "--policy-config", str(cfg), "--format", "json", "--output", str(target(tmp_path)))
    assert_clean_failure(result, fragment)


def test_report_output_through_a_symlink_keeps_the_link_and_the_mode(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    os.chmod(real, 0o604)
    link = tmp_path / "report.json"
    link.symlink_to(real)
    result = run_inprocess("--cwd", str(ROOT), "inventory", "--stack", "onprem-dc1", "--out", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and "all:" in real.read_text() and _mode(real) == 0o604
