"""GpuCluster: a private EKS cluster with KMS envelope encryption of secrets, all control-plane logs (to a CMK-encrypted
log group), API-only authentication, an IRSA OIDC provider, a CPU system node group and one managed node group per
configured GPU node group — instance type, AMI, labels and taints from the GPU profile — each launched from a
template with IMDSv2 required and a CMK-encrypted root volume. Storage drivers: the EBS CSI add-on (the default
`finml-encrypted-gp3` class) and, on sites whose training storage is EFS, the EFS CSI add-on; both get their AWS
permissions through IRSA roles only their controller's service account can assume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import naming
from finml.config import EksConfig, GpuNodeGroup, region_of, resolve_gpu_profile

TYPE_TOKEN = "finml:compute:GpuCluster"
#: Default StorageClass of every EKS cluster: gp3 volumes encrypted with the site's CMK, retained on PVC deletion.
ENCRYPTED_STORAGE_CLASS = "finml-encrypted-gp3"
CLUSTER_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
CONTROL_PLANE_LOG_RETENTION_DAYS = 365
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
ROOT_DEVICE_NAME = "/dev/xvda"  # AL2023 EKS AMIs
SYSTEM_DISK_GIB = 50
# Root CA thumbprint of the EKS OIDC issuer endpoints. IAM now trusts well-known CAs and ignores it for EKS, but
# the field documents the pin; override it with `oidc_thumbprints`.
EKS_OIDC_ROOT_CA_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
# Hop limit 1: pods (one hop behind the node) cannot reach instance metadata, so no pod can borrow the node role.
# Pods get AWS credentials through IRSA; the VPC CNI runs on the host network and is unaffected.
DEFAULT_IMDS_HOP_LIMIT = 1
TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}
GPU_PROFILE_LABEL = "finml.io/gpu-profile"
NODE_ROLE_LABEL = "finml.io/node-role"
#: The label the GPU Operator's MIG manager reads to pick a mig-parted configuration (finml.mig_planner).
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
POLICY_ARN = "arn:aws:iam::aws:policy/"
CLUSTER_ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
IRSA_AUDIENCE = "sts.amazonaws.com"
EFS_CSI_ADDON = "aws-efs-csi-driver"
#: The EFS CSI controller creates and deletes the access points behind `finml-efs` claims; the node DaemonSet mounts
#: them (host network, no AWS API: the file system policy admits mounts through mount targets).
EFS_CSI_CONTROLLER_SERVICE_ACCOUNT = "efs-csi-controller-sa"
#: AWS managed: Describe* plus Create/DeleteAccessPoint limited to access points tagged `efs.csi.aws.com/cluster`.
EFS_CSI_POLICY = "service-role/AmazonEFSCSIDriverPolicy"


def irsa_trust_policy(provider_arn: str, issuer_url: str | None, namespace: str, service_account: str) -> str:
    """Trust policy of an IRSA role: only `namespace/service_account` of the cluster behind `provider_arn`, with
    tokens for STS, may assume it."""
    host = (issuer_url or "").removeprefix("https://")
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                       f"{host}:aud": IRSA_AUDIENCE}},
    }]}, sort_keys=True)


def taint_effect(effect: str) -> str:
    """Kubernetes taint effect (`NoSchedule`) → the EKS API enum (`NO_SCHEDULE`)."""
    if effect in TAINT_EFFECTS.values():
        return effect
    try:
        return TAINT_EFFECTS[effect]
    except KeyError:
        raise ValueError(f"unknown taint effect {effect!r}; allowed: {', '.join(TAINT_EFFECTS)}") from None


def gpu_instance_type(group: GpuNodeGroup, profile: Any) -> str:
    """The configured instance type if it carries the profile's GPU, else the profile's first type."""
    types = [t.type for t in profile.aws_instance_types]
    if not types:
        raise ValueError(f"node group {group.name}: GPU profile {profile.name} has no AWS instance types")
    if group.instance_type is None:
        return types[0]
    if group.instance_type not in types:
        raise ValueError(f"node group {group.name}: {group.instance_type!r} does not carry a {profile.name}; "
                         f"allowed: {', '.join(types)}")
    return group.instance_type


def kubeconfig_json(cluster_name: str, region: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no static credentials in state)."""
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
            "interactiveMode": "Never",
        }}}],
    }, sort_keys=True)


def _first_issuer(identities: Any) -> str | None:
    # Typed outputs in a real run; plain dicts or nothing under a mock runtime that only echoes inputs.
    if not identities:
        return None
    first = identities[0]
    oidcs = first.get("oidcs") if isinstance(first, dict) else getattr(first, "oidcs", None)
    if not oidcs:
        return None
    return oidcs[0].get("issuer") if isinstance(oidcs[0], dict) else getattr(oidcs[0], "issuer", None)


