"""The offline preview and the policy gate: plan format, determinism, and the pack driven over real gRPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finml.config import load_stack_file
from finml.mockrun import run_program  # noqa: F401 — imported to prove the module loads without a runtime
from finml.plan import PLAN_FORMAT, PlanError, load_plan, validate_plan_json
from finml.policy_check import check_plan

ROOT = Path(__file__).resolve().parents[2]
MINI_PACK = ROOT / "tests" / "fixtures" / "packs" / "mini"
KMS_PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "kms_only.py"


def mockrun(stack: str, program: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / f"Pulumi.{stack}.yaml"),
                           str(program), str(out)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=600)


def finml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)


def test_harness_canary_a_failing_mock_test_fails(tmp_path):
    """The mock harness must be able to fail: an Output assertion that is wrong has to turn the test red."""
    (tmp_path / "test_canary.py").write_text(
        "import pulumi\n"
        "class M(pulumi.runtime.Mocks):\n"
        "    def new_resource(self, args): return args.name + '_id', args.inputs\n"
        "    def call(self, args): return {}\n"
        "pulumi.runtime.set_mocks(M(), preview=False)\n"
        "import pulumi_aws as aws\n"
        "@pulumi.runtime.test\n"
        "def test_rotation():\n"
        "    p = aws.Provider('p', region='eu-central-1')\n"
        "    key = aws.kms.Key('k', enable_key_rotation=False, opts=pulumi.ResourceOptions(provider=p))\n"
        "    def check(rot): assert rot is True, 'canary: rotation must be on for ' + key._name\n"
        "    return key.enable_key_rotation.apply(check)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout
    assert "canary: rotation must be on for k" in proc.stdout


def test_plan_records_provider_parent_dependencies_and_unknowns(tmp_path):
    out = tmp_path / "plan.json"
    proc = mockrun("aws-eu-prod", KMS_PROGRAM, out)
    assert proc.returncode == 0, proc.stderr
    plan = load_plan(out)
    assert plan.stack == "aws-eu-prod" and plan.project == "finml"
    index = plan.by_urn()
    alias = next(r for r in plan.resources if r.name == "alias-eu-west-1")
    key = next(r for r in plan.resources if r.name == "key-eu-west-1")
    provider = index[alias.provider]
    assert provider.type == "pulumi:providers:aws" and provider.props["region"] == "eu-west-1"
    # Provider inputs reach the engine JSON-encoded when they are not strings (the SDK's provider wire format).
    assert json.loads(provider.props["allowedAccountIds"]) == ["444455556666"]
    # At preview the key id is unknown; lineage says where it came from.
    assert alias.props["targetKeyId"] == {"unknown": True}
    assert alias.property_dependencies["targetKeyId"] == [key.urn]
    assert key.urn in alias.dependencies
    assert index[alias.parent].type == "pulumi:pulumi:Stack"
    assert "finml:platform" in plan.config


def test_plan_is_byte_identical_across_runs(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert mockrun("hybrid-prod", KMS_PROGRAM, first).returncode == 0
    assert mockrun("hybrid-prod", KMS_PROGRAM, second).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_secrets_never_reach_the_plan(tmp_path):
    out = tmp_path / "plan.json"
    assert mockrun("onprem-dc1", KMS_PROGRAM, out).returncode == 0
    text = out.read_text()
    assert "fraDc1Kubeconfig" not in json.loads(text)["config"]
    assert "v1:" not in text  # neither ciphertext nor anything decrypted


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "plan.json:1: not valid JSON"),
    (json.dumps({"format": "finml-plan/9"}), "format: 'finml-plan/9' is not supported; allowed: 'finml-plan/1'"),
    (json.dumps({"format": PLAN_FORMAT, "project": "finml", "stack": "x", "config": {}}),
     "'resources' is a required property"),
    (json.dumps({"format": PLAN_FORMAT, "project": "finml", "stack": "x", "config": {}, "resources": [
        {"urn": "urn:pulumi:x::finml::aws:kms/key:Key::k", "type": "aws:kms/key:Key", "name": "k", "custom": True,
         "parent": "urn:pulumi:x::finml::pulumi:pulumi:Stack::s", "provider": None, "dependencies": [],
         "props": {}}]}), "resources/0/parent"),
    (json.dumps({"format": PLAN_FORMAT, "project": "finml", "stack": "x", "config": {}, "resources": [
        {"urn": "bogus", "type": "aws:kms/key:Key", "name": "k", "custom": True, "parent": None,
         "provider": None, "dependencies": [], "props": {}}]}), "resources/0/urn"),
])
def test_malformed_plans_get_clear_errors(tmp_path, content, fragment):
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)
    proc = finml("policy", "check", "--plan", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and fragment in proc.stderr


def test_schema_file_is_the_contract_for_generated_plans(tmp_path):
    out = tmp_path / "plan.json"
    assert mockrun("dev", KMS_PROGRAM, out).returncode == 0
    data = json.loads(out.read_text())
    validate_plan_json(data, str(out))
    data["resources"][0]["extra"] = 1
    with pytest.raises(PlanError, match="Additional properties are not allowed"):
        validate_plan_json(data, str(out))


def test_grpc_driver_reports_a_seeded_violation_and_passes_a_compliant_plan(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    assert mockrun("dev", KMS_PROGRAM, good).returncode == 0
    assert mockrun("dev", KMS_PROGRAM, bad, FINML_TEST_ROTATION="off").returncode == 0
    result = check_plan(load_plan(bad), MINI_PACK, {})
    assert [(v.policy, v.resource_name, v.enforcement) for v in result.violations] == [
        ("kms-rotation", "key-eu-central-1", "mandatory")]
    assert result.violations[0].site == "aws:eu-central-1"
    assert result.violations[0].remediation == "Set enable_key_rotation=True."
    assert check_plan(load_plan(good), MINI_PACK, {}).violations == []
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    assert finml("policy", "check", "--plan", str(good), "--pack", str(MINI_PACK),
                 "--policy-config", str(cfg)).returncode == 0
    proc = finml("policy", "check", "--plan", str(bad), "--pack", str(MINI_PACK), "--policy-config", str(cfg),
                 "--format", "json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["passed"] is False
    assert report["stacks"][0]["violations"][0]["policy"] == "kms-rotation"


def test_enforcement_level_from_policy_config_is_honoured(tmp_path):
    bad = tmp_path / "bad.json"
    assert mockrun("dev", KMS_PROGRAM, bad, FINML_TEST_ROTATION="off").returncode == 0
    result = check_plan(load_plan(bad), MINI_PACK, {"kms-rotation": {"enforcementLevel": "advisory"}})
    assert [v.enforcement for v in result.violations] == ["advisory"] and not result.mandatory
    assert check_plan(load_plan(bad), MINI_PACK, {"all": "disabled"}).violations == []


@pytest.mark.parametrize("config, fragment", [
    ({"all": "warn"}, "all: enforcement level 'warn' is not valid; allowed: advisory, disabled, mandatory"),
    ({"kms-rotation": ["mandatory"]}, "kms-rotation: must be an enforcement level or an object"),
    ({"no-such-rule": "mandatory"}, "unknown policy 'no-such-rule'"),
])
def test_bad_policy_config_is_bad_input(tmp_path, config, fragment):
    plan = tmp_path / "plan.json"
    assert mockrun("dev", KMS_PROGRAM, plan).returncode == 0
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config))
    proc = finml("policy", "check", "--plan", str(plan), "--pack", str(MINI_PACK), "--policy-config", str(cfg))
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_a_broken_pack_is_a_clear_error(tmp_path):
    """A pack that dies on start is exit 2 with the pack's own words — with a valid plan and a valid config, so
    nothing but the pack can be the reason."""
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text("runtime: python\n")
    (pack / "__main__.py").write_text("raise SystemExit('pack exploded')\n")
    out = tmp_path / "plan.json"
    assert mockrun("dev", KMS_PROGRAM, out).returncode == 0
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    assert finml("policy", "check", "--plan", str(out), "--pack", str(MINI_PACK),
                 "--policy-config", str(cfg)).returncode == 0, "the plan and config are fine with a working pack"
    proc = finml("policy", "check", "--plan", str(out), "--pack", str(pack), "--policy-config", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert "did not start" in proc.stderr and "pack exploded" in proc.stderr and "Traceback" not in proc.stderr


def test_fresh_account_creates_the_autoscaling_role_before_any_key(tmp_path):
    import yaml

    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml").read_text())
    doc["config"]["finml:platform"]["createAutoscalingServiceLinkedRole"] = True
    stack_file = tmp_path / "Pulumi.fresh.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(stack_file), str(ROOT / "__main__.py"),
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    plan = load_plan(out)
    [role] = [r for r in plan.resources if r.type == "aws:iam/serviceLinkedRole:ServiceLinkedRole"]
    assert role.props["awsServiceName"] == "autoscaling.amazonaws.com"
    keys = [r for r in plan.resources if r.type in ("aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey")]
    assert len(keys) == 6 and all(role.urn in k.dependencies for k in keys), "a key could name a missing role"
