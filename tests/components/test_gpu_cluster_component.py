"""GpuCluster: private endpoint, secrets encryption, logs, least-privilege roles, GPU node groups from profiles,
IMDSv2 and encrypted root volumes."""

from __future__ import annotations

import json

import pulumi
import pytest

from aws_component_harness import ACCOUNT_ID, policy_doc, providers, run_program
from components.gpu_cluster import GpuCluster, GpuClusterArgs, gpu_instance_type, taint_effect
from finml.config import EksConfig, GpuNodeGroup
from gpu_profiles import load_profiles

SITE = "aws:eu-central-1"
KEY = "arn:aws:kms:eu-central-1:123456789012:key/cmk"
PROFILES = load_profiles()
GROUPS = [
    GpuNodeGroup(name="h100", gpu="H100-80GB", instance_type="p5.48xlarge", max_size=4),
    GpuNodeGroup(name="l4", gpu="L4"),
    GpuNodeGroup(name="a100", gpu="A100:80GB:8", min_size=1, max_size=3, desired_size=2),
]


def cluster_args(**overrides):
    values = dict(site=SITE, stack="t", eks=EksConfig(gpu_node_groups=GROUPS,
                                                      admin_role_arns=[f"arn:aws:iam::{ACCOUNT_ID}:role/admin"]),
                  profiles=PROFILES, subnet_ids=["subnet-a", "subnet-b"], node_security_group_id="sg-nodes",
                  vpc_id="vpc-1", vpc_cidr="10.30.0.0/16", api_access_cidrs=["10.99.0.0/24"],
                  secrets_key_arn=KEY, volume_key_arn=KEY, data_classification="confidential")
    values.update(overrides)
    return GpuClusterArgs(**values)


def build(**overrides):
    def program():
        return GpuCluster("gc", cluster_args(**overrides), pulumi.ResourceOptions(provider=providers()(SITE)))

    return run_program(program)[0]


@pytest.fixture(scope="module")
def cluster():
    return build()


def test_all_resources_use_the_site_provider(cluster):
    for r in cluster.resources:
        if r.typ.startswith("finml:") or r.typ.startswith("pulumi:"):
            continue
        expected = "gc-k8s" if r.typ.startswith("kubernetes:") else "aws-eu-central-1"
        assert r.provider == expected, f"{r} has provider {r.provider}"


def test_cluster_is_private_encrypted_and_logged(cluster):
    (eks,) = cluster.of_type("aws:eks/cluster:Cluster")
    vpc = eks.inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False and vpc["endpointPrivateAccess"] is True, f"{eks}: {vpc}"
    assert vpc["subnetIds"] == ["subnet-a", "subnet-b"]
    assert eks.inputs["encryptionConfig"] == {"resources": ["secrets"], "provider": {"keyArn": KEY}}, str(eks)
    assert sorted(eks.inputs["enabledClusterLogTypes"]) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"])
    assert eks.inputs["accessConfig"]["authenticationMode"] == "API"
    assert eks.inputs["version"] == "1.35"
    assert eks.inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    (log_group,) = cluster.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert log_group.inputs["name"] == f"/aws/eks/{eks.inputs['name']}/cluster"
    assert log_group.inputs["kmsKeyId"] == KEY and log_group.inputs["retentionInDays"] >= 365


def test_private_endpoint_is_reachable_only_from_private_networks_on_443(cluster):
    (eks,) = cluster.of_type("aws:eks/cluster:Cluster")
    sg = cluster.named("gc-api-access")
    assert eks.inputs["vpcConfig"]["securityGroupIds"] == ["gc-api-access-id"], str(eks)
    assert sg.inputs["vpcId"] == "vpc-1" and sg.inputs["egress"] == []
    [rule] = sg.inputs["ingress"]
    assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (443, 443, "tcp")
    assert rule["cidrBlocks"] == ["10.30.0.0/16", "10.99.0.0/24"]


def test_vpc_cni_enforces_network_policies(cluster):
    (addon,) = [a for a in cluster.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "vpc-cni"]
    values = json.loads(addon.inputs["configurationValues"])
    assert values["enableNetworkPolicy"] == "true", str(addon)


def test_public_endpoint_is_an_explicit_opt_out():
    mocks = build(endpoint_public_access=True, public_access_cidrs=["198.51.100.0/24"])
    (eks,) = mocks.of_type("aws:eks/cluster:Cluster")
    assert eks.inputs["vpcConfig"]["endpointPublicAccess"] is True
    assert eks.inputs["vpcConfig"]["publicAccessCidrs"] == ["198.51.100.0/24"]


