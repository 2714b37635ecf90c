"""The pack's engine (policies/finml_rules/engine.py) answers exactly as the SDK's own servicer does.

The engine replaces the SDK's Analyze/AnalyzeStack loops with faster ones (rules dispatched by resource type, props
decoded once per request straight from the protobuf Struct, one stack index, stack-resource options built on first
read). These tests hold it to the SDK: the same requests through the SDK's methods and through the engine's give
byte-identical responses, across enforcement levels, a policy without validate, and reconfiguration between
checks; ``plain_struct`` equals the SDK's decoding followed by ``plain`` (key order, secrets, assets, errors
included); and no rule writes the plain props the engine shares between the rules of a check.
"""

from __future__ import annotations

import math

import pulumi
import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.deserialize import (
    SPECIAL_ARCHIVE_SIG, SPECIAL_ASSET_SIG, SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, deserialize_properties,
)
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE, UNKNOWN_ARRAY_VALUE, UNKNOWN_ASSET_VALUE, UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE,
)

from finml_rules import common, engine
from finml_rules.values import plain, plain_struct
from policy_fixtures import compliant_stack
from policy_harness import CONFIG, ENGINE_UNKNOWN, POLICIES, Stack

engine.install()
SDK_ANALYZE, SDK_ANALYZE_STACK = engine.SDK_METHODS["Analyze"], engine.SDK_METHODS["AnalyzeStack"]
LEVELS = {"mandatory": proto.MANDATORY, "advisory": proto.ADVISORY, "disabled": proto.DISABLED,
          "remediate": proto.REMEDIATE}


def _wire(value):
    """Plain props (UNKNOWN markers) back to what the engine sends (the unknown sentinel string)."""
    if value is common.UNKNOWN:
        return ENGINE_UNKNOWN
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _requests(stack: Stack):
    def provider(r):
        if r.provider is None:
            return None
        return proto.AnalyzerProviderResource(type=r.provider.resource_type, urn=r.provider.urn, name=r.provider.name,
                                              properties=_struct(_wire(plain(r.provider.props))))
    analyze = [proto.AnalyzeRequest(type=r.resource_type, urn=r.urn, name=r.name,
                                    properties=_struct(_wire(plain(r.props))), provider=provider(r),
                                    options=proto.AnalyzerResourceOptions(parent=r.opts.parent or "",
                                                                          protect=r.urn.endswith("-db")))
               for r in stack.resources]
    whole = proto.AnalyzeStackRequest(resources=[proto.AnalyzerResource(
        type=r.resource_type, urn=r.urn, name=r.name, properties=_struct(_wire(plain(r.props))), provider=provider(r),
        options=proto.AnalyzerResourceOptions(parent=r.opts.parent or ""), parent=r.parent.urn if r.parent else "",
        dependencies=[d.urn for d in r.dependencies],
        propertyDependencies={k: proto.AnalyzerPropertyDependencies(urns=[d.urn for d in v])
                              for k, v in r.property_dependencies.items()}) for r in stack.resources])
    return analyze, whole


def _configure(servicer, config, level_of=lambda name, level: level):
    request = proto.ConfigureAnalyzerRequest()
    for name, entry in config.items():
        properties = _struct({k: v for k, v in entry.items() if k != "enforcementLevel"})
        request.policyConfig[name].CopyFrom(proto.PolicyConfig(
            enforcementLevel=LEVELS[level_of(name, entry["enforcementLevel"])], properties=properties))
    servicer.Configure(request, None)


def _weakened() -> Stack:
    """The compliant stack with every AWS data store's props unknown and every workload's pod spec privileged."""
    source, _ = compliant_stack()
    s, clones = Stack("weak"), {}
    for r in source.resources:
        props = plain(r.props)
        if r.resource_type in common.AWS_DATA_TYPES:
            props = {k: common.UNKNOWN for k in props}
        if r.resource_type in common.K8S_WORKLOAD_TYPES:
            props = dict(props, spec=common.UNKNOWN)
        provider = clones.get(r.provider.urn) if r.provider is not None else None
        parent = clones.get(r.parent.urn) if r.parent is not None else None
        deps = {k: [clones[d.urn] for d in v] for k, v in r.property_dependencies.items()}
        clones[r.urn] = s.add(r.resource_type, r.name, _wire(props), provider=provider, parent=parent, deps=deps)
    return s


def _servicer(extra=()):
    return _PolicyAnalyzerServicer("finml-guardrails", "0.1.0", list(POLICIES.values()) + list(extra),
                                   EnforcementLevel.MANDATORY)


def _answers(servicer, analyze, whole, methods):
    first, second = methods
    out = [first(servicer, r, None).SerializeToString(deterministic=True) for r in analyze]
    out.append(second(servicer, whole, None).SerializeToString(deterministic=True))
    return out


