"""Resource builders so policy fixtures read as data. Every builder returns the PolicyResource it added."""

from __future__ import annotations

import json
from typing import Any, Optional

from policy_harness import UNKNOWN, Stack, eks_props

KINDS = {
    "Deployment": "kubernetes:apps/v1:Deployment",
    "StatefulSet": "kubernetes:apps/v1:StatefulSet",
    "DaemonSet": "kubernetes:apps/v1:DaemonSet",
    "Job": "kubernetes:batch/v1:Job",
    "CronJob": "kubernetes:batch/v1:CronJob",
    "Pod": "kubernetes:core/v1:Pod",
}

ACCOUNT_KEY_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "kms:*",
     "Resource": "*"}]})


def tls_policy(bucket_name: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "tls-only", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket_name}", f"arn:aws:s3:::{bucket_name}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def tags(cls: Optional[str]) -> dict:
    return {} if cls is None else {"tags": {"finml:classification": cls}}


def kms_key(s: Stack, name: str, provider: Any, cls: Optional[str] = None, **props: Any) -> Any:
    base = {"enableKeyRotation": True, "policy": ACCOUNT_KEY_POLICY, **tags(cls)}
    base.update(props)
    return s.add("aws:kms/key:Key", name, base, provider=provider)


def sse_rule(algorithm: str = "aws:kms", key: Any = UNKNOWN, bucket_key: Any = True) -> dict:
    default = {"sseAlgorithm": algorithm}
    if key is not None:
        default["kmsMasterKeyId"] = key
    rule: dict = {"applyServerSideEncryptionByDefault": default}
    if bucket_key is not None:
        rule["bucketKeyEnabled"] = bucket_key
    return rule


