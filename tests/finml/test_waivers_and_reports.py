"""Waivers end to end (stack config -> pack config -> the real pack over gRPC -> every report format), the control ids
findings carry, `finml policies list`, and the HTML report parsed and rendered in a real headless browser."""

from __future__ import annotations

import copy
import datetime
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from finml.config import ConfigError, load_stack_file, site_image_registries
from finml.plan import load_plan
from finml.policy_check import PolicyPackProcess, check_plan
from finml.report import render

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
sys.path.insert(0, str(PACK))

from finml_rules import waivers as waiver_rules  # noqa: E402
from finml_rules.config import pack_config  # noqa: E402

TODAY = "2027-01-15"  # expiry is judged on this injected day, never on the wall clock


@pytest.fixture(scope="module")
def pack():
    with PolicyPackProcess(PACK) as started:
        yield started


def _config(stack: str, waivers: list, today: str = TODAY) -> dict:
    platform = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").platform
    return pack_config({k: list(v) for k, v in platform.residency.items()}, sorted(platform.sites), waivers=waivers,
                       waiver_date=today, account_ids=[platform.aws_account_id] if platform.aws_account_id else [],
                       image_registries=_registries(platform))


def _registries(platform) -> dict:
    return {s: r.to_pack() for s, r in site_image_registries(platform).items()}


def _hop_limit_plan(stack_plans):
    """dev with every launch template's IMDS hop limit raised to 2 (a network-imds-hop-limit finding each)."""
    plan = load_plan(stack_plans["dev"])
    templates = [r for r in plan.resources if r.type == "aws:ec2/launchTemplate:LaunchTemplate"]
    for template in templates:
        template.props["metadataOptions"]["httpPutResponseHopLimit"] = 2
    return plan, templates


def _waiver(resources, expires="2027-03-31", rule="network-imds-hop-limit", **extra):
    return {"rule": rule, "resources": resources, "reason": "vendor agent needs IMDS from a pod until v2 ships",
            "ticket": "SEC-4711", "approver": "ciso-delegate", "expires": expires, **extra}


def test_valid_waiver_moves_findings_to_waived_in_every_format(stack_plans, pack):
    plan, templates = _hop_limit_plan(stack_plans)
    glob = templates[0].urn.rsplit("::", 1)[0] + "::*"  # every launch template of that type and parent
    result = check_plan(plan, PACK, _config("dev", [_waiver([glob])]), pack=pack)
    assert result.mandatory == []
    assert {(v.policy, v.urn) for v in result.waived} == {("network-imds-hop-limit", t.urn) for t in templates}
    assert all(v.waiver["ticket"] == "SEC-4711" and v.enforcement == "waived" for v in result.waived)
    assert all("nist-800-53:AC-6" in v.controls for v in result.waived)

    doc = json.loads(render([result], "json"))["stacks"][0]
    assert doc["summary"]["passed"] and len(doc["waived"]) == len(templates) and doc["violations"] == []
    assert doc["waived"][0]["waiver"]["expires"] == "2027-03-31"

    sarif = json.loads(render([result], "sarif"))["runs"][0]
    suppressed = [r for r in sarif["results"] if r.get("suppressions")]
    assert len(suppressed) == len(templates)
    assert suppressed[0]["suppressions"][0]["kind"] == "external"
    assert suppressed[0]["suppressions"][0]["status"] == "accepted"
    assert "SEC-4711" in suppressed[0]["suppressions"][0]["justification"]

    junit = ET.fromstring(render([result], "junit").split("\n", 1)[1])
    case = next(c for c in junit.iter("testcase") if c.get("name") == "network-imds-hop-limit")
    assert case.find("failure") is None and "waived:" in case.find("system-out").text

    text = render([result], "text")
    assert "Waived findings (" in text and "SEC-4711" in text and "0 mandatory" in text


