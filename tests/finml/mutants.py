"""Mutation operators over plans: remove encryption, move to a disallowed region, open to the world.

Each mutant changes (or deletes) one resource of a compliant plan. The policy gate must report a mandatory violation
on that resource or one it is tied to by lineage (its dependencies, or resources that depend on it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from finml.plan import Plan, PlanResource

DISALLOWED_REGION = "us-east-1"
WORLD = "0.0.0.0/0"
# Node agents (CNI, kube-proxy, the NVIDIA device plugin) legitimately use host networking and host paths; the pack
# exempts their namespace by configuration (exemptNamespaces), so host-namespace mutants there are not applicable.
EXEMPT_NAMESPACES = {"kube-system"}


@dataclass
class Mutant:
    kind: str  # "encryption" | "region" | "world"
    description: str
    urn: str
    plan: Plan
    related: set[str]


def _tags(res: PlanResource) -> dict[str, Any]:
    tags = res.props.get("tags")
    return tags if isinstance(tags, dict) else {}


def _labels(res: PlanResource) -> dict[str, Any]:
    meta = res.props.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def _pod_spec(props: dict[str, Any]) -> dict[str, Any] | None:
    spec = props.get("spec")
    if not isinstance(spec, dict):
        return None
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"].get("spec", {})
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return template["spec"]
    return spec if "containers" in spec else None


def _related(plan: Plan, res: PlanResource) -> set[str]:
    out = {res.urn, *res.dependencies}
    for urns in res.property_dependencies.values():
        out.update(urns)
    for other in plan.resources:
        if res.urn in other.dependencies or any(res.urn in v for v in other.property_dependencies.values()):
            out.add(other.urn)
    return out


def _edit(plan: Plan, urn: str, fn: Callable[[dict[str, Any]], None]) -> Plan:
    new = copy.deepcopy(plan)
    fn(next(r for r in new.resources if r.urn == urn).props)
    return new


def _delete(plan: Plan, urn: str) -> Plan:
    new = copy.deepcopy(plan)
    new.resources = [r for r in new.resources if r.urn != urn]
    for r in new.resources:
        r.dependencies = [d for d in r.dependencies if d != urn]
        r.property_dependencies = {k: [u for u in v if u != urn] for k, v in r.property_dependencies.items()}
    return new


# ----------------------------------------------------------------------------------------------- operators


def encryption_mutants(plan: Plan) -> Iterator[Mutant]:
    def remove_sse(props):
        for rule in props.get("rules", []):
            rule["applyServerSideEncryptionByDefault"] = {"sseAlgorithm": "AES256"}
            rule.pop("bucketKeyEnabled", None)

    def lt_plain(props):
        for bdm in props.get("blockDeviceMappings", []):
            bdm.setdefault("ebs", {})["encrypted"] = "false"
            bdm["ebs"].pop("kmsKeyId", None)

    edits: dict[str, tuple[str, Callable]] = {
        "aws:kms/key:Key": ("key rotation off", lambda p: p.__setitem__("enableKeyRotation", False)),
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
            ("SSE-S3 instead of SSE-KMS", remove_sse),
        "aws:ec2/launchTemplate:LaunchTemplate": ("root volume unencrypted", lt_plain),
        "aws:efs/fileSystem:FileSystem": ("file system unencrypted",
                                          lambda p: (p.__setitem__("encrypted", False), p.pop("kmsKeyId", None))),
        "aws:eks/cluster:Cluster": ("no secrets encryption", lambda p: p.pop("encryptionConfig", None)),
        "aws:ebs/volume:Volume": ("volume unencrypted", lambda p: p.__setitem__("encrypted", False)),
        "aws:ebs/encryptionByDefault:EncryptionByDefault": ("EBS default encryption off",
                                                            lambda p: p.__setitem__("enabled", False)),
    }
    for res in plan.resources:
        if res.type in edits:
            what, fn = edits[res.type]
            yield Mutant("encryption", f"{what}: {res.name}", res.urn, _edit(plan, res.urn, fn), _related(plan, res))
        if res.type == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
            yield Mutant("encryption", f"SSE configuration deleted: {res.name}", res.urn, _delete(plan, res.urn),
                         _related(plan, res))


def region_mutants(plan: Plan) -> Iterator[Mutant]:
    for res in plan.resources:
        if res.type.startswith("aws:") and "finml:classification" in _tags(res):
            yield Mutant("region", f"moved to {DISALLOWED_REGION}: {res.name}", res.urn,
                         _edit(plan, res.urn, lambda p: p.__setitem__("region", DISALLOWED_REGION)),
                         _related(plan, res))
        if res.type.startswith("kubernetes:") and "finml.io/classification" in _labels(res):
            spec = _pod_spec(res.props)
            if spec is not None:
                def move(props):
                    _pod_spec(props)["nodeSelector"] = {"finml.io/site": f"aws-{DISALLOWED_REGION}"}
                    _pod_spec(props).pop("affinity", None)
                yield Mutant("region", f"pinned to aws:{DISALLOWED_REGION}: {res.name}", res.urn,
                             _edit(plan, res.urn, move), _related(plan, res))


def world_mutants(plan: Plan) -> Iterator[Mutant]:
    def open_sg(props):
        props.setdefault("ingress", []).append(
            {"cidrBlocks": [WORLD], "fromPort": 22, "toPort": 22, "protocol": "tcp", "description": "mutant"})

    def public_endpoint(props):
        props.setdefault("vpcConfig", {})["endpointPublicAccess"] = True

    def imds_v1(props):
        props.setdefault("metadataOptions", {})["httpTokens"] = "optional"

    edits: dict[str, list[tuple[str, Callable]]] = {
        "aws:ec2/securityGroup:SecurityGroup": [("SSH from the world", open_sg)],
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": [
            ("rule from the world", lambda p: p.__setitem__("cidrIpv4", WORLD))],
        "aws:ec2/subnet:Subnet": [("public IPs on launch", lambda p: p.__setitem__("mapPublicIpOnLaunch", True))],
        "aws:eks/cluster:Cluster": [("public API endpoint", public_endpoint)],
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": [
            ("public policies allowed", lambda p: p.__setitem__("blockPublicPolicy", False))],
        "aws:ec2/launchTemplate:LaunchTemplate": [("IMDSv1 allowed", imds_v1)],
        "kubernetes:core/v1:Namespace": [("Pod Security privileged", lambda p: p["metadata"]["labels"].__setitem__(
            "pod-security.kubernetes.io/enforce", "privileged"))],
    }
    for res in plan.resources:
        for what, fn in edits.get(res.type, []):
            yield Mutant("world", f"{what}: {res.name}", res.urn, _edit(plan, res.urn, fn), _related(plan, res))
        spec = _pod_spec(res.props) if res.type.startswith("kubernetes:") else None
        namespace = (res.props.get("metadata") or {}).get("namespace")
        if spec is not None and namespace not in EXEMPT_NAMESPACES:
            yield Mutant("world", f"host network: {res.name}", res.urn,
                         _edit(plan, res.urn, lambda p: _pod_spec(p).__setitem__("hostNetwork", True)),
                         _related(plan, res))
        if res.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy":
            spec = res.props.get("spec", {})
            if spec.get("podSelector") == {} and "ingress" not in spec and "egress" not in spec:
                yield Mutant("world", f"default-deny NetworkPolicy deleted: {res.name}", res.urn,
                             _delete(plan, res.urn), _related(plan, res))


def all_mutants(plan: Plan) -> Iterator[Mutant]:
    yield from encryption_mutants(plan)
    yield from region_mutants(plan)
    yield from world_mutants(plan)