def bucket_bundle(s: Stack, name: str, cls: Optional[str], provider: Any, key: Any, *, sse: bool = True,
                  pab: bool = True, tls: bool = True, sse_rules: Optional[list] = None,
                  pab_flags: Optional[dict] = None, bucket_policy: Any = None) -> dict:
    """A bucket with SSE-KMS (CMK ``key``), public access block and TLS-only policy, each switchable."""
    bucket = s.add("aws:s3/bucket:Bucket", name, {"bucket": name, **tags(cls)}, provider=provider)
    out = {"bucket": bucket}
    if sse:
        out["sse"] = s.add("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                           f"{name}-sse", {"bucket": UNKNOWN, "rules": sse_rules or [sse_rule()]}, provider=provider,
                           deps={"bucket": [bucket], "rules": [key] if key is not None else []})
    if pab:
        flags = {f: True for f in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")}
        flags.update(pab_flags or {})
        out["pab"] = s.add("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{name}-pab",
                           {"bucket": UNKNOWN, **flags}, provider=provider, deps={"bucket": [bucket]})
    if tls:
        out["policy"] = s.add("aws:s3/bucketPolicy:BucketPolicy", f"{name}-policy",
                              {"bucket": name, "policy": bucket_policy or tls_policy(name)}, provider=provider,
                              deps={"bucket": [bucket]})
    return out


#: Digest-pinned, so it passes k8s-image-pinned on any site (the image rule's own tests vary it).
PINNED_IMAGE = "finml/app@sha256:" + "0123456789abcdef" * 4
HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
CPU_MEMORY = {"cpu": "1", "memory": "1Gi"}


def container(name: str = "main", limits: Optional[dict] = None, requests: Optional[dict] = None,
              hardened: bool = True, **extra: Any) -> dict:
    """A container that passes the container-security rules (hardened securityContext, CPU and memory limits);
    ``securityContext`` entries are merged over the hardened ones, ``hardened=False`` starts from nothing."""
    if limits is not None and not isinstance(limits, dict):  # e.g. UNKNOWN: as given
        resources: dict = {"limits": limits}
    else:
        resources = {"limits": {**(CPU_MEMORY if hardened else {}), **(limits or {})}}
        if not resources["limits"]:
            del resources["limits"]
    if requests is not None:
        resources["requests"] = requests
    context = {**(HARDENED if hardened else {}), **extra.pop("securityContext", {})}
    if context:
        extra["securityContext"] = context
    extra.setdefault("image", PINNED_IMAGE)
    return {"name": name, "resources": resources, **extra}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod_spec(containers: Optional[list] = None, site: Optional[str] = "onprem:fra-dc1", **spec: Any) -> dict:
    body: dict = {"containers": containers if containers is not None else [container()],
                  "automountServiceAccountToken": False}
    if site is not None:
        # Label values cannot hold ':'; nodes carry the site encoded as `onprem-fra-dc1`.
        body["nodeSelector"] = {"finml.io/site": site.replace(":", "-")}
    body.update(spec)
    return body


def workload(s: Stack, kind: str, name: str, provider: Any, *, namespace: Any = "training",
             cls: Optional[str] = "restricted", labels: Optional[dict] = None, spec: Any = None,
             deps: Optional[dict] = None) -> Any:
    meta_labels = dict(labels or {})
    if cls is not None:
        meta_labels["finml.io/classification"] = cls
    metadata: dict = {"name": name, "labels": meta_labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    pod = spec if spec is not None else pod_spec()
    template = {"metadata": {"labels": {"app": name}}, "spec": pod}
    if kind == "Pod":
        body = {"spec": pod}
    elif kind == "CronJob":
        body = {"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}
    else:
        body = {"spec": {"template": template}}
    return s.add(KINDS[kind], name, {"metadata": metadata, **body}, provider=provider, deps=deps)


def namespace(s: Stack, name: str, provider: Any, pss: Any = "restricted", labels: Optional[dict] = None) -> Any:
    all_labels = dict(labels or {})
    if pss is not None:
        all_labels["pod-security.kubernetes.io/enforce"] = pss
    return s.add("kubernetes:core/v1:Namespace", f"{name}-ns", {"metadata": {"name": name, "labels": all_labels}},
                 provider=provider)


def default_deny(s: Stack, name: str, namespace_name: Any, provider: Any, types: Any = ("Ingress", "Egress"),
                 selector: Any = None, **spec: Any) -> Any:
    body = {"podSelector": {} if selector is None else selector, **spec}
    if types is not None:
        body["policyTypes"] = list(types) if isinstance(types, (list, tuple)) else types
    return s.add("kubernetes:networking.k8s.io/v1:NetworkPolicy", name,
                 {"metadata": {"name": name, "namespace": namespace_name}, "spec": body}, provider=provider)


def compliant_stack() -> tuple[Stack, dict]:
    """A hybrid stack (EKS in eu-central-1, DR in eu-west-1, on-prem fra-dc1) that passes every rule."""
    s, h = Stack(), {}
    eu = h["eu"] = s.aws_provider("eu-aws", "eu-central-1")
    dr = h["dr"] = s.aws_provider("dr-aws", "eu-west-1")
    key = h["key"] = kms_key(s, "data-key", eu)
    h["features"] = bucket_bundle(s, "finml-features", "confidential", eu, key)
    artifacts_key = h["artifacts_key"] = kms_key(s, "artifacts-key", eu, "internal", multiRegion=True)
    replica_key = h["replica_key"] = s.add("aws:kms/replicaKey:ReplicaKey", "artifacts-key-dr",
                                           {"primaryKeyArn": UNKNOWN, "policy": ACCOUNT_KEY_POLICY}, provider=dr,
                                           deps={"primaryKeyArn": [artifacts_key]})
    h["artifacts"] = bucket_bundle(s, "finml-artifacts", "internal", eu, artifacts_key)
    h["artifacts_dr"] = bucket_bundle(s, "finml-artifacts-dr", "internal", dr, replica_key)
    h["replication"] = s.add(
        "aws:s3/bucketReplicationConfig:BucketReplicationConfig", "artifacts-replication",
        {"bucket": UNKNOWN, "role": UNKNOWN, "rules": [{"id": "dr", "status": "Enabled", "destination": {
            "bucket": UNKNOWN, "encryptionConfiguration": {"replicaKmsKeyId": UNKNOWN}}}]},
        provider=eu, deps={"bucket": [h["artifacts"]["bucket"]],
                           "rules": [h["artifacts_dr"]["bucket"], replica_key]})
    h["volume"] = s.add("aws:ebs/volume:Volume", "scratch", {"encrypted": True, "kmsKeyId": UNKNOWN, "size": 100,
                                                              **tags("confidential")},
                        provider=eu, deps={"kmsKeyId": [key]})
    h["snapshot_copy"] = s.add("aws:ebs/snapshotCopy:SnapshotCopy", "scratch-copy",
                               {"encrypted": True, "kmsKeyId": UNKNOWN, "sourceRegion": "eu-central-1",
                                "sourceSnapshotId": "snap-1", **tags("confidential")},
                               provider=eu, deps={"kmsKeyId": [key]})
    h["launch_template"] = s.add("aws:ec2/launchTemplate:LaunchTemplate", "gpu-nodes", {
        "metadataOptions": {"httpTokens": "required", "httpEndpoint": "enabled", "httpPutResponseHopLimit": 1},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "kmsKeyId": UNKNOWN}}]},
        provider=eu, deps={"blockDeviceMappings": [key]})
    h["sg"] = s.add("aws:ec2/securityGroup:SecurityGroup", "nodes", {"ingress": [
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.0.0.0/8"]}]}, provider=eu)
    h["sg_rule"] = s.add("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "nodes-https",
                         {"securityGroupId": UNKNOWN, "cidrIpv4": "10.20.0.0/16", "ipProtocol": "tcp"}, provider=eu)
    h["subnet"] = s.add("aws:ec2/subnet:Subnet", "private-a", {"cidrBlock": "10.20.0.0/20",
                                                              "mapPublicIpOnLaunch": False}, provider=eu)
    gpu_cluster = h["gpu_cluster"] = s.add("finml:compute:GpuCluster", "eu", {})
    h["eks"] = s.add("aws:eks/cluster:Cluster", "eu-eks",
                     eks_props(encryptionConfig={"resources": ["secrets"], "provider": {"keyArn": UNKNOWN}},
                               name="eu-eks", enabledClusterLogTypes=["api", "audit", "authenticator"]),
                     provider=eu, parent=gpu_cluster, deps={"encryptionConfig": [key]})
    h["eks_k8s"] = s.k8s_provider("eu-k8s", gpu_cluster, h["eks"])
    h["eks_logs"] = s.add("aws:cloudwatch/logGroup:LogGroup", "eu-eks-logs", {
        "name": "/aws/eks/eu-eks/cluster", "kmsKeyId": UNKNOWN, "retentionInDays": 365, **tags("confidential")},
        provider=eu, deps={"kmsKeyId": [key]})
    h["flow_logs"] = bucket_bundle(s, "finml-flow-logs", "internal", eu, key)
    h["flow_log"] = s.add("aws:ec2/flowLog:FlowLog", "vpc-flow", {
        "logDestination": UNKNOWN, "logDestinationType": "s3", "trafficType": "ALL", "vpcId": UNKNOWN,
        **tags("internal")}, provider=eu, deps={"logDestination": [h["flow_logs"]["bucket"]]})
    h["db_params"] = s.add("aws:rds/parameterGroup:ParameterGroup", "registry-db-params", {
        "name": "registry-db-params", "family": "postgres16", "parameters": [{"name": "rds.force_ssl", "value": "1"}]},
        provider=eu)
    h["rds"] = s.add("aws:rds/instance:Instance", "registry-db", {
        "engine": "postgres", "parameterGroupName": UNKNOWN, "storageEncrypted": True, "kmsKeyId": UNKNOWN,
        "publiclyAccessible": False, **tags("confidential")},
        provider=eu, deps={"kmsKeyId": [key], "parameterGroupName": [h["db_params"]]})
    h["cache"] = s.add("aws:elasticache/replicationGroup:ReplicationGroup", "online-features",
                       {"atRestEncryptionEnabled": True, "transitEncryptionEnabled": True, "kmsKeyId": UNKNOWN,
                        "authToken": UNKNOWN, **tags("confidential")}, provider=eu, deps={"kmsKeyId": [key]})
    h["efs"] = s.add("aws:efs/fileSystem:FileSystem", "shared", {"encrypted": True, "kmsKeyId": UNKNOWN,
                                                                 **tags("internal")},
                     provider=eu, deps={"kmsKeyId": [key]})
    h["table"] = s.add("aws:dynamodb/table:Table", "feature-index", {
        "serverSideEncryption": {"enabled": True, "kmsKeyArn": UNKNOWN}, **tags("internal")},
        provider=eu, deps={"serverSideEncryption": [key]})
    h["backup"] = s.add("aws:backup/plan:Plan", "daily", {"rules": [{
        "ruleName": "daily", "targetVaultName": "primary", "schedule": "cron(0 3 * * ? *)",
        "copyActions": [{"destinationVaultArn": "arn:aws:backup:eu-central-1:111111111111:backup-vault:dr"}]}],
        **tags("confidential")}, provider=eu)
    dc1, dc1_k8s = s.onprem_cluster()
    h["dc1"], h["dc1_k8s"] = dc1, dc1_k8s
    h["training_ns"] = namespace(s, "training", dc1_k8s)
    h["deny"] = default_deny(s, "default-deny", "training", dc1_k8s)
    h["dataset"] = s.add("finml:ml:Dataset", "transactions", {"name": "transactions", "classification": "restricted",
                                                               "site": "onprem:fra-dc1"})
    h["model"] = s.add("finml:ml:Model", "fraud", {"name": "fraud", "trainedOn": ["transactions"],
                                                   "classification": "restricted"})
    h["serving"] = workload(s, "Deployment", "fraud-serving", dc1_k8s, labels={"finml.io/model": "fraud"},
                            spec=pod_spec([container("server", limits={"nvidia.com/gpu": 1})],
                                          tolerations=[GPU_TOLERATION]))
    h["training"] = workload(s, "Job", "fraud-train", dc1_k8s, spec=pod_spec(
        [container("trainer", limits={"nvidia.com/mig-1g.18gb": 1}, requests={"nvidia.com/mig-1g.18gb": 1})],
        tolerations=[GPU_TOLERATION]))
    h["pvc"] = s.add("kubernetes:core/v1:PersistentVolumeClaim", "checkpoints", {"metadata": {
        "name": "checkpoints", "namespace": "training", "labels": {"finml.io/classification": "restricted"}},
        "spec": {"accessModes": ["ReadWriteOnce"]}}, provider=dc1_k8s)
    h["feature_store"] = s.add("finml:workloads:FeatureStore", "features-dc1",
                               {"site": "onprem:fra-dc1", "classification": "restricted"})
    h["feature_offline"] = s.add("kubernetes:core/v1:PersistentVolumeClaim", "feature-offline", {"metadata": {
        "name": "feature-offline", "namespace": "training", "labels": {"finml.io/classification": "restricted"}},
        "spec": {"accessModes": ["ReadWriteOnce"]}}, provider=dc1_k8s, parent=h["feature_store"])
    h["feature_view"] = s.add("finml:ml:FeatureView", "customer-profile", {
        "name": "customer_profile", "classification": "restricted",
        "source": {"name": "customer_profile", "classification": "restricted",
                   "uri": "pvc://training/feature-offline/customer_profile.parquet"}}, parent=h["feature_store"])
    h["registry"] = s.add("finml:workloads:ModelRegistry", "registry-dc1",
                          {"site": "onprem:fra-dc1", "classification": "restricted"})
    h["registry_artifacts"] = s.add("kubernetes:core/v1:PersistentVolumeClaim", "registry-artifacts", {"metadata": {
        "name": "registry-artifacts", "namespace": "training", "labels": {"finml.io/classification": "restricted"}},
        "spec": {"accessModes": ["ReadWriteOnce"]}}, provider=dc1_k8s, parent=h["registry"])
    h["device_plugin"] = workload(s, "DaemonSet", "nvidia-device-plugin", dc1_k8s, namespace="kube-system", cls=None,
                                  spec=pod_spec([container("plugin", securityContext={"privileged": True})],
                                                site=None, volumes=[{"name": "dp",
                                                                     "hostPath": {"path": "/var/lib/kubelet"}}]))
    return s, h
