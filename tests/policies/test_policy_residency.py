"""Residency rules: exact (rule, URN) sets for compliant, violating, not-applicable and unknown fixtures."""

import pytest

from policy_harness import CONFIG, UNKNOWN, Stack, pairs, run
from policy_fixtures import bucket_bundle, compliant_stack, kms_key, pod_spec, tags, workload


def sites():
    """A stack with EKS (eu-central-1), a DR provider (eu-west-1) and on-prem fra-dc1."""
    s = Stack()
    h = {"eu": s.aws_provider("eu-aws", "eu-central-1"), "dr": s.aws_provider("dr-aws", "eu-west-1"),
         "us": s.aws_provider("us-aws", "us-east-1")}
    h["eks"], h["eks_k8s"] = s.eks_cluster("eu", provider=h["eu"])
    h["dc1"], h["dc1_k8s"] = s.onprem_cluster()
    return s, h


# --- residency-classification-required --------------------------------------------------------------------

def test_classification_required_flags_each_unusable_classification():
    rule = "residency-classification-required"
    s, h = sites()
    untagged = s.add("aws:s3/bucket:Bucket", "untagged", {"bucket": "untagged"}, provider=h["eu"])
    invalid = s.add("aws:ebs/volume:Volume", "invalid", {"encrypted": True, **tags("secret")}, provider=h["eu"])
    unknown_tags = s.add("aws:rds/cluster:Cluster", "unknown-tags", {"tags": UNKNOWN}, provider=h["eu"])
    unknown_label = s.add("kubernetes:core/v1:PersistentVolumeClaim", "pvc", {"metadata": {
        "namespace": "training", "labels": {"finml.io/classification": UNKNOWN}}}, provider=h["dc1_k8s"])
    unlabelled = workload(s, "Deployment", "app", h["dc1_k8s"], cls=None)
    model = s.add("finml:ml:Model", "m", {"name": "m", "trainedOn": []})
    labelled_system = workload(s, "DaemonSet", "sys-bad", h["dc1_k8s"], namespace="kube-system", cls="topsecret")
    # compliant or not applicable:
    workload(s, "DaemonSet", "device-plugin", h["dc1_k8s"], namespace="kube-system", cls=None)
    s.add("aws:s3/bucket:Bucket", "ok", {"bucket": "ok", **tags("public")}, provider=h["eu"])
    kms_key(s, "key", h["eu"])
    s.add("aws:ec2/securityGroup:SecurityGroup", "sg", {}, provider=h["eu"])
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (untagged, invalid, unknown_tags, unknown_label,
                                                           unlabelled, model, labelled_system)}


def test_classification_required_without_config_fails_every_data_resource():
    rule = "residency-classification-required"
    s, h = sites()
    bucket = s.add("aws:s3/bucket:Bucket", "b", {"bucket": "b", **tags("public")}, provider=h["eu"])
    dataset = s.add("finml:ml:Dataset", "d", {"name": "d", "classification": "public", "site": "onprem:fra-dc1"})
    violations = run(rule, s, config=None)
    assert pairs(violations) == {(rule, bucket.urn), (rule, dataset.urn)}
    assert all("generate it with `finml policy config --stack NAME`" in v.message for v in violations)


# --- residency-aws-data-site ---------------------------------------------------------------------------------

def test_aws_data_site_allowed_and_disallowed_sites():
    rule = "residency-aws-data-site"
    s, h = sites()
    s.add("aws:s3/bucket:Bucket", "conf-eu", {"bucket": "a", **tags("confidential")}, provider=h["eu"])
    s.add("aws:s3/bucket:Bucket", "own-region-wins", {"bucket": "b", "region": "eu-central-1",
                                                      **tags("confidential")}, provider=h["us"])
    restricted_eu = s.add("aws:s3/bucket:Bucket", "restricted-eu", {"bucket": "c", **tags("restricted")},
                          provider=h["eu"])
    conf_dr = s.add("aws:ebs/volume:Volume", "conf-dr", {**tags("confidential")}, provider=h["dr"])
    internal_us = s.add("aws:efs/fileSystem:FileSystem", "internal-own-us", {"region": "us-east-1",
                                                                             **tags("internal")}, provider=h["eu"])
    violations = run(rule, s)
    assert pairs(violations) == {(rule, restricted_eu.urn), (rule, conf_dr.urn), (rule, internal_us.urn)}
    by_urn = {v.urn: v.message for v in violations}
    assert by_urn[restricted_eu.urn].endswith("[site=aws:eu-central-1; classification=restricted]")
    assert by_urn[internal_us.urn].endswith("[site=aws:us-east-1; classification=internal]")


