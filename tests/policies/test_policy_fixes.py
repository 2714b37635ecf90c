"""Regression tests for reviewed defects: inline copies, kubeconfig lineage, unlisted types, label mismatches,
KeyPolicy, wide public CIDRs, TLS-only resources, KMS key specs and GPU quantities. Each test holds a violating and
a compliant case and asserts the exact (rule id, URN) set."""

import json

import pytest

from policy_harness import CONFIG, RESIDENCY, SITES, UNKNOWN, Stack, pairs, run
from policy_fixtures import (
    GPU_TOLERATION, bucket_bundle, compliant_stack, container, kms_key, pod_spec, tags, tls_policy, workload,
)

from finml_rules.config import pack_config


def sites():
    s = Stack()
    h = {"eu": s.aws_provider("eu-aws", "eu-central-1"), "dr": s.aws_provider("dr-aws", "eu-west-1"),
         "us": s.aws_provider("us-aws", "us-east-1")}
    h["gpu"], h["eks_k8s"] = s.eks_cluster("eu", provider=h["eu"])
    h["eks"] = next(r for r in s.resources if r.resource_type == "aws:eks/cluster:Cluster")
    h["dc1"], h["dc1_k8s"] = s.onprem_cluster()
    return s, h


# --- 1a. inline S3 replication ------------------------------------------------------------------------------------

def _inline(rules):
    return {"replicationConfiguration": {"role": "arn:aws:iam::1:role/r", "rules": rules}}


def _dest(bucket, key=None):
    destination = {"bucket": bucket}
    if key is not None:
        destination["replicaKmsKeyId"] = key
    return {"id": "r", "status": "Enabled", "destination": destination}


def test_inline_bucket_replication_destinations():
    rule = "residency-s3-replication-destination"
    s, h = sites()
    s.add("aws:s3/bucket:Bucket", "dr-copy", {"bucket": "dr-copy", **tags("internal")}, provider=h["dr"])
    us_copy = s.add("aws:s3/bucket:Bucket", "us-copy", {"bucket": "us-copy", **tags("internal")}, provider=h["us"])
    dr_key = kms_key(s, "dr-key", h["dr"])
    # compliant: internal -> eu-west-1 by name, key ARN in the same region; unknown ARN resolved through lineage
    s.add("aws:s3/bucket:Bucket", "ok-name", {"bucket": "ok-name", **tags("internal"), **_inline(
        [_dest("arn:aws:s3:::dr-copy", "arn:aws:kms:eu-west-1:1:key/a")])}, provider=h["eu"])
    s.add("aws:s3/bucket:Bucket", "ok-lineage", {"bucket": "ok-lineage", **tags("internal"), **_inline(
        [_dest(UNKNOWN, UNKNOWN)])}, provider=h["eu"],
        deps={"replicationConfiguration": [s.resources[-4], dr_key]})
    # violating
    outside = s.add("aws:s3/bucket:Bucket", "outside", {"bucket": "outside", **tags("internal"), **_inline(
        [_dest("arn:aws:s3:::somewhere-in-us-east-1")])}, provider=h["eu"])
    to_us = s.add("aws:s3/bucket:Bucket", "to-us", {"bucket": "to-us", **tags("internal"), **_inline(
        [_dest(UNKNOWN)])}, provider=h["eu"], deps={"replicationConfiguration": [us_copy]})
    key_far = s.add("aws:s3/bucket:Bucket", "key-far", {"bucket": "key-far", **tags("internal"), **_inline(
        [_dest("arn:aws:s3:::dr-copy", "arn:aws:kms:us-east-1:1:key/b")])}, provider=h["eu"])
    conf_dr = s.add("aws:s3/bucket:Bucket", "conf-dr", {"bucket": "conf-dr", **tags("confidential"), **_inline(
        [_dest("arn:aws:s3:::dr-copy")])}, provider=h["eu"])
    unresolved = s.add("aws:s3/bucket:Bucket", "unresolved", {"bucket": "unresolved", **tags("internal"), **_inline(
        [_dest(UNKNOWN)])}, provider=h["eu"])
    unknown_rules = s.add("aws:s3/bucket:Bucket", "unknown-rules", {"bucket": "unknown-rules", **tags("internal"),
                                                                    "replicationConfiguration": {"rules": UNKNOWN}},
                          provider=h["eu"])
    v2 = s.add("aws:s3/bucketV2:BucketV2", "v2-outside", {"bucket": "v2-outside", **tags("internal"), **_inline(
        [_dest("arn:aws:s3:::not-here")])}, provider=h["eu"])
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (outside, to_us, key_far, conf_dr, unresolved,
                                                           unknown_rules, v2)}


