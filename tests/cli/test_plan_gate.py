"""The gate checks what it claims: forged plans are refused before the pack sees them, and the policy
configuration comes from the project's stack file, never from the plan under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli_harness import KMS_PROGRAM, MINI_PACK, ROOT, assert_clean_failure, run_inprocess

BAD_PLANS = ROOT / "tests" / "fixtures" / "bad" / "plan"


def _check(plan, *extra: str):
    return run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(plan), "--pack", str(MINI_PACK), *extra)


def test_the_tiny_plan_itself_passes(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    result = _check(ROOT / "tests" / "fixtures" / "plans" / "tiny.json", "--policy-config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "3 resources checked" in result.stdout


@pytest.mark.parametrize("name, fragment", [
    ("lying-types.json", "does not match the type in its urn"),
    ("parent-cycle.json", "a cycle through parent/provider/dependency references"),
    ("self-parented-provider.json", "a resource cannot be its own parent"),
    ("self-parent.json", "a resource cannot be its own parent"),
    ("provider-not-a-provider.json", "not a provider"),
    ("dangling-dependency.json", "is not a resource of this plan"),
    ("duplicate-urn.json", "duplicate urn"),
    ("urn-of-another-stack.json", "belongs to stack 'prod'"),
    ("unknown-format.json", "is not supported; allowed: 'finml-plan/1'"),
    ("wrong-field-type.json", "is not of type 'boolean'"),
])
def test_forged_plans_are_refused_before_the_pack_runs(name, fragment, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    result = _check(BAD_PLANS / name, "--policy-config", str(cfg))
    assert_clean_failure(result, fragment, name)
    assert "resources checked" not in result.stdout and "policy result" not in result.stdout


@pytest.fixture(scope="module")
def dev_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / "Pulumi.dev.yaml"),
                           str(KMS_PROGRAM), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_plan_that_widens_its_residency_map_is_refused(dev_plan, tmp_path):
    doc = json.loads(dev_plan.read_text())
    doc["config"]["finml:platform"]["residency"]["internal"] = ["aws:*", "onprem:*"]
    forged = tmp_path / "widened.json"
    forged.write_text(json.dumps(doc))
    result = run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(forged))
    assert_clean_failure(result, "config.finml:platform.residency.internal", "differs from",
                         str(ROOT / "stacks" / "Pulumi.dev.yaml"))
    assert "policy result" not in result.stdout


def test_the_unforged_plan_is_checked_with_the_stack_files_config(dev_plan):
    result = run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(dev_plan))
    assert result.returncode == 0, result.stderr
    assert "policy result: PASS" in result.stdout


def test_an_explicit_policy_config_is_the_users_choice(dev_plan, tmp_path):
    doc = json.loads(dev_plan.read_text())
    doc["config"]["finml:platform"]["residency"]["internal"] = ["aws:*"]
    forged = tmp_path / "edited.json"
    forged.write_text(json.dumps(doc))
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    result = _check(forged, "--policy-config", str(cfg))
    assert result.returncode == 0, result.stderr


def test_a_plan_for_a_stack_without_a_stack_file_needs_an_explicit_config(dev_plan, tmp_path):
    text = dev_plan.read_text().replace("urn:pulumi:dev::", "urn:pulumi:qa::").replace('"stack": "dev"',
                                                                                       '"stack": "qa"')
    other = tmp_path / "qa.json"
    other.write_text(text)
    result = _check(other)
    assert_clean_failure(result, "stack 'qa', which has no stack file", "--policy-config")
