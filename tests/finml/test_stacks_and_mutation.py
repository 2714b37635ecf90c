"""The real program over the four real stacks: preview passes, and every mutant of every plan is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from finml.cli import pack_config_for
from finml.config import load_stack_file
from finml.plan import load_plan
from finml.policy_check import PolicyPackProcess, check_plan

from mutants import all_mutants  # tests/finml/mutants.py
from tests.policy_catalogue import EXPECTED_POLICIES

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
STACKS = ("aws-eu-prod", "dev", "hybrid-prod", "onprem-dc1")
LOCATIONLESS_PACKAGES = ("random", "tls")


def test_preview_all_passes_and_writes_four_plans_with_reports(preview_all):
    out, proc = preview_all
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in STACKS:
        assert (out / name / "plan.json").is_file()
        report = json.loads((out / name / "policy.json").read_text())
        assert report["passed"] is True and report["stacks"][0]["summary"]["mandatory"] == 0
        assert (out / name / "policy.sarif").is_file() and (out / name / "policy.junit.xml").is_file()
    # Progress for --all, and a closing summary a person can read.
    for i, name in enumerate(STACKS, 1):
        assert f"[{i}/4] {name}: running the program under the mock runtime" in proc.stderr
    assert "finml preview: 4/4 stacks previewed, 4 passed policy" in proc.stdout


def test_plans_are_byte_identical_for_the_same_stack(stack_plans, tmp_path):
    again = tmp_path / "again.json"
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml"),
                           str(ROOT / "__main__.py"), str(again)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == stack_plans["hybrid-prod"].read_bytes()


def test_every_resource_names_an_explicit_provider_of_its_site(stack_plans):
    for name, path in stack_plans.items():
        plan = load_plan(path)
        index = plan.by_urn()
        for res in plan.resources:
            # random and tls compute values into state only (passwords, keys, certificates): they have no site
            if res.type.split(":", 1)[0] in LOCATIONLESS_PACKAGES:
                continue
            if res.custom and not res.type.startswith("pulumi:providers:"):
                assert res.provider is not None, f"{name}: {res.urn} uses a default provider"
                package = res.type.split(":", 1)[0]
                assert index[res.provider].type == f"pulumi:providers:{package}", res.urn


def test_hand_edited_plan_with_rotation_off_is_reported_by_the_real_pack(stack_plans, tmp_path):
    data = json.loads(stack_plans["dev"].read_text())
    key = next(r for r in data["resources"] if r["type"] == "aws:kms/key:Key")
    key["props"]["enableKeyRotation"] = False
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "policy", "check", "--plan", str(edited),
                           "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    violations = json.loads(proc.stdout)["stacks"][0]["violations"]
    assert [(v["policy"], v["urn"], v["enforcement"]) for v in violations] == [
        ("encryption-kms-rotation", key["urn"], "mandatory")]
    assert violations[0]["site"] == "aws:eu-central-1" and violations[0]["remediation"]


def test_real_pack_over_grpc_reports_levels_and_messages(stack_plans):
    """Drive the real pack as the engine does and check what comes back: policy list, levels, messages."""
    plan = load_plan(stack_plans["aws-eu-prod"])
    platform = load_stack_file(ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml").platform
    config = pack_config_for(platform, PACK)
    bucket = next(r for r in plan.resources if r.type == "aws:s3/bucket:Bucket"
                  and r.props["tags"].get("finml:classification") == "confidential")
    bucket.props["region"] = "us-east-1"
    config["residency-aws-data-site"]["enforcementLevel"] = "advisory"
    result = check_plan(plan, PACK, config)
    assert {p.name for p in result.policies} == EXPECTED_POLICIES and result.pack == "finml-guardrails"
    assert all(p.enforcement == "mandatory" for p in result.policies if p.name != "policy-waived-findings")
    found = {(v.policy, v.enforcement) for v in result.violations if v.urn == bucket.urn}
    assert ("residency-aws-data-site", "advisory") in found, found
    advisory = next(v for v in result.violations if v.policy == "residency-aws-data-site")
    assert advisory.site == "aws:us-east-1" and advisory.classification == "confidential"
    assert "aws:us-east-1" in advisory.message and advisory.severity in ("high", "critical")


def test_every_mutant_of_every_stack_is_caught_by_its_claiming_rule(stack_plans, capsys):
    totals: Counter = Counter()
    killed: Counter = Counter()
    survivors = []
    with PolicyPackProcess(PACK) as pack:
        for name in STACKS:
            plan = load_plan(stack_plans[name])
            platform = load_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml").platform
            config = pack_config_for(platform, PACK)
            baseline = check_plan(plan, PACK, config, pack=pack)
            assert baseline.mandatory == [], f"{name} baseline is not clean"
            residency = {k: list(v) for k, v in platform.residency.items()}
            for mutant in all_mutants(plan, residency, sorted(platform.sites)):
                assert mutant.rules, f"{mutant.description}: no claiming rule"
                totals[mutant.kind] += 1
                result = check_plan(mutant.plan, PACK, config, pack=pack)
                if any(v.urn in mutant.related and v.policy in mutant.rules for v in result.mandatory):
                    killed[mutant.kind] += 1
                else:
                    got = sorted({v.policy for v in result.mandatory if v.urn in mutant.related})
                    survivors.append(f"{name}: {mutant.kind}: {mutant.description} (claimed by "
                                     f"{', '.join(sorted(mutant.rules))}; reported: {', '.join(got) or 'nothing'})")
    total, kills = sum(totals.values()), sum(killed.values())
    with capsys.disabled():
        print(f"\nmutation kill rate: {kills}/{total} ({100.0 * kills / max(total, 1):.1f}%) — "
              + ", ".join(f"{k} {killed[k]}/{totals[k]}" for k in sorted(totals)))
    for kind in ("encryption", "region", "allowed-site", "world", "container", "image", "logs", "keys"):
        assert totals[kind] > 0, f"no {kind} mutants"
    assert not survivors, "mutants not caught:\n" + "\n".join(survivors)


def test_stack_policies_see_component_outputs_as_the_engine_gives_them(stack_plans):
    """AnalyzeStack carries a component's registered outputs; lineage a component does not register is invisible."""
    plan = load_plan(stack_plans["hybrid-prod"])
    datasets = [r for r in plan.resources if r.type == "finml:ml:Dataset"]
    assert datasets and all(r.outputs == r.props for r in datasets), "lineage components must register their props"
    config = pack_config_for(load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").platform, PACK)
    for r in datasets:
        r.outputs = {}
    result = check_plan(plan, PACK, config)
    flagged = {(v.policy, v.urn) for v in result.mandatory}
    assert {("residency-classification-required", r.urn) for r in datasets} <= flagged