def _attached(mocks, role_name: str) -> set[str]:
    return {a.inputs["policyArn"].rsplit("/", 1)[1] for a in mocks.of_type(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == role_name}


def test_roles_are_least_privilege(cluster):
    assert _attached(cluster, "gc-cluster-role") == {"AmazonEKSClusterPolicy"}
    assert _attached(cluster, "gc-node-role") == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"}
    assert _attached(cluster, "gc-vpc-cni-role") == {"AmazonEKS_CNI_Policy"}
    assert _attached(cluster, "gc-ebs-csi-role") == {"AmazonEBSCSIDriverPolicy"}
    # The only inline policy: the EBS CSI driver may use the site's CMK, and only through EC2 in its region.
    (inline,) = cluster.of_type("aws:iam/rolePolicy:RolePolicy")
    assert inline.inputs["role"] == "gc-ebs-csi-role-id"
    (statement,) = json.loads(inline.inputs["policy"])["Statement"]
    assert statement["Resource"] == KEY
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "ec2.eu-central-1.amazonaws.com"}}
    [addon] = [a for a in cluster.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "vpc-cni"]
    assert addon.inputs["addonName"] == "vpc-cni" and addon.inputs["serviceAccountRoleArn"].endswith("gc-vpc-cni-role")
    trust = policy_doc(cluster.named("gc-vpc-cni-role").inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Federated": f"arn:aws:iam:eu-central-1:{ACCOUNT_ID}:gc-oidc"}
    (sub,) = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert sub == "system:serviceaccount:kube-system:aws-node"


def test_default_storage_class_encrypts_volumes_with_the_site_key(cluster):
    (sc,) = cluster.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert sc.inputs["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert sc.inputs["provisioner"] == "ebs.csi.aws.com" and sc.inputs["reclaimPolicy"] == "Retain"
    assert sc.inputs["parameters"] == {"type": "gp3", "encrypted": "true", "kmsKeyId": KEY}
    addons = {a.inputs["addonName"] for a in cluster.of_type("aws:eks/addon:Addon")}
    assert addons == {"vpc-cni", "aws-ebs-csi-driver"}


def test_cni_on_nodes_is_an_explicit_opt_out():
    mocks = build(cni_via_irsa=False)
    assert "AmazonEKS_CNI_Policy" in _attached(mocks, "gc-node-role")
    assert [a.inputs["addonName"] for a in mocks.of_type("aws:eks/addon:Addon")] == ["aws-ebs-csi-driver"]


def test_oidc_provider_from_the_cluster_issuer(cluster):
    (oidc,) = cluster.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["url"] == "https://oidc.eks.eu-central-1.example/id/gc-eks"
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"] and oidc.inputs["thumbprintLists"]


def test_gpu_node_groups_follow_their_profiles(cluster):
    groups = {g.name: g for g in cluster.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert set(groups) == {"gc-system", "gc-gpu-h100", "gc-gpu-l4", "gc-gpu-a100"}
    expected = {"gc-gpu-h100": ("H100-80GB", "p5.48xlarge"), "gc-gpu-l4": ("L4", None),
                "gc-gpu-a100": ("A100-80GB", None)}
    for name, (profile_name, override) in expected.items():
        group, profile = groups[name], PROFILES[profile_name]
        types = [t.type for t in profile.aws_instance_types]
        (instance_type,) = group.inputs["instanceTypes"]
        assert instance_type in types, f"{group}: {instance_type} does not carry a {profile_name}"
        assert instance_type == (override or types[0]), str(group)
        assert group.inputs["amiType"] == profile.aws_ami_type, str(group)
        for taint in profile.kubernetes.taints:
            assert {"key": taint.key, "value": taint.value, "effect": taint_effect(taint.effect)} in \
                group.inputs["taints"], f"{group} lacks taint {taint.key}"
        labels = group.inputs["labels"]
        assert labels["finml.io/site"] == "aws-eu-central-1" and labels["finml.io/gpu-profile"] == \
            profile.k8s_label_value, f"{group}: {labels}"
        assert all(labels.get(k) == v for k, v in profile.kubernetes.labels.items()), str(group)
        assert group.inputs["subnetIds"] == ["subnet-a", "subnet-b"]
        assert group.inputs["launchTemplate"]["id"] == f"{name}-lt-id"
    assert groups["gc-gpu-a100"].inputs["scalingConfig"] == {"minSize": 1, "maxSize": 3, "desiredSize": 2}
    assert not groups["gc-system"].inputs.get("taints")


def test_launch_templates_require_imdsv2_and_encrypt_root(cluster):
    templates = cluster.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == 4
    for lt in templates:
        md = lt.inputs["metadataOptions"]
        assert md["httpTokens"] == "required" and md["httpEndpoint"] == "enabled", f"{lt}: {md}"
        assert md["httpPutResponseHopLimit"] == 1, f"{lt}: pods could reach IMDS"
        (root,) = lt.inputs["blockDeviceMappings"]
        assert root["deviceName"] == "/dev/xvda"
        assert root["ebs"]["encrypted"] == "true" and root["ebs"]["kmsKeyId"] == KEY, f"{lt}: {root}"
        assert set(lt.inputs["vpcSecurityGroupIds"]) == {"gc-eks-cluster-sg", "sg-nodes"}
        volume_tags = [t["tags"] for t in lt.inputs["tagSpecifications"] if t["resourceType"] == "volume"]
        assert volume_tags[0]["finml:classification"] == "confidential", str(lt)


def test_admin_access_entries(cluster):
    (entry,) = cluster.of_type("aws:eks/accessEntry:AccessEntry")
    assert entry.inputs["principalArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/admin"
    (assoc,) = cluster.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert assoc.inputs["accessScope"] == {"type": "cluster"}


def test_instance_type_must_belong_to_the_profile():
    with pytest.raises(ValueError, match="does not carry"):
        gpu_instance_type(GpuNodeGroup(name="x", gpu="H100-80GB", instance_type="g5.xlarge"), PROFILES["H100-80GB"])
    with pytest.raises(ValueError, match="unknown GPU profile"):
        run_program(lambda: GpuCluster("bad", cluster_args(eks=EksConfig(gpu_node_groups=[
            GpuNodeGroup(name="x", gpu="Z9000")])), pulumi.ResourceOptions(provider=providers()(SITE))))


def test_taint_effects():
    assert taint_effect("NoSchedule") == "NO_SCHEDULE" and taint_effect("NoExecute") == "NO_EXECUTE"
    with pytest.raises(ValueError):
        taint_effect("Sometimes")


@pytest.fixture
def mocked():
    build()


@pulumi.runtime.test
def _cluster_outputs():
    gc = GpuCluster("out", cluster_args(eks=EksConfig()), pulumi.ResourceOptions(provider=providers()(SITE)))
    assert gc.k8s_provider is not None

    def check(values):
        name, oidc_arn, kubeconfig = values
        assert name == "t-out", f"finml:compute:GpuCluster::out cluster_name = {name}"
        assert oidc_arn.endswith(":out-oidc"), oidc_arn
        config = json.loads(kubeconfig)
        assert config["clusters"][0]["cluster"]["server"] == "https://out-eks.eks.example.internal"
        assert config["users"][0]["user"]["exec"]["args"][:2] == ["eks", "get-token"]

    return pulumi.Output.all(gc.cluster_name, gc.oidc_provider_arn, gc.kubeconfig).apply(check)


def test_cluster_outputs(mocked):
    _cluster_outputs()


@pulumi.runtime.test
def _kubeconfig_is_secret():
    gc = GpuCluster("sec", cluster_args(eks=EksConfig()), pulumi.ResourceOptions(provider=providers()(SITE)))

    def check(is_secret):
        assert is_secret is True, "finml:compute:GpuCluster::sec kubeconfig is not a secret Output"

    return pulumi.Output.from_input(gc.kubeconfig.is_secret()).apply(check)


def test_kubeconfig_is_secret(mocked):
    _kubeconfig_is_secret()


def test_mig_configs_become_node_group_labels():
    mocked = build(mig_configs={"h100": "finml-h100", "a100": "all-disabled"})
    labels = {g.name: g.inputs["labels"] for g in mocked.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert labels["gc-gpu-h100"]["nvidia.com/mig.config"] == "finml-h100"
    assert labels["gc-gpu-a100"]["nvidia.com/mig.config"] == "all-disabled"
    assert "nvidia.com/mig.config" not in labels["gc-gpu-l4"]
    assert "nvidia.com/mig.config" not in labels["gc-system"]


def test_mig_configs_must_name_configured_groups():
    with pytest.raises(ValueError, match="unknown GPU node groups: h200"):
        GpuCluster("gc", cluster_args(mig_configs={"h200": "finml-h200"}))
