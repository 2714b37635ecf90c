"""Encryption rules: exact (rule, URN) sets for compliant, violating, not-applicable and unknown fixtures."""

import json

import pytest

from policy_harness import UNKNOWN, Stack, pairs, run
from policy_fixtures import bucket_bundle, kms_key, sse_rule, tags, tls_policy


@pytest.fixture
def s():
    return Stack()


@pytest.fixture
def eu(s):
    return s.aws_provider("eu-aws", "eu-central-1")


# --- encryption-s3-sse-kms-cmk -------------------------------------------------------------------------------

def test_s3_sse_kms_cmk(s, eu):
    rule = "encryption-s3-sse-kms-cmk"
    key = kms_key(s, "key", eu)
    bucket_bundle(s, "ok", "internal", eu, key)
    bucket_bundle(s, "ok-dsse", "internal", eu, key, sse_rules=[sse_rule("aws:kms:dsse", bucket_key=None)])
    no_sse = bucket_bundle(s, "no-sse", "internal", eu, key, sse=False)["bucket"]
    aes = bucket_bundle(s, "aes", "internal", eu, key, sse_rules=[sse_rule("AES256", key=None)])["bucket"]
    managed = bucket_bundle(s, "managed", "internal", eu, None, sse_rules=[sse_rule(key=None)])["bucket"]
    alias = bucket_bundle(s, "alias", "internal", eu, None, sse_rules=[sse_rule(key="alias/aws/s3")])["bucket"]
    external = bucket_bundle(s, "external", "internal", eu, None,
                             sse_rules=[sse_rule(key="arn:aws:kms:eu-central-1:2:key/ext")])["bucket"]
    unresolved = bucket_bundle(s, "unresolved", "internal", eu, None, sse_rules=[sse_rule()])["bucket"]
    unknown_algo = bucket_bundle(s, "unknown-algo", "internal", eu, key,
                                 sse_rules=[sse_rule(algorithm=UNKNOWN)])["bucket"]
    violations = run(rule, s)
    assert pairs(violations) == {(rule, b.urn) for b in (no_sse, aes, managed, alias, external, unresolved,
                                                         unknown_algo)}
    messages = {v.urn: v.message for v in violations}
    assert messages[no_sse.urn].endswith("[site=aws:eu-central-1; classification=internal]")
    assert "uses 'AES256'" in messages[aes.urn]
    assert "AWS managed key aws/s3" in messages[managed.urn]
    assert "AWS managed key alias/aws/s3" in messages[alias.urn]
    assert "key/ext') is not a customer-managed KMS key of this stack" in messages[external.urn]
    assert "unknown during preview) is not a customer-managed KMS key" in messages[unresolved.urn]
    assert "SSE algorithm unknown during preview" in messages[unknown_algo.urn]


def test_s3_sse_linked_by_known_bucket_name_without_lineage(s, eu):
    rule = "encryption-s3-sse-kms-cmk"
    key = kms_key(s, "key", eu)
    s.add("aws:s3/bucket:Bucket", "named", {"bucket": "named"}, provider=eu)
    s.add("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "named-sse",
          {"bucket": "named", "rules": [sse_rule()]}, provider=eu, dependencies=[key])
    assert run(rule, s) == []


# --- encryption-s3-bucket-key -------------------------------------------------------------------------------

