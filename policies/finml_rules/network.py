"""Isolation: private control planes, no internet-open ingress, no public IPs or buckets, IMDSv2 only."""

from __future__ import annotations

import ipaddress
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .common import (
    EC2_INSTANCE, EKS_CLUSTER, EKS_NODE_GROUP, LAUNCH_TEMPLATE, RDS_CLUSTER, RDS_CLUSTER_INSTANCE, RDS_INSTANCE,
    S3_BUCKET_TYPES, S3_PAB, SECURITY_GROUP,
    SG_INGRESS_RULE, SG_RULE, SUBNET, UNKNOWN, StackIndex, as_bool, as_list, aws_site, describe, failing_closed, get,
    plain, resource_policy, stack_policy, violation_message,
props_of, )
from .common import linked_buckets

PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _report(args: Any, report: ReportViolation, props: Any, text: str) -> None:
    report(violation_message(f"{describe(args)} {text}", aws_site(props, args.provider).value), args.urn)


def eks_endpoint_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    props = props_of(args)
    public = as_bool(get(props, "vpcConfig", "endpointPublicAccess"))
    if public is UNKNOWN:
        _report(args, report, props, "has vpcConfig.endpointPublicAccess unknown during preview; failing closed.")
    elif public is not False:
        _report(args, report, props, "must set vpcConfig.endpointPublicAccess: false explicitly (the AWS default is a "
                                     "public endpoint).")


# Address space that is not the internet: RFC 1918, carrier-grade NAT (RFC 6598) and IPv6 unique-local.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                           "100.64.0.0/10", "fc00::/7"))
MIN_PUBLIC_PREFIX = {4: 24, 6: 48}  # a public range wider than this counts as "the internet"


def _open_to_world(cidr: Any) -> bool:
    """True for a public (non-private) range wider than /24 (IPv4) or /48 (IPv6) -- 0.0.0.0/0, ::/0, but also
    0.0.0.0/1 + 128.0.0.0/1 and the like; UNKNOWN and unparsable values count as open."""
    if cidr is UNKNOWN:
        return True
    try:
        network = ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        return True
    if any(network.version == p.version and network.subnet_of(p) for p in PRIVATE_NETWORKS):
        return False
    return network.prefixlen < MIN_PUBLIC_PREFIX[network.version]


def _world_cidrs(values: Any) -> list[str]:
    items = as_list(values)
    if items is UNKNOWN:
        return ["<unknown>"]
    return ["<unknown>" if v is UNKNOWN else str(v) for v in items if _open_to_world(v)]


def sg_no_public_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = props_of(args)
    findings: list[str] = []
    if args.resource_type == SECURITY_GROUP:
        ingress = as_list(get(props, "ingress"))
        if ingress is UNKNOWN:
            findings.append("inline ingress rules are unknown during preview")
        else:
            for position, rule in enumerate(ingress):
                cidrs = _world_cidrs(get(rule, "cidrBlocks")) + _world_cidrs(get(rule, "ipv6CidrBlocks"))
                if cidrs:
                    findings.append(f"ingress[{position}] allows {', '.join(cidrs)}")
    elif args.resource_type == SG_INGRESS_RULE:
        cidrs = _world_cidrs(get(props, "cidrIpv4")) + _world_cidrs(get(props, "cidrIpv6"))
        if cidrs:
            findings.append(f"allows {', '.join(cidrs)}")
    elif args.resource_type == SG_RULE:
        kind = get(props, "type")
        if kind == "egress":
            return
        cidrs = _world_cidrs(get(props, "cidrBlocks")) + _world_cidrs(get(props, "ipv6CidrBlocks"))
        if kind is UNKNOWN:
            findings.append("has a rule type unknown during preview")
        elif cidrs:
            findings.append(f"ingress allows {', '.join(cidrs)}")
    else:
        return
    for finding in findings:
        _report(args, report, props, f"{finding}; ingress from the internet (a public range wider than "
                                     "/24 or /48, or unknown during preview) is not allowed.")