def test_waiver_for_other_resources_or_rules_waives_nothing(stack_plans, pack):
    plan, templates = _hop_limit_plan(stack_plans)
    config = _config("dev", [_waiver(["urn:pulumi:dev::finml::nothing-here"]),
                             _waiver([templates[0].urn], rule="network-imdsv2-required")])
    result = check_plan(plan, PACK, config, pack=pack)
    assert {(v.policy, v.urn) for v in result.mandatory} == {("network-imds-hop-limit", t.urn) for t in templates}
    assert result.waived == []


def test_expired_waiver_is_itself_a_violation_and_waives_nothing(stack_plans, pack):
    plan, templates = _hop_limit_plan(stack_plans)
    result = check_plan(plan, PACK, _config("dev", [_waiver([templates[0].urn], expires="2027-01-14")]), pack=pack)
    found = {(v.policy, v.urn) for v in result.mandatory}
    assert {("network-imds-hop-limit", t.urn) for t in templates} <= found
    expired = [v for v in result.mandatory if v.policy == "policy-waivers-valid"]
    assert len(expired) == 1 and "expired on 2027-01-14" in expired[0].message
    assert result.waived == []
    # the last day of a waiver still counts
    still = check_plan(plan, PACK, _config("dev", [_waiver([templates[0].urn], expires=TODAY)]), pack=pack)
    assert [v.urn for v in still.waived] == [templates[0].urn]


def test_restricted_residency_waiver_is_refused(stack_plans, pack):
    plan = load_plan(stack_plans["hybrid-prod"])
    dataset = next(r for r in plan.resources if r.type == "finml:ml:Dataset"
                   and r.props["classification"] == "restricted")
    dataset.props["site"] = dataset.outputs["site"] = "aws:eu-central-1"  # declared, but not allowed for restricted
    waiver = _waiver([dataset.urn], rule="residency-dataset-site")
    result = check_plan(plan, PACK, _config("hybrid-prod", [waiver]), pack=pack)
    refused = [v for v in result.mandatory if v.policy == "residency-dataset-site" and v.urn == dataset.urn]
    assert refused and "never waivable" in refused[0].message and result.waived == []


def test_confidential_residency_finding_is_waivable(stack_plans, pack):
    plan = load_plan(stack_plans["hybrid-prod"])
    dataset = next(r for r in plan.resources if r.type == "finml:ml:Dataset"
                   and r.props["classification"] == "confidential")
    dataset.props["site"] = dataset.outputs["site"] = "aws:eu-central-1"
    platform = load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").platform
    residency = {k: list(v) for k, v in platform.residency.items()}
    residency["confidential"] = ["onprem:*"]  # a stricter map, so the move is a confidential residency finding
    waiver = _waiver([dataset.urn], rule="residency-dataset-site")
    config = pack_config(residency, sorted(platform.sites), waivers=[waiver], waiver_date=TODAY,
                         image_registries=_registries(platform))
    result = check_plan(plan, PACK, config, pack=pack)
    assert [(v.policy, v.urn) for v in result.waived] == [("residency-dataset-site", dataset.urn)]
    assert not any(v.policy == "residency-dataset-site" for v in result.mandatory)


@pytest.mark.parametrize("bad,expected", [
    ({"rule": "network-imds-hop-limit", "resources": ["urn:x"], "reason": "r", "ticket": "SEC-1",
      "expires": "2027-02-01"}, "waivers[0].approver is required"),
    ({**_waiver(["urn:x"]), "expires": "next year"}, "waivers[0].expires must be a date"),
    ({**_waiver(["*"])}, "a pattern of only wildcards"),
    ({**_waiver(["urn:x"]), "rule": "no-such-rule"}, "is not a rule of the pack"),
    ({**_waiver(["urn:x"]), "ticket": "see slack"}, "is not a ticket id"),
    ({**_waiver(["urn:x"]), "expires": "2029-01-01"}, "more than 366 days"),
    ("not an object", "must be an object"),
])
def test_malformed_waiver_is_a_violation(stack_plans, pack, bad, expected):
    plan = load_plan(stack_plans["dev"])
    result = check_plan(plan, PACK, _config("dev", [bad]), pack=pack)
    problems = [v for v in result.mandatory if v.policy == "policy-waivers-valid"]
    assert len(problems) >= 1 and any(expected in v.message for v in problems), [v.message for v in problems]
    assert [v.policy for v in result.mandatory if v.policy != "policy-waivers-valid"] == []