# --- 1b/1c. DynamoDB replicas and EFS replication -----------------------------------------------------------------

def test_dynamodb_replica_regions_and_keys():
    rule = "residency-replica-destination"
    s, h = sites()
    dr_key = kms_key(s, "dr-key", h["dr"])
    table = {"serverSideEncryption": {"enabled": True, "kmsKeyArn": "arn:aws:kms:eu-central-1:1:key/a"}}
    s.add("aws:dynamodb/table:Table", "no-replicas", {**table, **tags("confidential")}, provider=h["eu"])
    s.add("aws:dynamodb/table:Table", "ok", {**table, **tags("internal"), "replicas": [
        {"regionName": "eu-west-1", "kmsKeyArn": "arn:aws:kms:eu-west-1:1:key/b"}]}, provider=h["eu"])
    s.add("aws:dynamodb/table:Table", "ok-lineage", {**table, **tags("internal"), "replicas": [
        {"regionName": "eu-west-1", "kmsKeyArn": UNKNOWN}]}, provider=h["eu"], deps={"replicas": [dr_key]})
    us = s.add("aws:dynamodb/table:Table", "us", {**table, **tags("confidential"), "replicas": [
        {"regionName": "us-east-1", "kmsKeyArn": "arn:aws:kms:us-east-1:777788889999:key/abcd"}]}, provider=h["eu"])
    conf_dr = s.add("aws:dynamodb/table:Table", "conf-dr", {**table, **tags("confidential"), "replicas": [
        {"regionName": "eu-west-1"}]}, provider=h["eu"])
    key_far = s.add("aws:dynamodb/table:Table", "key-far", {**table, **tags("internal"), "replicas": [
        {"regionName": "eu-west-1", "kmsKeyArn": "arn:aws:kms:eu-central-1:1:key/a"}]}, provider=h["eu"])
    key_unresolved = s.add("aws:dynamodb/table:Table", "key-unresolved", {**table, **tags("internal"), "replicas": [
        {"regionName": "eu-west-1", "kmsKeyArn": UNKNOWN}]}, provider=h["eu"])
    region_unknown = s.add("aws:dynamodb/table:Table", "region-unknown", {**table, **tags("internal"), "replicas": [
        {"regionName": UNKNOWN}]}, provider=h["eu"])
    replicas_unknown = s.add("aws:dynamodb/table:Table", "replicas-unknown", {**table, **tags("internal"),
                                                                             "replicas": UNKNOWN}, provider=h["eu"])
    unclassified = s.add("aws:dynamodb/table:Table", "unclassified", {**table, "replicas": [
        {"regionName": "eu-central-1"}]}, provider=h["eu"])
    violations = run(rule, s)
    assert pairs(violations) == {(rule, r.urn) for r in (us, conf_dr, key_far, key_unresolved, region_unknown,
                                                         replicas_unknown, unclassified)}
    assert any(v.urn == us.urn and "aws:us-east-1" in v.message for v in violations)


def test_dynamodb_table_replica_resources():
    rule = "residency-replica-destination"
    s, h = sites()
    table = s.add("aws:dynamodb/table:Table", "t", {"serverSideEncryption": {"enabled": True}, **tags("internal")},
                  provider=h["eu"])
    conf = s.add("aws:dynamodb/table:Table", "c", {"serverSideEncryption": {"enabled": True}, **tags("confidential")},
                 provider=h["eu"])

    def replica(name, source, provider, **props):
        return s.add("aws:dynamodb/tableReplica:TableReplica", name, {"globalTableArn": UNKNOWN, **props},
                     provider=provider, deps={"globalTableArn": [source] if source else []})

    replica("ok", table, h["dr"], kmsKeyArn="arn:aws:kms:eu-west-1:1:key/a")
    to_us = replica("to-us", table, h["us"])
    conf_dr = replica("conf-dr", conf, h["dr"])
    orphan = replica("orphan", None, h["dr"])
    key_far = replica("key-far", table, h["dr"], kmsKeyArn="arn:aws:kms:eu-central-1:1:key/a")
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (to_us, conf_dr, orphan, key_far)}


