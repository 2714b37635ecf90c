"""Network: security properties of the registered VPC resources (mock runtime)."""

from __future__ import annotations

import json

import ipaddress

import pulumi
import pytest

from aws_component_harness import (ACCOUNT_ID, HYBRID_RAW, ONPREM_CIDRS, policy_doc, providers, run_program,
                                    stack_config)
from components.network import DEFAULT_INTERFACE_ENDPOINTS, Network, NetworkArgs, VpnLinkArgs, plan_subnets
from finml.config import AwsNetworkConfig

SITE = "aws:eu-central-1"
KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/flow-logs"
VPC_CIDR = "10.20.0.0/16"


def _vpn_links() -> list[VpnLinkArgs]:
    cfg = stack_config(HYBRID_RAW)
    return [VpnLinkArgs.from_config(link, cfg.platform.sites[link.onprem_site]) for link in cfg.platform.vpn]


def build(az_count: int = 3, egress: str = "none", vpn: bool = True):
    def program():
        provider = providers()(SITE)
        return Network("net", NetworkArgs(
            site=SITE, stack="test", account_id="123456789012",
            network=AwsNetworkConfig(vpc_cidr=VPC_CIDR, az_count=az_count, egress=egress),
            flow_log_key_arn=KEY_ARN, vpn_links=_vpn_links() if vpn else (),
        ), pulumi.ResourceOptions(provider=provider))

    return run_program(program)


@pytest.fixture(scope="module")
def hybrid():
    return build()[0]


@pytest.fixture(scope="module")
def with_nat():
    return build(az_count=2, egress="nat", vpn=False)[0]


def test_every_resource_uses_the_site_provider(hybrid):
    for r in hybrid.resources:
        if r.typ.startswith("finml:"):
            continue
        assert r.provider == "aws-eu-central-1" and r.region == "eu-central-1", f"{r} has provider {r.provider}"


@pytest.mark.parametrize("fixture", ["hybrid", "with_nat"])
def test_no_subnet_maps_public_ips(fixture, request):
    mocks = request.getfixturevalue(fixture)
    subnets = mocks.of_type("aws:ec2/subnet:Subnet")
    assert subnets
    for s in subnets:
        assert s.inputs.get("mapPublicIpOnLaunch") is False, f"{s} maps public IPs on launch"
        assert ipaddress.ip_network(s.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network(VPC_CIDR)), str(s)


def test_subnets_span_the_configured_azs(hybrid, with_nat):
    azs = {s.inputs["availabilityZone"] for s in hybrid.of_type("aws:ec2/subnet:Subnet")}
    assert azs == {"eu-central-1a", "eu-central-1b", "eu-central-1c"}
    azs = {s.inputs["availabilityZone"] for s in with_nat.of_type("aws:ec2/subnet:Subnet")}
    assert azs == {"eu-central-1a", "eu-central-1b"}


def test_default_security_group_has_no_rules(hybrid):
    (sg,) = hybrid.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not sg.inputs.get("ingress") and not sg.inputs.get("egress"), f"{sg} has rules: {sg.inputs}"


def test_no_internet_gateway_without_nat(hybrid):
    for typ in ("aws:ec2/internetGateway:InternetGateway", "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip"):
        assert not hybrid.of_type(typ), f"egress 'none' must not create {typ}"
    for route in hybrid.of_type("aws:ec2/route:Route"):
        assert route.inputs["destinationCidrBlock"] != "0.0.0.0/0", f"{route} is a default route"


def test_nat_egress_uses_nat_only_subnets(with_nat):
    assert len(with_nat.of_type("aws:ec2/internetGateway:InternetGateway")) == 1
    nats = with_nat.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == 2
    nat_subnet_ids = {n.inputs["subnetId"] for n in nats}
    node_and_data = {f"{s.name}-id" for s in with_nat.of_type("aws:ec2/subnet:Subnet")
                     if s.inputs["tags"]["finml:subnet-kind"] in ("nodes", "data")}
    assert not nat_subnet_ids & node_and_data, "NAT gateways must sit in their own public subnets"