def test_aws_data_site_unknown_or_missing_site_fails_closed():
    rule = "residency-aws-data-site"
    s = Stack()
    unknown_provider_region = s.aws_provider("unknown-region", UNKNOWN)
    no_region = s.aws_provider("no-region", None)
    a = s.add("aws:s3/bucket:Bucket", "a", {"bucket": "a", **tags("public")}, provider=unknown_provider_region)
    b = s.add("aws:s3/bucket:Bucket", "b", {"bucket": "b", **tags("public")}, provider=no_region)
    c = s.add("aws:s3/bucket:Bucket", "c", {"bucket": "c", **tags("public")})
    d = s.add("aws:s3/bucket:Bucket", "d", {"bucket": "d", "region": UNKNOWN, **tags("public")},
              provider=s.aws_provider("eu", "eu-central-1"))
    violations = run(rule, s)
    assert pairs(violations) == {(rule, r.urn) for r in (a, b, c, d)}
    assert all(v.message.endswith("[site=?; classification=public]") for v in violations)


def test_aws_data_site_not_applicable():
    rule = "residency-aws-data-site"
    s, h = sites()
    s.add("aws:ec2/securityGroup:SecurityGroup", "sg", {}, provider=h["us"])
    s.add("aws:s3/bucket:Bucket", "untagged", {"bucket": "u"}, provider=h["us"])  # classification rule reports it
    assert run(rule, s) == []


# --- residency-aws-site-declared -------------------------------------------------------------------------------

def test_aws_site_declared():
    rule = "residency-aws-site-declared"
    s, h = sites()
    ok = s.add("aws:ec2/subnet:Subnet", "ok", {}, provider=h["eu"])
    undeclared = s.add("aws:ec2/subnet:Subnet", "us", {}, provider=h["us"])
    own_region = s.add("aws:kms/key:Key", "own", {"region": "ap-south-1"}, provider=h["eu"])
    no_provider = s.add("aws:ec2/subnet:Subnet", "default-provider", {})
    wrong_provider = s.add("aws:ec2/subnet:Subnet", "k8s-provider", {}, provider=h["dc1_k8s"])
    s.add("kubernetes:core/v1:Namespace", "ns", {"metadata": {"name": "x"}}, provider=h["dc1_k8s"])
    assert ok.urn not in {v.urn for v in run(rule, s)}
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (undeclared, own_region, no_provider, wrong_provider)}


# --- residency-cluster-site --------------------------------------------------------------------------------------

def test_cluster_site_valid_clusters_pass():
    s, _ = sites()
    assert run("residency-cluster-site", s) == []


@pytest.mark.parametrize("site", ["onprem:ber-dc2", "aws:eu-central-1", UNKNOWN, None])
def test_cluster_site_onprem_site_must_be_declared_onprem(site):
    rule = "residency-cluster-site"
    s = Stack()
    cluster, _ = s.onprem_cluster("dc2", site=site)
    assert pairs(run(rule, s)) == {(rule, cluster.urn)}


def test_cluster_site_eks_lineage_and_orphan_providers():
    rule = "residency-cluster-site"
    s = Stack()
    no_eks = s.add("finml:compute:GpuCluster", "empty", {})
    us_cluster, _ = s.eks_cluster("us", region="us-east-1")
    orphan = s.k8s_provider("orphan", None)
    s.k8s_provider("unused-orphan", None)  # deploys nothing, so nothing depends on it
    s.add("kubernetes:core/v1:Namespace", "ns", {"metadata": {"name": "x"}}, provider=orphan)
    assert pairs(run(rule, s)) == {(rule, no_eks.urn), (rule, us_cluster.urn), (rule, orphan.urn)}