def test_waiver_evaluation_is_pure_and_day_injected():
    waivers, problems = waiver_rules.parse_waivers([_waiver(["urn:a*"])])
    assert problems == []
    day = datetime.date(2027, 3, 31)
    assert waiver_rules.evaluate("network-imds-hop-limit", "urn:abc", "internal", waivers, day).waived
    assert not waiver_rules.evaluate("network-imds-hop-limit", "urn:abc", None, waivers,
                                     day + datetime.timedelta(days=1)).waived
    restricted = waiver_rules.evaluate("residency-aws-data-site", "urn:abc", "restricted",
                                       waiver_rules.parse_waivers([_waiver(["urn:a*"], rule="residency-aws-data-site")])[0],
                                       day)
    assert not restricted.waived and "never waivable" in restricted.refused
    unknown = waiver_rules.evaluate("residency-aws-data-site", "urn:abc", "?",
                                    waiver_rules.parse_waivers([_waiver(["urn:a*"], rule="residency-aws-data-site")])[0],
                                    day)
    assert not unknown.waived


def _stack_file_with(tmp_path: Path, waivers_yaml: str) -> Path:
    text = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    assert "\n  finml:platform:\n" in text
    out = tmp_path / "stacks"
    out.mkdir(parents=True)
    lines = text.split("\n")
    index = lines.index("  finml:platform:")
    lines[index + 1:index + 1] = ["    " + line for line in waivers_yaml.strip().split("\n")]
    (out / "Pulumi.dev.yaml").write_text("\n".join(lines))
    return out


def test_config_check_validates_waivers(tmp_path):
    good = _stack_file_with(tmp_path / "a", """waivers:
  - rule: network-imds-hop-limit
    resources: ["urn:pulumi:dev::finml::*LaunchTemplate::*"]
    reason: vendor agent
    ticket: SEC-4711
    approver: ciso-delegate
    expires: 2027-03-31""")
    stack = load_stack_file(good / "Pulumi.dev.yaml")
    assert stack.platform.waivers[0].expires == datetime.date(2027, 3, 31)
    from finml.cli_policies import waiver_problems

    assert waiver_problems(stack, ROOT / "policies", today="2027-03-01") == []
    assert "expired on 2027-03-31" in waiver_problems(stack, ROOT / "policies", today="2027-04-01")[0]
    bad = _stack_file_with(tmp_path / "b", """waivers:
  - rule: network-imds-hop-limit
    resources: []
    reason: ""
    ticket: SEC-1
    approver: x
    expires: 2027-03-31""")
    with pytest.raises(ConfigError) as error:
        load_stack_file(bad / "Pulumi.dev.yaml")
    assert "waivers[0].resources" in str(error.value) and "waivers[0].reason" in str(error.value)
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(bad), "config", "check",
                           "--stack", "dev"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "waivers" in proc.stderr
    # Expired is not malformed: config check accepts it; the gates report it (policy-waivers-valid, exit 1).
    lapsed = _stack_file_with(tmp_path / "c", """waivers:
  - rule: network-imds-hop-limit
    resources: ["urn:pulumi:dev::finml::*"]
    reason: vendor agent
    ticket: SEC-2
    approver: ciso-delegate
    expires: 2026-01-31""")
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(lapsed), "config", "check",
                           "--stack", "dev"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_stack_file_waivers_reach_the_pack_through_preview_and_policy_check(tmp_path):
    """The whole path: stack file -> offline preview (YAML date -> ISO string, as the Pulumi CLI passes it) -> plan
    -> `finml policy check` builds the pack config, waivers included, from the stack file (never from the plan)."""
    waiver = """waivers:
  - rule: network-imds-hop-limit
    resources: ["urn:pulumi:dev::finml::*aws:ec2/launchTemplate:LaunchTemplate::*"]
    reason: vendor agent
    ticket: SEC-4711
    approver: ciso-delegate
    expires: {expires}"""
    # One validation path: a waiver running past a year is a config error for preview exactly as for config check.
    too_long = _stack_file_with(tmp_path / "long", waiver.format(expires="2099-12-31"))
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(too_long), "preview", "--stack",
                           "dev", "--out", str(tmp_path / "long-out")], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 2 and "waivers must end within a year" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "long-out" / "dev").exists()

    expires = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    stacks = _stack_file_with(tmp_path / "s", waiver.format(expires=expires))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(stacks), "preview", "--stack", "dev",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads((out / "dev" / "plan.json").read_text())
    platform = data["config"]["finml:platform"]
    platform = json.loads(platform) if isinstance(platform, str) else platform
    assert platform["waivers"][0]["expires"] == expires
    for r in data["resources"]:  # a finding for the waiver to cover; the plan's config stays the stack file's
        if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate":
            r["props"]["metadataOptions"]["httpPutResponseHopLimit"] = 2
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    check = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(stacks), "policy", "check",
                            "--plan", str(edited), "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    report = json.loads(check.stdout)["stacks"][0]
    assert report["violations"] == [] and {w["policy"] for w in report["waived"]} == {"network-imds-hop-limit"}
    unwaived = _stack_file_with(tmp_path / "plain", "")  # same plan, stack file without the waiver: refused
    check = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(unwaived), "policy", "check",
                            "--plan", str(edited), "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
    assert check.returncode == 2 and "waivers" in check.stderr, check.stderr[-2000:]