LEVEL_VARIANTS = [
    lambda name, level: level,
    lambda name, level: ("advisory", "disabled", "remediate", "mandatory")[len(name) % 4],
    lambda name, level: ("disabled", "mandatory")[len(name) % 2],
]


@pytest.mark.parametrize("stack_kind", ["compliant", "weakened"])
@pytest.mark.parametrize("variant", range(len(LEVEL_VARIANTS)))
def test_engine_answers_byte_for_byte_as_the_sdk(stack_kind, variant):
    stack = compliant_stack()[0] if stack_kind == "compliant" else _weakened()
    remediation_only = ResourceValidationPolicy(name="remediation-only", description="Remediates only.",
                                                remediate=lambda args: None)
    servicer = _servicer([remediation_only])
    config = dict(CONFIG, **{"remediation-only": {"enforcementLevel": "mandatory"}})
    _configure(servicer, config, LEVEL_VARIANTS[variant])
    analyze, whole = _requests(stack)
    sdk = _answers(servicer, analyze, whole, (SDK_ANALYZE, SDK_ANALYZE_STACK))
    lean = _answers(servicer, analyze, whole, (_PolicyAnalyzerServicer.Analyze, _PolicyAnalyzerServicer.AnalyzeStack))
    assert lean == sdk
    if stack_kind == "weakened" and variant == 0:  # the comparison is not vacuous: findings on both paths
        assert sum(len(proto.AnalyzeResponse.FromString(b).diagnostics) for b in lean) > 20
    if variant == 0:
        assert any(proto.AnalyzeResponse.FromString(b).not_applicable for b in lean[:-1])


def test_reconfiguring_between_checks_takes_effect_at_once():
    """The per-type dispatch table is built once per Configure; a new Configure must replace it."""
    servicer = _servicer()
    provider = proto.AnalyzerProviderResource(type="pulumi:providers:aws", urn="urn:pulumi:t::finml::pulumi:providers:aws::eu",
                                              name="eu", properties=_struct({"region": "eu-central-1"}))
    volume = proto.AnalyzeRequest(type="aws:ebs/volume:Volume", urn="urn:pulumi:t::finml::aws:ebs/volume:Volume::v",
                                  name="v", provider=provider,
                                  properties=_struct({"encrypted": False, "tags": {"finml:classification": "internal"}}))

    def levels(level):
        _configure(servicer, CONFIG, lambda name, default: level if name == "encryption-ebs-encrypted" else default)
        return {d.enforcementLevel for d in servicer.Analyze(volume, None).diagnostics
                if d.policyName == "encryption-ebs-encrypted"}

    assert levels("mandatory") == {proto.MANDATORY}
    assert levels("disabled") == set()
    assert levels("advisory") == {proto.ADVISORY}
    assert levels("remediate") == {proto.MANDATORY}  # as the SDK: a remediate level reports as mandatory


class _Checked:
    """A last stack rule that compares what the rules before it shared with a fresh decoding of each message."""

    def __init__(self):
        self.changed, self.options, self.seen = [], [], 0
        self.servicer = None

    def validate(self, args, report):
        for resource in args.resources:
            self.seen += 1
            message = resource.props._message  # pylint: disable=protected-access
            if plain(resource.props) != plain_struct(message):
                self.changed.append(resource.urn)
            options = self.servicer._get_resource_options(  # what the SDK builds for this resource
                next(r for r in self.request.resources if r.urn == resource.urn))
            got = resource.opts
            if (got.parent, got.protect, list(got.ignore_changes), vars(got.custom_timeouts)) != (
                    options.parent, options.protect, list(options.ignore_changes), vars(options.custom_timeouts)):
                self.options.append(resource.urn)


def test_no_rule_writes_the_shared_plain_props_and_stack_options_are_the_sdks():
    checked = _Checked()
    servicer = _servicer([StackValidationPolicy(name="zz-checked", description="Checks the shared props.",
                                                validate=checked.validate)])
    checked.servicer = servicer
    _configure(servicer, dict(CONFIG, **{"zz-checked": {"enforcementLevel": "mandatory"}}))
    for stack in (compliant_stack()[0], _weakened()):
        analyze, whole = _requests(stack)
        checked.request = whole
        for request in analyze:
            servicer.Analyze(request, None)
        servicer.AnalyzeStack(whole, None)
    assert checked.seen > 100
    assert checked.changed == [] and checked.options == []


# --- plain_struct ---------------------------------------------------------------------------------------------

def _secret(value):
    return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value}