# --- residency-k8s-data-site ----------------------------------------------------------------------------------------

def test_k8s_data_site_uses_cluster_lineage_not_labels():
    rule = "residency-k8s-data-site"
    s, h = sites()
    on_eks = workload(s, "Deployment", "restricted-on-eks", h["eks_k8s"], spec=pod_spec(site="aws:eu-central-1"),
                      labels={"finml.io/site": "onprem:fra-dc1"})
    s.add("kubernetes:core/v1:PersistentVolumeClaim", "conf-on-eks", {"metadata": {
        "namespace": "training", "labels": {"finml.io/classification": "confidential"}}}, provider=h["eks_k8s"])
    workload(s, "StatefulSet", "restricted-onprem", h["dc1_k8s"])
    orphan_pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "orphan", {"metadata": {
        "namespace": "training", "labels": {"finml.io/classification": "public", "finml.io/site": "onprem:fra-dc1"}}},
        provider=s.k8s_provider("orphan", None))
    no_provider = workload(s, "Pod", "no-provider", None, cls="public")
    workload(s, "Job", "unclassified", h["eks_k8s"], cls=None)  # reported by residency-classification-required
    violations = run(rule, s)
    assert pairs(violations) == {(rule, on_eks.urn), (rule, orphan_pvc.urn), (rule, no_provider.urn)}
    assert [v.message for v in violations if v.urn == on_eks.urn][0].endswith(
        "[site=aws:eu-central-1; classification=restricted]")


# --- residency-k8s-site-pinning -------------------------------------------------------------------------------------

def _affinity(*terms):
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def _site_term(*values, operator="In"):
    return {"matchExpressions": [{"key": "finml.io/site", "operator": operator,
                                  "values": [v.replace(":", "-") for v in values]}]}


def test_site_pinning_compliant_forms():
    s, h = sites()
    workload(s, "Deployment", "selector", h["dc1_k8s"])
    workload(s, "CronJob", "affinity", h["dc1_k8s"],
             spec=pod_spec(site=None, affinity=_affinity(_site_term("onprem:fra-dc1"))))
    workload(s, "Job", "eks-confidential", h["eks_k8s"], cls="confidential", spec=pod_spec(site="aws:eu-central-1"))
    workload(s, "Deployment", "unclassified", h["dc1_k8s"], cls=None, spec=pod_spec(site=None))
    assert run("residency-k8s-site-pinning", s) == []


def test_site_pinning_violations():
    rule = "residency-k8s-site-pinning"
    s, h = sites()
    unpinned = workload(s, "Deployment", "unpinned", h["dc1_k8s"], spec=pod_spec(site=None))
    other_site = workload(s, "Deployment", "other-site", h["dc1_k8s"], spec=pod_spec(site="onprem:ber-dc2"))
    wide = workload(s, "StatefulSet", "wide", h["dc1_k8s"], spec=pod_spec(
        site=None, affinity=_affinity(_site_term("onprem:fra-dc1", "aws:eu-central-1"))))
    partial = workload(s, "Job", "partial-terms", h["dc1_k8s"], spec=pod_spec(
        site=None, affinity=_affinity(_site_term("onprem:fra-dc1"),
                                      {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})))
    not_in = workload(s, "Job", "not-in", h["dc1_k8s"], spec=pod_spec(
        site=None, affinity=_affinity(_site_term("aws:eu-central-1", operator="NotIn"))))
    restricted_on_eks = workload(s, "Pod", "restricted-eks", h["eks_k8s"], spec=pod_spec(site="aws:eu-central-1"))
    unknown_selector = workload(s, "Deployment", "unknown-selector", h["dc1_k8s"],
                                spec=pod_spec(site=None, nodeSelector={"finml.io/site": UNKNOWN}))
    unknown_spec = workload(s, "Deployment", "unknown-spec", h["dc1_k8s"], spec=UNKNOWN)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (unpinned, other_site, wide, partial, not_in,
                                                           restricted_on_eks, unknown_selector, unknown_spec)}