def test_efs_replication_destinations():
    rule = "residency-replica-destination"
    s, h = sites()
    internal_fs = s.add("aws:efs/fileSystem:FileSystem", "internal-fs", {"encrypted": True, **tags("internal")},
                        provider=h["eu"])
    conf_fs = s.add("aws:efs/fileSystem:FileSystem", "conf-fs", {"encrypted": True, **tags("confidential")},
                    provider=h["eu"])
    untagged_fs = s.add("aws:efs/fileSystem:FileSystem", "untagged-fs", {"encrypted": True}, provider=h["eu"])
    dr_fs = s.add("aws:efs/fileSystem:FileSystem", "dr-fs", {"encrypted": True, **tags("internal")}, provider=h["dr"])
    us_fs = s.add("aws:efs/fileSystem:FileSystem", "us-fs", {"encrypted": True, **tags("internal")}, provider=h["us"])

    def repl(name, source, destination, deps=None):
        return s.add("aws:efs/replicationConfiguration:ReplicationConfiguration", name,
                     {"sourceFileSystemId": UNKNOWN, "destination": destination}, provider=h["eu"],
                     deps={"sourceFileSystemId": [source] if source else [], **(deps or {})})

    repl("ok-region", internal_fs, {"region": "eu-west-1", "kmsKeyId": "arn:aws:kms:eu-west-1:1:key/a"})
    repl("ok-lineage", internal_fs, {"fileSystemId": UNKNOWN}, {"destination": [dr_fs]})
    to_us = repl("to-us", internal_fs, {"region": "us-east-1"})
    conf_dr = repl("conf-dr", conf_fs, {"region": "eu-west-1"})
    lineage_us = repl("lineage-us", internal_fs, {"region": UNKNOWN}, {"destination": [us_fs]})
    unresolved = repl("unresolved", internal_fs, {"region": UNKNOWN})
    no_source = repl("no-source", None, {"region": "eu-west-1"})
    unclassified = repl("unclassified", untagged_fs, {"region": "eu-central-1"})
    key_far = repl("key-far", internal_fs, {"region": "eu-west-1", "kmsKeyId": "arn:aws:kms:us-east-1:1:key/b"})
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (to_us, conf_dr, lineage_us, unresolved, no_source,
                                                           unclassified, key_far)}


# --- 2. cluster site from kubeconfig lineage ----------------------------------------------------------------------

