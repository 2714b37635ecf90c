"""build_aws_site: the wiring of one AWS site, with explicit providers everywhere; plus the harness canaries."""

from __future__ import annotations

import copy

import pulumi
import pulumi_aws as aws
import pytest

from aws_component_harness import ACCOUNT_ID, HYBRID_RAW, ONPREM_CIDRS, providers, run_program, stack_config
from components.aws_site import AwsSiteOutputs, build_aws_site
from gpu_profiles import load_profiles

PROFILES = load_profiles()
SITE = "aws:eu-central-1"


def build(raw, site_id=SITE):
    cfg = stack_config(raw, PROFILES)

    def program():
        return build_aws_site(cfg, site_id, cfg.aws_sites[site_id], providers(), PROFILES, ACCOUNT_ID)

    return run_program(program)


@pytest.fixture(scope="module")
def hybrid():
    return build(HYBRID_RAW)


def _replica_only_raw():
    raw = copy.deepcopy(HYBRID_RAW)
    raw["sites"]["aws:eu-west-1"] = {"kind": "aws", "classifications": ["internal"]}
    raw["residency"]["internal"] = ["onprem:*", "aws:eu-*"]
    return raw


def test_returns_every_component(hybrid):
    _, out = hybrid
    assert isinstance(out, AwsSiteOutputs)
    assert out.network is not None and out.cluster is not None and out.storage is not None
    assert set(out.keys.keys) == {"internal", "confidential"}


def test_every_aws_resource_names_an_explicit_provider_of_its_site(hybrid):
    mocks, _ = hybrid
    replica_region = []
    for r in mocks.resources:
        if r.typ.startswith("finml:") or r.typ.startswith("pulumi:"):
            continue
        assert r.provider is not None, f"{r} uses a default provider"
        if r.typ.startswith("kubernetes:"):
            assert r.provider == "aws-eu-central-1-k8s", f"{r}: not on its cluster's provider"
            continue
        assert r.provider == f"aws-{r.region}", f"{r}: provider {r.provider} vs region {r.region}"
        if r.region != "eu-central-1":
            replica_region.append(r)
    assert replica_region and all(r.region == "eu-west-1" for r in replica_region)
    allowed = {"aws:kms/replicaKey:ReplicaKey", "aws:kms/alias:Alias"} | {
        t for t in (r.typ for r in replica_region) if t.startswith("aws:s3/")}
    assert {r.typ for r in replica_region} <= allowed, "only replicas may live in the replication target"


def test_data_bearing_resources_are_classified(hybrid):
    mocks, _ = hybrid
    for typ in ("aws:s3/bucket:Bucket", "aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey",
                "aws:efs/fileSystem:FileSystem", "aws:cloudwatch/logGroup:LogGroup"):
        for r in mocks.of_type(typ):
            assert r.inputs["tags"].get("finml:classification"), f"{r} has no classification tag"


def test_vpn_routes_the_onprem_site_networks(hybrid):
    mocks, _ = hybrid
    routes = {r.inputs["destinationCidrBlock"] for r in mocks.of_type("aws:ec2/vpnConnectionRoute:VpnConnectionRoute")}
    assert routes == ONPREM_CIDRS


def test_replica_only_site_has_no_network_or_cluster():
    mocks, out = build(_replica_only_raw(), "aws:eu-west-1")
    assert out.network is None and out.cluster is None
    for typ in ("aws:ec2/vpc:Vpc", "aws:eks/cluster:Cluster", "aws:efs/fileSystem:FileSystem"):
        assert not mocks.of_type(typ), f"replica-only site created {typ}"
    assert mocks.of_type("aws:s3/bucket:Bucket") and mocks.of_type("aws:kms/key:Key")


def test_dev_stack_without_vpn_or_replication():
    raw = copy.deepcopy(HYBRID_RAW)
    raw["vpn"] = []
    site = raw["sites"][SITE]
    site["network"]["azCount"] = 2
    del site["storage"]["replicateTo"]
    mocks, _ = build(raw)
    assert not mocks.of_type("aws:ec2/vpnGateway:VpnGateway")
    assert not mocks.of_type("aws:kms/replicaKey:ReplicaKey")
    assert all(k.inputs["multiRegion"] is False for k in mocks.of_type("aws:kms/key:Key"))
    assert len(mocks.of_type("aws:ec2/subnet:Subnet")) == 4


# -- canaries: the harness can fail --------------------------------------------------------------------------------


def test_canary_registration_check_catches_a_public_subnet():
    def program():
        provider = providers()(SITE)
        aws.ec2.Subnet("leaky", vpc_id="vpc-1", cidr_block="10.0.0.0/24", map_public_ip_on_launch=True,
                       opts=pulumi.ResourceOptions(provider=provider))

    mocks, _ = run_program(program)
    (subnet,) = mocks.of_type("aws:ec2/subnet:Subnet")
    with pytest.raises(AssertionError):
        assert subnet.inputs.get("mapPublicIpOnLaunch") is False, f"{subnet} maps public IPs"


def test_canary_output_check_failure_is_raised():
    @pulumi.runtime.test
    def failing():
        def check(_):
            raise AssertionError("canary")

        return pulumi.Output.from_input("x").apply(check)

    run_program(lambda: None)  # mocks configured
    with pytest.raises(AssertionError, match="canary"):
        failing()