def test_endpoints(hybrid):
    endpoints = {e.inputs["serviceName"]: e for e in hybrid.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    s3 = endpoints.pop("com.amazonaws.eu-central-1.s3")
    assert s3.inputs["vpcEndpointType"] == "Gateway" and len(s3.inputs["routeTableIds"]) == 3, str(s3)
    s3_policy = json.loads(s3.inputs["policy"])["Statement"]
    own, layers = s3_policy
    assert own["Condition"] == {"StringEquals": {"aws:ResourceAccount": ACCOUNT_ID}}, f"{s3}: any bucket reachable"
    assert layers["Action"] == "s3:GetObject" and "starport-layer-bucket" in layers["Resource"]
    assert set(endpoints) == {f"com.amazonaws.eu-central-1.{s}" for s in DEFAULT_INTERFACE_ENDPOINTS}
    for required in ("ecr.api", "ecr.dkr", "sts", "kms", "logs", "ec2"):
        assert f"com.amazonaws.eu-central-1.{required}" in endpoints
    node_subnets = {f"{s.name}-id" for s in hybrid.of_type("aws:ec2/subnet:Subnet")
                    if s.inputs["tags"]["finml:subnet-kind"] == "nodes"}
    endpoint_sg = hybrid.named("net-endpoint-sg")
    for ep in endpoints.values():
        assert ep.inputs["vpcEndpointType"] == "Interface" and ep.inputs["privateDnsEnabled"] is True, str(ep)
        assert set(ep.inputs["subnetIds"]) == node_subnets, f"{ep} is not in the node subnets"
        assert ep.inputs["securityGroupIds"] == ["net-endpoint-sg-id"], str(ep)
    rules = endpoint_sg.inputs["ingress"]
    assert [(r["protocol"], r["fromPort"], r["toPort"], r["cidrBlocks"]) for r in rules] == [
        ("tcp", 443, 443, [VPC_CIDR])], f"{endpoint_sg} allows more than HTTPS from the VPC"
    assert not endpoint_sg.inputs.get("egress")


def test_flow_logs_all_traffic_to_cmk_bucket(hybrid):
    (flow_log,) = hybrid.of_type("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL" and flow_log.inputs["logDestinationType"] == "s3", str(flow_log)
    bucket = hybrid.named("net-flow-logs")
    assert flow_log.inputs["logDestination"] == f"arn:aws:s3:::{bucket.name}"
    assert bucket.inputs["tags"]["finml:classification"] == "internal"
    sse = hybrid.named("net-flow-logs-sse")
    rule = sse.inputs["rules"][0]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": KEY_ARN}
    assert rule["bucketKeyEnabled"] is True
    pab = hybrid.named("net-flow-logs-public-access-block")
    assert all(pab.inputs[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                              "restrictPublicBuckets")), str(pab)
    statements = policy_doc(hybrid.named("net-flow-logs-policy").inputs["policy"])["Statement"]
    for st in statements:
        if st["Effect"] == "Allow":
            assert st["Principal"] == {"Service": "delivery.logs.amazonaws.com"}, st
            assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012", st


def test_vpn_routes_exactly_the_onprem_cidrs(hybrid):
    (vgw,) = hybrid.of_type("aws:ec2/vpnGateway:VpnGateway")
    (cgw,) = hybrid.of_type("aws:ec2/customerGateway:CustomerGateway")
    assert (cgw.inputs["ipAddress"], cgw.inputs["bgpAsn"], cgw.inputs["type"]) == ("203.0.113.10", "65010",
                                                                                    "ipsec.1")
    (vpn,) = hybrid.of_type("aws:ec2/vpnConnection:VpnConnection")
    assert vpn.inputs["staticRoutesOnly"] is True and vpn.inputs["vpnGatewayId"] == f"{vgw.name}-id", str(vpn)
    assert vpn.inputs["tunnel1IkeVersions"] == ["ikev2"]
    vpn_routes = [r.inputs["destinationCidrBlock"] for r in hybrid.of_type(
        "aws:ec2/vpnConnectionRoute:VpnConnectionRoute")]
    assert sorted(vpn_routes) == sorted(ONPREM_CIDRS)
    via_vgw = [r for r in hybrid.of_type("aws:ec2/route:Route") if r.inputs.get("gatewayId") == f"{vgw.name}-id"]
    by_table: dict[str, set[str]] = {}
    for r in via_vgw:
        by_table.setdefault(r.inputs["routeTableId"], set()).add(r.inputs["destinationCidrBlock"])
    assert len(by_table) == 3 and all(c == ONPREM_CIDRS for c in by_table.values()), by_table
    assert len(via_vgw) == 3 * len(ONPREM_CIDRS), "a CIDR is routed twice"
    assert not hybrid.of_type("aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation")


def test_no_vpn_without_links(with_nat):
    for typ in ("aws:ec2/vpnGateway:VpnGateway", "aws:ec2/vpnConnection:VpnConnection",
                "aws:ec2/customerGateway:CustomerGateway"):
        assert not with_nat.of_type(typ)


def test_plan_subnets_are_disjoint():
    plan = plan_subnets("10.0.0.0/20", 3)
    nets = [ipaddress.ip_network(c) for cidrs in plan.values() for c in cidrs]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b), f"{a} overlaps {b}"
    with pytest.raises(ValueError, match="too small"):
        plan_subnets("10.0.0.0/24", 2)
    with pytest.raises(ValueError, match="IPv4"):
        plan_subnets("fd00::/48", 2)


@pytest.fixture
def mocked():
    build(vpn=False)  # leaves the mock runtime configured for the Output tests below


@pulumi.runtime.test
def _network_outputs():
    provider = providers()(SITE)
    net = Network("out", NetworkArgs(
        site=SITE, stack="test", account_id="123456789012",
        network=AwsNetworkConfig(vpc_cidr=VPC_CIDR, az_count=2), flow_log_key_arn=KEY_ARN,
    ), pulumi.ResourceOptions(provider=provider))

    def check(values):
        vpc_id, nodes, data, sg = values
        assert vpc_id == "out-vpc-id", f"vpc_id of finml:network:Network::out is {vpc_id}"
        assert nodes == ["out-nodes-eu-central-1a-id", "out-nodes-eu-central-1b-id"], nodes
        assert data == ["out-data-eu-central-1a-id", "out-data-eu-central-1b-id"], data
        assert sg == "out-node-sg-id", sg
        assert net.vpc_cidr == VPC_CIDR

    return pulumi.Output.all(net.vpc_id, net.node_subnet_ids, net.data_subnet_ids,
                             net.node_security_group_id).apply(check)


def test_network_outputs(mocked):
    _network_outputs()