def test_kubeconfig_lineage_decides_the_cluster():
    s, h = sites()
    other_gpu, _ = s.eks_cluster("dr", region="eu-west-1", provider=h["dr"])
    other_eks = next(r for r in s.resources if r.name == "dr-eks")
    # compliant: the GpuCluster's provider reads its own EKS cluster's kubeconfig
    own = s.add("pulumi:providers:kubernetes", "own-k8s", {"kubeconfig": UNKNOWN}, parent=h["gpu"],
                deps={"kubeconfig": [h["eks"]]})
    # compliant: a provider outside any cluster component whose kubeconfig comes from one EKS cluster
    loose = s.add("pulumi:providers:kubernetes", "loose-k8s", {"kubeconfig": UNKNOWN},
                  deps={"kubeconfig": [h["eks"]]})
    # violating: under the on-prem cluster, kubeconfig from EKS (the data lands in AWS)
    sneaky = s.add("pulumi:providers:kubernetes", "sneaky-k8s", {"kubeconfig": UNKNOWN}, parent=h["dc1"],
                   deps={"kubeconfig": [h["eks"]]})
    # violating: under the eu GpuCluster, kubeconfig from the dr EKS cluster
    crossed = s.add("pulumi:providers:kubernetes", "crossed-k8s", {"kubeconfig": UNKNOWN}, parent=h["gpu"],
                    deps={"kubeconfig": [other_eks]})
    ok_pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "ok", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "confidential"}}}, provider=own)
    loose_pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "loose", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "confidential"}}}, provider=loose)
    on_aws = s.add("kubernetes:core/v1:PersistentVolumeClaim", "on-aws", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "restricted"}}}, provider=sneaky)
    crossed_pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "crossed", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "public"}}}, provider=crossed)
    rule = "residency-k8s-data-site"
    violations = run(rule, s)
    assert pairs(violations) == {(rule, on_aws.urn), (rule, crossed_pvc.urn)}
    by_urn = {v.urn: v.message for v in violations}
    assert "'dc1'" in by_urn[on_aws.urn] and "'eu-eks'" in by_urn[on_aws.urn]
    assert "'eu-eks'" in by_urn[crossed_pvc.urn] and "'dr-eks'" in by_urn[crossed_pvc.urn]
    rule = "residency-cluster-site"
    assert pairs(run(rule, s)) == {(rule, sneaky.urn), (rule, crossed.urn)}
    assert ok_pvc and loose_pvc and other_gpu


def test_gpu_cluster_provider_without_kubeconfig_lineage_fails_closed():
    s, h = sites()
    blind = s.k8s_provider("blind-k8s", h["gpu"])  # kubeconfig absent: which cluster it reaches is unknown
    pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "pvc", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "public"}}}, provider=blind)
    s.add("kubernetes:core/v1:PersistentVolumeClaim", "ok", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "public"}}}, provider=h["eks_k8s"])
    rule = "residency-k8s-data-site"
    assert pairs(run(rule, s)) == {(rule, pvc.urn)}
    rule = "residency-cluster-site"
    assert pairs(run(rule, s)) == {(rule, blind.urn)}


def test_kubeconfig_lineage_from_plain_dependencies():
    """A plan without property dependencies: the provider's plain dependencies decide."""
    s, h = sites()
    sneaky = s.add("pulumi:providers:kubernetes", "sneaky-k8s", {"kubeconfig": UNKNOWN}, parent=h["dc1"],
                   dependencies=[h["eks"]])
    pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "pvc", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "restricted"}}}, provider=sneaky)
    s.add("kubernetes:core/v1:PersistentVolumeClaim", "ok", {"metadata": {
        "namespace": "t", "labels": {"finml.io/classification": "restricted"}}}, provider=h["dc1_k8s"])
    rule = "residency-k8s-data-site"
    assert pairs(run(rule, s)) == {(rule, pvc.urn)}


# --- 3. unlisted types --------------------------------------------------------------------------------------------

NEW_KINDS = {
    "kubernetes:apps/v1:ReplicaSet": lambda t: {"spec": {"template": t}},
    "kubernetes:core/v1:ReplicationController": lambda t: {"spec": {"template": t}},
    "kubernetes:core/v1:PodTemplate": lambda t: {"template": t},
    "kubernetes:apps/v1:DeploymentPatch": lambda t: {"spec": {"template": t}},
    "kubernetes:apps/v1:ReplicaSetPatch": lambda t: {"spec": {"template": t}},
    "kubernetes:batch/v1:CronJobPatch": lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}},
    "kubernetes:core/v1:PodPatch": lambda t: {"spec": t["spec"]},
}


def _raw_workload(s, type_, name, provider, spec, cls="restricted"):
    labels = {"finml.io/classification": cls}
    body = NEW_KINDS[type_]({"metadata": {"labels": {"app": name}}, "spec": spec})
    return s.add(type_, name, {"metadata": {"name": name, "namespace": "training", "labels": labels}, **body},
                 provider=provider)


