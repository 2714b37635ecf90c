"""Hand-written malformed inputs (tests/fixtures/bad/): each gives exit 2 and its own expected message, naming the
file, with no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cli_harness import MINI_PACK, ROOT, assert_clean_failure, make_project, run_inprocess

BAD = ROOT / "tests" / "fixtures" / "bad"
EXPECTED: dict[str, str] = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())
TINY_PLAN = ROOT / "tests" / "fixtures" / "plans" / "tiny.json"


def test_every_bad_file_has_an_expectation_and_every_expectation_a_file():
    on_disk = {str(p.relative_to(BAD)) for p in BAD.rglob("*") if p.is_file() and p.name != "EXPECTED.yaml"}
    assert on_disk == set(EXPECTED)
    assert len(EXPECTED) >= 60  # kinds: stack, plan, policy-config, gpu-profile, project, pack


def _scenario(kind: str, source: Path, tmp: Path) -> tuple[list[str], str]:
    """(argv, name of the file as finml must name it) for one bad file."""
    dev = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    if kind == "stack":
        project = make_project(tmp / "p", {"bad": ""})
        target = project / "stacks" / "Pulumi.bad.yaml"
        shutil.copyfile(source, target)
        return ["--cwd", str(project), "config", "check", "--stack", "bad"], str(target)
    if kind == "plan":
        return ["--cwd", str(ROOT), "policy", "check", "--plan", str(source), "--pack", str(MINI_PACK)], str(source)
    if kind == "policy-config":
        return ["--cwd", str(ROOT), "policy", "check", "--plan", str(TINY_PLAN), "--pack", str(MINI_PACK),
                "--policy-config", str(source)], str(source)
    if kind == "gpu-profile":
        project = make_project(tmp / "p", {"dev": dev}, with_profiles=True)
        target = project / "gpu_profiles" / "T4.yaml"
        shutil.copyfile(source, target)
        return ["--cwd", str(project), "config", "check", "--stack", "dev"], "T4.yaml"
    if kind == "project":
        project = make_project(tmp / "p", {"dev": dev})
        shutil.copyfile(source, project / "Pulumi.yaml")
        return ["--cwd", str(project), "config", "check", "--stack", "dev"], str(project / "Pulumi.yaml")
    if kind == "pack":
        pack = tmp / "pack"
        shutil.copytree(MINI_PACK, pack)
        shutil.copyfile(source, pack / "PulumiPolicy.yaml")
        cfg = tmp / "cfg.json"
        cfg.write_text("{}")
        return ["--cwd", str(ROOT), "policy", "check", "--plan", str(TINY_PLAN), "--pack", str(pack),
                "--policy-config", str(cfg)], "PulumiPolicy.yaml"
    raise AssertionError(f"unknown kind {kind}")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_gives_its_message(name, tmp_path):
    argv, shown = _scenario(name.split("/", 1)[0], BAD / name, tmp_path)
    result = run_inprocess(*argv)
    assert_clean_failure(result, EXPECTED[name], shown)
    lines = [line for line in result.stderr.splitlines() if EXPECTED[name] in line]
    assert lines and all(shown in line for line in lines), result.stderr