def test_s3_bucket_key(s, eu):
    rule = "encryption-s3-bucket-key"
    key = kms_key(s, "key", eu)
    bucket_bundle(s, "ok", None, eu, key)
    bucket_bundle(s, "dsse", None, eu, key, sse_rules=[sse_rule("aws:kms:dsse", bucket_key=None)])
    off = bucket_bundle(s, "off", None, eu, key, sse_rules=[sse_rule(bucket_key=False)])["sse"]
    unset = bucket_bundle(s, "unset", None, eu, key, sse_rules=[sse_rule(bucket_key=None)])["sse"]
    unknown = bucket_bundle(s, "unknown", None, eu, key, sse_rules=[sse_rule(bucket_key=UNKNOWN)])["sse"]
    unknown_rules = s.add(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "unknown-rules",
        {"bucket": "x", "rules": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (off, unset, unknown, unknown_rules)}


# --- encryption-s3-tls-only --------------------------------------------------------------------------------

def test_s3_tls_only(s, eu):
    rule = "encryption-s3-tls-only"
    key = kms_key(s, "key", eu)
    bucket_bundle(s, "ok", None, eu, key)
    no_policy = bucket_bundle(s, "no-policy", None, eu, key, tls=False)["bucket"]
    allow_only = bucket_bundle(s, "allow-only", None, eu, key, bucket_policy=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:role/r"}, "Action": "s3:GetObject",
         "Resource": "*"}]}))["bucket"]
    true_condition = bucket_bundle(s, "wrong-condition", None, eu, key, bucket_policy=tls_policy("x").replace(
        '"false"', '"true"'))["bucket"]
    unknown = bucket_bundle(s, "unknown", None, eu, key, bucket_policy=UNKNOWN)["bucket"]
    garbage = bucket_bundle(s, "garbage", None, eu, key, bucket_policy="{not json")["bucket"]
    assert pairs(run(rule, s)) == {(rule, b.urn) for b in (no_policy, allow_only, true_condition, unknown, garbage)}


# --- block storage ------------------------------------------------------------------------------------------

def test_ebs_encrypted(s, eu):
    rule = "encryption-ebs-encrypted"
    s.add("aws:ebs/volume:Volume", "ok", {"encrypted": True}, provider=eu)
    s.add("aws:ebs/encryptionByDefault:EncryptionByDefault", "default-on", {}, provider=eu)
    s.add("aws:ec2/subnet:Subnet", "n-a", {}, provider=eu)
    plain_vol = s.add("aws:ebs/volume:Volume", "plain", {**tags("internal")}, provider=eu)
    off = s.add("aws:ebs/volume:Volume", "off", {"encrypted": False}, provider=eu)
    unknown = s.add("aws:ebs/volume:Volume", "unknown", {"encrypted": UNKNOWN}, provider=eu)
    copy = s.add("aws:ebs/snapshotCopy:SnapshotCopy", "copy", {"sourceSnapshotId": "snap"}, provider=eu)
    default_off = s.add("aws:ebs/encryptionByDefault:EncryptionByDefault", "default-off", {"enabled": False},
                        provider=eu)
    violations = run(rule, s)
    assert pairs(violations) == {(rule, r.urn) for r in (plain_vol, off, unknown, copy, default_off)}
    assert [v.message for v in violations if v.urn == plain_vol.urn][0].endswith(
        "[site=aws:eu-central-1; classification=internal]")


