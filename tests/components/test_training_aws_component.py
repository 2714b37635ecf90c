"""The AWS identity of training and the EFS CSI driver behind its checkpoint claims:

- TrainingAws: the `finml-training` service account's IRSA role — trust (sub/aud of the cluster's OIDC provider),
  S3 actions and resources limited to the training prefixes of the site's classification buckets, KMS on those
  buckets' CMKs only through S3 in the site's region;
- GpuCluster's EFS CSI add-on and its IRSA role (kube-system/efs-csi-controller-sa, AmazonEFSCSIDriverPolicy) on
  sites whose training file system is EFS, none elsewhere;
- the wiring of a real stack file (aws-eu-prod: build_aws_site + deploy_platform as `__main__.py` does, update mode):
  the ServiceAccount carries the role's ARN, the role is scoped to that site's buckets and keys.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pulumi
import pytest

from aws_component_harness import ACCOUNT_ID, HYBRID_RAW, policy_doc, providers, run_program, stack_config
from components.aws_site import build_aws_site
from finml.config import load_stack_file
from gpu_profiles import load_profiles
from workloads.training_aws import TrainingAws, TrainingAwsArgs, training_access_policy

PROFILES = load_profiles()
SITE = "aws:eu-central-1"
ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
HOST = ISSUER.removeprefix("https://")
PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{HOST}"
BUCKETS = {"internal": "finml-t-data-internal", "confidential": "finml-t-data-confidential"}
KEYS = {c: f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/{c}-key" for c in BUCKETS}
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ADDON = "aws:eks/addon:Addon"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def _trust_condition(role) -> dict[str, str]:
    (statement,) = policy_doc(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRoleWithWebIdentity", str(role)
    assert set(statement["Condition"]) == {"StringEquals"}, f"{role}: {statement['Condition']}"
    return statement["Condition"]["StringEquals"], statement["Principal"]


def _grants(policy: dict) -> set[tuple[str, str]]:
    """(action, resource) pairs the policy allows; it must allow nothing else (no NotAction, no Deny needed)."""
    pairs = set()
    for s in policy["Statement"]:
        assert s["Effect"] == "Allow" and set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, s
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        pairs |= {(a, r) for a in actions for r in resources}
    return pairs


def _expected_grants(buckets: dict[str, str], keys: dict[str, str]) -> set[tuple[str, str]]:
    expected = set()
    for c, bucket in buckets.items():
        arn = f"arn:aws:s3:::{bucket}"
        expected |= {("s3:ListBucket", arn), ("s3:GetObject", f"{arn}/training-sets/*"),
                     ("s3:GetObject", f"{arn}/training/*"), ("s3:PutObject", f"{arn}/training/*"),
                     ("s3:AbortMultipartUpload", f"{arn}/training/*"),
                     ("kms:Decrypt", keys[c]), ("kms:GenerateDataKey", keys[c])}
    return expected


@pytest.fixture(scope="module")
def training_role():
    def program():
        return TrainingAws("training-aws", TrainingAwsArgs(
            site=SITE, stack="t", oidc_provider_arn=PROVIDER_ARN, oidc_issuer_url=ISSUER, buckets=BUCKETS,
            key_arns=KEYS), opts=pulumi.ResourceOptions(provider=providers()(SITE)))

    mocks, _ = run_program(program)
    return mocks


def test_only_the_training_service_account_of_this_cluster_can_assume_the_role(training_role):
    (role,) = training_role.of_type(ROLE)
    condition, principal = _trust_condition(role)
    assert principal == {"Federated": PROVIDER_ARN}, str(role)
    assert condition == {f"{HOST}:sub": "system:serviceaccount:finml-training:finml-training",
                         f"{HOST}:aud": "sts.amazonaws.com"}, str(role)
    assert role.provider == "aws-eu-central-1"


def test_the_role_reads_training_sets_and_writes_training_outputs_of_the_sites_buckets_only(training_role):
    (role,) = training_role.of_type(ROLE)
    (policy,) = training_role.of_type(ROLE_POLICY)
    assert policy.inputs["role"] == f"{role.name}-id", str(policy)
    doc = json.loads(policy.inputs["policy"])
    assert _grants(doc) == _expected_grants(BUCKETS, KEYS), str(policy)
    for s in doc["Statement"]:
        if s["Action"] == "s3:ListBucket":
            assert s["Condition"] == {"StringLike": {"s3:prefix": ["training-sets/*", "training/*"]}}, s
        # a Delete of any kind would let a run erase checkpoints or training sets the bucket keeps versions of
        assert not any("Delete" in a for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])), s


def test_the_role_uses_each_key_only_through_s3_in_the_site_region_for_its_own_bucket(training_role):
    (policy,) = training_role.of_type(ROLE_POLICY)
    kms = [s for s in json.loads(policy.inputs["policy"])["Statement"] if s["Resource"] in KEYS.values()]
    assert {s["Resource"] for s in kms} == set(KEYS.values())
    for s in kms:
        (classification,) = [c for c, k in KEYS.items() if k == s["Resource"]]
        bucket_arn = f"arn:aws:s3:::{BUCKETS[classification]}"
        assert s["Condition"]["StringEquals"] == {"kms:ViaService": "s3.eu-central-1.amazonaws.com"}, s
        context = s["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"]
        assert context == [bucket_arn, f"{bucket_arn}/training-sets/*", f"{bucket_arn}/training/*"], s


def test_a_bucket_without_its_key_is_refused_by_name():
    with pytest.raises(ValueError, match=r"aws:eu-central-1: no key ARN for the bucket\(s\) of restricted"):
        TrainingAwsArgs(site=SITE, stack="t", oidc_provider_arn=PROVIDER_ARN, oidc_issuer_url=ISSUER,
                        buckets={**BUCKETS, "restricted": "b"}, key_arns=KEYS)
    with pytest.raises(ValueError, match="at least one classification"):
        TrainingAwsArgs(site=SITE, stack="t", oidc_provider_arn=PROVIDER_ARN, oidc_issuer_url=ISSUER, buckets={},
                        key_arns=KEYS)


def test_the_policy_is_the_same_document_for_the_same_inputs():
    """Deterministic (sorted keys, classifications by rank): no spurious diffs between runs."""
    pairs = {c: (BUCKETS[c], KEYS[c]) for c in BUCKETS}
    assert training_access_policy("eu-central-1", pairs) == training_access_policy(
        "eu-central-1", dict(reversed(list(pairs.items()))))


# -- EFS CSI driver --------------------------------------------------------------------------------------------------


def _site(raw):
    cfg = stack_config(raw, PROFILES)
    mocks, out = run_program(
        lambda: build_aws_site(cfg, SITE, cfg.aws_sites[SITE], providers(), PROFILES, ACCOUNT_ID))
    return mocks, out


def test_an_efs_site_gets_the_efs_csi_addon_with_its_own_irsa_role():
    mocks, out = _site(HYBRID_RAW)
    (addon,) = [a for a in mocks.of_type(ADDON) if a.inputs["addonName"] == "aws-efs-csi-driver"]
    role = mocks.named("aws-eu-central-1-efs-csi-role")
    assert addon.inputs["serviceAccountRoleArn"] == f"arn:aws:iam:eu-central-1:{ACCOUNT_ID}:{role.name}", str(addon)
    assert addon.inputs["clusterName"] == mocks.of_type("aws:eks/cluster:Cluster")[0].inputs["name"]
    assert addon.provider == "aws-eu-central-1"
    condition, principal = _trust_condition(role)
    (oidc,) = mocks.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    host = oidc.inputs["url"].removeprefix("https://")
    assert principal == {"Federated": f"arn:aws:iam:eu-central-1:{ACCOUNT_ID}:{oidc.name}"}
    assert condition == {f"{host}:sub": "system:serviceaccount:kube-system:efs-csi-controller-sa",
                         f"{host}:aud": "sts.amazonaws.com"}, str(role)
    attached = [a.inputs["policyArn"] for a in mocks.of_type(ATTACHMENT) if a.inputs["role"] == role.name]
    assert attached == ["arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"]
    assert not [p for p in mocks.of_type(ROLE_POLICY) if p.inputs["role"] == f"{role.name}-id"]
    assert out.cluster.efs_csi_addon is not None


def test_a_site_without_efs_gets_no_efs_csi_driver():
    raw = copy.deepcopy(HYBRID_RAW)
    raw["sites"][SITE]["storage"]["trainingFilesystem"] = "none"
    mocks, out = _site(raw)
    assert {a.inputs["addonName"] for a in mocks.of_type(ADDON)} == {"vpc-cni", "aws-ebs-csi-driver"}
    assert not [r for r in mocks.of_type(ROLE) if "efs" in r.name]
    assert out.cluster.efs_csi_addon is None


# -- wiring of a real stack file ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws_eu_prod():
    """aws-eu-prod's aws:eu-central-1 as `__main__.py` wires it: the site's components, then its platform."""
    from workloads.platform import deploy_platform

    stack = load_stack_file(ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml", PROFILES)

    def program():
        provider_for = providers()
        site = build_aws_site(stack, SITE, stack.aws_sites[SITE], provider_for, PROFILES,
                              stack.platform.aws_account_id)
        deploy_platform(stack, SITE, site.cluster.k8s_provider, PROFILES, aws_site=site,
                        aws_provider=provider_for(SITE))
        return site

    mocks, site = run_program(program)
    return stack, mocks


def test_the_training_service_account_carries_the_arn_of_its_role(aws_eu_prod):
    stack, mocks = aws_eu_prod
    (account,) = [r for r in mocks.of_type("kubernetes:core/v1:ServiceAccount")
                  if r.inputs["metadata"]["name"] == "finml-training"]
    role = mocks.named("training-aws-eu-central-1-aws-role")
    assert account.inputs["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": f"arn:aws:iam:eu-central-1:{ACCOUNT_ID}:{role.name}"}, str(account)
    assert account.inputs["metadata"]["namespace"] == "finml-training"
    assert account.inputs["automountServiceAccountToken"] is False
    condition, principal = _trust_condition(role)
    (oidc,) = mocks.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    host = oidc.inputs["url"].removeprefix("https://")
    assert principal == {"Federated": f"arn:aws:iam:eu-central-1:{ACCOUNT_ID}:{oidc.name}"}
    assert condition == {f"{host}:sub": "system:serviceaccount:finml-training:finml-training",
                         f"{host}:aud": "sts.amazonaws.com"}


def test_the_wired_role_is_scoped_to_this_sites_classification_buckets_and_keys(aws_eu_prod):
    stack, mocks = aws_eu_prod
    (policy,) = [p for p in mocks.of_type(ROLE_POLICY) if p.name == "training-aws-eu-central-1-aws-data-access"]
    classifications = stack.platform.sites[SITE].classifications
    # The harness answers a bucket's `bucket` with its resource name and a key's ARN with its region and name.
    buckets = {c: f"aws-eu-central-1-data-{c}" for c in classifications}
    keys = {c: f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/{k.name}"
            for c in classifications for k in mocks.of_type("aws:kms/key:Key")
            if k.inputs["tags"]["finml:classification"] == c}
    assert set(keys) == set(classifications) and all(mocks.named(b) for b in buckets.values())
    assert _grants(json.loads(policy.inputs["policy"])) == _expected_grants(buckets, keys), str(policy)
    replica = {r.name for r in mocks.of_type("aws:s3/bucket:Bucket") if r.region != "eu-central-1"}
    assert replica and not any(name in policy.inputs["policy"] for name in replica), "replicas are not training's"
