"""Second pass: one test per gap an outside corpus found, and per new check. Each test holds the violating and the
compliant forms and asserts the exact (rule id, URN) set, checkov-style; props go through unknown_checking_proxy."""

import json

import pytest

from policy_harness import CONFIG, UNKNOWN, Stack, pairs, run
from policy_fixtures import (
    ACCOUNT_KEY_POLICY, HARDENED, bucket_bundle, compliant_stack, container, kms_key, pod_spec, tags, workload,
)

from finml_rules.config import pack_config
from policy_harness import RESIDENCY, SITES

ACCOUNT = "111111111111"


def eu_stack():
    s = Stack()
    h = {"eu": s.aws_provider("eu-aws", "eu-central-1"), "dr": s.aws_provider("dr-aws", "eu-west-1")}
    h["key"] = kms_key(s, "eu-key", h["eu"])
    h["dr_key"] = kms_key(s, "dr-key", h["dr"])
    return s, h


# --- gap: Aurora/RDS cluster instance publicly accessible -----------------------------------------------------------

def test_cluster_instance_publicly_accessible():
    s, h = eu_stack()
    public = s.add("aws:rds/clusterInstance:ClusterInstance", "aurora-1", {
        "clusterIdentifier": "c", "instanceClass": "db.r7g.large", "publiclyAccessible": True}, provider=h["eu"])
    s.add("aws:rds/clusterInstance:ClusterInstance", "aurora-2", {
        "clusterIdentifier": "c", "instanceClass": "db.r7g.large", "publiclyAccessible": False}, provider=h["eu"])
    unknown = s.add("aws:rds/clusterInstance:ClusterInstance", "aurora-3", {
        "clusterIdentifier": "c", "publiclyAccessible": UNKNOWN}, provider=h["eu"])
    assert pairs(run("network-rds-not-public", s)) == {("network-rds-not-public", public.urn),
                                                       ("network-rds-not-public", unknown.urn)}


# --- gap: KMS principals as a list containing "*"; false positive: wildcard pinned to the account ----------------------

def _key_policy(principal, condition=None):
    statement = {"Sid": "s", "Effect": "Allow", "Principal": principal, "Action": "kms:Decrypt", "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.mark.parametrize("principal,condition,violates", [
    ({"AWS": ["arn:aws:iam::111111111111:role/app", "*"]}, None, True),
    (["*"], None, True),
    ({"AWS": "arn:aws:iam::*:root"}, None, True),
    ({"AWS": "*"}, {"StringEquals": {"kms:CallerAccount": ACCOUNT}}, False),
    ({"AWS": ["*"]}, {"StringEquals": {"aws:PrincipalAccount": [ACCOUNT]}}, False),
    ("*", {"StringEquals": {"aws:SourceAccount": ACCOUNT}}, False),
    ("*", {"StringEquals": {"kms:CallerAccount": "222222222222"}}, True),  # another account
    ("*", {"StringLike": {"kms:CallerAccount": "*"}}, True),  # not pinned
    ("*", {"StringEqualsIfExists": {"kms:CallerAccount": ACCOUNT}}, True),  # absent key passes IfExists
    ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, None, False),
])
def test_kms_wildcard_principal_forms(principal, condition, violates):
    s, h = eu_stack()
    key = kms_key(s, "k", h["eu"], policy=_key_policy(principal, condition))
    config = pack_config(RESIDENCY, SITES, account_ids=[ACCOUNT])
    found = pairs(run("encryption-kms-no-wildcard-principal", s, config))
    assert found == ({("encryption-kms-no-wildcard-principal", key.urn)} if violates else set())


# --- gap: EKS node group with remote access and no source security groups ---------------------------------------

def test_eks_node_group_remote_access():
    s, h = eu_stack()
    open_ssh = s.add("aws:eks/nodeGroup:NodeGroup", "ssh-open", {
        "clusterName": "c", "remoteAccess": {"ec2SshKey": "ops"}}, provider=h["eu"])
    empty = s.add("aws:eks/nodeGroup:NodeGroup", "ssh-empty", {
        "clusterName": "c", "remoteAccess": {"ec2SshKey": "ops", "sourceSecurityGroupIds": []}}, provider=h["eu"])
    s.add("aws:eks/nodeGroup:NodeGroup", "ssh-bastion", {
        "clusterName": "c", "remoteAccess": {"ec2SshKey": "ops", "sourceSecurityGroupIds": ["sg-1"]}},
        provider=h["eu"])
    s.add("aws:eks/nodeGroup:NodeGroup", "no-ssh", {"clusterName": "c"}, provider=h["eu"])
    unknown = s.add("aws:eks/nodeGroup:NodeGroup", "ssh-unknown", {
        "clusterName": "c", "remoteAccess": {"ec2SshKey": "ops", "sourceSecurityGroupIds": UNKNOWN}}, provider=h["eu"])
    rule = "network-eks-node-remote-access"
    assert pairs(run(rule, s)) == {(rule, open_ssh.urn), (rule, empty.urn), (rule, unknown.urn)}