def _ca_data(ca: Any) -> str | None:
    if ca is None:
        return None
    return ca.get("data") if isinstance(ca, dict) else getattr(ca, "data", None)


@dataclass
class GpuClusterArgs:
    site: str
    stack: str
    eks: EksConfig
    profiles: Mapping[str, Any]
    """GPU profiles by name (gpu_profiles.load_profiles())."""
    subnet_ids: pulumi.Input[Sequence[str]]
    """Private node subnets (Network.node_subnet_ids)."""
    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    node_security_group_id: pulumi.Input[str]
    secrets_key_arn: pulumi.Input[str]
    """CMK for envelope encryption of Kubernetes secrets and the control-plane log group."""
    volume_key_arn: pulumi.Input[str]
    """CMK for node root volumes."""
    data_classification: str
    """Classification tagged on node volumes and the log group (the site's highest)."""
    api_access_cidrs: Sequence[str] = ()
    """Private networks besides the VPC that may reach the private API endpoint on 443 (runners, VPN'd admins)."""
    endpoint_public_access: bool = False
    """Opt-out (explicit): expose the API endpoint publicly. The policy pack still sees it."""
    public_access_cidrs: Sequence[str] = ()
    imds_hop_limit: int = DEFAULT_IMDS_HOP_LIMIT
    cni_via_irsa: bool = True
    """The VPC CNI gets AmazonEKS_CNI_Policy through IRSA instead of the node role (set False to put it on nodes)."""
    bootstrap_creator_admin: bool = True
    """Give the identity that creates the cluster admin access (the pipeline deploys workloads with it)."""
    oidc_thumbprints: Sequence[str] = (EKS_OIDC_ROOT_CA_THUMBPRINT,)
    log_retention_days: int = CONTROL_PLANE_LOG_RETENTION_DAYS
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    mig_configs: Mapping[str, str] = field(default_factory=dict)
    """GPU node group name -> its `nvidia.com/mig.config` label: the mig-parted configuration the MIG layout planner
    chose for the group (`finml.mig_planner.node_group_mig_configs`), which the GPU Operator's ConfigMap holds.
    Groups not named carry no MIG config label."""
    efs_csi: bool = False
    """Install the EFS CSI driver add-on (sites whose `storage.trainingFilesystem` is `efs`: the training
    checkpoint claims are EFS access points)."""


class GpuCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    cluster_name: pulumi.Output[str]
    oidc_provider: aws.iam.OpenIdConnectProvider
    oidc_provider_arn: pulumi.Output[str]
    node_role: aws.iam.Role
    launch_templates: dict[str, aws.ec2.LaunchTemplate]
    system_node_group: aws.eks.NodeGroup
    gpu_node_groups: dict[str, aws.eks.NodeGroup]
    k8s_provider: k8s.Provider
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: GpuClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._name = name
        self._args = args
        self._region = region_of(args.site)
        if not 1 <= args.imds_hop_limit <= 2:
            raise ValueError(f"{name}: imds_hop_limit must be 1 (default) or 2 (pods that need IMDS)")
        unknown = sorted(set(args.mig_configs) - {g.name for g in args.eks.gpu_node_groups})
        if unknown:
            raise ValueError(f"{name}: MIG configs for unknown GPU node groups: {', '.join(unknown)}; "
                             f"groups: {', '.join(g.name for g in args.eks.gpu_node_groups) or 'none'}")
        # Resolve every profile before creating anything: a bad node group fails the whole cluster up front.
        self._gpu_plan = [self._plan_gpu_group(g) for g in args.eks.gpu_node_groups]

        self._create_cluster()
        self._create_oidc_provider()
        self._create_node_role()
        self._create_cni()
        self._create_access_entries()
        self._create_node_groups()
        self._create_k8s_provider()
        self._create_ebs_csi()
        self._create_efs_csi()
        self._create_storage_class()

        self.cluster_name = self.cluster.name
        self.oidc_provider_arn = self.oidc_provider.arn
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "oidc_provider_arn": self.oidc_provider_arn,
            "kubeconfig": self.kubeconfig,
        })

    def _tags(self, name: str, classification: str | None = None, **extra: str) -> dict[str, str]:
        return naming.aws_tags(self._args.site, self._args.stack, classification,
                               {**self._args.extra_tags, **extra}, name=name)

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _plan_gpu_group(self, group: GpuNodeGroup) -> dict[str, Any]:
        try:
            profile = resolve_gpu_profile(group.gpu, dict(self._args.profiles))
        except ValueError as exc:
            raise ValueError(f"{self._name}: node group {group.name}: {exc}") from None
        labels = {
            **dict(profile.kubernetes.labels),
            GPU_PROFILE_LABEL: profile.k8s_label_value,
            naming.SITE_LABEL: naming.site_label_value(self._args.site),
            NODE_ROLE_LABEL: "gpu",
        }
        if group.name in self._args.mig_configs:
            # EKS puts the group's labels on every node it launches (and on existing nodes when they change).
            labels[MIG_CONFIG_LABEL] = self._args.mig_configs[group.name]
        taints = [{"key": t.key, "value": t.value, "effect": taint_effect(t.effect)} for t in profile.kubernetes.taints]
        return {"group": group, "profile": profile, "instance_type": gpu_instance_type(group, profile),
                "labels": labels, "taints": taints}

    def _service_role(self, role_name: str, service: str, description: str) -> aws.iam.Role:
        return aws.iam.Role(
            role_name,
            description=description,
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}),
            tags=self._tags(role_name),
            opts=self._opts(),
        )

    def _attach(self, role: aws.iam.Role, role_name: str, policy: str) -> aws.iam.RolePolicyAttachment:
        return aws.iam.RolePolicyAttachment(
            naming.child_name(role_name, policy), role=role.name, policy_arn=POLICY_ARN + policy, opts=self._opts())

    def _create_cluster(self) -> None:
        args = self._args
        self._cluster_physical_name = naming.child_name(naming.slug(args.stack), self._name)
        role_name = naming.child_name(self._name, "cluster-role")
        self.cluster_role = self._service_role(role_name, "eks.amazonaws.com", "EKS control plane")
        attachment = self._attach(self.cluster_role, role_name, "AmazonEKSClusterPolicy")
        log_group_name = naming.child_name(self._name, "control-plane-logs")
        # Pre-created so the control-plane logs are CMK-encrypted and retained; EKS would make an unencrypted one.
        self.log_group = aws.cloudwatch.LogGroup(
            log_group_name,
            name=f"/aws/eks/{self._cluster_physical_name}/cluster",
            kms_key_id=args.secrets_key_arn,
            retention_in_days=args.log_retention_days,
            tags=self._tags(log_group_name, args.data_classification),
            opts=self._opts(),
        )
        # The endpoint is private: only the VPC itself and the configured private networks (deployment runners,
        # on-prem management networks over the VPN) reach it, and only on 443.
        api_sg_name = naming.child_name(self._name, "api-access")
        sources = list(dict.fromkeys([args.vpc_cidr, *args.api_access_cidrs]))
        self.api_security_group = aws.ec2.SecurityGroup(
            api_sg_name,
            description="EKS private API endpoint: HTTPS from the VPC and configured private networks only",
            vpc_id=args.vpc_id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443, cidr_blocks=sources,
                                                      description="Kubernetes API from private networks")],
            egress=[],
            tags=self._tags(api_sg_name),
            opts=self._opts(),
        )
        cluster_name = naming.child_name(self._name, "eks")
        self.cluster = aws.eks.Cluster(
            cluster_name,
            name=self._cluster_physical_name,
            version=args.eks.version,
            role_arn=self.cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=args.endpoint_public_access,
                security_group_ids=[self.api_security_group.id],
                public_access_cidrs=list(args.public_access_cidrs) if args.endpoint_public_access else None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=args.secrets_key_arn),
            ),
            enabled_cluster_log_types=CLUSTER_LOG_TYPES,
            # Standard support only: a cluster falling out of support fails loudly instead of paying extended support.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=args.bootstrap_creator_admin,
            ),
            tags=self._tags(cluster_name, args.data_classification),
            opts=self._opts(depends_on=[attachment, self.log_group]),
        )

    def _create_oidc_provider(self) -> None:
        self._issuer = self.cluster.identities.apply(_first_issuer)
        oidc_name = naming.child_name(self._name, "oidc")
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            oidc_name,
            url=self._issuer,
            client_id_lists=["sts.amazonaws.com"],
            thumbprint_lists=list(self._args.oidc_thumbprints),
            tags=self._tags(oidc_name),
            opts=self._opts(),
        )

    def _create_node_role(self) -> None:
        role_name = naming.child_name(self._name, "node-role")
        self.node_role = self._service_role(role_name, "ec2.amazonaws.com", "EKS worker nodes (system and GPU)")
        policies = ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"]
        if not self._args.cni_via_irsa:
            policies.append("AmazonEKS_CNI_Policy")
        self._node_role_attachments = [self._attach(self.node_role, role_name, p) for p in policies]

    def _create_cni(self) -> None:
        """The VPC CNI's AWS permissions via IRSA, installed before any node so nodes never need them."""
        self.cni_addon = None
        if not self._args.cni_via_irsa:
            return
        role_name = naming.child_name(self._name, "vpc-cni-role")
        role = self._irsa_role(role_name, "kube-system", "aws-node", "VPC CNI (kube-system/aws-node) via IRSA")
        attachment = self._attach(role, role_name, "AmazonEKS_CNI_Policy")
        self.cni_addon = aws.eks.Addon(
            naming.child_name(self._name, "vpc-cni"),
            cluster_name=self.cluster.name,
            addon_name="vpc-cni",
            service_account_role_arn=role.arn,
            # NetworkPolicy enforcement is opt-in in the VPC CNI; without it every default-deny policy is ignored.
            configuration_values=json.dumps({"enableNetworkPolicy": "true",
                                             "nodeAgent": {"enablePolicyEventLogs": "true"}}, sort_keys=True),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            tags=self._tags(naming.child_name(self._name, "vpc-cni")),
            opts=self._opts(depends_on=[attachment]),
        )

    def _irsa_role(self, role_name: str, namespace: str, service_account: str, description: str) -> aws.iam.Role:
        """A role only the named Kubernetes service account of this cluster can assume (IRSA)."""
        return aws.iam.Role(
            role_name,
            description=description,
            assume_role_policy=pulumi.Output.all(self.oidc_provider.arn, self._issuer).apply(
                lambda v: irsa_trust_policy(v[0], v[1], namespace, service_account)),
            tags=self._tags(role_name),
            opts=self._opts(),
        )

    def _create_ebs_csi(self) -> None:
        """Persistent volumes: the EBS CSI driver (IRSA; pods cannot use the node role with IMDS hop limit 1) and a
        default StorageClass that encrypts every volume with the site's CMK."""
        role_name = naming.child_name(self._name, "ebs-csi-role")
        role = self._irsa_role(role_name, "kube-system", "ebs-csi-controller-sa",
                               "EBS CSI driver (kube-system/ebs-csi-controller-sa) via IRSA")
        attachment = self._attach(role, role_name, "service-role/AmazonEBSCSIDriverPolicy")
        key_arn = self._args.volume_key_arn
        kms_policy = aws.iam.RolePolicy(
            naming.child_name(role_name, "kms"),
            role=role.id,
            policy=pulumi.Output.from_input(key_arn).apply(lambda arn: json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                               "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncrypt*"],
                    "Resource": arn,
                    "Condition": {"StringEquals": {"kms:ViaService": f"ec2.{self._region}.amazonaws.com"}},
                }]}, sort_keys=True)),
            opts=self._opts(),
        )
        self.ebs_csi_addon = aws.eks.Addon(
            naming.child_name(self._name, "ebs-csi"),
            cluster_name=self.cluster.name,
            addon_name="aws-ebs-csi-driver",
            service_account_role_arn=role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            tags=self._tags(naming.child_name(self._name, "ebs-csi")),
            opts=self._opts(depends_on=[attachment, kms_policy, self.system_node_group]),
        )

    def _create_efs_csi(self) -> None:
        """The EFS CSI driver behind the training checkpoint claims (`finml-efs`, EFS access points), with its
        controller's AWS permissions through IRSA; version: the cluster version's default, as for the other add-ons."""
        self.efs_csi_addon = None
        if not self._args.efs_csi:
            return
        role_name = naming.child_name(self._name, "efs-csi-role")
        role = self._irsa_role(role_name, "kube-system", EFS_CSI_CONTROLLER_SERVICE_ACCOUNT,
                               f"EFS CSI driver (kube-system/{EFS_CSI_CONTROLLER_SERVICE_ACCOUNT}) via IRSA")
        attachment = self._attach(role, role_name, EFS_CSI_POLICY)
        addon_name = naming.child_name(self._name, "efs-csi")
        self.efs_csi_addon = aws.eks.Addon(
            addon_name,
            cluster_name=self.cluster.name,
            addon_name=EFS_CSI_ADDON,
            service_account_role_arn=role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            tags=self._tags(addon_name),
            opts=self._opts(depends_on=[attachment, self.system_node_group]),
        )

    def _create_storage_class(self) -> None:
        self.storage_class = k8s.storage.v1.StorageClass(
            naming.child_name(self._name, "encrypted-gp3"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ENCRYPTED_STORAGE_CLASS,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner="ebs.csi.aws.com",
            parameters=pulumi.Output.from_input(self._args.volume_key_arn).apply(
                lambda arn: {"type": "gp3", "encrypted": "true", "kmsKeyId": arn}),
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Retain",
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider, depends_on=[self.ebs_csi_addon]),
        )

    def _create_access_entries(self) -> None:
        for i, role_arn in enumerate(self._args.eks.admin_role_arns):
            entry_name = naming.child_name(self._name, "admin", str(i))
            entry = aws.eks.AccessEntry(entry_name, cluster_name=self.cluster.name, principal_arn=role_arn,
                                        type="STANDARD", tags=self._tags(entry_name), opts=self._opts())
            aws.eks.AccessPolicyAssociation(
                naming.child_name(entry_name, "policy"),
                cluster_name=self.cluster.name,
                principal_arn=role_arn,
                policy_arn=CLUSTER_ADMIN_POLICY_ARN,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=self._opts(depends_on=[entry]),
            )

    def _launch_template(self, group_name: str, disk_gib: int) -> aws.ec2.LaunchTemplate:
        args = self._args
        lt_name = naming.child_name(self._name, group_name, "lt")
        volume_tags = self._tags(lt_name, args.data_classification)
        self.launch_templates[group_name] = aws.ec2.LaunchTemplate(
            lt_name,
            description=f"finml {group_name}: IMDSv2 only, CMK-encrypted root volume",
            update_default_version=True,
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=ROOT_DEVICE_NAME,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=disk_gib,
                    volume_type="gp3",
                    encrypted="true",
                    kms_key_id=args.volume_key_arn,
                    delete_on_termination="true",
                ),
            )],
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=args.imds_hop_limit,
                instance_metadata_tags="disabled",
            ),
            # With security groups in the template EKS no longer adds its cluster group, so name both.
            vpc_security_group_ids=[self.cluster.vpc_config.cluster_security_group_id, args.node_security_group_id],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=self._tags(lt_name)),
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="volume", tags=volume_tags),
            ],
            tags=self._tags(lt_name),
            opts=self._opts(),
        )
        return self.launch_templates[group_name]

    def _node_group(self, group_name: str, *, instance_type: str, ami_type: str, min_size: int, max_size: int,
                    desired_size: int, disk_gib: int, labels: dict[str, str], taints: list[dict[str, str]],
                    capacity_type: str = "ON_DEMAND") -> aws.eks.NodeGroup:
        lt = self._launch_template(group_name, disk_gib)
        ng_name = naming.child_name(self._name, group_name)
        depends: list[pulumi.Resource] = list(self._node_role_attachments)
        if self.cni_addon is not None:
            depends.append(self.cni_addon)
        return aws.eks.NodeGroup(
            ng_name,
            cluster_name=self.cluster.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=self._args.subnet_ids,
            instance_types=[instance_type],
            ami_type=ami_type,
            capacity_type=capacity_type,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=min_size, max_size=max_size, desired_size=desired_size),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=lt.id, version=lt.latest_version.apply(str)),
            labels=labels,
            taints=[aws.eks.NodeGroupTaintArgs(**t) for t in taints],
            tags=self._tags(ng_name),
            opts=self._opts(depends_on=depends),
        )

    def _create_node_groups(self) -> None:
        self.launch_templates = {}
        site_label = {naming.SITE_LABEL: naming.site_label_value(self._args.site)}
        system = self._args.eks.system_node_group
        self.system_node_group = self._node_group(
            "system", instance_type=system.instance_type, ami_type=SYSTEM_AMI_TYPE, min_size=system.min_size,
            max_size=system.max_size, desired_size=system.min_size, disk_gib=SYSTEM_DISK_GIB,
            labels={**site_label, NODE_ROLE_LABEL: "system"}, taints=[],
        )
        self.gpu_node_groups = {}
        for plan in self._gpu_plan:
            group: GpuNodeGroup = plan["group"]
            self.gpu_node_groups[group.name] = self._node_group(
                f"gpu-{group.name}", instance_type=plan["instance_type"], ami_type=plan["profile"].aws_ami_type,
                min_size=group.min_size, max_size=group.max_size,
                desired_size=group.desired_size if group.desired_size is not None else group.min_size,
                disk_gib=group.disk_size_gib, labels=plan["labels"], taints=plan["taints"],
                capacity_type=group.capacity_type,
            )

    def _create_k8s_provider(self) -> None:
        region = self._region
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority,
        ).apply(lambda v: kubeconfig_json(v[0], region, v[1], _ca_data(v[2]))))
        self.k8s_provider = k8s.Provider(
            naming.child_name(self._name, "k8s"),
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=self._opts(depends_on=[self.system_node_group]),
        )
