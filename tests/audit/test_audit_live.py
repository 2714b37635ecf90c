"""`finml audit` against a moto server seeded with compliant resources and one of each violation: the exact set of
findings, every report format, the IAM policy it needs, drift, coverage gaps, and environment errors."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET

import pytest

from finml.audit.aws import AwsContext
from finml.audit.collect import TAG_STACK, VPC_ENDPOINT, collect
from finml.audit.moto_seed import ACCOUNT, HOME, REPLICA, ROOT, STACK, aws_env
from finml.audit.moto_seed import run_finml as finml
from finml.plan import UNKNOWN_MARKER, Plan, PlanResource, write_plan

pytestmark = pytest.mark.slow

AUDIT_POLICY = json.loads((ROOT / "iam" / "finml-audit-policy.json").read_text())


def audit_json(url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    proc = finml("audit", "--stack", STACK, "--endpoint-url", url, "--format", "json", *extra, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def findings(doc: dict) -> set[tuple[str, str]]:
    return {(v["policy"], v["resource_name"]) for v in doc["stacks"][0]["violations"]}


def _actions(policy: dict) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


@pytest.fixture(scope="module")
def audited(moto, seeded, tmp_path_factory):
    """One audit of the seeded account, in every format (text on stdout, the rest under --out)."""
    out = tmp_path_factory.mktemp("audit")
    proc = finml("audit", "--stack", STACK, "--endpoint-url", moto.url, "--no-drift", "--out", str(out))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads((out / "audit.json").read_text()), out


def test_finds_every_seeded_violation_and_nothing_on_compliant_resources(audited, seeded):
    proc, doc, _ = audited
    assert proc.returncode == 1
    got = findings(doc)
    assert got - seeded.expected == set(), "findings on compliant resources"
    assert seeded.expected - got == set(), "seeded violations not found"
    stack = doc["stacks"][0]
    assert stack["account"] == ACCOUNT
    assert len(stack["regions"]) > 10 and {HOME, REPLICA, "us-east-1", "us-east-2"} <= set(stack["regions"])
    compliant = {"finml-good-confidential", "finml-good-internal", "finml-good-replica", "eks-good", "db-good",
                 "cache-good", "/finml/good", seeded.names["key-confidential"], seeded.names["key-internal"],
                 seeded.names["key-own-account-wildcard"], seeded.names["vol-good"], seeded.names["vpc-good"],
                 seeded.names["vpc-good-subnet"], seeded.names["vpc-good-sg"]}
    assert not {name for _, name in got} & compliant


def test_bucket_outside_every_site_and_replication_to_it(audited):
    by_key = {(v["policy"], v["resource_name"]): v for v in audited[1]["stacks"][0]["violations"]}
    outside = by_key[("residency-aws-data-site", "finml-bad-region")]
    assert outside["site"] == "aws:us-east-1" and outside["classification"] == "internal"
    repl = by_key[("residency-s3-replication-destination", "finml-bad-replication-us")]
    assert "aws:us-east-1" in repl["message"] and repl["urn"] == "arn:aws:s3:::finml-bad-replication-us"
    assert by_key[("residency-s3-replication-destination", "finml-bad-replication-conf")]["severity"] == "critical"


def test_every_report_format(audited):
    proc, doc, out = audited
    n = len(doc["stacks"][0]["violations"])
    assert doc["format"] == "finml-audit-report/1" and doc["passed"] is False
    run = json.loads((out / "audit.sarif").read_text())["runs"][0]
    assert run["tool"]["driver"]["name"] == "finml-audit" and len(run["results"]) == n
    assert run["automationDetails"]["id"] == f"finml-audit/{STACK}/"
    assert {r["ruleId"] for r in run["results"]} <= {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    suite = ET.parse(out / "audit.junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == len({r["ruleId"] for r in run["results"]})
    assert "live resources audited in account 123456789012" in proc.stdout and "policy result: FAIL" in proc.stdout


def test_rule_ids_are_the_packs(audited):
    from finml.audit.catalogue import AUDIT_ONLY_RULES, pack_rules

    used = {v["policy"] for v in audited[1]["stacks"][0]["violations"]}
    audit_only = {r.name for r in AUDIT_ONLY_RULES}
    assert used - audit_only <= set(pack_rules()), "audit findings must use the pack's rule ids"
    assert not audit_only & set(pack_rules())


def test_the_read_only_iam_policy_covers_every_call(audited):
    doc = audited[1]
    used = set(doc["stacks"][0]["iamActionsUsed"])
    allowed = _actions(AUDIT_POLICY)
    assert used <= allowed, f"calls the policy does not grant: {sorted(used - allowed)}"
    assert all(a.split(":", 1)[1].startswith(("Get", "List", "Describe")) for a in allowed), "audit must be read-only"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


def test_an_unreachable_service_is_a_finding_not_a_crash(moto, seeded):
    env = aws_env(AWS_ENDPOINT_URL_LOGS=f"http://127.0.0.1:{_closed_port()}")
    rc, doc, stderr = audit_json(moto.url, "--no-drift", "--max-attempts", "1", env=env)
    assert rc == 1
    coverage = [v for v in doc["stacks"][0]["violations"] if v["policy"] == "audit-coverage"]
    regions = doc["stacks"][0]["regions"]
    assert {v["site"] for v in coverage} == {f"aws:{r}" for r in regions}
    assert all(v["message"].startswith("could not audit logs in ") for v in coverage)
    # the log groups were not seen, so their findings are gone — replaced by coverage findings, not passed
    assert ("encryption-data-store-cmk", "/finml/plain") not in findings(doc)
    assert findings(doc) - {("audit-coverage", "logs")} == seeded.expected - {("encryption-data-store-cmk",
                                                                                "/finml/plain")}


def test_drift_against_the_plan(moto, seeded, tmp_path, monkeypatch):
    for k, v in aws_env().items():
        monkeypatch.setenv(k, v)
    ctx = AwsContext(endpoint_url=moto.url)
    inv = collect(ctx, ACCOUNT, [HOME, REPLICA, "us-east-1", "us-east-2", "ap-southeast-1"], {HOME, REPLICA})
    live = [r for r in inv.resources if r.tags.get(TAG_STACK) == STACK and r.type != VPC_ENDPOINT]
    rogue = seeded.names["key-outside"]
    regions = sorted({r.region for r in live} | {REPLICA})
    root = PlanResource(f"urn:pulumi:{STACK}::finml::pulumi:pulumi:Stack::finml-{STACK}", "pulumi:pulumi:Stack",
                        f"finml-{STACK}", False, None, None, props={})
    providers = {region: PlanResource(f"urn:pulumi:{STACK}::finml::pulumi:providers:aws::aws-{region}",
                                      "pulumi:providers:aws", f"aws-{region}", True, root.urn, None,
                                      props={"region": region}) for region in regions}
    resources = [root, *providers.values()]
    changed = {seeded.names["key-no-rotation"], seeded.names["vpc-leaky-subnet"], "finml-good-internal"}
    for r in live:
        if r.name == rogue:
            continue
        props: dict = {"tags": {"Name": r.tags["Name"]}}
        region = r.region
        if r.type == "aws:s3/bucket:Bucket":
            props["bucket"] = r.name
            props["tags"]["finml:classification"] = r.tags.get("finml:classification", "")
            if r.name == "finml-good-internal":
                region = REPLICA  # planned in Ireland, lives in Frankfurt
            props["tags"] = {k: v for k, v in props["tags"].items() if v}
        elif r.type == "aws:kms/key:Key":
            props["enableKeyRotation"] = True  # every key is planned to rotate; one does not
        elif r.type == "aws:ec2/subnet:Subnet":
            props["mapPublicIpOnLaunch"] = False  # one subnet was switched to public IPs in the console
        elif r.type == "aws:eks/cluster:Cluster":
            props["vpcConfig"] = {"endpointPublicAccess": r.props["endpointPublicAccess"]}
        elif r.type == "aws:cloudwatch/logGroup:LogGroup":
            props["name"] = r.name
            props["kmsKeyId"] = UNKNOWN_MARKER if r.props.get("kmsKeyId") else None
            props = {k: v for k, v in props.items() if v is not None}
        name = f"res-{len(resources)}"
        resources.append(PlanResource(f"urn:pulumi:{STACK}::finml::{r.type}::{name}", r.type, name, True, root.urn,
                                      providers[region].urn, props=props))
    plan_file = tmp_path / "plan.json"
    write_plan(Plan("finml", STACK, {}, resources), plan_file)
    rc, doc, _ = audit_json(moto.url, "--plan", str(plan_file))
    drift = {(v["policy"], v["resource_name"]) for v in doc["stacks"][0]["violations"]
             if v["policy"].startswith("drift-")}
    assert drift == {("drift-unmanaged-resource", rogue)} | {("drift-changed-property", n) for n in changed}
    messages = {v["resource_name"]: v["message"] for v in doc["stacks"][0]["violations"]
                if v["policy"] == "drift-changed-property"}
    assert "enableKeyRotation: planned True, live False" in messages[seeded.names["key-no-rotation"]]
    assert "region: planned eu-west-1, live eu-central-1" in messages["finml-good-internal"]
    assert doc["stacks"][0]["driftPlan"] == str(plan_file)
    # the rules' findings are unchanged by the drift check
    assert {f for f in findings(doc) if not f[0].startswith("drift-")} == seeded.expected


def test_drift_plan_of_another_stack_is_bad_input(moto, tmp_path):
    plan_file = tmp_path / "plan.json"
    stack = PlanResource("urn:pulumi:dev::finml::pulumi:pulumi:Stack::finml-dev", "pulumi:pulumi:Stack", "finml-dev",
                         False, None, None, props={})
    write_plan(Plan("finml", "dev", {}, [stack]), plan_file)
    proc = finml("audit", "--stack", STACK, "--endpoint-url", moto.url, "--plan", str(plan_file))
    assert proc.returncode == 2 and "is the plan of stack 'dev'" in proc.stderr and "Traceback" not in proc.stderr


def test_no_credentials_is_an_environment_error(moto):
    env = aws_env()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(key)
    proc = finml("audit", "--stack", STACK, "--endpoint-url", moto.url, "--no-drift", env=env)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no AWS credentials" in proc.stderr


def test_wrong_account_is_an_environment_error(moto):
    proc = finml("audit", "--stack", "dev", "--endpoint-url", moto.url, stacks=ROOT / "stacks")
    assert proc.returncode == 3 and "account 123456789012" in proc.stderr and "111122223333" in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (("--stack", "nope"), "unknown stack 'nope'"),
    (("--stack", "onprem-dc1"), "has no AWS site"),
])
def test_bad_input_is_one_line_exit_2(moto, args, expected):
    proc = finml("audit", *args, "--endpoint-url", moto.url, "--no-drift", stacks=ROOT / "stacks")
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_endpoint_list_matches_the_network_component():
    import ast

    from finml.audit.rules import REQUIRED_INTERFACE_ENDPOINTS

    tree = ast.parse((ROOT / "components" / "network.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DEFAULT_INTERFACE_ENDPOINTS":
            assert tuple(ast.literal_eval(node.value)) == REQUIRED_INTERFACE_ENDPOINTS
            return
    pytest.fail("components/network.py no longer defines DEFAULT_INTERFACE_ENDPOINTS")


def test_waivers_are_honoured_refused_and_expire(moto, seeded, tmp_path):
    import datetime

    import yaml

    today = datetime.datetime.now(datetime.timezone.utc).date()
    doc = yaml.safe_load((ROOT / "tests" / "audit" / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    doc["config"]["finml:platform"]["waivers"] = [
        {"rule": "encryption-s3-tls-only", "resources": ["arn:aws:s3:::finml-bad-no-tls"],
         "reason": "legacy uploader, TLS proxy in front", "ticket": "SEC-101", "approver": "ciso",
         "expires": (today + datetime.timedelta(days=30)).isoformat()},
        {"rule": "residency-classification-required", "resources": ["arn:aws:s3:::finml-bad-unclassified"],
         "reason": "will tag later", "ticket": "SEC-102", "approver": "ciso",
         "expires": (today + datetime.timedelta(days=30)).isoformat()},
        {"rule": "network-sg-no-public-ingress", "resources": ["arn:aws:ec2:*:security-group/*"],
         "reason": "bastion", "ticket": "SEC-103", "approver": "ciso",
         "expires": (today - datetime.timedelta(days=1)).isoformat()},
    ]
    (tmp_path / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc))
    proc = finml("audit", "--stack", STACK, "--endpoint-url", moto.url, "--no-drift", "--format", "json",
                 stacks=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    stack = json.loads(proc.stdout)["stacks"][0]
    waived = {(v["policy"], v["resource_name"]) for v in stack["waived"]}
    assert waived == {("encryption-s3-tls-only", "finml-bad-no-tls")}
    assert stack["waived"][0]["waiver"]["ticket"] == "SEC-101" and stack["waived"][0]["enforcement"] == "waived"
    got = {(v["policy"], v["resource_name"]) for v in stack["violations"]}
    expected = (seeded.expected - waived) | {("policy-waivers-valid", STACK)}
    assert got == expected
    refused = next(v for v in stack["violations"] if v["policy"] == "residency-classification-required")
    assert "SEC-102 refused" in refused["message"]
    expired = next(v for v in stack["violations"] if v["policy"] == "policy-waivers-valid")
    assert "SEC-103" in expired["message"] and "expired" in expired["message"]
    assert all(v["controls"] for v in stack["violations"] if v["policy"].startswith(("encryption-", "residency-")))


def test_readme_shows_the_iam_policies_in_the_repo():
    readme = (ROOT / "README.md").read_text()
    for name in ("finml-audit-policy.json", "finml-bootstrap-policy.json"):
        policy = json.loads((ROOT / "iam" / name).read_text())
        section = readme[readme.index(f"`iam/{name}`"):]
        block = section[section.index("```json\n") + 8:]
        assert json.loads(block[:block.index("```")]) == policy, f"README copy of iam/{name} is stale"