def test_block_devices_encrypted(s, eu):
    rule = "encryption-block-devices-encrypted"
    s.add("aws:ec2/launchTemplate:LaunchTemplate", "ok", {"blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}},
        {"deviceName": "/dev/sdb", "virtualName": "ephemeral0"}]}, provider=eu)
    s.add("aws:ec2/instance:Instance", "ok-instance", {"rootBlockDevice": {"encrypted": True},
                                                       "ebsBlockDevices": [{"encrypted": True}]}, provider=eu)
    s.add("aws:ec2/launchTemplate:LaunchTemplate", "no-devices", {}, provider=eu)
    lt_false = s.add("aws:ec2/launchTemplate:LaunchTemplate", "false", {"blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}]}, provider=eu)
    lt_unset = s.add("aws:ec2/launchTemplate:LaunchTemplate", "unset", {"blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"volumeSize": 100}}]}, provider=eu)
    lt_unknown = s.add("aws:ec2/launchTemplate:LaunchTemplate", "unknown", {"blockDeviceMappings": UNKNOWN},
                       provider=eu)
    instance = s.add("aws:ec2/instance:Instance", "plain-root", {"ebsBlockDevices": [{"encrypted": True}]},
                     provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (lt_false, lt_unset, lt_unknown, instance)}


# --- managed services ------------------------------------------------------------------------------------------

def test_eks_secrets(s, eu):
    rule = "encryption-eks-secrets"
    key = kms_key(s, "key", eu)
    s.add("aws:eks/cluster:Cluster", "ok", {"encryptionConfig": {"resources": ["secrets"], "provider": {
        "keyArn": "arn:aws:kms:eu-central-1:1:key/a"}}}, provider=eu)
    s.add("aws:eks/cluster:Cluster", "ok-lineage", {"encryptionConfig": {"resources": ["secrets"], "provider": {
        "keyArn": UNKNOWN}}}, provider=eu, deps={"encryptionConfig": [key]})
    none = s.add("aws:eks/cluster:Cluster", "none", {}, provider=eu)
    no_secrets = s.add("aws:eks/cluster:Cluster", "no-secrets", {"encryptionConfig": {"resources": [], "provider": {
        "keyArn": "arn:aws:kms:eu-central-1:1:key/a"}}}, provider=eu)
    unresolved = s.add("aws:eks/cluster:Cluster", "unresolved", {"encryptionConfig": {
        "resources": ["secrets"], "provider": {"keyArn": UNKNOWN}}}, provider=eu)
    no_key = s.add("aws:eks/cluster:Cluster", "no-key", {"encryptionConfig": {"resources": ["secrets"]}}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (none, no_secrets, unresolved, no_key)}


def test_file_systems_at_rest(s, eu):
    rule = "encryption-file-systems-at-rest"
    s.add("aws:efs/fileSystem:FileSystem", "ok", {"encrypted": True}, provider=eu)
    s.add("aws:fsx/lustreFileSystem:LustreFileSystem", "scratch", {"deploymentType": "SCRATCH_2"}, provider=eu)
    s.add("aws:fsx/lustreFileSystem:LustreFileSystem", "persistent-ok", {"deploymentType": "PERSISTENT_2",
                                                                         "kmsKeyId": UNKNOWN}, provider=eu)
    efs_plain = s.add("aws:efs/fileSystem:FileSystem", "plain", {}, provider=eu)
    efs_unknown = s.add("aws:efs/fileSystem:FileSystem", "unknown", {"encrypted": UNKNOWN}, provider=eu)
    fsx_no_key = s.add("aws:fsx/lustreFileSystem:LustreFileSystem", "no-key", {"deploymentType": "PERSISTENT_1"},
                       provider=eu)
    fsx_unknown = s.add("aws:fsx/lustreFileSystem:LustreFileSystem", "unknown-type", {"deploymentType": UNKNOWN},
                        provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (efs_plain, efs_unknown, fsx_no_key, fsx_unknown)}


def test_rds_at_rest(s, eu):
    rule = "encryption-rds-at-rest"
    s.add("aws:rds/instance:Instance", "ok", {"storageEncrypted": True}, provider=eu)
    s.add("aws:elasticache/replicationGroup:ReplicationGroup", "n-a", {}, provider=eu)
    plain = s.add("aws:rds/cluster:Cluster", "plain", {}, provider=eu)
    off = s.add("aws:rds/instance:Instance", "off", {"storageEncrypted": False}, provider=eu)
    unknown = s.add("aws:rds/instance:Instance", "unknown", {"storageEncrypted": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (plain, off, unknown)}


def test_rds_in_transit(s, eu):
    rule = "encryption-rds-in-transit"
    pg = s.add("aws:rds/parameterGroup:ParameterGroup", "pg-tls", {"name": "pg-tls", "family": "postgres16",
                                                                   "parameters": [{"name": "rds.force_ssl",
                                                                                   "value": "1"}]}, provider=eu)
    mysql = s.add("aws:rds/clusterParameterGroup:ClusterParameterGroup", "mysql-tls", {
        "name": "mysql-tls", "parameters": [{"name": "require_secure_transport", "value": "ON"}]}, provider=eu)
    weak = s.add("aws:rds/parameterGroup:ParameterGroup", "pg-weak", {"name": "pg-weak", "parameters": [
        {"name": "rds.force_ssl", "value": "0"}]}, provider=eu)
    s.add("aws:rds/instance:Instance", "ok-lineage", {"engine": "postgres", "parameterGroupName": UNKNOWN},
          provider=eu, deps={"parameterGroupName": [pg]})
    s.add("aws:rds/instance:Instance", "ok-name", {"engine": "postgres", "parameterGroupName": "pg-tls"}, provider=eu)
    s.add("aws:rds/cluster:Cluster", "ok-aurora", {"engine": "aurora-mysql", "dbClusterParameterGroupName": UNKNOWN},
          provider=eu, deps={"dbClusterParameterGroupName": [mysql]})
    s.add("aws:rds/instance:Instance", "aurora-member", {"engine": "aurora-mysql"}, provider=eu)
    s.add("aws:rds/instance:Instance", "oracle", {"engine": "oracle-ee"}, provider=eu)
    default = s.add("aws:rds/instance:Instance", "default-group", {"engine": "postgres"}, provider=eu)
    weak_db = s.add("aws:rds/instance:Instance", "weak", {"engine": "postgres", "parameterGroupName": "pg-weak"},
                    provider=eu)
    outside = s.add("aws:rds/instance:Instance", "outside", {"engine": "mysql", "parameterGroupName": "elsewhere"},
                    provider=eu)
    unknown_engine = s.add("aws:rds/instance:Instance", "unknown-engine", {"engine": UNKNOWN}, provider=eu)
    unresolved = s.add("aws:rds/cluster:Cluster", "unresolved", {"engine": "aurora-postgresql",
                                                                 "dbClusterParameterGroupName": UNKNOWN}, provider=eu)
    assert weak
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (default, weak_db, outside, unknown_engine, unresolved)}


def test_elasticache_at_rest_and_in_transit(s, eu):
    rule = "encryption-elasticache"
    s.add("aws:elasticache/replicationGroup:ReplicationGroup", "ok", {"atRestEncryptionEnabled": True,
                                                                      "transitEncryptionEnabled": True}, provider=eu)
    no_transit = s.add("aws:elasticache/replicationGroup:ReplicationGroup", "no-transit",
                       {"atRestEncryptionEnabled": True}, provider=eu)
    both = s.add("aws:elasticache/replicationGroup:ReplicationGroup", "both-off", {
        "atRestEncryptionEnabled": False, "transitEncryptionEnabled": UNKNOWN}, provider=eu)
    violations = run(rule, s)
    assert pairs(violations) == {(rule, no_transit.urn), (rule, both.urn)}
    assert sum(v.urn == both.urn for v in violations) == 2


def test_dynamodb_cmk(s, eu):
    rule = "encryption-dynamodb-cmk"
    s.add("aws:dynamodb/table:Table", "ok", {"serverSideEncryption": {"enabled": True, "kmsKeyArn": UNKNOWN}},
          provider=eu)
    default_key = s.add("aws:dynamodb/table:Table", "aws-owned", {}, provider=eu)
    managed = s.add("aws:dynamodb/table:Table", "aws-managed", {"serverSideEncryption": {"enabled": True}},
                    provider=eu)
    unknown = s.add("aws:dynamodb/table:Table", "unknown", {"serverSideEncryption": UNKNOWN}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (default_key, managed, unknown)}


# --- KMS ---------------------------------------------------------------------------------------------------------

def test_kms_rotation(s, eu):
    rule = "encryption-kms-rotation"
    kms_key(s, "ok", eu)
    kms_key(s, "asymmetric", eu, enableKeyRotation=False, customerMasterKeySpec="RSA_2048", keyUsage="SIGN_VERIFY")
    off = kms_key(s, "off", eu, enableKeyRotation=False)
    unset = s.add("aws:kms/key:Key", "unset", {}, provider=eu)
    unknown = kms_key(s, "unknown", eu, enableKeyRotation=UNKNOWN)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (off, unset, unknown)}


def _key_policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_kms_no_wildcard_principal(s, eu):
    rule = "encryption-kms-no-wildcard-principal"
    kms_key(s, "ok", eu)
    s.add("aws:kms/key:Key", "default-policy", {}, provider=eu)
    kms_key(s, "deny-star", eu, policy=_key_policy({"Effect": "Deny", "Principal": "*", "Action": "kms:*"}))
    star = kms_key(s, "star", eu, policy=_key_policy({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt"}))
    aws_star = kms_key(s, "aws-star", eu, policy=_key_policy(
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:root", "*"]}, "Action": "kms:*"}))
    not_principal = kms_key(s, "not-principal", eu, policy=_key_policy(
        {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "kms:*"}))
    unknown = kms_key(s, "unknown", eu, policy=UNKNOWN)
    replica = s.add("aws:kms/replicaKey:ReplicaKey", "replica-star", {"policy": _key_policy(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*"})}, provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (star, aws_star, not_principal, unknown, replica)}
