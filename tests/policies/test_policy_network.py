"""Isolation rules: exact (rule, URN) sets for compliant, violating, not-applicable and unknown fixtures."""

import pytest

from policy_harness import UNKNOWN, Stack, pairs, run
from policy_fixtures import bucket_bundle, kms_key


@pytest.fixture
def s():
    return Stack()


@pytest.fixture
def eu(s):
    return s.aws_provider("eu-aws", "eu-central-1")


def test_eks_endpoint_private(s, eu):
    rule = "network-eks-endpoint-private"
    s.add("aws:eks/cluster:Cluster", "ok", {"vpcConfig": {"endpointPublicAccess": False}}, provider=eu)
    s.add("aws:ec2/subnet:Subnet", "n-a", {}, provider=eu)
    implicit = s.add("aws:eks/cluster:Cluster", "implicit", {"vpcConfig": {"subnetIds": ["a"]}}, provider=eu)
    public = s.add("aws:eks/cluster:Cluster", "public", {"vpcConfig": {"endpointPublicAccess": True}}, provider=eu)
    unknown = s.add("aws:eks/cluster:Cluster", "unknown", {"vpcConfig": {"endpointPublicAccess": UNKNOWN}},
                    provider=eu)
    violations = run(rule, s)
    assert pairs(violations) == {(rule, implicit.urn), (rule, public.urn), (rule, unknown.urn)}
    assert all(v.message.endswith("[site=aws:eu-central-1; classification=?]") for v in violations)


def test_sg_no_public_ingress(s, eu):
    rule = "network-sg-no-public-ingress"
    s.add("aws:ec2/securityGroup:SecurityGroup", "ok", {"ingress": [{"cidrBlocks": ["10.0.0.0/8"]}],
                                                        "egress": [{"cidrBlocks": ["0.0.0.0/0"]}]}, provider=eu)
    s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "ok-rule", {"cidrIpv4": "10.1.0.0/16"},
          provider=eu)
    s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "sg-ref",
          {"referencedSecurityGroupId": UNKNOWN}, provider=eu)
    s.add("aws:ec2/securityGroupRule:SecurityGroupRule", "egress", {"type": "egress", "cidrBlocks": ["0.0.0.0/0"]},
          provider=eu)
    inline_v4 = s.add("aws:ec2/securityGroup:SecurityGroup", "inline-v4", {"ingress": [
        {"cidrBlocks": ["10.0.0.0/8"]}, {"cidrBlocks": ["0.0.0.0/0"]}]}, provider=eu)
    inline_v6 = s.add("aws:ec2/securityGroup:SecurityGroup", "inline-v6", {"ingress": [{"ipv6CidrBlocks": ["::/0"]}]},
                      provider=eu)
    inline_unknown = s.add("aws:ec2/securityGroup:SecurityGroup", "inline-unknown", {"ingress": UNKNOWN}, provider=eu)
    rule_v4 = s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "rule-v4", {"cidrIpv4": "0.0.0.0/0"},
                    provider=eu)
    rule_v6 = s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "rule-v6", {"cidrIpv6": "::/0"},
                    provider=eu)
    legacy = s.add("aws:ec2/securityGroupRule:SecurityGroupRule", "legacy", {"type": "ingress",
                                                                              "cidrBlocks": ["0.0.0.0/0"]}, provider=eu)
    legacy_unknown = s.add("aws:ec2/securityGroupRule:SecurityGroupRule", "legacy-unknown",
                           {"type": "ingress", "cidrBlocks": [UNKNOWN]}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (inline_v4, inline_v6, inline_unknown, rule_v4, rule_v6,
                                                           legacy, legacy_unknown)}


def test_subnet_no_public_ip(s, eu):
    rule = "network-subnet-no-public-ip"
    s.add("aws:ec2/subnet:Subnet", "ok", {"mapPublicIpOnLaunch": False}, provider=eu)
    s.add("aws:ec2/subnet:Subnet", "default", {}, provider=eu)
    public = s.add("aws:ec2/subnet:Subnet", "public", {"mapPublicIpOnLaunch": True}, provider=eu)
    ipv6 = s.add("aws:ec2/subnet:Subnet", "ipv6", {"assignIpv6AddressOnCreation": True}, provider=eu)
    unknown = s.add("aws:ec2/subnet:Subnet", "unknown", {"mapPublicIpOnLaunch": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, public.urn), (rule, ipv6.urn), (rule, unknown.urn)}


def test_s3_public_access_block(s, eu):
    rule = "network-s3-public-access-block"
    key = kms_key(s, "key", eu)
    bucket_bundle(s, "ok", None, eu, key)
    missing = bucket_bundle(s, "missing", None, eu, key, pab=False)["bucket"]
    partial = bucket_bundle(s, "partial", None, eu, key, pab_flags={"restrictPublicBuckets": False})["bucket"]
    unknown = bucket_bundle(s, "unknown", None, eu, key, pab_flags={"blockPublicPolicy": UNKNOWN})["bucket"]
    violations = run(rule, s)
    assert pairs(violations) == {(rule, missing.urn), (rule, partial.urn), (rule, unknown.urn)}
    messages = {v.urn: v.message for v in violations}
    assert "restrictPublicBuckets to true" in messages[partial.urn]
    assert "blockPublicPolicy (unknown during preview)" in messages[unknown.urn]


def test_imdsv2_required(s, eu):
    rule = "network-imdsv2-required"
    s.add("aws:ec2/launchTemplate:LaunchTemplate", "ok", {"metadataOptions": {"httpTokens": "required"}}, provider=eu)
    s.add("aws:ec2/instance:Instance", "no-imds", {"metadataOptions": {"httpEndpoint": "disabled"}}, provider=eu)
    optional = s.add("aws:ec2/launchTemplate:LaunchTemplate", "optional",
                     {"metadataOptions": {"httpTokens": "optional"}}, provider=eu)
    unset = s.add("aws:ec2/instance:Instance", "unset", {}, provider=eu)
    unknown = s.add("aws:ec2/launchTemplate:LaunchTemplate", "unknown", {"metadataOptions": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, optional.urn), (rule, unset.urn), (rule, unknown.urn)}


def test_rds_not_public(s, eu):
    rule = "network-rds-not-public"
    s.add("aws:rds/instance:Instance", "ok", {"publiclyAccessible": False}, provider=eu)
    s.add("aws:rds/cluster:Cluster", "default", {}, provider=eu)
    public = s.add("aws:rds/instance:Instance", "public", {"publiclyAccessible": True}, provider=eu)
    unknown = s.add("aws:rds/cluster:Cluster", "unknown", {"publiclyAccessible": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, public.urn), (rule, unknown.urn)}