@pytest.mark.parametrize("type_", sorted(NEW_KINDS))
def test_unlisted_workload_types_are_workloads(type_):
    s, h = sites()
    bad_spec = pod_spec([container("c", securityContext={"privileged": True}, limits={"nvidia.com/gpu": 1},
                                   requests={"nvidia.com/gpu": 2})], site=None, hostNetwork=True,
                        volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    bad = _raw_workload(s, type_, "bad", h["eks_k8s"], bad_spec)
    good = _raw_workload(s, type_, "good", h["dc1_k8s"], pod_spec([container(
        "c", limits={"nvidia.com/gpu": 1}, requests={"nvidia.com/gpu": 1})], tolerations=[GPU_TOLERATION]))
    for rule in ("k8s-no-privileged-containers", "k8s-no-host-namespaces", "k8s-no-hostpath-volumes",
                 "gpu-resource-limits", "gpu-taint-toleration", "residency-k8s-data-site",
                 "residency-k8s-site-pinning"):
        assert pairs(run(rule, s)) == {(rule, bad.urn)}, rule
    assert good


def _pv(s, name, provider, source, cls="restricted", deps=None):
    return s.add("kubernetes:core/v1:PersistentVolume", name, {"metadata": {
        "name": name, "labels": {} if cls is None else {"finml.io/classification": cls}},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], **source}},
        provider=provider, deps=deps)


def test_persistent_volume_backing_storage_site():
    rule = "residency-k8s-data-site"
    s, h = sites()
    eu_efs = s.add("aws:efs/fileSystem:FileSystem", "eu-efs", {"encrypted": True, **tags("confidential")},
                   provider=h["eu"])
    # compliant
    _pv(s, "onprem-nfs", h["dc1_k8s"], {"nfs": {"server": "10.1.2.3", "path": "/export"}})
    _pv(s, "local-csi", h["dc1_k8s"], {"csi": {"driver": "nfs.csi.k8s.io", "volumeHandle": "nas01/kyc"}})
    _pv(s, "unclassified", h["dc1_k8s"], {"nfs": {"server": "fs-1.efs.us-east-1.amazonaws.com", "path": "/"}},
        cls=None)
    _pv(s, "efs-same-region", h["eks_k8s"], {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": "fs-0abc"}},
        cls="confidential", deps={"spec": [eu_efs]})
    _pv(s, "ebs-az", h["eks_k8s"], {"awsElasticBlockStore": {"volumeID": "aws://eu-central-1a/vol-1"}},
        cls="confidential")
    # violating
    nfs_us = _pv(s, "nfs-us", h["dc1_k8s"], {"nfs": {"server": "fs-0abc.efs.us-east-1.amazonaws.com", "path": "/"}})
    csi_region = _pv(s, "csi-region", h["dc1_k8s"], {"csi": {"driver": "example.com/csi",
                                                             "volumeHandle": "eu-west-1:vol-9"}})
    ebs_onprem = _pv(s, "ebs-onprem", h["dc1_k8s"], {"awsElasticBlockStore": {"volumeID": "vol-1"}})
    efs_unresolved = _pv(s, "efs-unresolved", h["eks_k8s"], {"csi": {"driver": "efs.csi.aws.com",
                                                                     "volumeHandle": "fs-0abc"}}, cls="confidential")
    unknown_server = _pv(s, "unknown-server", h["dc1_k8s"], {"nfs": {"server": UNKNOWN, "path": "/"}})
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (nfs_us, csi_region, ebs_onprem, efs_unresolved,
                                                           unknown_server)}


