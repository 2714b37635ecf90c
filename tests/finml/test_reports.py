"""Reports as their consumers read them: SARIF 2.1.0 validated against the official schema, JUnit XML, JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from finml.plan import load_plan
from finml.policy_check import check_plan
from finml.report import render

ROOT = Path(__file__).resolve().parents[2]
MINI_PACK = ROOT / "tests" / "fixtures" / "packs" / "mini"
KMS_PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "kms_only.py"
# The SARIF 2.1.0 JSON schema (final, "rtm.5"), vendored from Microsoft's MIT-licensed @microsoft/jest-sarif
# 1.0.0-beta.0 (see tests/fixtures/schemas/README.md): the tests need no network.
SARIF_SCHEMA_FILE = ROOT / "tests" / "fixtures" / "schemas" / "sarif-2.1.0-rtm.5.json"
SARIF_SCHEMA_SHA256 = "2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8"


@pytest.fixture(scope="module")
def sarif_schema() -> dict:
    data = SARIF_SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SARIF_SCHEMA_SHA256, "the vendored SARIF schema was changed"
    schema = json.loads(data)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0-rtm.5")
    return schema


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("plans")
    runs = {}
    for name, rotation in (("bad", "off"), ("good", "on")):
        path = out / f"{name}.json"
        proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / "Pulumi.dev.yaml"),
                               str(KMS_PROGRAM), str(path)], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "FINML_TEST_ROTATION": rotation})
        assert proc.returncode == 0, proc.stderr
        runs[name] = check_plan(load_plan(path), MINI_PACK, {})
    return runs


def test_sarif_is_valid_sarif_2_1_0(sarif_schema, results):
    for result in results.values():
        doc = json.loads(render([result], "sarif"))
        jsonschema.validate(doc, sarif_schema)
    bad = json.loads(render([results["bad"]], "sarif"))
    [run] = bad["runs"]
    [finding] = run["results"]
    assert finding["ruleId"] == "kms-rotation" and finding["level"] == "error"
    assert run["tool"]["driver"]["rules"][finding["ruleIndex"]]["id"] == "kms-rotation"
    assert finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "stacks/Pulumi.dev.yaml"
    assert finding["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].endswith("key-eu-central-1")
    assert finding["properties"]["site"] == "aws:eu-central-1"
    assert run["automationDetails"]["id"] == "finml-policy/dev/"


def test_sarif_keeps_one_run_per_stack(sarif_schema, results):
    doc = json.loads(render([results["bad"], results["good"]], "sarif"))
    jsonschema.validate(doc, sarif_schema)
    assert [len(run["results"]) for run in doc["runs"]] == [1, 0]


def test_sarif_schema_rejects_a_broken_log(sarif_schema, results):
    doc = json.loads(render([results["bad"]], "sarif"))
    doc["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, sarif_schema)


def test_junit_counts_failures_per_policy(results):
    bad = ET.fromstring(render([results["bad"]], "junit"))
    suite = bad.find("testsuite")
    assert bad.get("tests") == "1" and bad.get("failures") == "1"
    case = suite.find("testcase")
    assert case.get("name") == "kms-rotation" and case.get("classname") == "finml.policy.dev"
    assert "key-eu-central-1" in case.find("failure").text
    good = ET.fromstring(render([results["good"]], "junit"))
    assert good.get("failures") == "0" and good.find("testsuite/testcase/failure") is None


def test_json_report_summarises_and_lists_violations(results):
    doc = json.loads(render([results["bad"], results["good"]], "json"))
    assert doc["format"] == "finml-policy-report/1" and doc["passed"] is False
    bad, good = doc["stacks"]
    assert bad["summary"] == {"mandatory": 1, "advisory": 0, "passed": False}
    assert good["summary"]["passed"] is True
    assert bad["resourcesBySite"] == {"aws:eu-central-1": 2}
    violation = bad["violations"][0]
    assert {"policy", "severity", "urn", "site", "classification", "message", "remediation"} <= set(violation)


def test_text_report_is_for_people(results):
    text = render([results["bad"]], "text")
    assert "MANDATORY violations (1):" in text and "fix: Set enable_key_rotation=True." in text
    assert text.rstrip().endswith("policy result: FAIL — 1 mandatory, 0 advisory, 0 waived")


def test_junit_stays_valid_xml_for_names_with_control_characters(results):
    import dataclasses

    bad = results["bad"]
    odd = dataclasses.replace(bad, stack="dev\x01", violations=[
        dataclasses.replace(v, message="rotation\x1b[31m off\x00", urn=v.urn + "\x07") for v in bad.violations])
    tree = ET.fromstring(render([odd], "junit"))  # raises on invalid XML
    failure = tree.find("testsuite/testcase/failure")
    assert "\\x1b[31m off\\x00" in failure.text and tree.find("testsuite").get("name") == "policy.dev\\x01"
    json.loads(render([odd], "json"))
    json.loads(render([odd], "sarif"))



def test_sarif_with_controls_and_waiver_suppressions_is_valid(sarif_schema, stack_plans):
    """The real pack's SARIF: rules tagged with control ids, results carrying them, waived findings as suppressions."""
    sys.path.insert(0, str(ROOT / "policies"))
    from finml_rules.config import pack_config

    from finml.config import load_stack_file, site_image_registries

    plan = load_plan(stack_plans["dev"])
    templates = [r for r in plan.resources if r.type == "aws:ec2/launchTemplate:LaunchTemplate"]
    for template in templates:
        template.props["metadataOptions"]["httpPutResponseHopLimit"] = 2
    platform = load_stack_file(ROOT / "stacks" / "Pulumi.dev.yaml").platform
    waiver = {"rule": "network-imds-hop-limit", "resources": [templates[0].urn], "reason": "vendor agent",
              "ticket": "SEC-1", "approver": "ciso", "expires": "2027-02-01"}
    config = pack_config({k: list(v) for k, v in platform.residency.items()}, sorted(platform.sites),
                         waivers=[waiver], waiver_date="2027-01-15",
                         image_registries={s: r.to_pack() for s, r in site_image_registries(platform).items()})
    result = check_plan(plan, ROOT / "policies", config)
    doc = json.loads(render([result], "sarif"))
    jsonschema.validate(doc, sarif_schema)
    [run] = doc["runs"]
    findings = [r for r in run["results"] if r["ruleId"] == "network-imds-hop-limit"]
    assert len(findings) == len(templates)
    assert sum(1 for r in findings if r.get("suppressions")) == 1
    assert all("pci-dss:2.2.6" in r["properties"]["controls"] for r in findings)
    rule = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == "network-imds-hop-limit")
    assert "cis-aws:5.6" not in rule["properties"]["tags"] and "nist-800-53:AC-6" in rule["properties"]["tags"]
