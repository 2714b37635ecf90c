"""Wires one AWS site: EncryptionKeys → Network → Storage → GpuCluster (+ the ECR repositories its cluster pulls
platform images from).

Keys come first because the network's flow-log bucket is encrypted with the site's CMK; the keys need nothing from
the network. A replica-only site (no `network`) gets keys and buckets but no VPC, EFS or EKS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import naming
from components.encryption import EncryptionKeys, EncryptionKeysArgs
from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.image_repositories import ImageRepositories, ImageRepositoriesArgs
from components.network import FLOW_LOG_CLASSIFICATION, Network, NetworkArgs, VpnLinkArgs
from components.storage import Storage, StorageArgs
from finml import mig_planner
from finml.config import AwsSite, OnPremSite, StackConfig
from workloads import images


@dataclass
class AwsSiteOutputs:
    site: str
    network: Network | None
    keys: EncryptionKeys
    storage: Storage
    cluster: GpuCluster | None
    image_repositories: ImageRepositories | None = None


def vpn_links_for(stack: StackConfig, site_id: str) -> list[VpnLinkArgs]:
    """The stack's VPN links that terminate at `site_id`, each with its on-prem site's networks."""
    links = []
    for link in stack.platform.vpn:
        if link.aws_site != site_id:
            continue
        onprem = stack.platform.sites.get(link.onprem_site)
        if not isinstance(onprem, OnPremSite):  # config cross-checks reject this; never route an unknown peer
            raise ValueError(f"VPN link from {site_id} names {link.onprem_site!r}, which is not an on-prem site")
        links.append(VpnLinkArgs.from_config(link, onprem))
    return links


def account_prerequisites(stack: StackConfig, provider_for: Callable[[str], aws.Provider]) -> list[pulumi.Resource]:
    """Account-wide resources the sites need before their keys: the Auto Scaling service-linked role, which the key
    policies name so EKS node groups can launch instances with CMK-encrypted volumes."""
    if not stack.platform.create_autoscaling_service_linked_role or not stack.aws_sites:
        return []
    first_site = sorted(stack.aws_sites)[0]
    return [aws.iam.ServiceLinkedRole(
        "autoscaling-service-linked-role",
        aws_service_name="autoscaling.amazonaws.com",
        description="Auto Scaling, named in finml key policies so EKS nodes can use CMK-encrypted volumes",
        opts=pulumi.ResourceOptions(provider=provider_for(first_site)),
    )]


def build_aws_site(
    stack: StackConfig,
    site_id: str,
    site: AwsSite,
    provider_for: Callable[[str], aws.Provider],
    profiles: Mapping[str, Any],
    account_id: str,
    prerequisites: Sequence[pulumi.Resource] = (),
    gpu_plan: mig_planner.SitePlan | None = None,
) -> AwsSiteOutputs:
    """Create every component of one AWS site with that site's explicit provider, after `prerequisites`.

    `gpu_plan`: the site's MIG layout plan (`mig_planner.plan_gpus`), whose per-group configs become the GPU node
    groups' `nvidia.com/mig.config` labels; pass the same object to `deploy_platform`, which writes it into the GPU
    Operator's mig-parted ConfigMap. Planned here when not given and the site has a cluster.
    """
    if not account_id:
        raise ValueError(f"{site_id}: an AWS account id is needed for key policies (finml:platform.awsAccountId)")
    name = naming.slug(site_id)
    provider = provider_for(site_id)
    opts = pulumi.ResourceOptions(provider=provider)
    extra_tags = dict(stack.platform.tags)
    replicate_to = site.storage.replicate_to
    replica_provider = provider_for(replicate_to) if replicate_to is not None else None

    keys = EncryptionKeys(name, EncryptionKeysArgs(
        site=site_id, stack=stack.stack, classifications=list(site.classifications), account_id=account_id,
        replicate_to=replicate_to, replica_provider=replica_provider, extra_tags=extra_tags,
        depends_on=list(prerequisites),
    ), opts)

    network = None
    if site.network is not None:
        network = Network(name, NetworkArgs(
            site=site_id, stack=stack.stack, account_id=account_id, network=site.network,
            flow_log_key_arn=keys.key_for(FLOW_LOG_CLASSIFICATION).arn,
            vpn_links=vpn_links_for(stack, site_id), extra_tags=extra_tags,
        ), opts)

    storage = Storage(name, StorageArgs(
        site=site_id, stack=stack.stack, account_id=account_id, classifications=list(site.classifications),
        key_arns=keys.key_arns, storage=site.storage, replica_key_arns=keys.replica_key_arns,
        replica_provider=replica_provider,
        node_subnet_ids=network.node_subnet_ids if network is not None else None,
        node_subnet_count=len(network.availability_zones) if network is not None else 0,
        node_security_group_id=network.node_security_group_id if network is not None else None,
        vpc_id=network.vpc_id if network is not None else None,
        extra_tags=extra_tags,
    ), opts)

    cluster = None
    if site.eks is not None and network is not None:
        highest = keys.highest_classification()
        # Operators on-prem reach the private API endpoint over the site-to-site VPN from their management network.
        vpn_management_cidrs = [stack.platform.sites[link.onprem_site].network.management_cidr
                                for link in stack.platform.vpn if link.aws_site == site_id]
        if gpu_plan is None:
            gpu_plan = mig_planner.plan_gpus(stack, site_id, profiles)
        mig_configs = mig_planner.node_group_mig_configs(
            gpu_plan, mig_planner.pools_for(stack, site_id, profiles), profiles)
        cluster = GpuCluster(name, GpuClusterArgs(
            site=site_id, stack=stack.stack, eks=site.eks, profiles=profiles,
            subnet_ids=network.node_subnet_ids, node_security_group_id=network.node_security_group_id,
            vpc_id=network.vpc_id, vpc_cidr=site.network.vpc_cidr,
            api_access_cidrs=[*site.eks.api_access_cidrs, *vpn_management_cidrs],
            secrets_key_arn=keys.key_arns[highest], volume_key_arn=keys.key_arns[highest],
            data_classification=highest, extra_tags=extra_tags, mig_configs=mig_configs,
            efs_csi=storage.file_system is not None,
        ), opts)

    image_repositories = None
    if cluster is not None:
        # Images are the platform's software, not data: the site's key for internal data encrypts them.
        image_repositories = ImageRepositories(name, ImageRepositoriesArgs(
            site=site_id, stack=stack.stack, repositories=images.repositories(stack.image_registry(site_id)),
            kms_key_arn=keys.key_for("internal").arn, extra_tags=extra_tags,
        ), opts)

    return AwsSiteOutputs(site=site_id, network=network, keys=keys, storage=storage, cluster=cluster,
                          image_repositories=image_repositories)