# --- residency-s3-replication-destination ---------------------------------------------------------------------------

def _replication(s, name, source, provider, rules, targets):
    return s.add("aws:s3/bucketReplicationConfig:BucketReplicationConfig", name,
                 {"bucket": UNKNOWN, "role": UNKNOWN, "rules": rules}, provider=provider,
                 deps={"bucket": [source], "rules": targets})


def _rule(bucket=UNKNOWN, replica_key=None):
    destination = {"bucket": bucket}
    if replica_key is not None:
        destination["encryptionConfiguration"] = {"replicaKmsKeyId": replica_key}
    return {"status": "Enabled", "destination": destination}


def test_replication_destinations():
    rule = "residency-s3-replication-destination"
    s, h = sites()
    eu_key, dr_key = kms_key(s, "eu-key", h["eu"]), kms_key(s, "dr-key", h["dr"])
    conf = s.add("aws:s3/bucket:Bucket", "conf", {"bucket": "conf", **tags("confidential")}, provider=h["eu"])
    internal = s.add("aws:s3/bucket:Bucket", "internal", {"bucket": "internal", **tags("internal")}, provider=h["eu"])
    conf_copy = s.add("aws:s3/bucket:Bucket", "conf-copy", {"bucket": "conf-copy", **tags("confidential")},
                      provider=h["eu"])
    dr_bucket = s.add("aws:s3/bucket:Bucket", "dr", {"bucket": "dr-bucket", **tags("internal")}, provider=h["dr"])
    unclassified = s.add("aws:s3/bucket:Bucket", "unclassified", {"bucket": "u"}, provider=h["eu"])
    # compliant: same-site copy with same-site replica key; internal data to eu-west-1 with a dr key, by known ARN
    _replication(s, "ok-unknown", conf, h["eu"], [_rule(replica_key=UNKNOWN)], [conf_copy, eu_key])
    _replication(s, "ok-arn", internal, h["eu"], [_rule("arn:aws:s3:::dr-bucket", "arn:aws:kms:eu-west-1:1:key/x")],
                 [])
    # violating
    conf_to_dr = _replication(s, "conf-to-dr", conf, h["eu"], [_rule()], [dr_bucket])
    key_elsewhere = _replication(s, "key-elsewhere", internal, h["eu"], [_rule(replica_key=UNKNOWN)],
                                 [dr_bucket, eu_key])
    outside = _replication(s, "outside", internal, h["eu"], [_rule("arn:aws:s3:::not-in-stack")], [])
    unresolved = _replication(s, "unresolved", internal, h["eu"], [_rule()], [])
    unknown_source = _replication(s, "unknown-source", unclassified, h["eu"], [_rule()], [conf_copy])
    unknown_rules = s.add("aws:s3/bucketReplicationConfig:BucketReplicationConfig", "unknown-rules",
                          {"bucket": "internal", "rules": UNKNOWN}, provider=h["eu"], dependencies=[internal])
    violations = run(rule, s)
    assert pairs(violations) == {(rule, r.urn) for r in (conf_to_dr, key_elsewhere, outside, unresolved,
                                                         unknown_source, unknown_rules)}
    assert [v.message for v in violations if v.urn == conf_to_dr.urn][0].endswith(
        "[site=aws:eu-west-1; classification=confidential]")
    assert dr_key


# --- residency-backup-copy-destination ------------------------------------------------------------------------------

def _plan(s, name, provider, actions, cls="confidential", deps=None):
    return s.add("aws:backup/plan:Plan", name, {"rules": [{"ruleName": "r", "targetVaultName": "v",
                                                           "copyActions": actions}], **tags(cls)},
                 provider=provider, deps=deps)