def test_bucket_v2_and_v2_sse_are_checked():
    s, h = sites()
    key = kms_key(s, "key", h["eu"])
    restricted_v2 = s.add("aws:s3/bucketV2:BucketV2", "kyc-copy", {"bucket": "kyc-copy", **tags("restricted")},
                          provider=h["eu"])
    ok = bucket_bundle(s, "ok", "internal", h["eu"], key)
    ok_v2 = bucket_bundle(s, "ok-v2", "internal", h["eu"], key)
    # the same bundle, but built from V2 tokens: still compliant
    v2_bucket = s.add("aws:s3/bucketV2:BucketV2", "v2", {"bucket": "v2", **tags("internal")}, provider=h["eu"])
    s.add("aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2", "v2-sse",
          {"bucket": UNKNOWN, "rules": [{"applyServerSideEncryptionByDefault": {
              "sseAlgorithm": "aws:kms", "kmsMasterKeyId": UNKNOWN}, "bucketKeyEnabled": True}]},
          provider=h["eu"], deps={"bucket": [v2_bucket], "rules": [key]})
    s.add("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "v2-pab", {
        "bucket": "v2", "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
        "restrictPublicBuckets": True}, provider=h["eu"], deps={"bucket": [v2_bucket]})
    s.add("aws:s3/bucketPolicy:BucketPolicy", "v2-policy", {"bucket": "v2", "policy": tls_policy("v2")},
          provider=h["eu"], deps={"bucket": [v2_bucket]})
    bad_sse_v2 = s.add("aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
                       "bad-sse-v2", {"bucket": "ok", "rules": [{"applyServerSideEncryptionByDefault": {
                           "sseAlgorithm": "aws:kms", "kmsMasterKeyId": UNKNOWN}, "bucketKeyEnabled": False}]},
                       provider=h["eu"], deps={"rules": [key]})
    expected = {
        "residency-aws-data-site": {restricted_v2.urn},
        "residency-classification-required": set(),
        "encryption-s3-sse-kms-cmk": {restricted_v2.urn},
        "encryption-s3-bucket-key": {bad_sse_v2.urn},
        "encryption-s3-tls-only": {restricted_v2.urn},
        "network-s3-public-access-block": {restricted_v2.urn},
    }
    for rule, urns in expected.items():
        assert pairs(run(rule, s)) == {(rule, u) for u in urns}, rule
    assert ok_v2


def test_provider_allowlist():
    rule = "residency-provider-allowlist"
    s, h = sites()
    native = s.add("pulumi:providers:aws-native", "native", {"region": "us-east-1"})
    bucket = s.add("aws-native:s3:Bucket", "kyc-native", {"bucketName": "kyc-native", "tags": [
        {"key": "finml:classification", "value": "restricted"}]}, provider=native)
    gcp = s.add("gcp:storage/bucket:Bucket", "gcs", {"location": "US"}, provider=s.add("pulumi:providers:gcp", "gcp",
                                                                                     {}))
    gcp_provider = next(r for r in s.resources if r.name == "gcp")
    command = s.add("pulumi:providers:command", "cmd", {})
    s.add("command:local:Command", "probe", {"create": "true"}, provider=command)
    s.add("finml:compute:Probe", "component", {})  # components (no provider) are not custom resources
    violations = run(rule, s)
    assert pairs(violations) == {(rule, r.urn) for r in (native, bucket, gcp, gcp_provider)}
    assert any("cannot derive a site for package 'aws-native'" in v.message for v in violations)
    config = pack_config(RESIDENCY, SITES, allowed_provider_packages=["aws", "kubernetes", "command", "gcp"])
    assert pairs(run(rule, s, config)) == {(rule, native.urn), (rule, bucket.urn)}
    assert h


# --- 4. label mismatch --------------------------------------------------------------------------------------------

def _labelled(s, name, provider, meta, template, site="onprem:fra-dc1"):
    return s.add("kubernetes:apps/v1:Deployment", name, {
        "metadata": {"name": name, "namespace": "serving", "labels": meta},
        "spec": {"template": {"metadata": {"labels": template}, "spec": pod_spec(site=site)}}}, provider=provider)


def test_classification_is_the_highest_of_metadata_and_template_labels():
    s, h = sites()
    cls = "finml.io/classification"
    public_meta = _labelled(s, "public-meta", h["eks_k8s"], {cls: "public"}, {cls: "restricted"},
                            site="aws:eu-central-1")
    ok = _labelled(s, "ok", h["eks_k8s"], {cls: "public"}, {cls: "internal"}, site="aws:eu-central-1")
    bad_template = _labelled(s, "bad-template", h["dc1_k8s"], {cls: "public"}, {cls: "secret"})
    unknown_template = _labelled(s, "unknown-template", h["dc1_k8s"], {cls: "public"}, {cls: UNKNOWN})
    rule = "residency-k8s-data-site"
    assert pairs(run(rule, s)) == {(rule, public_meta.urn)}
    rule = "residency-classification-required"
    assert pairs(run(rule, s)) == {(rule, bad_template.urn), (rule, unknown_template.urn)}
    assert ok