# --- gap (false positive): SSE set inline on the bucket ------------------------------------------------------------

def test_inline_bucket_sse_is_read():
    s, h = eu_stack()
    inline_ok = s.add("aws:s3/bucket:Bucket", "inline-ok", {"bucket": "inline-ok", **tags("internal"),
                      "serverSideEncryptionConfiguration": {"rule": {
                          "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": UNKNOWN},
                          "bucketKeyEnabled": True}}},
                      provider=h["eu"], deps={"serverSideEncryptionConfiguration": [h["key"]]})
    inline_s3 = s.add("aws:s3/bucket:Bucket", "inline-aes", {"bucket": "inline-aes", **tags("internal"),
                      "serverSideEncryptionConfiguration": {"rule": {
                          "applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}}}, provider=h["eu"])
    far_key = s.add("aws:s3/bucket:Bucket", "inline-far-key", {"bucket": "inline-far-key", **tags("internal"),
                    "serverSideEncryptionConfiguration": {"rule": {
                        "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": UNKNOWN},
                        "bucketKeyEnabled": True}}},
                    provider=h["eu"], deps={"serverSideEncryptionConfiguration": [h["dr_key"]]})
    none = s.add("aws:s3/bucket:Bucket", "none", {"bucket": "none", **tags("internal")}, provider=h["eu"])
    assert pairs(run("encryption-s3-sse-kms-cmk", s)) == {("encryption-s3-sse-kms-cmk", inline_s3.urn),
                                                          ("encryption-s3-sse-kms-cmk", none.urn)}
    assert pairs(run("encryption-s3-bucket-key", s)) == {("encryption-s3-bucket-key", inline_s3.urn)}
    assert pairs(run("residency-kms-key-colocated", s)) == {("residency-kms-key-colocated", far_key.urn)}
    assert inline_ok.urn not in {v.urn for v in run("encryption-s3-sse-kms-cmk", s)}


# --- gap (false positive): same-site read replica of an encrypted primary ----------------------------------------

def test_read_replica_inherits_encryption():
    s, h = eu_stack()
    primary = s.add("aws:rds/instance:Instance", "primary", {"engine": "postgres", "storageEncrypted": True,
                                                             "kmsKeyId": UNKNOWN, **tags("confidential")},
                    provider=h["eu"], deps={"kmsKeyId": [h["key"]]})
    plain = s.add("aws:rds/instance:Instance", "plain", {"engine": "postgres", **tags("internal")}, provider=h["eu"])
    s.add("aws:rds/instance:Instance", "replica", {"replicateSourceDb": UNKNOWN, **tags("confidential")},
          provider=h["eu"], deps={"replicateSourceDb": [primary]})
    of_plain = s.add("aws:rds/instance:Instance", "replica-of-plain", {"replicateSourceDb": UNKNOWN,
                                                                       **tags("internal")},
                     provider=h["eu"], deps={"replicateSourceDb": [plain]})
    cross = s.add("aws:rds/instance:Instance", "replica-dr", {"replicateSourceDb": UNKNOWN, **tags("internal")},
                  provider=h["dr"], deps={"replicateSourceDb": [primary]})
    outside = s.add("aws:rds/instance:Instance", "replica-outside", {
        "replicateSourceDb": "arn:aws:rds:eu-central-1:1:db:other", **tags("internal")}, provider=h["eu"])
    rule = "encryption-rds-at-rest"
    assert pairs(run(rule, s)) == {(rule, plain.urn), (rule, of_plain.urn), (rule, cross.urn), (rule, outside.urn)}


# --- container security for every pod template ----------------------------------------------------------------------

KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def _k8s():
    s = Stack()
    dc1, k8s = s.onprem_cluster()
    return s, k8s


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule,bad_container,bad_spec", [
    ("k8s-no-privilege-escalation", {"securityContext": {"allowPrivilegeEscalation": True}}, {}),
    ("k8s-capabilities-drop-all", {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, {}),
    ("k8s-capabilities-drop-all", {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}}, {}),
    ("k8s-run-as-non-root", {"securityContext": {"runAsNonRoot": False}}, {}),
    ("k8s-run-as-non-root", {"securityContext": {"runAsUser": 0}}, {}),
    ("k8s-seccomp-profile", {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, {}),
    ("k8s-no-host-ports", {"ports": [{"containerPort": 80, "hostPort": 80}]}, {}),
    ("k8s-resource-limits", {"limits": {"cpu": None, "memory": None}}, {}),
    ("k8s-service-account-token", {}, {"automountServiceAccountToken": True}),
    ("k8s-no-host-namespaces", {}, {"hostPID": True}),
])
def test_container_security_every_template(kind, rule, bad_container, bad_spec):
    s, k8s = _k8s()
    good = workload(s, kind, "good", k8s)
    extra = dict(bad_container)
    limits = extra.pop("limits", None)
    bad = container("bad", **extra)
    if limits is not None:
        bad["resources"]["limits"] = {k: v for k, v in bad["resources"]["limits"].items() if k not in limits}
    # the offending container as an init container of one workload and as a regular container of another
    as_init = workload(s, kind, "bad-init", k8s, spec=pod_spec([container()], initContainers=[bad], **bad_spec))
    as_main = workload(s, kind, "bad-main", k8s, spec=pod_spec([bad], **bad_spec))
    found = pairs(run(rule, s))
    assert (rule, good.urn) not in found
    assert found == {(rule, as_init.urn), (rule, as_main.urn)}


def test_container_security_ephemeral_and_pod_level_defaults():
    s, k8s = _k8s()
    # pod-level runAsNonRoot and seccomp cover containers that do not set their own
    pod_level = {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                     "seccompProfile": {"type": "RuntimeDefault"}}}
    bare = container("app", securityContext={"runAsNonRoot": None, "seccompProfile": None})
    bare["securityContext"] = {k: v for k, v in bare["securityContext"].items() if v is not None}
    ok = workload(s, "Deployment", "pod-level", k8s, spec=pod_spec([bare], **pod_level))
    no_pod_level = workload(s, "Deployment", "no-pod-level", k8s, spec=pod_spec([bare]))
    debug = {"name": "debug", "image": "busybox", "securityContext": {"allowPrivilegeEscalation": True}}
    ephemeral = workload(s, "Pod", "with-debug", k8s, spec=pod_spec([container()], ephemeralContainers=[debug]))
    api = workload(s, "Deployment", "needs-api", k8s, spec=pod_spec([container()], automountServiceAccountToken=True))
    assert pairs(run("k8s-run-as-non-root", s)) == {("k8s-run-as-non-root", no_pod_level.urn)}
    assert pairs(run("k8s-seccomp-profile", s)) == {("k8s-seccomp-profile", no_pod_level.urn),
                                                    ("k8s-seccomp-profile", ephemeral.urn)}
    assert pairs(run("k8s-no-privilege-escalation", s)) == {("k8s-no-privilege-escalation", ephemeral.urn)}
    assert ("k8s-service-account-token", api.urn) in pairs(run("k8s-service-account-token", s))
    assert ok.urn not in {v.urn for v in run("k8s-seccomp-profile", s) + run("k8s-run-as-non-root", s)}


def test_service_account_token_allowed_with_reason_and_unknown_fails_closed():
    s, k8s = _k8s()
    template = {"metadata": {"labels": {"app": "op"}, "annotations": {"finml.io/kube-api-access": "reads Jobs"}},
                "spec": pod_spec([container()], automountServiceAccountToken=True)}
    s.add("kubernetes:apps/v1:Deployment", "operator", {"metadata": {"name": "operator", "namespace": "training",
          "labels": {"finml.io/classification": "internal"}}, "spec": {"template": template}}, provider=k8s)
    unknown = workload(s, "Deployment", "unknown", k8s, spec=pod_spec([container()],
                                                                     automountServiceAccountToken=UNKNOWN))
    assert pairs(run("k8s-service-account-token", s)) == {("k8s-service-account-token", unknown.urn)}


def test_exempt_node_agents_may_run_as_root_but_not_escalate():
    s, k8s = _k8s()
    root_agent = container("agent", securityContext={"runAsNonRoot": False, "runAsUser": 0})
    agent = workload(s, "DaemonSet", "agent", k8s, namespace="kube-system", cls=None, spec=pod_spec(
        [root_agent], site=None, volumes=[{"name": "dp", "hostPath": {"path": "/var/lib/kubelet"}}]))
    escalating = workload(s, "DaemonSet", "escalating", k8s, namespace="kube-system", cls=None, spec=pod_spec(
        [container("agent", securityContext={"allowPrivilegeEscalation": True})], site=None))
    assert pairs(run("k8s-run-as-non-root", s)) == set()
    assert pairs(run("k8s-no-privilege-escalation", s)) == {("k8s-no-privilege-escalation", escalating.urn)}
    assert agent.urn not in {v.urn for v in run("k8s-no-hostpath-volumes", s)}


# --- deprecated API kinds: checked and rejected ---------------------------------------------------------------------

@pytest.mark.parametrize("kind,path", [
    ("kubernetes:batch/v1beta1:CronJob", ("spec", "jobTemplate", "spec", "template")),
    ("kubernetes:extensions/v1beta1:Deployment", ("spec", "template")),
    ("kubernetes:apps/v1beta1:StatefulSet", ("spec", "template")),
    ("kubernetes:apps/v1beta2:DaemonSet", ("spec", "template")),
])
def test_deprecated_api_kinds_are_workloads_and_rejected(kind, path):
    s, k8s = _k8s()
    body: dict = {"spec": pod_spec([container("c", securityContext={"privileged": True})])}
    for key in reversed(path):
        body = {key: body}
    old = s.add(kind, "old", {"metadata": {"name": "old", "namespace": "training",
                                           "labels": {"finml.io/classification": "internal"}}, **body}, provider=k8s)
    current = workload(s, "Deployment", "current", k8s)
    assert pairs(run("k8s-deprecated-api-kinds", s)) == {("k8s-deprecated-api-kinds", old.urn)}
    assert pairs(run("k8s-no-privileged-containers", s)) == {("k8s-no-privileged-containers", old.urn)}
    assert current.urn not in {v.urn for v in run("k8s-deprecated-api-kinds", s)}


# --- a customer-managed key of the same site for every data store --------------------------------------------------

STORES = [
    ("aws:ebs/volume:Volume", {"encrypted": True, "size": 10}, "kmsKeyId", "kmsKeyId"),
    ("aws:efs/fileSystem:FileSystem", {"encrypted": True}, "kmsKeyId", "kmsKeyId"),
    ("aws:rds/instance:Instance", {"engine": "postgres", "storageEncrypted": True}, "kmsKeyId", "kmsKeyId"),
    ("aws:elasticache/replicationGroup:ReplicationGroup", {"atRestEncryptionEnabled": True,
                                                           "transitEncryptionEnabled": True, "authToken": UNKNOWN},
     "kmsKeyId", "kmsKeyId"),
    ("aws:dynamodb/table:Table", {"serverSideEncryption": {"enabled": True}}, "serverSideEncryption",
     "serverSideEncryption.kmsKeyArn"),
    ("aws:sqs/queue:Queue", {}, "kmsMasterKeyId", "kmsMasterKeyId"),
    ("aws:sns/topic:Topic", {}, "kmsMasterKeyId", "kmsMasterKeyId"),
    ("aws:cloudwatch/logGroup:LogGroup", {"name": "/app"}, "kmsKeyId", "kmsKeyId"),
    ("aws:secretsmanager/secret:Secret", {}, "kmsKeyId", "kmsKeyId"),
    ("aws:ecr/repository:Repository", {"encryptionConfigurations": [{"encryptionType": "KMS"}]},
     "encryptionConfigurations", "encryptionConfigurations.0.kmsKey"),
    ("aws:kinesis/stream:Stream", {"encryptionType": "KMS"}, "kmsKeyId", "kmsKeyId"),
    ("aws:msk/cluster:Cluster", {"encryptionInfo": {}}, "encryptionInfo", "encryptionInfo.encryptionAtRestKmsKeyArn"),
    ("aws:opensearch/domain:Domain", {"encryptAtRest": {"enabled": True}}, "encryptAtRest", "encryptAtRest.kmsKeyId"),
    ("aws:backup/vault:Vault", {}, "kmsKeyArn", "kmsKeyArn"),
]


def _with_key(props, path, value):
    out = json.loads(json.dumps(props))
    parts = path.split(".")
    target = out
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    target[parts[-1]] = value
    return out


@pytest.mark.parametrize("resource_type,props,prop,path", STORES)
def test_data_store_cmk_of_the_same_site(resource_type, props, prop, path):
    s, h = eu_stack()
    base = {**props, **tags("internal")}
    good = s.add(resource_type, "own-key", _with_key(base, path, UNKNOWN), provider=h["eu"], deps={prop: [h["key"]]})
    none = s.add(resource_type, "no-key", base, provider=h["eu"])
    managed = s.add(resource_type, "aws-managed", _with_key(base, path, "alias/aws/kms"), provider=h["eu"])
    far = s.add(resource_type, "other-site-key", _with_key(base, path, UNKNOWN), provider=h["eu"],
                deps={prop: [h["dr_key"]]})
    literal = s.add(resource_type, "literal-arn", _with_key(base, path, "arn:aws:kms:eu-central-1:1:key/x"),
                    provider=h["eu"])
    rule = "encryption-data-store-cmk"
    assert pairs(run(rule, s)) == {(rule, none.urn), (rule, managed.urn), (rule, far.urn), (rule, literal.urn)}
    assert good.urn not in {v.urn for v in run(rule, s)}


def test_data_store_cmk_extras_performance_insights_and_auth_token():
    s, h = eu_stack()
    rule = "encryption-data-store-cmk"
    pi_default_key = s.add("aws:rds/cluster:Cluster", "pi", {
        "engine": "aurora-postgresql", "storageEncrypted": True, "kmsKeyId": UNKNOWN, "performanceInsightsEnabled": True,
        **tags("internal")}, provider=h["eu"], deps={"kmsKeyId": [h["key"]]})
    s.add("aws:rds/cluster:Cluster", "pi-ok", {
        "engine": "aurora-postgresql", "storageEncrypted": True, "kmsKeyId": UNKNOWN, "performanceInsightsEnabled": True,
        "performanceInsightsKmsKeyId": UNKNOWN, **tags("internal")}, provider=h["eu"],
        deps={"kmsKeyId": [h["key"]], "performanceInsightsKmsKeyId": [h["key"]]})
    no_auth = s.add("aws:elasticache/replicationGroup:ReplicationGroup", "no-auth", {
        "atRestEncryptionEnabled": True, "transitEncryptionEnabled": True, "kmsKeyId": UNKNOWN, **tags("internal")},
        provider=h["eu"], deps={"kmsKeyId": [h["key"]]})
    sse_only = s.add("aws:sqs/queue:Queue", "sqs-managed", {"sqsManagedSseEnabled": True, **tags("internal")},
                     provider=h["eu"])
    volume = s.add("aws:ebs/volume:Volume", "vol", {"encrypted": True, "kmsKeyId": UNKNOWN, **tags("internal")},
                   provider=h["eu"], deps={"kmsKeyId": [h["key"]]})
    s.add("aws:ebs/snapshot:Snapshot", "snap", {"volumeId": UNKNOWN, **tags("internal")}, provider=h["eu"],
          deps={"volumeId": [volume]})
    orphan = s.add("aws:ebs/snapshot:Snapshot", "orphan-snap", {"volumeId": "vol-123", **tags("internal")},
                   provider=h["eu"])
    assert pairs(run(rule, s)) == {(rule, pi_default_key.urn), (rule, no_auth.urn), (rule, sse_only.urn),
                                   (rule, orphan.urn)}


# --- logs are data ---------------------------------------------------------------------------------------------

def test_control_plane_and_flow_log_destinations():
    rule = "residency-log-destinations"
    stack, h = compliant_stack()
    assert run(rule, stack) == []
    s, h = eu_stack()
    eks = s.add("aws:eks/cluster:Cluster", "no-group", {"name": "no-group", "enabledClusterLogTypes": ["audit"]},
                provider=h["eu"])
    s.add("aws:eks/cluster:Cluster", "no-logs", {"name": "no-logs"}, provider=h["eu"])
    far = s.add("aws:eks/cluster:Cluster", "far", {"name": "far", "enabledClusterLogTypes": ["audit"]},
                provider=h["eu"])
    s.add("aws:cloudwatch/logGroup:LogGroup", "far-logs", {"name": "/aws/eks/far/cluster", **tags("confidential")},
          provider=h["dr"])
    low = bucket_bundle(s, "public-logs", "public", h["eu"], h["key"])["bucket"]
    dr_bucket = bucket_bundle(s, "dr-logs", "internal", h["dr"], h["dr_key"])["bucket"]
    ok_bucket = bucket_bundle(s, "ok-logs", "confidential", h["eu"], h["key"])["bucket"]
    ok = s.add("aws:ec2/flowLog:FlowLog", "ok", {"logDestination": UNKNOWN, "logDestinationType": "s3",
                                                  **tags("internal")}, provider=h["eu"],
               deps={"logDestination": [ok_bucket]})
    to_low = s.add("aws:ec2/flowLog:FlowLog", "to-low", {"logDestination": UNKNOWN, "logDestinationType": "s3",
                                                          **tags("internal")}, provider=h["eu"],
                   deps={"logDestination": [low]})
    to_dr = s.add("aws:ec2/flowLog:FlowLog", "to-dr", {"logDestination": UNKNOWN, "logDestinationType": "s3",
                                                        **tags("internal")}, provider=h["eu"],
                  deps={"logDestination": [dr_bucket]})
    outside = s.add("aws:ec2/flowLog:FlowLog", "outside", {
        "logDestination": "arn:aws:s3:::somebody-elses", "logDestinationType": "s3", **tags("internal")},
        provider=h["eu"])
    untagged = s.add("aws:ec2/flowLog:FlowLog", "untagged", {"logDestination": UNKNOWN, "logDestinationType": "s3"},
                     provider=h["eu"], deps={"logDestination": [ok_bucket]})
    assert pairs(run(rule, s)) == {(rule, eks.urn), (rule, far.urn), (rule, to_low.urn), (rule, to_dr.urn),
                                   (rule, outside.urn), (rule, untagged.urn)}
    assert ok.urn not in {v.urn for v in run(rule, s)}


def test_log_groups_are_data_stores_for_residency():
    s, h = eu_stack()
    us = s.aws_provider("us-aws", "us-east-1")
    far = s.add("aws:cloudwatch/logGroup:LogGroup", "us-logs", {"name": "/x", **tags("confidential")}, provider=us)
    untagged = s.add("aws:cloudwatch/logGroup:LogGroup", "untagged", {"name": "/y"}, provider=h["eu"])
    assert pairs(run("residency-aws-data-site", s)) == {("residency-aws-data-site", far.urn)}
    assert ("residency-classification-required", untagged.urn) in pairs(run("residency-classification-required", s))


# --- IMDS hop limit ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,violates", [
    ({"httpTokens": "required", "httpPutResponseHopLimit": 1}, False),
    ({"httpTokens": "required", "httpPutResponseHopLimit": 2}, True),
    ({"httpTokens": "required"}, True),
    ({"httpTokens": "required", "httpPutResponseHopLimit": UNKNOWN}, True),
    ({"httpEndpoint": "disabled"}, False),
])
def test_imds_hop_limit(options, violates):
    s, h = eu_stack()
    template = s.add("aws:ec2/launchTemplate:LaunchTemplate", "lt", {"metadataOptions": options}, provider=h["eu"])
    instance = s.add("aws:ec2/instance:Instance", "vm", {"metadataOptions": options}, provider=h["eu"])
    rule = "network-imds-hop-limit"
    assert pairs(run(rule, s)) == ({(rule, template.urn), (rule, instance.urn)} if violates else set())


def test_every_new_rule_has_a_control_mapping():
    from finml_rules.config import all_policy_names
    from finml_rules.controls import controls_for, mapped_rules

    assert set(mapped_rules()) == set(all_policy_names())
    for rule in ("k8s-no-privilege-escalation", "encryption-data-store-cmk", "network-imds-hop-limit",
                 "residency-log-destinations"):
        assert controls_for(rule), rule
    assert {"framework": "cis-aws", "id": "5.6", "title": "Ensure that EC2 Metadata Service only allows IMDSv2"} in \
        controls_for("network-imdsv2-required")
    assert all(c["framework"] != "gdpr" for c in controls_for("k8s-seccomp-profile"))
    assert {"framework": "gdpr", "id": "Art. 44", "title": "General principle for transfers"} in \
        controls_for("residency-aws-data-site")
    assert CONFIG  # the harness config covers the new rules too
    assert HARDENED and ACCOUNT_KEY_POLICY


def test_readme_coverage_matrix_matches_controls():
    from pathlib import Path

    from finml_rules.config import all_policy_names
    from finml_rules.controls import coverage_matrix_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert coverage_matrix_markdown(all_policy_names()) in readme
