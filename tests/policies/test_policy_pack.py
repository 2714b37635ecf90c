"""The pack as a whole: assembly, metadata, self-containment, config generation, and fail-closed behaviour
through the real Analyzer servicer code path (deserialisation, unknown proxy, enforcement levels)."""

import ast
import json
import re
import runpy

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel, Severity
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UnknownValueError

from policy_harness import CONFIG, POLICIES, POLICIES_DIR, RESIDENCY, SITES, UNKNOWN, Stack, run_all
from policy_fixtures import compliant_stack

from finml_rules import common
from finml_rules.config import all_policy_names, pack_config

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
AREAS = ("residency-", "encryption-", "network-", "k8s-", "gpu-", "policy-")


def test_main_assembles_the_pack_with_every_policy(monkeypatch):
    captured = {}

    class FakePack:  # the real PolicyPack would start the gRPC server and block
        def __init__(self, **kwargs):
            captured.update(kwargs)

    monkeypatch.setattr("pulumi_policy.PolicyPack", FakePack)
    runpy.run_path(str(POLICIES_DIR), run_name="__main__")
    assert captured["name"] == "finml-guardrails"
    assert captured["enforcement_level"] is EnforcementLevel.MANDATORY
    assert [p.name for p in captured["policies"]] == all_policy_names()


def test_policy_metadata():
    names = all_policy_names()
    assert len(names) >= 25
    assert len(set(names)) == len(names)
    for policy in POLICIES.values():
        assert KEBAB.match(policy.name) and policy.name.startswith(AREAS), policy.name
        assert policy.description.startswith("Ensure"), policy.name
        assert isinstance(policy.severity, Severity), policy.name
        assert policy.remediation_steps and "\n" not in policy.remediation_steps, policy.name
        # Only the report of waived findings is advisory: it must never block, it makes waived risk visible.
        expected = EnforcementLevel.ADVISORY if policy.name == "policy-waived-findings" else EnforcementLevel.MANDATORY
        assert policy.enforcement_level is expected, policy.name
        if policy.name.startswith("residency-"):
            assert {"residency", "sites"} <= set(policy.config_schema.properties), policy.name


