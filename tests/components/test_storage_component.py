"""Storage: every bucket private, versioned, TLS-only and SSE-KMS with a CMK of its own region; replication only to
the configured site; EBS default encryption; EFS encrypted and reachable only from the node security group."""

from __future__ import annotations

import json

import pulumi
import pytest

from aws_component_harness import ACCOUNT_ID, policy_doc, providers, run_program
from components.encryption import EncryptionKeys, EncryptionKeysArgs
from components.storage import Storage, StorageArgs
from finml.config import StorageConfig

SITE = "aws:eu-central-1"
NODE_SUBNETS = ["subnet-a", "subnet-b", "subnet-c"]
BUCKET_PARTS = ("sse", "versioning", "public-access-block", "policy")


def build(replicate_to: str | None = "aws:eu-west-1", filesystem: str = "efs", network: bool = True,
          classifications=("internal", "confidential")):
    def program():
        provider_for = providers()
        replica_provider = provider_for(replicate_to) if replicate_to else None
        opts = pulumi.ResourceOptions(provider=provider_for(SITE))
        keys = EncryptionKeys("st", EncryptionKeysArgs(
            site=SITE, stack="t", classifications=list(classifications), account_id=ACCOUNT_ID,
            replicate_to=replicate_to, replica_provider=replica_provider), opts)
        return Storage("st", StorageArgs(
            site=SITE, stack="t", account_id=ACCOUNT_ID, classifications=list(classifications),
            key_arns=keys.key_arns, replica_key_arns=keys.replica_key_arns, replica_provider=replica_provider,
            storage=StorageConfig(replicate_to=replicate_to, training_filesystem=filesystem),
            node_subnet_ids=NODE_SUBNETS if network else None, node_subnet_count=3 if network else 0,
            node_security_group_id="sg-nodes" if network else None, vpc_id="vpc-1" if network else None,
        ), opts)

    return run_program(program)[0]


@pytest.fixture(scope="module")
def storage():
    return build()


def _key_region(mocks, key_arn: str) -> str:
    assert key_arn.startswith("arn:aws:kms:"), f"{key_arn} is not a KMS key ARN (a CMK is required)"
    key_name = key_arn.rsplit("/", 1)[1]
    key = mocks.named(key_name)
    assert key.typ in ("aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey"), f"{key_arn} is not a CMK of this stack"
    return key.region