def test_model_label_mismatch_fails_closed():
    s, h = sites()
    model = "finml.io/model"
    s.add("finml:ml:Dataset", "d", {"name": "tx", "classification": "restricted", "site": "onprem:fra-dc1"})
    s.add("finml:ml:Model", "aml", {"name": "aml", "trainedOn": ["tx"], "classification": "restricted"})
    s.add("finml:ml:Model", "fraud", {"name": "fraud", "trainedOn": [], "classification": "internal"})
    ok = _labelled(s, "ok", h["eks_k8s"], {model: "fraud"}, {model: "fraud"}, site="aws:eu-central-1")
    mismatch = _labelled(s, "mismatch", h["eks_k8s"], {model: "fraud"}, {model: "aml"}, site="aws:eu-central-1")
    template_only = _labelled(s, "template-only", h["eks_k8s"], {}, {model: "aml"}, site="aws:eu-central-1")
    rule = "residency-model-serving-site"
    violations = run(rule, s)
    assert pairs(violations) == {(rule, mismatch.urn), (rule, template_only.urn)}
    assert any(v.urn == mismatch.urn and "'fraud'" in v.message and "'aml'" in v.message for v in violations)
    assert ok


# --- 5. KeyPolicy -------------------------------------------------------------------------------------------------

def test_kms_key_policy_resource_wildcard_principal():
    rule = "encryption-kms-no-wildcard-principal"
    s, h = sites()
    key = kms_key(s, "key", h["eu"])

    def key_policy(name, policy):
        return s.add("aws:kms/keyPolicy:KeyPolicy", name, {"keyId": UNKNOWN, **({} if policy is None else {
            "policy": policy})}, provider=h["eu"], deps={"keyId": [key]})

    key_policy("ok", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "kms:*", "Resource": "*"}]}))
    star = key_policy("star", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "open", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}))
    unknown = key_policy("unknown", UNKNOWN)
    missing = key_policy("missing", None)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (star, unknown, missing)}


# --- 6. wide public CIDRs -----------------------------------------------------------------------------------------

def test_sg_wide_public_ranges_count_as_the_internet():
    rule = "network-sg-no-public-ingress"
    s, h = sites()
    eu = h["eu"]
    s.add("aws:ec2/securityGroup:SecurityGroup", "ok", {"ingress": [
        {"cidrBlocks": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "203.0.113.0/24", "198.51.100.7/32"],
         "ipv6CidrBlocks": ["fd00::/8", "2001:db8:1234::/48"]}]}, provider=eu)
    s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "ok-rule", {"cidrIpv4": "203.0.113.0/24"},
          provider=eu)
    halves = s.add("aws:ec2/securityGroup:SecurityGroup", "halves", {"ingress": [
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"]}]}, provider=eu)
    slash16 = s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "slash16", {"cidrIpv4": "8.8.0.0/16"},
                    provider=eu)
    v6 = s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "v6", {"cidrIpv6": "2000::/3"},
               provider=eu)
    legacy = s.add("aws:ec2/securityGroupRule:SecurityGroupRule", "legacy", {"type": "ingress",
                                                                              "cidrBlocks": ["64.0.0.0/2"]},
                   provider=eu)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (halves, slash16, v6, legacy)}


# --- 7. TLS-only covers the bucket and its objects -----------------------------------------------------------------

def _tls(name, resources):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": resources,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def test_tls_only_must_cover_bucket_and_objects():
    rule = "encryption-s3-tls-only"
    s, h = sites()
    key = kms_key(s, "key", h["eu"])
    bucket_bundle(s, "both", "internal", h["eu"], key)
    bucket_bundle(s, "star", "internal", h["eu"], key, bucket_policy=_tls("star", "*"))
    bucket_bundle(s, "glob", "internal", h["eu"], key, bucket_policy=_tls("glob", "arn:aws:s3:::glob*"))
    only_bucket = bucket_bundle(s, "only-bucket", "internal", h["eu"], key,
                                bucket_policy=_tls("only-bucket", ["arn:aws:s3:::only-bucket"]))
    only_objects = bucket_bundle(s, "only-objects", "internal", h["eu"], key,
                                 bucket_policy=_tls("only-objects", "arn:aws:s3:::only-objects/*"))
    other = bucket_bundle(s, "other", "internal", h["eu"], key, bucket_policy=tls_policy("someone-else"))
    assert pairs(run(rule, s)) == {(rule, b["bucket"].urn) for b in (only_bucket, only_objects, other)}