def subnet_no_public_ip(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SUBNET:
        return
    props = props_of(args)
    for prop in ("mapPublicIpOnLaunch", "assignIpv6AddressOnCreation"):
        value = as_bool(get(props, prop))
        if value is UNKNOWN:
            _report(args, report, props, f"has {prop} unknown during preview; failing closed.")
        elif value is True:
            _report(args, report, props, f"sets {prop}: true; instances must not get public addresses.")


def s3_public_access_block(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    blocks = index.of_type(S3_PAB)
    for bucket in index.of_type(*S3_BUCKET_TYPES):
        with failing_closed(report, bucket.urn, describe(bucket)):
            site, cls = index.aws_site(bucket).value, index.classification(bucket).value
            attached = [b for b in blocks if bucket in linked_buckets(index, b)]
            if not attached:
                report(violation_message(f"{describe(bucket)} has no public access block.", site, cls), bucket.urn)
                continue
            best: list[str] = []
            for block in attached:
                missing = []
                for flag in PAB_FLAGS:
                    value = as_bool(get(index.props(block), flag))
                    if value is UNKNOWN:
                        missing.append(f"{flag} (unknown during preview)")
                    elif value is not True:
                        missing.append(flag)
                if not missing:
                    break
                best = missing
            else:
                report(violation_message(f"{describe(bucket)}: its public access block does not set "
                                         f"{', '.join(best)} to true.", site, cls), bucket.urn)


def imdsv2_required(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        return
    props = props_of(args)
    options = get(props, "metadataOptions")
    tokens, endpoint = get(options, "httpTokens"), get(options, "httpEndpoint")
    if endpoint == "disabled":
        return  # no metadata service at all
    if tokens is UNKNOWN or endpoint is UNKNOWN:
        _report(args, report, props, "has metadataOptions unknown during preview; failing closed.")
    elif tokens != "required":
        _report(args, report, props, f"must set metadataOptions.httpTokens: required (IMDSv2); it is "
                                     f"{'not set' if tokens is None else repr(tokens)}.")


def imds_hop_limit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A hop limit above 1 lets a pod (one network hop behind the node) fetch the node role's credentials."""
    if args.resource_type not in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        return
    props = props_of(args)
    options = get(props, "metadataOptions")
    endpoint = get(options, "httpEndpoint")
    if endpoint == "disabled":
        return
    limit = get(options, "httpPutResponseHopLimit")
    if options is UNKNOWN or endpoint is UNKNOWN or limit is UNKNOWN:
        _report(args, report, props, "has metadataOptions.httpPutResponseHopLimit unknown during preview; failing "
                                     "closed.")
    elif limit is None:
        _report(args, report, props, "must set metadataOptions.httpPutResponseHopLimit: 1 explicitly (unset, the "
                                     "AMI's or account's default applies, 2 on EKS-optimised AMIs).")
    elif not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit != 1:
        shown = f"{limit:g}" if isinstance(limit, (int, float)) and not isinstance(limit, bool) else repr(limit)
        _report(args, report, props, f"sets metadataOptions.httpPutResponseHopLimit: {shown}; above 1, pods can "
                                     "reach the node's instance credentials.")


def eks_node_remote_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_NODE_GROUP:
        return
    props = props_of(args)
    remote = get(props, "remoteAccess")
    if remote is None:
        return
    key, sources = get(remote, "ec2SshKey"), as_list(get(remote, "sourceSecurityGroupIds"))
    if remote is UNKNOWN or sources is UNKNOWN:
        _report(args, report, props, "has remoteAccess unknown during preview; failing closed.")
    elif not sources:
        what = "an SSH key" if key is not None else "remoteAccess"
        _report(args, report, props, f"enables {what} with no sourceSecurityGroupIds: EKS then opens port 22 to "
                                     "0.0.0.0/0 on its nodes.")


def rds_not_public(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (RDS_INSTANCE, RDS_CLUSTER, RDS_CLUSTER_INSTANCE):
        return
    props = props_of(args)
    public = as_bool(get(props, "publiclyAccessible"))
    if public is UNKNOWN:
        _report(args, report, props, "has publiclyAccessible unknown during preview; failing closed.")
    elif public is True:
        _report(args, report, props, "is publicly accessible.")


POLICIES: list = [
    resource_policy("network-eks-endpoint-private",
                    "Ensure EKS API endpoints are private (endpointPublicAccess explicitly false).",
                    eks_endpoint_private, Severity.CRITICAL,
                    "Set vpcConfig.endpointPublicAccess: false and endpointPrivateAccess: true.", types=(EKS_CLUSTER,)),
    resource_policy("network-sg-no-public-ingress",
                    "Ensure no security group admits ingress from the internet (0.0.0.0/0, ::/0 or any public range "
                    "wider than /24 or /48).",
                    sg_no_public_ingress, Severity.CRITICAL,
                    "Restrict ingress to the site's private CIDRs or to security-group references.", types=(SECURITY_GROUP, SG_INGRESS_RULE, SG_RULE)),
    resource_policy("network-subnet-no-public-ip",
                    "Ensure subnets do not assign public IP addresses on launch.",
                    subnet_no_public_ip, Severity.HIGH,
                    "Set mapPublicIpOnLaunch: false; use NAT or VPC endpoints for egress.", types=(SUBNET,)),
    stack_policy("network-s3-public-access-block",
                 "Ensure every S3 bucket has a public access block with all four flags true.",
                 s3_public_access_block, Severity.CRITICAL,
                 "Add a BucketPublicAccessBlock with blockPublicAcls, blockPublicPolicy, ignorePublicAcls and "
                 "restrictPublicBuckets true."),
    resource_policy("network-imdsv2-required",
                    "Ensure launch templates and instances require IMDSv2 session tokens.",
                    imdsv2_required, Severity.HIGH, "Set metadataOptions.httpTokens: required.", types=(LAUNCH_TEMPLATE, EC2_INSTANCE)),
    resource_policy("network-imds-hop-limit",
                    "Ensure launch templates and instances limit IMDS responses to one hop "
                    "(httpPutResponseHopLimit 1), so pods cannot reach node credentials.",
                    imds_hop_limit, Severity.HIGH, "Set metadataOptions.httpPutResponseHopLimit: 1.",
                    types=(LAUNCH_TEMPLATE, EC2_INSTANCE)),
    resource_policy("network-rds-not-public",
                    "Ensure RDS instances, clusters and cluster (Aurora) instances are not publicly accessible.",
                    rds_not_public, Severity.HIGH, "Set publiclyAccessible: false.",
                    types=(RDS_INSTANCE, RDS_CLUSTER, RDS_CLUSTER_INSTANCE)),
    resource_policy("network-eks-node-remote-access",
                    "Ensure EKS node groups with remote access (SSH) restrict it to source security groups.",
                    eks_node_remote_access, Severity.HIGH,
                    "Remove remoteAccess (use SSM), or set remoteAccess.sourceSecurityGroupIds.",
                    types=(EKS_NODE_GROUP,)),
]