def assert_bucket_secure(mocks, bucket) -> None:
    parts = {p: mocks.named(f"{bucket.name}-{p}") for p in BUCKET_PARTS}
    for part in parts.values():
        assert part.inputs["bucket"] == f"{bucket.name}-id", f"{part} is not attached to {bucket}"
        assert part.region == bucket.region, f"{part} is in {part.region}, {bucket} in {bucket.region}"
    assert bucket.inputs["forceDestroy"] is False, f"{bucket} can be force-destroyed"
    assert bucket.inputs["tags"].get("finml:classification"), f"{bucket} has no classification tag"
    rule = parts["sse"].inputs["rules"][0]
    by_default = rule["applyServerSideEncryptionByDefault"]
    assert by_default["sseAlgorithm"] == "aws:kms", f"{bucket} is not SSE-KMS"
    assert _key_region(mocks, by_default["kmsMasterKeyId"]) == bucket.region, f"{bucket}: key of another region"
    assert rule["bucketKeyEnabled"] is True, f"{bucket}: bucket key off"
    assert parts["versioning"].inputs["versioningConfiguration"]["status"] == "Enabled", str(bucket)
    pab = parts["public-access-block"].inputs
    assert all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                        "restrictPublicBuckets")), f"{bucket}: public access not fully blocked"
    statements = policy_doc(parts["policy"].inputs["policy"])["Statement"]
    deny_tls = [s for s in statements if s["Effect"] == "Deny"
                and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert deny_tls and deny_tls[0]["Action"] == "s3:*", f"{bucket} does not deny non-TLS access"
    assert bucket.inputs["bucket"].startswith("finml-"), f"{bucket}: physical name not set before up"
    assert f"arn:aws:s3:::{bucket.inputs['bucket']}/*" in deny_tls[0]["Resource"]
    for st in statements:
        if st["Effect"] == "Allow":
            assert "Service" in st["Principal"] and st["Condition"], f"{bucket}: unscoped grant {st}"


def test_every_bucket_is_secure(storage):
    buckets = storage.of_type("aws:s3/bucket:Bucket")
    assert len(buckets) == 6  # access logs + 2 data, replica access logs + 2 replicas
    for bucket in buckets:
        assert_bucket_secure(storage, bucket)


def test_data_buckets_per_classification_log_to_the_access_log_bucket(storage):
    for classification in ("internal", "confidential"):
        bucket = storage.named(f"st-data-{classification}")
        assert bucket.inputs["tags"]["finml:classification"] == classification
        assert bucket.region == "eu-central-1"
        logging = storage.named(f"st-data-{classification}-logging")
        assert logging.inputs["targetBucket"] == "st-access-logs-id", str(logging)
    assert storage.named("st-access-logs").inputs["tags"]["finml:classification"] == "internal"


def test_replication_only_to_the_configured_site(storage):
    configs = storage.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert len(configs) == 2
    for config in configs:
        for rule in config.inputs["rules"]:
            dest_name = rule["destination"]["bucket"].removeprefix("arn:aws:s3:::")
            dest = storage.named(dest_name)
            assert dest.region == "eu-west-1" and dest.provider == "aws-eu-west-1", f"{config} -> {dest}"
            assert dest.inputs["tags"]["finml:site"] == "aws:eu-west-1"
            replica_key = rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"]
            assert _key_region(storage, replica_key) == "eu-west-1", f"{config}: replica key of another region"
            assert rule["sourceSelectionCriteria"]["sseKmsEncryptedObjects"]["status"] == "Enabled"
    regions = {r.region for r in storage.resources if not r.typ.startswith("finml:")}
    assert regions == {"eu-central-1", "eu-west-1"}, regions


def test_no_replication_without_replicate_to():
    mocks = build(replicate_to=None)
    assert not mocks.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert {r.region for r in mocks.resources if not r.typ.startswith("finml:")} == {"eu-central-1"}


def test_ebs_default_encryption_with_the_highest_cmk(storage):
    (default_on,) = storage.of_type("aws:ebs/encryptionByDefault:EncryptionByDefault")
    assert default_on.inputs["enabled"] is True
    (default_key,) = storage.of_type("aws:ebs/defaultKmsKey:DefaultKmsKey")
    assert default_key.inputs["keyArn"].endswith("/st-key-confidential"), str(default_key)
    assert default_key.region == "eu-central-1"


def test_efs_encrypted_and_only_reachable_from_nodes(storage):
    (fs,) = storage.of_type("aws:efs/fileSystem:FileSystem")
    assert fs.inputs["encrypted"] is True and fs.inputs["kmsKeyId"].endswith("/st-key-confidential"), str(fs)
    assert fs.inputs["tags"]["finml:classification"] == "confidential"
    mounts = storage.of_type("aws:efs/mountTarget:MountTarget")
    assert sorted(m.inputs["subnetId"] for m in mounts) == sorted(NODE_SUBNETS)
    sg = storage.named("st-training-fs-sg")
    assert all(m.inputs["securityGroups"] == [f"{sg.name}-id"] for m in mounts)
    rules = sg.inputs["ingress"]
    assert [(r["protocol"], r["fromPort"], r["toPort"], r["securityGroups"], r.get("cidrBlocks"))
            for r in rules] == [("tcp", 2049, 2049, ["sg-nodes"], None)], f"{sg} allows more than NFS from nodes"
    assert not sg.inputs.get("egress")
    policy = storage.of_type("aws:efs/fileSystemPolicy:FileSystemPolicy")[0].inputs["policy"]
    deny, allow = json.loads(policy)["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert allow["Effect"] == "Allow" and allow["Condition"] == {
        "Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}, "EFS would be unmountable or mountable off-VPC"


@pytest.mark.parametrize("kwargs", [{"filesystem": "none"}, {"network": False}])
def test_no_efs_when_off_or_without_network(kwargs):
    mocks = build(replicate_to=None, **kwargs)
    assert not mocks.of_type("aws:efs/fileSystem:FileSystem")
    assert not mocks.of_type("aws:efs/mountTarget:MountTarget")


@pytest.fixture
def mocked():
    build(replicate_to=None)


@pulumi.runtime.test
def _bucket_name_outputs():
    opts = pulumi.ResourceOptions(provider=providers()(SITE))
    storage = Storage("out", StorageArgs(
        site=SITE, stack="t", account_id=ACCOUNT_ID, classifications=["internal"],
        key_arns={"internal": "arn:aws:kms:eu-central-1:123456789012:key/k"},
        storage=StorageConfig(training_filesystem="none")), opts)

    def check(name):
        assert name == "out-data-internal", f"finml:storage:Storage::out bucket_names[internal] = {name}"
        assert storage.file_system_id is None

    return storage.bucket_names["internal"].apply(check)


def test_bucket_name_outputs(mocked):
    _bucket_name_outputs()