# --- 8. KMS rotation key specs ------------------------------------------------------------------------------------

def test_kms_rotation_key_usage_and_spec():
    rule = "encryption-kms-rotation"
    s, h = sites()
    eu = h["eu"]
    kms_key(s, "ok", eu, keySpec="SYMMETRIC_DEFAULT", keyUsage="ENCRYPT_DECRYPT")
    kms_key(s, "rsa", eu, enableKeyRotation=False, keySpec="RSA_4096", keyUsage="ENCRYPT_DECRYPT")
    kms_key(s, "hmac", eu, enableKeyRotation=False, keySpec="HMAC_256", keyUsage="GENERATE_VERIFY_MAC")
    unknown_usage = kms_key(s, "unknown-usage", eu, enableKeyRotation=False, keyUsage=UNKNOWN)
    unknown_spec = kms_key(s, "unknown-spec", eu, keySpec=UNKNOWN)
    symmetric_off = kms_key(s, "symmetric-off", eu, enableKeyRotation=False, keySpec="SYMMETRIC_DEFAULT")
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (unknown_usage, unknown_spec, symmetric_off)}


# --- 9. GPU quantities and the taint value -------------------------------------------------------------------------

def test_gpu_quantities_compare_as_numbers():
    rule = "gpu-resource-limits"
    s, h = sites()
    k8s = h["dc1_k8s"]

    def job(name, limit, request):
        return workload(s, "Job", name, k8s, spec=pod_spec([container("c", limits={"nvidia.com/gpu": limit},
                                                                      requests={"nvidia.com/gpu": request})],
                                                           tolerations=[GPU_TOLERATION]))

    job("int-str", 1, "1")
    job("float-str", 1.0, "1")
    job("str-str", "2", "2")
    mismatch = job("mismatch", 1, "2")
    garbage = job("garbage", 1, "one")
    assert pairs(run(rule, s)) == {(rule, mismatch.urn), (rule, garbage.urn)}


def test_harness_props_take_the_wire_path():
    s = Stack()
    resource = s.add("aws:s3/bucket:Bucket", "b", {"n": 1, "u": UNKNOWN, "nested": [{"x": 2}]})
    assert resource.props["n"] == 1.0 and isinstance(resource.props["n"], float)
    assert isinstance(resource.props["nested"][0]["x"], float)
    from pulumi_policy.proxy import UnknownValueError
    with pytest.raises(UnknownValueError):
        resource.props["u"]  # pylint: disable=pointless-statement
    assert UNKNOWN == "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def test_gpu_toleration_equal_must_match_the_taint_value():
    rule = "gpu-taint-toleration"
    s, h = sites()
    k8s = h["dc1_k8s"]

    def job(name, toleration):
        return workload(s, "Job", name, k8s, spec=pod_spec([container("c", limits={"nvidia.com/gpu": 1})],
                                                           tolerations=[toleration]))

    job("equal-present", {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"})
    job("exists", GPU_TOLERATION)
    absent = job("equal-absent", {"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent",
                                  "effect": "NoSchedule"})
    no_value = job("equal-no-value", {"key": "nvidia.com/gpu", "operator": "Equal", "effect": "NoSchedule"})
    default_operator = job("default-operator", {"key": "nvidia.com/gpu", "effect": "NoSchedule"})
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (absent, no_value, default_operator)}


def test_compliant_stack_still_passes_new_rules():
    stack, _ = compliant_stack()
    for rule in ("residency-replica-destination", "residency-provider-allowlist"):
        assert run(rule, stack) == [], rule
    assert CONFIG["residency-provider-allowlist"]["allowedProviderPackages"] == ["aws", "kubernetes", "command", "tls", "random"]