def test_backup_copy_destinations():
    rule = "residency-backup-copy-destination"
    s, h = sites()
    dr_vault = s.add("aws:backup/vault:Vault", "dr-vault", {}, provider=h["dr"])
    eu_vault = s.add("aws:backup/vault:Vault", "eu-vault", {}, provider=h["eu"])
    _plan(s, "ok-arn", h["eu"], [{"destinationVaultArn": "arn:aws:backup:eu-central-1:1:backup-vault:x"}])
    _plan(s, "ok-lineage", h["eu"], [{"destinationVaultArn": UNKNOWN}], deps={"rules": [eu_vault]})
    _plan(s, "no-copies", h["eu"], [], cls=None)
    to_us = _plan(s, "to-us", h["eu"], [{"destinationVaultArn": "arn:aws:backup:us-east-1:1:backup-vault:x"}])
    to_dr = _plan(s, "to-dr", h["eu"], [{"destinationVaultArn": UNKNOWN}], deps={"rules": [dr_vault]})
    unresolved = _plan(s, "unresolved", h["eu"], [{"destinationVaultArn": UNKNOWN}])
    unclassified = _plan(s, "unclassified", h["eu"],
                         [{"destinationVaultArn": "arn:aws:backup:eu-central-1:1:backup-vault:x"}], cls=None)
    # classification via the selection that covers a restricted volume: eu-central-1 is not allowed for it
    volume = s.add("aws:ebs/volume:Volume", "restricted-vol", {**tags("restricted")}, provider=h["eu"])
    via_selection = _plan(s, "via-selection", h["eu"],
                          [{"destinationVaultArn": "arn:aws:backup:eu-central-1:1:backup-vault:x"}], cls=None)
    s.add("aws:backup/selection:Selection", "sel", {"planId": UNKNOWN, "resources": [UNKNOWN]}, provider=h["eu"],
          deps={"planId": [via_selection], "resources": [volume]})
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (to_us, to_dr, unresolved, unclassified, via_selection)}


# --- residency-ebs-snapshot-copy ----------------------------------------------------------------------------------

def test_snapshot_copies():
    rule = "residency-ebs-snapshot-copy"
    s, h = sites()
    restricted_volume = s.add("aws:ebs/volume:Volume", "vol", {**tags("restricted")}, provider=h["eu"])
    snapshot = s.add("aws:ebs/snapshot:Snapshot", "snap", {"volumeId": UNKNOWN}, provider=h["eu"],
                     deps={"volumeId": [restricted_volume]})
    s.add("aws:ebs/snapshotCopy:SnapshotCopy", "ok", {"encrypted": True, **tags("confidential")}, provider=h["eu"])
    to_dr = s.add("aws:ebs/snapshotCopy:SnapshotCopy", "to-dr", {**tags("confidential")}, provider=h["dr"])
    lineage = s.add("aws:ebs/snapshotCopy:SnapshotCopy", "lineage", {"sourceSnapshotId": UNKNOWN, **tags("internal")},
                    provider=h["eu"], deps={"sourceSnapshotId": [snapshot]})
    unclassified = s.add("aws:ebs/snapshotCopy:SnapshotCopy", "unclassified", {"sourceSnapshotId": "snap-ext"},
                         provider=h["eu"])
    assert pairs(run(rule, s)) == {(rule, to_dr.urn), (rule, lineage.urn), (rule, unclassified.urn)}


# --- residency-kms-replica-key --------------------------------------------------------------------------------------

def test_kms_replica_keys():
    rule = "residency-kms-replica-key"
    s, h = sites()
    internal_key = kms_key(s, "internal-key", h["eu"], "internal")
    conf_key = kms_key(s, "conf-key", h["eu"])  # classified through the confidential bucket it protects
    bucket_bundle(s, "conf-bucket", "confidential", h["eu"], conf_key)
    idle_key = kms_key(s, "idle-key", h["eu"])

    def replica(name, primary):
        return s.add("aws:kms/replicaKey:ReplicaKey", name, {"primaryKeyArn": UNKNOWN}, provider=h["dr"],
                     deps={"primaryKeyArn": [primary] if primary else []})

    replica("ok", internal_key)
    conf_replica = replica("conf", conf_key)
    idle_replica = replica("idle", idle_key)
    external = replica("external", None)
    assert pairs(run(rule, s)) == {(rule, conf_replica.urn), (rule, idle_replica.urn), (rule, external.urn)}


