"""The vocabulary the rules share: classifications, label and tag keys, resource type tokens, and where each
workload type keeps its pod template."""

from __future__ import annotations

# --- vocabulary -----------------------------------------------------------------------------------

CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
TAG_CLASSIFICATION = "finml:classification"
LABEL_CLASSIFICATION = "finml.io/classification"
LABEL_SITE = "finml.io/site"


def site_label_value(site: str) -> str:
    """Kubernetes label values cannot hold ':', so nodes of `onprem:fra-dc1` carry `finml.io/site=onprem-fra-dc1`."""
    return site.replace(":", "-")
LABEL_MODEL = "finml.io/model"
DEFAULT_EXEMPT_NAMESPACES: tuple[str, ...] = ("kube-system",)
# tls and random compute values into the Pulumi state only (keys, certificates, passwords as secrets): they place
# nothing anywhere, so there is no site to derive and no residency at stake.
DEFAULT_PROVIDER_PACKAGES: tuple[str, ...] = ("aws", "kubernetes", "command", "tls", "random")
CONFIG_HINT = "generate it with `finml policy config --stack NAME`"

AWS_PROVIDER = "pulumi:providers:aws"
K8S_PROVIDER = "pulumi:providers:kubernetes"
GPU_CLUSTER = "finml:compute:GpuCluster"
ONPREM_CLUSTER = "finml:compute:OnPremCluster"
CLUSTER_TYPES = (GPU_CLUSTER, ONPREM_CLUSTER)
DATASET = "finml:ml:Dataset"
MODEL = "finml:ml:Model"

S3_BUCKET = "aws:s3/bucket:Bucket"
S3_BUCKET_V2 = "aws:s3/bucketV2:BucketV2"  # deprecated alias still shipped by pulumi-aws 7.x
S3_BUCKET_TYPES = (S3_BUCKET, S3_BUCKET_V2)
S3_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
S3_SSE_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
S3_SSE_TYPES = (S3_SSE, S3_SSE_V2)
S3_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
S3_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
KMS_KEY = "aws:kms/key:Key"
KMS_REPLICA_KEY = "aws:kms/replicaKey:ReplicaKey"
KMS_ALIAS = "aws:kms/alias:Alias"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
KEY_TYPES = (KMS_KEY, KMS_REPLICA_KEY, KMS_ALIAS)
EBS_VOLUME = "aws:ebs/volume:Volume"
EBS_SNAPSHOT = "aws:ebs/snapshot:Snapshot"
EBS_SNAPSHOT_COPY = "aws:ebs/snapshotCopy:SnapshotCopy"
EBS_DEFAULT_ENCRYPTION = "aws:ebs/encryptionByDefault:EncryptionByDefault"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SUBNET = "aws:ec2/subnet:Subnet"
EFS = "aws:efs/fileSystem:FileSystem"
EFS_REPLICATION = "aws:efs/replicationConfiguration:ReplicationConfiguration"
FSX_LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ELASTICACHE_RG = "aws:elasticache/replicationGroup:ReplicationGroup"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
BACKUP_PLAN = "aws:backup/plan:Plan"
BACKUP_VAULT = "aws:backup/vault:Vault"
BACKUP_SELECTION = "aws:backup/selection:Selection"
DYNAMODB_TABLE = "aws:dynamodb/table:Table"
DYNAMODB_TABLE_REPLICA = "aws:dynamodb/tableReplica:TableReplica"

# Logs are data: control-plane and flow logs hold identities and addresses.
AWS_DATA_TYPES = (S3_BUCKET, S3_BUCKET_V2, EBS_VOLUME, EBS_SNAPSHOT_COPY, EFS, FSX_LUSTRE, RDS_INSTANCE, RDS_CLUSTER,
                  RDS_CLUSTER_INSTANCE, ELASTICACHE_RG, DYNAMODB_TABLE, LOG_GROUP)

K8S_NAMESPACE = "kubernetes:core/v1:Namespace"
K8S_PVC = "kubernetes:core/v1:PersistentVolumeClaim"
K8S_PV = "kubernetes:core/v1:PersistentVolume"
K8S_POD = "kubernetes:core/v1:Pod"
K8S_NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
K8S_CRONJOB = "kubernetes:batch/v1:CronJob"
K8S_POD_TEMPLATE = "kubernetes:core/v1:PodTemplate"

# workload type -> path of its pod template (metadata + spec); () for a Pod, whose own spec is the pod spec.
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {}
for _kind in ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet", "apps/v1:ReplicaSet",
              "batch/v1:Job", "core/v1:ReplicationController"):
    _TEMPLATE_PATHS[f"kubernetes:{_kind}"] = ("spec", "template")
_TEMPLATE_PATHS[K8S_CRONJOB] = ("spec", "jobTemplate", "spec", "template")
# Removed/deprecated API versions of the same workloads: still workloads (every pod rule checks them), and
# k8s-deprecated-api-kinds rejects them.
DEPRECATED_WORKLOAD_KINDS: tuple[str, ...] = (
    "extensions/v1beta1:Deployment", "extensions/v1beta1:DaemonSet", "extensions/v1beta1:ReplicaSet",
    "apps/v1beta1:Deployment", "apps/v1beta1:StatefulSet",
    "apps/v1beta2:Deployment", "apps/v1beta2:StatefulSet", "apps/v1beta2:DaemonSet", "apps/v1beta2:ReplicaSet",
)
for _kind in DEPRECATED_WORKLOAD_KINDS:
    _TEMPLATE_PATHS[f"kubernetes:{_kind}"] = ("spec", "template")
_TEMPLATE_PATHS["kubernetes:batch/v1beta1:CronJob"] = ("spec", "jobTemplate", "spec", "template")
DEPRECATED_WORKLOAD_TYPES: tuple[str, ...] = tuple(f"kubernetes:{k}" for k in DEPRECATED_WORKLOAD_KINDS) + (
    "kubernetes:batch/v1beta1:CronJob",)
_TEMPLATE_PATHS[K8S_POD_TEMPLATE] = ("template",)
_TEMPLATE_PATHS[K8S_POD] = ()
for _type, _path in list(_TEMPLATE_PATHS.items()):  # server-side-apply patches keep the pod spec in the same place
    _TEMPLATE_PATHS[_type + "Patch"] = _path
K8S_POD_TYPES = (K8S_POD, K8S_POD + "Patch")
K8S_WORKLOAD_TYPES = tuple(_TEMPLATE_PATHS)
K8S_DATA_TYPES = (K8S_PVC,) + K8S_WORKLOAD_TYPES
ML_TYPES = (DATASET, MODEL)