def test_pulumi_policy_yaml_and_requirements():
    import yaml

    meta = yaml.safe_load((POLICIES_DIR / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"]["name"] == "python" and meta["version"] == "0.1.0"
    assert meta["runtime"]["options"] == {"toolchain": "pip", "virtualenv": "venv"}
    requirements = (POLICIES_DIR / "requirements.txt").read_text().split()
    assert any(r.startswith("pulumi-policy>=") for r in requirements)
    assert any(r.startswith("pulumi>=") for r in requirements)


def test_pack_is_self_contained():
    """The engine installs only requirements.txt: the pack may import stdlib, pulumi, pulumi_policy, itself."""
    allowed_roots = {"pulumi", "pulumi_policy", "finml_rules", "__future__", "google"}
    import sys
    for path in POLICIES_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            for root in roots:
                assert root in allowed_roots or root in sys.stdlib_module_names, f"{path}: imports {root}"


# --- pack_config -----------------------------------------------------------------------------------------------

def test_pack_config_covers_every_policy_with_explicit_enforcement():
    config = pack_config(RESIDENCY, SITES, enforcement={"gpu-mig-resource-name": "advisory"})
    assert list(config) == all_policy_names()
    assert json.loads(json.dumps(config)) == config
    assert config["gpu-mig-resource-name"] == {"enforcementLevel": "advisory"}
    assert config["residency-aws-data-site"] == {"enforcementLevel": "mandatory", "residency": RESIDENCY,
                                                 "sites": SITES}
    assert config["k8s-no-hostpath-volumes"] == {"enforcementLevel": "mandatory", "exemptNamespaces": ["kube-system"]}
    assert all(entry["enforcementLevel"] == "mandatory" for name, entry in config.items()
               if name not in ("gpu-mig-resource-name", "policy-waived-findings"))


@pytest.mark.parametrize("residency,sites,enforcement,error", [
    ({"secret": ["aws:*"]}, ["aws:eu-central-1"], None, "unknown classification 'secret'"),
    ({"public": "aws:*"}, ["aws:eu-central-1"], None, "residency.public must be a list"),
    ({"public": ["gcp:*"]}, ["aws:eu-central-1"], None, "residency.public: 'gcp:*'"),
    ({"public": ["aws:*"]}, ["eu-central-1"], None, "sites: 'eu-central-1'"),
    ({"public": ["aws:*"]}, [], None, "sites must be a non-empty list"),
    ({}, ["aws:eu-central-1"], None, "residency must map"),
    ({"public": ["aws:*"]}, ["aws:eu-central-1"], {"no-such-rule": "advisory"}, "unknown policy 'no-such-rule'"),
    ({"public": ["aws:*"]}, ["aws:eu-central-1"], {"gpu-mig-resource-name": "remediate"}, "is not one of"),
])
def test_pack_config_rejects_bad_input(residency, sites, enforcement, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        pack_config(residency, sites, enforcement)


# --- helpers ---------------------------------------------------------------------------------------------------

def test_violation_message_suffix():
    assert common.violation_message("x.", "aws:eu-central-1", "restricted") == \
        "x. [site=aws:eu-central-1; classification=restricted]"
    assert common.violation_message("x.", None, "public") == "x. [site=?; classification=public]"
    assert common.violation_message("x.", "onprem:fra-dc1") == "x. [site=onprem:fra-dc1; classification=?]"
    assert common.violation_message("x.") == "x."


def test_fail_closed_turns_escaping_unknowns_and_errors_into_violations():
    reported = []

    def leaks_unknown(args, report):
        raise UnknownValueError(common._proxy.UNKNOWN_STRING_VALUE, ["a", "b"])

    def crashes(args, report):
        raise KeyError("boom")

    for rule in (leaks_unknown, crashes):
        common.fail_closed(rule)(type("Args", (), {"urn": "urn:x", "name": "n", "resource_type": "t"})(),
                                 lambda message, urn=None: reported.append((urn, message)))
    assert [u for u, _ in reported] == ["urn:x", "urn:x"]
    assert "string value at .a.b can't be known during preview" in reported[0][1]
    assert "KeyError" in reported[1][1]


def test_unknown_marker_cannot_be_used_as_boolean():
    with pytest.raises(TypeError):
        bool(common.UNKNOWN)


def test_everything_unknown_never_raises_and_data_resources_fail():
    """Every prop of every resource unknown (worst-case preview): no rule raises; every AWS data store fails."""
    source, _ = compliant_stack()
    s = Stack()
    clones = {}
    for r in source.resources:
        props = {k: UNKNOWN for k in common.plain(r.props)}
        provider = clones.get(r.provider.urn) if r.provider is not None else None
        parent = clones.get(r.parent.urn) if r.parent is not None else None
        deps = {k: [clones[d.urn] for d in v] for k, v in r.property_dependencies.items()}
        clones[r.urn] = s.add(r.resource_type, r.name, props, provider=provider, parent=parent, deps=deps)
    violations = run_all(s)
    failed = {v.urn for v in violations}
    data = {r.urn for r in s.resources if r.resource_type in common.AWS_DATA_TYPES}
    assert data <= failed
    assert all(v.urn for v in violations)


# --- through the real Analyzer servicer --------------------------------------------------------------------------

def _servicer():
    servicer = _PolicyAnalyzerServicer("finml-guardrails", "0.1.0", list(POLICIES.values()),
                                       EnforcementLevel.MANDATORY)
    request = proto.ConfigureAnalyzerRequest()
    for name, entry in CONFIG.items():
        level = {"mandatory": proto.MANDATORY, "advisory": proto.ADVISORY, "disabled": proto.DISABLED}[
            entry["enforcementLevel"]]
        properties = struct_pb2.Struct()
        properties.update({k: v for k, v in entry.items() if k != "enforcementLevel"})
        request.policyConfig[name].CopyFrom(proto.PolicyConfig(enforcementLevel=level, properties=properties))
    servicer.Configure(request, None)
    return servicer


def _struct(value):
    message = struct_pb2.Struct()
    json_format.ParseDict(value, message)
    return message


PROVIDER = proto.AnalyzerProviderResource(type="pulumi:providers:aws",
                                          urn="urn:pulumi:t::finml::pulumi:providers:aws::eu", name="eu",
                                          properties=_struct({"region": "eu-central-1"}))


def test_analyze_unknown_encryption_flag_is_a_mandatory_violation_not_an_advisory_diagnostic():
    servicer = _servicer()
    urn = "urn:pulumi:t::finml::aws:ebs/volume:Volume::v"
    response = servicer.Analyze(proto.AnalyzeRequest(
        type="aws:ebs/volume:Volume", urn=urn, name="v", provider=PROVIDER,
        properties=_struct({"encrypted": UNKNOWN, "tags": {"finml:classification": "restricted"}})), None)
    found = {(d.policyName, d.enforcementLevel) for d in response.diagnostics}
    assert found == {("encryption-ebs-encrypted", proto.MANDATORY), ("residency-aws-data-site", proto.MANDATORY)}
    assert all("can't run policy" not in d.message for d in response.diagnostics)


def test_analyze_stack_unknown_region_fails_closed_with_urn():
    servicer = _servicer()
    provider_urn = "urn:pulumi:t::finml::pulumi:providers:aws::later"
    bucket_urn = "urn:pulumi:t::finml::aws:s3/bucket:Bucket::b"
    provider = proto.AnalyzerProviderResource(type="pulumi:providers:aws", urn=provider_urn, name="later",
                                              properties=_struct({"region": UNKNOWN}))
    resources = [
        proto.AnalyzerResource(type="pulumi:providers:aws", urn=provider_urn, name="later",
                               properties=_struct({"region": UNKNOWN})),
        proto.AnalyzerResource(type="aws:s3/bucket:Bucket", urn=bucket_urn, name="b", provider=provider,
                               properties=_struct({"bucket": "b", "tags": {"finml:classification": "internal"}})),
    ]
    response = servicer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources), None)
    by_policy = {(d.policyName, d.urn, d.enforcementLevel) for d in response.diagnostics}
    assert by_policy == {
        ("encryption-s3-sse-kms-cmk", bucket_urn, proto.MANDATORY),
        ("encryption-s3-tls-only", bucket_urn, proto.MANDATORY),
        ("network-s3-public-access-block", bucket_urn, proto.MANDATORY),
    }
    assert all(d.message.rstrip().endswith("[site=?; classification=internal]") for d in response.diagnostics)


def test_readme_catalogues_every_rule():
    readme = (POLICIES_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", readme, re.M))
    assert rows == set(all_policy_names())


_SENTINELS = [common._proxy.UNKNOWN_STRING_VALUE, common._proxy.UNKNOWN_BOOLEAN_VALUE,
              common._proxy.UNKNOWN_NUMBER_VALUE, common._proxy.UNKNOWN_ARRAY_VALUE,
              common._proxy.UNKNOWN_OBJECT_VALUE]


def _strip(value):
    """Expected plain copy: sentinels become UNKNOWN, everything else unchanged."""
    if isinstance(value, str):
        return common.UNKNOWN if value in _SENTINELS else value
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def test_plain_maps_every_unknown_and_never_raises():
    from hypothesis import given, settings, strategies as st
    from pulumi_policy.proxy import unknown_checking_proxy

    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.sampled_from(_SENTINELS))
    trees = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                         max_leaves=20)

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.text(max_size=4), trees, max_size=5))
    def check(props):
        assert common.plain(unknown_checking_proxy(props)) == _strip(props)

    check()