# --- residency-kms-key-colocated ------------------------------------------------------------------------------------

def test_kms_key_colocated():
    rule = "residency-kms-key-colocated"
    s, h = sites()
    eu_key, dr_key = kms_key(s, "eu-key", h["eu"]), kms_key(s, "dr-key", h["dr"])
    s.add("aws:ebs/volume:Volume", "ok", {"kmsKeyId": UNKNOWN}, provider=h["eu"], deps={"kmsKeyId": [eu_key]})
    s.add("aws:rds/instance:Instance", "ok-arn", {"kmsKeyId": "arn:aws:kms:eu-central-1:1:key/a"}, provider=h["eu"])
    s.add("aws:efs/fileSystem:FileSystem", "no-key", {"encrypted": True}, provider=h["eu"])
    far_volume = s.add("aws:ebs/volume:Volume", "far", {"kmsKeyId": UNKNOWN}, provider=h["eu"],
                       deps={"kmsKeyId": [dr_key]})
    far_arn = s.add("aws:elasticache/replicationGroup:ReplicationGroup", "far-arn",
                    {"kmsKeyId": "arn:aws:kms:eu-west-1:1:key/b"}, provider=h["eu"])
    unresolved = s.add("aws:fsx/lustreFileSystem:LustreFileSystem", "unresolved", {"kmsKeyId": UNKNOWN},
                       provider=h["eu"])
    bare_id = s.add("aws:rds/cluster:Cluster", "bare-id", {"kmsKeyId": "1234abcd"}, provider=h["eu"])
    eks = s.add("aws:eks/cluster:Cluster", "eks-far", {"encryptionConfig": {"resources": ["secrets"], "provider": {
        "keyArn": UNKNOWN}}}, provider=h["eu"], deps={"encryptionConfig": [dr_key]})
    bucket = bucket_bundle(s, "far-bucket", "internal", h["eu"], dr_key)
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (far_volume, far_arn, unresolved, bare_id, eks,
                                                           bucket["sse"])}


# --- ML lineage -----------------------------------------------------------------------------------------------------

def ml(s, model_cls="restricted", trained_on=("transactions",)):
    dataset = s.add("finml:ml:Dataset", "transactions", {"name": "transactions", "classification": "restricted",
                                                         "site": "onprem:fra-dc1"})
    s.add("finml:ml:Dataset", "holidays", {"name": "holidays", "classification": "public", "site": "aws:eu-west-1"})
    model = s.add("finml:ml:Model", "fraud", {"name": "fraud", "trainedOn": list(trained_on),
                                              "classification": model_cls})
    return dataset, model


def test_model_training_lineage():
    rule = "residency-model-training-lineage"
    s, _ = sites()
    ml(s)
    s.add("finml:ml:Model", "calendar", {"name": "calendar", "trainedOn": ["holidays"], "classification": "internal"})
    assert run(rule, s) == []
    s2, _ = sites()
    _, under = ml(s2, model_cls="internal", trained_on=("transactions", "holidays"))
    missing = s2.add("finml:ml:Model", "ghost", {"name": "ghost", "trainedOn": ["nowhere"], "classification": "public"})
    unknown = s2.add("finml:ml:Model", "later", {"name": "later", "trainedOn": UNKNOWN, "classification": "public"})
    violations = run(rule, s2)
    assert pairs(violations) == {(rule, under.urn), (rule, missing.urn), (rule, unknown.urn)}
    assert [v.message for v in violations if v.urn == under.urn][0].endswith("[site=?; classification=restricted]")


