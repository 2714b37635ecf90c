"""Mock-runtime harness for the AWS component tests: records every registration (type, name, inputs, provider) and
answers with the inputs as state plus deterministic ids, region-bearing ARNs and the EKS outputs components read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import pulumi
import pulumi_aws as aws

from finml.config import StackConfig, parse_platform
from tests.computed_outputs import computed_outputs

ACCOUNT_ID = "123456789012"


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None  # provider resource name, or None
    region: str | None    # the resource's own region input, else its provider's

    def __str__(self) -> str:
        return f"{self.typ}::{self.name}"


class RecordingMocks(pulumi.runtime.Mocks):
    """`preview=True` answers as the engine does at `pulumi preview`: no ids and no computed attributes (unknown)."""

    def __init__(self, preview: bool = False) -> None:
        self.preview = preview
        self.resources: list[Registered] = []
        self._provider_regions: dict[str, str | None] = {}
        self._provider_names: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        rid = f"{args.name}-id"
        state = dict(args.inputs)
        if self.preview and not args.typ.startswith("pulumi:providers:"):
            provider_id = args.provider.split("::")[-1] if args.provider else None
            self.resources.append(Registered(args.typ, args.name, dict(args.inputs),
                                             self._provider_names.get(provider_id),
                                             args.inputs.get("region") or self._provider_regions.get(provider_id)))
            return "", state
        if args.typ.startswith("pulumi:providers:"):
            self._provider_regions[rid] = args.inputs.get("region")
            self._provider_names[rid] = args.name
            return rid, state
        state.update(computed_outputs(args.typ, args.name))
        provider_id = args.provider.split("::")[-1] if args.provider else None
        region = args.inputs.get("region") or self._provider_regions.get(provider_id)
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs),
                                         self._provider_names.get(provider_id), region))
        service = args.typ.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{args.name}")
        if args.typ == "aws:s3/bucket:Bucket":
            state["bucket"] = args.name
            state["arn"] = f"arn:aws:s3:::{args.name}"
        elif args.typ in ("aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey"):
            state["keyId"] = f"{args.name}-key-id"
            state["arn"] = f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{args.name}"
        elif args.typ == "aws:eks/cluster:Cluster":
            state["endpoint"] = f"https://{args.name}.eks.example.internal"
            state["certificateAuthority"] = {"data": "Q0EtREFUQQ=="}
            state["identities"] = [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.example/id/{args.name}"}]}]
            state["vpcConfig"] = {**state.get("vpcConfig", {}), "clusterSecurityGroupId": f"{args.name}-cluster-sg"}
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state["latestVersion"] = 1
        elif args.typ == "aws:iam/role:Role":
            state.setdefault("name", args.name)
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    # -- queries ---------------------------------------------------------------------------------------------------

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> Registered:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {[str(m) for m in matches]}"
        return matches[0]


def run_program(program: Callable[[], Any], preview: bool = False) -> tuple[RecordingMocks, Any]:
    """Run `program` under fresh mocks, wait for every registration, and return the recorder and its result.

    `preview=False` is `pulumi up` (ids and computed outputs known); `preview=True` is `pulumi preview`, the dry run
    the policy gate sees, where ids and computed attributes are unknown and `apply` callbacks on them do not run."""
    mocks = RecordingMocks(preview=preview)
    pulumi.runtime.set_mocks(mocks, project="finml", stack="test", preview=preview)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run():
        holder["result"] = program()

    _run()
    return mocks, holder.get("result")


def providers() -> Callable[[str], aws.Provider]:
    """`provider_for` as the program builds it: one explicit provider per `aws:<region>` site, cached."""
    made: dict[str, aws.Provider] = {}

    def provider_for(site: str) -> aws.Provider:
        if site not in made:
            made[site] = aws.Provider(site.replace(":", "-"), region=site.split(":", 1)[1])
        return made[site]

    return provider_for


def stack_config(raw: dict[str, Any], profiles: dict[str, Any] | None = None) -> StackConfig:
    platform = parse_platform(raw, "test", profiles)
    return StackConfig(stack="test", source="test", platform=platform, secret_keys=(), raw_config={})


def policy_doc(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else value


HYBRID_RAW: dict[str, Any] = {
    "environment": "hybrid-prod",
    "maxClassification": "restricted",
    "awsAccountId": ACCOUNT_ID,
    "residency": {
        "restricted": ["onprem:fra-dc1"],
        "confidential": ["onprem:*", "aws:eu-central-1"],
        "internal": ["onprem:*", "aws:eu-*"],
        "public": ["onprem:*", "aws:*"],
    },
    "sites": {
        "aws:eu-central-1": {
            "kind": "aws",
            "classifications": ["internal", "confidential"],
            "network": {"vpcCidr": "10.20.0.0/16", "azCount": 3, "egress": "none"},
            "eks": {
                "version": "1.35",
                "gpuNodeGroups": [
                    {"name": "h100", "gpu": "H100-80GB", "instanceType": "p5.48xlarge", "maxSize": 4},
                    {"name": "l4", "gpu": "L4"},
                ],
                "adminRoleArns": [f"arn:aws:iam::{ACCOUNT_ID}:role/platform-admin"],
            },
            "storage": {"replicateTo": "aws:eu-west-1", "trainingFilesystem": "efs"},
        },
        "onprem:fra-dc1": {
            "kind": "onprem",
            "imageRegistry": {"host": "registry.fra-dc1.example.internal", "immutableTags": True},
            "datacentre": "Frankfurt DC1",
            "classifications": ["restricted", "confidential"],
            "network": {
                "nodeCidr": "10.100.0.0/24",
                "podCidr": "10.101.0.0/16",
                "serviceCidr": "10.102.0.0/16",
                "storageCidr": "10.103.0.0/24",
                "managementCidr": "10.104.0.0/24",
            },
            "kubernetes": {"apiEndpoint": "k8s.fra-dc1.internal:6443", "kubeconfigSecret": "fraDc1Kubeconfig"},
            "nodes": [{"name": "gpu01", "address": "10.100.0.11", "gpuProfile": "H100-80GB"}],
        },
    },
    "vpn": [{"awsSite": "aws:eu-central-1", "onpremSite": "onprem:fra-dc1", "customerGatewayIp": "203.0.113.10",
             "bgpAsn": 65010}],
}

ONPREM_CIDRS = {"10.100.0.0/24", "10.101.0.0/16", "10.102.0.0/16", "10.103.0.0/24", "10.104.0.0/24"}