# --- control ids in findings and the catalogue -------------------------------------------------------------------

def test_policies_list_framework_json():
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "policies", "list", "--framework", "pci-dss",
                           "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc["frameworks"]) == ["pci-dss"] and doc["frameworks"]["pci-dss"]["version"] == "v4.0"
    rules = {r["name"]: r for r in doc["rules"]}
    assert {"framework": "pci-dss", "id": "3.7.4"} in [{k: c[k] for k in ("framework", "id")}
                                                      for c in rules["encryption-kms-rotation"]["controls"]]
    assert all(c["framework"] == "pci-dss" for r in doc["rules"] for c in r["controls"])
    assert "residency-dataset-site" not in rules  # GDPR/NIST only
    bad = subprocess.run([sys.executable, "-m", "finml.cli", "policies", "list", "--framework", "iso"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "allowed: cis-aws" in bad.stderr and "Traceback" not in bad.stderr


def test_sarif_rules_and_results_carry_control_ids(stack_plans, pack):
    plan, templates = _hop_limit_plan(stack_plans)
    result = check_plan(plan, PACK, _config("dev", []), pack=pack)
    run = json.loads(render([result], "sarif"))["runs"][0]
    rule = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == "network-imds-hop-limit")
    assert "pci-dss:2.2.6" in rule["properties"]["tags"]
    finding = next(r for r in run["results"] if r["ruleId"] == "network-imds-hop-limit")
    assert "nist-800-53:CM-6" in finding["properties"]["controls"]
    assert json.loads(render([result], "json"))["stacks"][0]["violations"][0]["controls"]


# --- the HTML report ------------------------------------------------------------------------------------------

class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.external, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained_and_renders_in_chromium(stack_plans, pack, tmp_path):
    plan, templates = _hop_limit_plan(stack_plans)
    waived = check_plan(plan, PACK, _config("dev", [_waiver([templates[0].urn])]), pack=pack)
    clean = check_plan(load_plan(stack_plans["hybrid-prod"]), PACK, _config("hybrid-prod", []), pack=pack)
    html = render([waived, clean], "html")
    parser = _Collector()
    parser.feed(html)
    text = " ".join(parser.text)
    assert parser.external == [], parser.external
    assert "FAIL" in text and "Findings by control" in text and "Waived findings (1)" in text
    assert "nist-800-53:AC-6" in text and "SEC-4711" in text
    assert "site × classification" in text and "onprem:fra-dc1" in text and "restricted" in text
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "<h1>finml policy report" in dom and 'class="verdict fail"' in dom and "Stack hybrid-prod" in dom
    assert dom.count("<table>") >= 4