def test_model_serving_site():
    rule = "residency-model-serving-site"
    s, h = sites()
    ml(s, model_cls="internal")  # declared too low: effective classification is restricted
    s.add("finml:ml:Model", "calendar", {"name": "calendar", "trainedOn": ["holidays"], "classification": "public"})
    workload(s, "Deployment", "onprem-serving", h["dc1_k8s"], labels={"finml.io/model": "fraud"})
    workload(s, "Deployment", "calendar-eks", h["eks_k8s"], cls="public", labels={"finml.io/model": "calendar"},
             spec=pod_spec(site="aws:eu-central-1"))
    workload(s, "Deployment", "not-serving", h["eks_k8s"], cls="public", spec=pod_spec(site="aws:eu-central-1"))
    on_eks = workload(s, "Deployment", "fraud-eks", h["eks_k8s"], cls="internal", labels={"finml.io/model": "fraud"},
                      spec=pod_spec(site="aws:eu-central-1"))
    ghost = workload(s, "Deployment", "ghost", h["dc1_k8s"], labels={"finml.io/model": "ghost"})
    unknown = workload(s, "Deployment", "unknown", h["dc1_k8s"], labels={"finml.io/model": UNKNOWN})
    violations = run(rule, s)
    assert pairs(violations) == {(rule, on_eks.urn), (rule, ghost.urn), (rule, unknown.urn)}
    assert [v.message for v in violations if v.urn == on_eks.urn][0].endswith(
        "[site=aws:eu-central-1; classification=restricted]")


def test_dataset_site():
    rule = "residency-dataset-site"
    s, _ = sites()
    ml(s)
    wrong = s.add("finml:ml:Dataset", "wrong", {"name": "wrong", "classification": "restricted",
                                                "site": "aws:eu-central-1"})
    undeclared = s.add("finml:ml:Dataset", "undeclared", {"name": "u", "classification": "public",
                                                          "site": "onprem:ber-dc2"})
    unknown = s.add("finml:ml:Dataset", "unknown", {"name": "x", "classification": "public", "site": UNKNOWN})
    s.add("finml:ml:Dataset", "unclassified", {"name": "y", "site": "aws:us-east-1"})
    assert pairs(run(rule, s)) == {(rule, wrong.urn), (rule, undeclared.urn), (rule, unknown.urn)}


# --- config ---------------------------------------------------------------------------------------------------------

# k8s-image-pinned reads `sites` only to derive a tag-pinned image's site; the compliant stack's images are pinned by
# digest, which needs no site (its own tests fail it closed without config: tests/policies/test_policy_images.py).
@pytest.mark.parametrize("rule", sorted(n for n, c in CONFIG.items() if "residency" in c and n != "k8s-image-pinned"))
def test_every_residency_rule_fails_applicable_resources_without_config(rule):
    stack, _ = compliant_stack()
    violations = run(rule, stack, config=None)
    assert violations, f"{rule} passed without residency config"
    assert all("finml policy config --stack NAME" in v.message and v.urn for v in violations)


def test_invalid_residency_config_fails_closed():
    rule = "residency-aws-data-site"
    s, h = sites()
    bucket = s.add("aws:s3/bucket:Bucket", "b", {"bucket": "b", **tags("public")}, provider=h["eu"])
    bad = {rule: {"residency": {"secret": ["aws:*"]}, "sites": ["aws:eu-central-1"]}}
    violations = run(rule, s, config=bad)
    assert pairs(violations) == {(rule, bucket.urn)}
    assert "unknown classification 'secret'" in violations[0].message


def test_replication_resolved_from_plain_dependencies_when_no_property_dependencies():
    """Plan files may record only plain dependencies: the known source name and the other buckets decide."""
    rule = "residency-s3-replication-destination"
    s, h = sites()
    conf = s.add("aws:s3/bucket:Bucket", "conf", {"bucket": "conf", **tags("confidential")}, provider=h["eu"])
    copy = s.add("aws:s3/bucket:Bucket", "copy", {"bucket": "copy", **tags("confidential")}, provider=h["eu"])
    dr = s.add("aws:s3/bucket:Bucket", "dr", {"bucket": "dr", **tags("confidential")}, provider=h["dr"])
    repl = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
    s.add(repl, "same-site", {"bucket": "conf", "rules": [_rule()]}, provider=h["eu"], dependencies=[conf, copy])
    to_dr = s.add(repl, "to-dr", {"bucket": "conf", "rules": [_rule()]}, provider=h["eu"], dependencies=[conf, dr])
    assert pairs(run(rule, s)) == {(rule, to_dr.urn)}
