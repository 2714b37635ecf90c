"""Harness for the policy pack tests: resources as data, run through the real pulumi_policy types.

Props take the Analyzer servicer's path: they round-trip through ``google.protobuf.struct_pb2.Struct`` (so
every number arrives as a float, as on the wire), ``json_format.MessageToDict`` and
``pulumi_policy.deserialize.deserialize_properties`` and are then wrapped in ``unknown_checking_proxy``.
Unknown values are the sentinel string the engine sends for preview unknowns (``pulumi.runtime.rpc.UNKNOWN``,
"04da6b54-80e4-46f7-96ec-b56ff0331ba9"), which survives the round trip unchanged.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from google.protobuf import json_format, struct_pb2
from pulumi.runtime.rpc import UNKNOWN as ENGINE_UNKNOWN
from pulumi_policy import (
    PolicyProviderResource, PolicyResource, PolicyResourceOptions, PolicyCustomTimeouts, ResourceValidationArgs,
    ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import unknown_checking_proxy

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
if str(POLICIES_DIR) not in sys.path:
    sys.path.insert(0, str(POLICIES_DIR))

from finml_rules.config import all_policies, pack_config  # noqa: E402

UNKNOWN = ENGINE_UNKNOWN

RESIDENCY = {
    "restricted": ["onprem:fra-dc1"],
    "confidential": ["onprem:*", "aws:eu-central-1"],
    "internal": ["aws:eu-*", "onprem:*"],
    "public": ["aws:*", "onprem:*"],
}
SITES = ["onprem:fra-dc1", "aws:eu-central-1", "aws:eu-west-1"]
CONFIG = pack_config(RESIDENCY, SITES)
POLICIES = {policy.name: policy for policy in all_policies()}


def config_for(name: str, config: Optional[dict] = CONFIG) -> dict:
    """The per-policy config as the Analyzer hands it over (properties only, no enforcementLevel)."""
    if config is None:
        return {}
    return {k: v for k, v in config.get(name, {}).items() if k != "enforcementLevel"}


def wire_props(props: dict) -> Any:
    """Props as a policy sees them: serialised to a protobuf Struct and back, then proxied for unknowns."""
    struct = struct_pb2.Struct()
    struct.update(props)
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def _opts(parent: Optional[str]) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


class Stack:
    """A stack under construction: ``add`` resources as data, then run policies over it."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.resources: list[PolicyResource] = []

    def urn(self, resource_type: str, name: str, parent: Optional[PolicyResource]) -> str:
        chain = f"{parent.resource_type}$" if parent is not None else ""
        return f"urn:pulumi:{self.name}::finml::{chain}{resource_type}::{name}"

    def add(self, resource_type: str, name: str, props: Optional[dict] = None, *,
            provider: Optional[PolicyResource] = None, parent: Optional[PolicyResource] = None,
            deps: Optional[dict[str, list[PolicyResource]]] = None,
            dependencies: Optional[list[PolicyResource]] = None) -> PolicyResource:
        urn = self.urn(resource_type, name, parent)
        assert all(r.urn != urn for r in self.resources), f"duplicate fixture {urn}"
        provider_ref = None
        if provider is not None:
            provider_ref = PolicyProviderResource(provider.resource_type, provider.props, provider.urn, provider.name)
        property_dependencies = {k: list(v) for k, v in (deps or {}).items()}
        all_deps = list(dependencies or [])
        for targets in property_dependencies.values():
            all_deps.extend(t for t in targets if t not in all_deps)
        resource = PolicyResource(resource_type, wire_props(props or {}), urn, name,
                                  _opts(parent.urn if parent else None), provider_ref, parent, all_deps,
                                  property_dependencies)
        self.resources.append(resource)
        return resource

    def aws_provider(self, name: str, region: Any = "eu-central-1", **kw: Any) -> PolicyResource:
        props = {} if region is None else {"region": region}
        return self.add("pulumi:providers:aws", name, props, **kw)

    def k8s_provider(self, name: str, parent: Optional[PolicyResource],
                     eks: Optional[PolicyResource] = None) -> PolicyResource:
        """A Kubernetes provider; with ``eks`` its kubeconfig is an Output computed from that EKS cluster."""
        if eks is None:
            return self.add("pulumi:providers:kubernetes", name, {}, parent=parent)
        return self.add("pulumi:providers:kubernetes", name, {"kubeconfig": UNKNOWN}, parent=parent,
                        deps={"kubeconfig": [eks]})

    def onprem_cluster(self, name: str = "dc1", site: Any = "onprem:fra-dc1") -> tuple[PolicyResource, PolicyResource]:
        cluster = self.add("finml:compute:OnPremCluster", name, {"site": site})
        return cluster, self.k8s_provider(f"{name}-k8s", cluster)

    def eks_cluster(self, name: str = "eu", region: str = "eu-central-1",
                    provider: Optional[PolicyResource] = None) -> tuple[PolicyResource, PolicyResource]:
        aws = provider or self.aws_provider(f"{name}-aws", region)
        cluster = self.add("finml:compute:GpuCluster", name, {})
        eks = self.add("aws:eks/cluster:Cluster", f"{name}-eks", eks_props(), provider=aws, parent=cluster)
        return cluster, self.k8s_provider(f"{name}-k8s", cluster, eks)


def eks_props(**overrides: Any) -> dict:
    props = {"vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True, "subnetIds": ["s-1"]},
             "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:aws:kms:eu-central-1:1:key/k"}}}
    props.update(overrides)
    return props


@dataclass(frozen=True)
class Violation:
    rule: str
    urn: Optional[str]
    message: str


def run(policy_name: str, stack: Stack, config: Optional[dict] = CONFIG) -> list[Violation]:
    """Run one policy over a stack the way the Analyzer does (per resource, or once for the stack)."""
    policy = POLICIES[policy_name]
    found: list[Violation] = []
    cfg = config_for(policy_name, config)
    if isinstance(policy, StackValidationPolicy):
        policy.validate(StackValidationArgs(stack.resources, cfg),
                        lambda message, urn=None: found.append(Violation(policy_name, urn, message)))
        return found
    assert isinstance(policy, ResourceValidationPolicy)
    for resource in stack.resources:
        args = ResourceValidationArgs(resource.resource_type, resource.props, resource.urn, resource.name,
                                      resource.opts, resource.provider, cfg)
        try:
            policy.validate(args, lambda message, urn=None, r=resource: found.append(
                Violation(policy_name, r.urn, message)))
        except _NotApplicableError:
            pass
    return found


def pairs(violations: Iterable[Violation]) -> set[tuple[str, Optional[str]]]:
    return {(v.rule, v.urn) for v in violations}


def run_all(stack: Stack, config: Optional[dict] = CONFIG) -> list[Violation]:
    return [v for name in POLICIES for v in run(name, stack, config)]