EDGE = {
    "zeta": "last-but-first", "alpha": 1.5, "int": 3, "yes": True, "no": False, "null": None, "empty": [],
    "object": {}, "nested": {"b": [1, "two", {"three": [None, UNKNOWN_STRING_VALUE]}], "a": {"deep": {"x": -0.0}}},
    "unknowns": [UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, UNKNOWN_ARRAY_VALUE,
                 UNKNOWN_ASSET_VALUE, UNKNOWN_ARCHIVE_VALUE, UNKNOWN_OBJECT_VALUE],
    "unknown": UNKNOWN_OBJECT_VALUE,
    "secret": _secret({"inner": UNKNOWN_STRING_VALUE, "list": [1, 2, _secret("nested")]}),
    "secrets": [_secret("p"), {"k": _secret(UNKNOWN_NUMBER_VALUE)}],
    "asset": {SPECIAL_SIG_KEY: SPECIAL_ASSET_SIG, "text": "hello"},
    "archive": {SPECIAL_SIG_KEY: SPECIAL_ARCHIVE_SIG, "assets": {"a": {SPECIAL_SIG_KEY: SPECIAL_ASSET_SIG,
                                                                      "path": "/tmp/x"}}},
    SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG,  # at the top level the SDK does not unwrap: nor may we
    "big": 2.0 ** 60, "tiny": 5e-324,
}


def _shape(value):
    """Comparable form: dict key order kept, assets/archives by type and fields, UNKNOWN by identity."""
    if isinstance(value, dict):
        return ("dict", [(k, _shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_shape(v) for v in value])
    if isinstance(value, (pulumi.Asset, pulumi.Archive)):
        return (type(value).__name__, sorted((k, _shape(v)) for k, v in vars(value).items()))
    if value is common.UNKNOWN:
        return ("UNKNOWN",)
    return (type(value).__name__, value)


def _sdk_plain(message):
    return plain(deserialize_properties(json_format.MessageToDict(message)))


def test_plain_struct_equals_the_sdks_decoding_then_plain():
    messages = [_struct(EDGE)] + [_struct(_wire(plain(r.props))) for r in compliant_stack()[0].resources]
    messages += [_struct({"many": {f"k{i:03d}": i for i in range(300, 0, -7)}})]  # a large map's key order
    for message in messages:
        assert _shape(plain_struct(message)) == _shape(_sdk_plain(message))
    decoded = plain_struct(_struct(EDGE))
    assert decoded["unknowns"] == [common.UNKNOWN] * 7 and decoded["secret"]["inner"] is common.UNKNOWN
    assert decoded["secrets"][1]["k"] is common.UNKNOWN and decoded["secret"]["list"][2] == "nested"
    assert isinstance(decoded["asset"], pulumi.StringAsset) and SPECIAL_SIG_KEY in decoded


@pytest.mark.parametrize("bad", [{"n": math.inf}, {"deep": [{"n": -math.inf}]}, {"n": math.nan},
                                 {"s": _secret({"n": math.inf})},
                                 {"odd": {SPECIAL_SIG_KEY: "not-a-known-signature"}}])
def test_plain_struct_raises_where_the_sdk_raises(bad):
    message = _struct(bad)
    with pytest.raises(Exception) as sdk_error:
        _sdk_plain(message)
    with pytest.raises(type(sdk_error.value)) as ours:
        plain_struct(message)
    assert str(ours.value) == str(sdk_error.value)


def test_props_read_directly_behave_as_the_sdks_proxy():
    """A rule that reads ``args.props`` itself (none of ours: they use ``plain``) gets the SDK's proxy semantics."""
    seen = []

    def validate(args, report):
        seen.append((args.props["region"], sorted(args.props), dict(args.props["tags"])))
        args.props["later"]  # unknown during preview: the SDK's proxy raises  # pylint: disable=pointless-statement

    policy = ResourceValidationPolicy(name="reads-props", description="Reads props directly.", validate=validate)
    servicer = _PolicyAnalyzerServicer("p", "0.1.0", [policy], EnforcementLevel.MANDATORY)
    request = proto.AnalyzeRequest(type="aws:s3/bucket:Bucket", urn="urn:pulumi:t::finml::aws:s3/bucket:Bucket::b",
                                   name="b", properties=_struct({"region": "eu-central-1", "later": ENGINE_UNKNOWN,
                                                                 "tags": {"a": "b"}}))
    answers = [servicer.Analyze(request, None), SDK_ANALYZE(servicer, request, None)]
    assert seen[0] == seen[1] == ("eu-central-1", ["later", "region", "tags"], {"a": "b"})
    for response in answers:
        (diagnostic,) = response.diagnostics
        assert diagnostic.enforcementLevel == proto.ADVISORY and "can't run policy 'reads-props'" in diagnostic.message
        assert "later" in diagnostic.message
