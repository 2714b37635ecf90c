"""Network: a private VPC per AWS site — node and data subnets without public IPs, a locked-down default security
group, VPC endpoints instead of internet egress, ALL-traffic flow logs to an SSE-KMS bucket, and (hybrid stacks)
a static-route IPsec VPN that routes exactly the on-prem site's networks.

Availability zones are fixed names (`<region>a/b/c`): offline preview has no AWS to ask.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import naming
from components.storage import secure_bucket
from finml.config import AwsNetworkConfig, OnPremSite, VpnLink, region_of

TYPE_TOKEN = "finml:network:Network"
AZ_SUFFIXES = ("a", "b", "c")
HTTPS_PORT = 443
FLOW_LOG_CLASSIFICATION = "internal"
DEFAULT_INTERFACE_ENDPOINTS: tuple[str, ...] = (
    "ecr.api", "ecr.dkr", "sts", "kms", "logs", "ec2", "eks", "eks-auth", "elasticloadbalancing", "autoscaling",
    "elasticfilesystem",
)
MAX_VPC_PREFIX = 22  # public NAT subnets are /(prefix+5) and AWS subnets can be no smaller than /28
ONPREM_CIDR_FIELDS = ("node_cidr", "storage_cidr", "management_cidr", "pod_cidr", "service_cidr")
# Site-to-site IPsec: IKEv2 with AES-256 / SHA-2 and DH groups >= 14 only; AWS defaults also allow SHA-1 and group 2.
VPN_IKE_VERSIONS = ["ikev2"]
VPN_ENCRYPTION = ["AES256", "AES256-GCM-16"]
VPN_INTEGRITY = ["SHA2-256", "SHA2-384", "SHA2-512"]
VPN_DH_GROUPS = [19, 20, 21]


@dataclass(frozen=True)
class VpnLinkArgs:
    """One site-to-site VPN: the on-prem appliance and the on-prem networks routed to it (and nothing else)."""

    onprem_site: str
    customer_gateway_ip: str
    bgp_asn: int
    onprem_cidrs: tuple[str, ...]

    @classmethod
    def from_config(cls, link: VpnLink, onprem: OnPremSite) -> VpnLinkArgs:
        cidrs = tuple(dict.fromkeys(getattr(onprem.network, f) for f in ONPREM_CIDR_FIELDS))
        ipv6 = [c for c in cidrs if ipaddress.ip_network(c).version != 4]
        if ipv6:
            raise ValueError(f"VPN to {link.onprem_site}: static VPN routes are IPv4; cannot route {', '.join(ipv6)}")
        return cls(link.onprem_site, link.customer_gateway_ip, link.bgp_asn, cidrs)


@dataclass
class NetworkArgs:
    site: str
    stack: str
    account_id: str
    network: AwsNetworkConfig
    flow_log_key_arn: pulumi.Input[str]
    """CMK of this site for the flow-log bucket (EncryptionKeys.key_for('internal'))."""
    vpn_links: Sequence[VpnLinkArgs] = ()
    interface_endpoints: Sequence[str] = DEFAULT_INTERFACE_ENDPOINTS
    flow_logs: bool = True
    """Opt-out (explicit) of VPC flow logs."""
    extra_tags: Mapping[str, str] = field(default_factory=dict)


def plan_subnets(vpc_cidr: str, az_count: int) -> dict[str, list[str]]:
    """Carve the VPC: node subnets take three quarters; the last quarter holds data and public (NAT) subnets."""
    vpc = ipaddress.ip_network(vpc_cidr)
    if vpc.version != 4:
        raise ValueError(f"vpcCidr {vpc_cidr}: a VPC's primary CIDR must be IPv4")
    if vpc.prefixlen > MAX_VPC_PREFIX:
        raise ValueError(f"vpcCidr {vpc_cidr}: too small; use a /{MAX_VPC_PREFIX} or larger")
    quarters = list(vpc.subnets(prefixlen_diff=2))
    small = list(quarters[3].subnets(prefixlen_diff=3))
    return {
        "node": [str(n) for n in quarters[:az_count]],
        "data": [str(n) for n in small[:az_count]],
        "public": [str(n) for n in small[4:4 + az_count]],
    }


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    vpc_id: pulumi.Output[str]
    vpc_cidr: str
    availability_zones: list[str]
    node_subnet_ids: pulumi.Output[list[str]]
    data_subnet_ids: pulumi.Output[list[str]]
    node_security_group_id: pulumi.Output[str]
    private_route_table_ids: pulumi.Output[list[str]]
    vpn_gateway: aws.ec2.VpnGateway | None
    vpn_connections: dict[str, aws.ec2.VpnConnection]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._name = name
        self._args = args
        cfg = args.network
        self._region = region_of(args.site)
        self.availability_zones = [f"{self._region}{s}" for s in AZ_SUFFIXES[: cfg.az_count]]
        self._plan = plan_subnets(cfg.vpc_cidr, cfg.az_count)

        self._create_vpc()
        self._create_subnets()
        self._create_egress()
        self._create_security_groups()
        self._create_endpoints()
        self._create_flow_logs()
        self._create_vpn()

        self.vpc_id = self.vpc.id
        self.vpc_cidr = cfg.vpc_cidr
        self.node_subnet_ids = pulumi.Output.all(*[s.id for s in self._node_subnets])
        self.data_subnet_ids = pulumi.Output.all(*[s.id for s in self._data_subnets])
        self.node_security_group_id = self.node_security_group.id
        self.private_route_table_ids = pulumi.Output.all(*[rt.id for rt in self._private_route_tables])
        self.register_outputs({
            "vpc_id": self.vpc_id,
            "vpc_cidr": self.vpc_cidr,
            "node_subnet_ids": self.node_subnet_ids,
            "data_subnet_ids": self.data_subnet_ids,
            "node_security_group_id": self.node_security_group_id,
        })

    def _tags(self, name: str, classification: str | None = None, **extra: str) -> dict[str, str]:
        return naming.aws_tags(self._args.site, self._args.stack, classification,
                               {**self._args.extra_tags, **extra}, name=name)

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _create_vpc(self) -> None:
        vpc_name = naming.child_name(self._name, "vpc")
        self.vpc = aws.ec2.Vpc(
            vpc_name,
            cidr_block=self._args.network.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,  # needed for private DNS on interface endpoints
            instance_tenancy="default",
            tags=self._tags(vpc_name),
            opts=self._opts(),
        )
        self.default_security_group = aws.ec2.DefaultSecurityGroup(
            naming.child_name(self._name, "default-sg"),
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            revoke_rules_on_delete=True,
            tags=self._tags(naming.child_name(self._name, "default-sg"), **{"finml:purpose": "locked-down"}),
            opts=self._opts(),
        )

    def _subnet(self, kind: str, i: int, cidr: str) -> aws.ec2.Subnet:
        subnet_name = naming.child_name(self._name, kind, self.availability_zones[i])
        return aws.ec2.Subnet(
            subnet_name,
            vpc_id=self.vpc.id,
            cidr_block=cidr,
            availability_zone=self.availability_zones[i],
            map_public_ip_on_launch=False,
            assign_ipv6_address_on_creation=False,
            tags=self._tags(subnet_name, **{"finml:subnet-kind": kind},
                            **({"kubernetes.io/role/internal-elb": "1"} if kind == "nodes" else {})),
            opts=self._opts(),
        )

    def _create_subnets(self) -> None:
        self._node_subnets = [self._subnet("nodes", i, c) for i, c in enumerate(self._plan["node"])]
        self._data_subnets = [self._subnet("data", i, c) for i, c in enumerate(self._plan["data"])]
        self._private_route_tables = []
        for i, az in enumerate(self.availability_zones):
            rt_name = naming.child_name(self._name, "private-rt", az)
            rt = aws.ec2.RouteTable(rt_name, vpc_id=self.vpc.id, tags=self._tags(rt_name), opts=self._opts())
            self._private_route_tables.append(rt)
            for kind, subnet in (("nodes", self._node_subnets[i]), ("data", self._data_subnets[i])):
                aws.ec2.RouteTableAssociation(
                    naming.child_name(self._name, kind, az, "rta"),
                    subnet_id=subnet.id, route_table_id=rt.id, opts=self._opts(),
                )

    def _create_egress(self) -> None:
        """No internet gateway at all unless egress is 'nat'; then public subnets hold only the NAT gateways."""
        self.internet_gateway = None
        self.nat_gateways: list[aws.ec2.NatGateway] = []
        if self._args.network.egress != "nat":
            return
        igw_name = naming.child_name(self._name, "igw")
        self.internet_gateway = aws.ec2.InternetGateway(
            igw_name, vpc_id=self.vpc.id, tags=self._tags(igw_name), opts=self._opts())
        public_rt_name = naming.child_name(self._name, "public-rt")
        public_rt = aws.ec2.RouteTable(public_rt_name, vpc_id=self.vpc.id, tags=self._tags(public_rt_name),
                                       opts=self._opts())
        aws.ec2.Route(naming.child_name(self._name, "public-default-route"), route_table_id=public_rt.id,
                      destination_cidr_block="0.0.0.0/0", gateway_id=self.internet_gateway.id, opts=self._opts())
        for i, cidr in enumerate(self._plan["public"]):
            az = self.availability_zones[i]
            subnet = self._subnet("nat", i, cidr)  # map_public_ip_on_launch stays False: only the NAT EIP is public
            aws.ec2.RouteTableAssociation(naming.child_name(self._name, "nat", az, "rta"),
                                          subnet_id=subnet.id, route_table_id=public_rt.id, opts=self._opts())
            eip_name = naming.child_name(self._name, "nat-eip", az)
            eip = aws.ec2.Eip(eip_name, domain="vpc", tags=self._tags(eip_name), opts=self._opts())
            nat_name = naming.child_name(self._name, "nat", az)
            nat = aws.ec2.NatGateway(nat_name, allocation_id=eip.id, subnet_id=subnet.id,
                                     connectivity_type="public", tags=self._tags(nat_name),
                                     opts=self._opts(depends_on=[self.internet_gateway]))
            self.nat_gateways.append(nat)
            aws.ec2.Route(naming.child_name(self._name, "private-default-route", az),
                          route_table_id=self._private_route_tables[i].id, destination_cidr_block="0.0.0.0/0",
                          nat_gateway_id=nat.id, opts=self._opts())

    def _create_security_groups(self) -> None:
        cidr = self._args.network.vpc_cidr
        node_sg_name = naming.child_name(self._name, "node-sg")
        # Extra group on every node (the EKS cluster group comes with it): the handle other services allow from.
        self.node_security_group = aws.ec2.SecurityGroup(
            node_sg_name,
            description="finml GPU/system nodes: source group for EFS and endpoints; egress inside the VPC only",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=[cidr],
                                                    description="inside the VPC (endpoints, EFS, control plane)")],
            tags=self._tags(node_sg_name),
            opts=self._opts(),
        )
        endpoint_sg_name = naming.child_name(self._name, "endpoint-sg")
        self.endpoint_security_group = aws.ec2.SecurityGroup(
            endpoint_sg_name,
            description="VPC interface endpoints: HTTPS from the VPC only",
            vpc_id=self.vpc.id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=HTTPS_PORT, to_port=HTTPS_PORT,
                                                      cidr_blocks=[cidr], description="HTTPS from the VPC")],
            egress=[],
            tags=self._tags(endpoint_sg_name),
            opts=self._opts(),
        )

    def _create_endpoints(self) -> None:
        self.endpoints: dict[str, aws.ec2.VpcEndpoint] = {}
        s3_name = naming.child_name(self._name, "vpce", "s3")
        self.endpoints["s3"] = aws.ec2.VpcEndpoint(
            s3_name,
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{self._region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in self._private_route_tables],
            # Not a path out: only buckets of this account, plus the regional bucket ECR serves image layers from.
            policy=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Sid": "OwnAccountBucketsOnly", "Effect": "Allow", "Principal": "*", "Action": "s3:*",
                 "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceAccount": self._args.account_id}}},
                {"Sid": "EcrImageLayers", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Resource": f"arn:aws:s3:::prod-{self._region}-starport-layer-bucket/*"},
            ]}, sort_keys=True),
            tags=self._tags(s3_name),
            opts=self._opts(),
        )
        for service in self._args.interface_endpoints:
            ep_name = naming.child_name(self._name, "vpce", service.replace(".", "-"))
            self.endpoints[service] = aws.ec2.VpcEndpoint(
                ep_name,
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{self._region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in self._node_subnets],
                security_group_ids=[self.endpoint_security_group.id],
                tags=self._tags(ep_name),
                opts=self._opts(),
            )

    def _create_flow_logs(self) -> None:
        self.flow_log_bucket = None
        self.flow_log = None
        if not self._args.flow_logs:
            return
        args = self._args
        account, region = args.account_id, self._region

        def delivery_statements(arn: str) -> list[dict[str, Any]]:
            # The bucket policy is managed here, so the log-delivery grant AWS would add itself is written out.
            condition = {"StringEquals": {"aws:SourceAccount": account},
                         "ArnLike": {"aws:SourceArn": f"arn:aws:logs:{region}:{account}:*"}}
            return [
                {"Sid": "AWSLogDeliveryWrite", "Effect": "Allow",
                 "Principal": {"Service": "delivery.logs.amazonaws.com"}, "Action": "s3:PutObject",
                 "Resource": f"{arn}/AWSLogs/{account}/*", "Condition": condition},
                {"Sid": "AWSLogDeliveryAclCheck", "Effect": "Allow",
                 "Principal": {"Service": "delivery.logs.amazonaws.com"},
                 "Action": ["s3:GetBucketAcl", "s3:ListBucket"], "Resource": arn, "Condition": condition},
            ]

        made = secure_bucket(
            naming.child_name(self._name, "flow-logs"),
            parent=self, site=args.site, stack=args.stack, account_id=args.account_id,
            classification=FLOW_LOG_CLASSIFICATION,
            kms_key_arn=args.flow_log_key_arn, extra_tags=args.extra_tags,
            extra_policy_statements=delivery_statements,
        )
        self.flow_log_bucket = made.bucket
        fl_name = naming.child_name(self._name, "flow-log")
        self.flow_log = aws.ec2.FlowLog(
            fl_name,
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="s3",
            log_destination=made.bucket.arn,
            max_aggregation_interval=60,
            tags=self._tags(fl_name, FLOW_LOG_CLASSIFICATION),
            opts=self._opts(depends_on=[made.policy, made.encryption]),
        )

    def _create_vpn(self) -> None:
        """One virtual private gateway; per link a customer gateway, a static-route IPsec connection, and routes for
        exactly that on-prem site's networks — no default route, no propagation."""
        self.vpn_gateway = None
        self.vpn_connections = {}
        if not self._args.vpn_links:
            return
        vgw_name = naming.child_name(self._name, "vgw")
        self.vpn_gateway = aws.ec2.VpnGateway(vgw_name, vpc_id=self.vpc.id, tags=self._tags(vgw_name),
                                              opts=self._opts())
        tunnel_options: dict[str, Any] = {}
        for t in ("tunnel1", "tunnel2"):
            tunnel_options.update({
                f"{t}_ike_versions": VPN_IKE_VERSIONS,
                f"{t}_phase1_encryption_algorithms": VPN_ENCRYPTION,
                f"{t}_phase2_encryption_algorithms": VPN_ENCRYPTION,
                f"{t}_phase1_integrity_algorithms": VPN_INTEGRITY,
                f"{t}_phase2_integrity_algorithms": VPN_INTEGRITY,
                f"{t}_phase1_dh_group_numbers": VPN_DH_GROUPS,
                f"{t}_phase2_dh_group_numbers": VPN_DH_GROUPS,
            })
        seen: set[str] = set()
        for link in self._args.vpn_links:
            if link.onprem_site in seen:
                raise ValueError(f"{self._name}: two VPN links to {link.onprem_site}")
            seen.add(link.onprem_site)
            peer = naming.slug(link.onprem_site)
            cgw_name = naming.child_name(self._name, "cgw", peer)
            cgw = aws.ec2.CustomerGateway(
                cgw_name, ip_address=link.customer_gateway_ip, bgp_asn=str(link.bgp_asn), type="ipsec.1",
                tags=self._tags(cgw_name, **{"finml:peer-site": link.onprem_site}), opts=self._opts())
            vpn_name = naming.child_name(self._name, "vpn", peer)
            vpn = aws.ec2.VpnConnection(
                vpn_name,
                vpn_gateway_id=self.vpn_gateway.id,
                customer_gateway_id=cgw.id,
                type="ipsec.1",
                static_routes_only=True,
                **tunnel_options,
                tags=self._tags(vpn_name, **{"finml:peer-site": link.onprem_site}),
                opts=self._opts(),
            )
            self.vpn_connections[link.onprem_site] = vpn
            for cidr in link.onprem_cidrs:
                cidr_slug = cidr.replace("/", "-").replace(".", "-").replace(":", "-")
                aws.ec2.VpnConnectionRoute(
                    naming.child_name(self._name, "vpn-route", peer, cidr_slug),
                    vpn_connection_id=vpn.id, destination_cidr_block=cidr, opts=self._opts())
                for i, rt in enumerate(self._private_route_tables):
                    aws.ec2.Route(
                        naming.child_name(self._name, "onprem-route", peer, cidr_slug, self.availability_zones[i]),
                        route_table_id=rt.id, destination_cidr_block=cidr, gateway_id=self.vpn_gateway.id,
                        opts=self._opts())
