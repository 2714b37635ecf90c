"""Storage: per classification an SSE-KMS, versioned, private, TLS-only S3 data bucket with access logging; optional
replication to exactly `storage.replicate_to`; EBS encryption by default with the site's CMK; an encrypted EFS
training file system reachable only from the node security group.

`secure_bucket` is the one way buckets are made in finml (the network's flow-log bucket uses it too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import naming
from components.encryption import pick_classification
from finml.config import StorageConfig, classification_rank, region_of

TYPE_TOKEN = "finml:storage:Storage"
LOG_CLASSIFICATION = "internal"
NFS_PORT = 2049


# ---------------------------------------------------------------------------------------------------------------
# The secure bucket helper
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SecureBucket:
    bucket: aws.s3.Bucket
    encryption: aws.s3.BucketServerSideEncryptionConfiguration
    versioning: aws.s3.BucketVersioning
    public_access_block: aws.s3.BucketPublicAccessBlock
    policy: aws.s3.BucketPolicy
    logging: aws.s3.BucketLogging | None


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},  # a Deny on every principal is the documented TLS-only pattern, not a grant
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def secure_bucket(
    name: str,
    *,
    parent: pulumi.Resource,
    site: str,
    stack: str,
    account_id: str,
    classification: str,
    kms_key_arn: pulumi.Input[str],
    extra_tags: Mapping[str, str] | None = None,
    provider: aws.Provider | None = None,
    log_bucket: pulumi.Input[str] | None = None,
    log_prefix: str = "",
    extra_policy_statements: Any = None,
    object_lock_enabled: bool = False,
) -> SecureBucket:
    """A bucket that is private, versioned, SSE-KMS with a CMK (bucket key on) and TLS-only.

    `extra_policy_statements` is `(bucket_arn) -> list[statement]` for service delivery grants. The bucket policy
    depends on the public access block so that a policy is never briefly applied to a bucket without the block.
    """
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    physical_name = naming.bucket_name(stack, name, account_id)
    bucket = aws.s3.Bucket(
        name,
        bucket=physical_name,
        force_destroy=False,
        object_lock_enabled=object_lock_enabled or None,
        tags=naming.aws_tags(site, stack, classification, dict(extra_tags or {}), name=name),
        opts=opts,
    )
    ownership = aws.s3.BucketOwnershipControls(
        naming.child_name(name, "ownership"),
        bucket=bucket.id,
        rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        opts=opts,
    )
    encryption = aws.s3.BucketServerSideEncryptionConfiguration(
        naming.child_name(name, "sse"),
        bucket=bucket.id,
        rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
            apply_server_side_encryption_by_default=(
                aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=kms_key_arn)),
            bucket_key_enabled=True,
        )],
        opts=opts,
    )
    versioning = aws.s3.BucketVersioning(
        naming.child_name(name, "versioning"),
        bucket=bucket.id,
        versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
        opts=opts,
    )
    public_access_block = aws.s3.BucketPublicAccessBlock(
        naming.child_name(name, "public-access-block"),
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=opts,
    )

    def policy_json(arn: str) -> str:
        statements = [tls_only_statement(arn)]
        if extra_policy_statements is not None:
            statements.extend(extra_policy_statements(arn))
        return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)

    policy = aws.s3.BucketPolicy(
        naming.child_name(name, "policy"),
        bucket=bucket.id,
        # Built from the known name, not bucket.arn: the policy is then known at preview and the gate can check it.
        policy=policy_json(f"arn:aws:s3:::{physical_name}"),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=[public_access_block, ownership]),
    )
    logging = None
    if log_bucket is not None:
        logging = aws.s3.BucketLogging(
            naming.child_name(name, "logging"),
            bucket=bucket.id,
            target_bucket=log_bucket,
            target_prefix=log_prefix or f"{name}/",
            opts=opts,
        )
    return SecureBucket(bucket, encryption, versioning, public_access_block, policy, logging)


def s3_access_log_delivery_statements(account_id: str, source_bucket_arn_prefix: str):
    """Bucket-policy grant for S3 server access log delivery (ACLs are disabled), scoped to this account."""

    def statements(arn: str) -> list[dict[str, Any]]:
        return [{
            "Sid": "S3ServerAccessLogsDelivery",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": f"{arn}/*",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": source_bucket_arn_prefix},
            },
        }]

    return statements


# ---------------------------------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StorageArgs:
    site: str
    stack: str
    account_id: str
    classifications: Sequence[str]
    key_arns: Mapping[str, pulumi.Input[str]]
    """Classification → CMK ARN in this site's region (EncryptionKeys.key_arns)."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    replica_key_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Classification → replica key ARN in `storage.replicate_to` (EncryptionKeys.replica_key_arns)."""
    replica_provider: aws.Provider | None = None
    """Provider of `storage.replicate_to`; required when replicating."""
    node_subnet_ids: pulumi.Input[Sequence[str]] | None = None
    """Subnets for EFS mount targets (the network's node subnets); None on a replica-only site."""
    node_subnet_count: int = 0
    node_security_group_id: pulumi.Input[str] | None = None
    vpc_id: pulumi.Input[str] | None = None
    object_lock_enabled: bool = False
    """Opt-in S3 Object Lock on data buckets (WORM retention)."""
    ebs_encryption_by_default: bool = True
    """Opt-out (explicit): leave the region's EBS default encryption unmanaged."""
    extra_tags: Mapping[str, str] = field(default_factory=dict)


class Storage(pulumi.ComponentResource):
    data_buckets: dict[str, aws.s3.Bucket]
    replica_buckets: dict[str, aws.s3.Bucket]
    access_log_bucket: aws.s3.Bucket
    file_system: aws.efs.FileSystem | None
    bucket_names: dict[str, pulumi.Output[str]]
    file_system_id: pulumi.Output[str] | None

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._name = name
        self._args = args
        missing = [c for c in args.classifications if c not in args.key_arns]
        if missing:
            raise ValueError(f"{name}: no key ARN for classification(s) {', '.join(missing)}")
        self._replicate_to = args.storage.replicate_to
        if self._replicate_to is not None:
            if args.replica_provider is None:
                raise ValueError(f"{name}: replicating to {self._replicate_to!r} needs replica_provider")
            missing = [c for c in args.classifications if c not in args.replica_key_arns]
            if missing:
                raise ValueError(f"{name}: no replica key in {self._replicate_to} for {', '.join(missing)}")

        self._create_access_log_bucket()
        self._create_data_buckets()
        self._create_replication()
        self._create_ebs_defaults()
        self._create_file_system()

        self.bucket_names = {c: b.bucket for c, b in self.data_buckets.items()}
        self.file_system_id = self.file_system.id if self.file_system is not None else None
        self.register_outputs({
            "bucket_names": self.bucket_names,
            "access_log_bucket": self.access_log_bucket.bucket,
            "replica_bucket_names": {c: b.bucket for c, b in self.replica_buckets.items()},
            "file_system_id": self.file_system_id,
        })

    def _highest(self) -> str:
        return max(self._args.classifications, key=classification_rank)

    def _create_access_log_bucket(self) -> None:
        args = self._args
        log_key = args.key_arns[pick_classification(list(args.classifications), LOG_CLASSIFICATION)]
        self.access_log_bucket = secure_bucket(
            naming.child_name(self._name, "access-logs"),
            parent=self, site=args.site, stack=args.stack, account_id=args.account_id, classification=LOG_CLASSIFICATION,
            kms_key_arn=log_key, extra_tags=args.extra_tags,
            extra_policy_statements=s3_access_log_delivery_statements(args.account_id, "arn:aws:s3:::*"),
        ).bucket

    def _create_data_buckets(self) -> None:
        args = self._args
        self.data_buckets = {}
        self._data_versioning: dict[str, aws.s3.BucketVersioning] = {}
        for classification in sorted(set(args.classifications), key=classification_rank):
            made = secure_bucket(
                naming.child_name(self._name, "data", classification),
                parent=self, site=args.site, stack=args.stack, account_id=args.account_id, classification=classification,
                kms_key_arn=args.key_arns[classification], extra_tags=args.extra_tags,
                log_bucket=self.access_log_bucket.id, object_lock_enabled=args.object_lock_enabled,
            )
            self.data_buckets[classification] = made.bucket
            self._data_versioning[classification] = made.versioning

    def _create_replication(self) -> None:
        """Replicate each data bucket to `storage.replicate_to` only; residency is the policy pack's call."""
        args = self._args
        self.replica_buckets = {}
        target = self._replicate_to
        if target is None:
            return
        replica_classifications = list(args.replica_key_arns)
        replica_log_key = args.replica_key_arns[pick_classification(replica_classifications, LOG_CLASSIFICATION)]
        replica_logs = secure_bucket(
            naming.child_name(self._name, "replica-access-logs"),
            parent=self, site=target, stack=args.stack, account_id=args.account_id, classification=LOG_CLASSIFICATION,
            kms_key_arn=replica_log_key, extra_tags=args.extra_tags, provider=args.replica_provider,
            extra_policy_statements=s3_access_log_delivery_statements(args.account_id, "arn:aws:s3:::*"),
        ).bucket
        role = aws.iam.Role(
            naming.child_name(self._name, "replication-role"),
            description=f"S3 replication {args.site} -> {target}",
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": args.account_id}},
            }]}),
            tags=naming.aws_tags(args.site, args.stack, extra=dict(args.extra_tags)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        source_region, target_region = region_of(args.site), region_of(target)
        for classification, source in self.data_buckets.items():
            replica = secure_bucket(
                naming.child_name(self._name, "replica", classification),
                parent=self, site=target, stack=args.stack, account_id=args.account_id, classification=classification,
                kms_key_arn=args.replica_key_arns[classification],
                extra_tags={**args.extra_tags, "finml:replica-of": args.site},
                provider=args.replica_provider, log_bucket=replica_logs.id,
                object_lock_enabled=args.object_lock_enabled,
            )
            self.replica_buckets[classification] = replica.bucket
            policy = pulumi.Output.all(
                source.arn, replica.bucket.arn, args.key_arns[classification], args.replica_key_arns[classification]
            ).apply(lambda v, sr=source_region, tr=target_region: json.dumps({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                     "Resource": v[0]},
                    {"Effect": "Allow",
                     "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                "s3:GetObjectVersionTagging"],
                     "Resource": f"{v[0]}/*"},
                    {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                     "Resource": f"{v[1]}/*"},
                    {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": v[2],
                     "Condition": {"StringEquals": {"kms:ViaService": f"s3.{sr}.amazonaws.com"}}},
                    {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": v[3],
                     "Condition": {"StringEquals": {"kms:ViaService": f"s3.{tr}.amazonaws.com"}}},
                ],
            }, sort_keys=True))
            role_policy = aws.iam.RolePolicy(
                naming.child_name(self._name, "replication-policy", classification),
                role=role.id,
                policy=policy,
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws.s3.BucketReplicationConfig(
                naming.child_name(self._name, "replication", classification),
                bucket=source.id,
                role=role.arn,
                rules=[aws.s3.BucketReplicationConfigRuleArgs(
                    id=f"replicate-to-{naming.slug(target)}",
                    status="Enabled",
                    filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
                    delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                        status="Enabled"),
                    source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                        sse_kms_encrypted_objects=(
                            aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                                status="Enabled"))),
                    destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                        bucket=replica.bucket.arn,
                        storage_class="STANDARD",
                        encryption_configuration=(
                            aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                                replica_kms_key_id=args.replica_key_arns[classification])),
                    ),
                )],
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self._data_versioning[classification], replica.versioning, role_policy]),
            )

    def _create_ebs_defaults(self) -> None:
        args = self._args
        self.ebs_encryption = None
        if not args.ebs_encryption_by_default:
            return
        self.ebs_encryption = aws.ebs.EncryptionByDefault(
            naming.child_name(self._name, "ebs-encryption-by-default"),
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ebs.DefaultKmsKey(
            naming.child_name(self._name, "ebs-default-key"),
            key_arn=args.key_arns[self._highest()],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_file_system(self) -> None:
        args = self._args
        self.file_system = None
        if args.storage.training_filesystem != "efs" or args.node_subnet_ids is None:
            return
        if args.node_security_group_id is None or args.vpc_id is None:
            raise ValueError(f"{self._name}: the EFS file system needs vpc_id and node_security_group_id")
        classification = self._highest()  # training data may be of any classification held here
        fs_name = naming.child_name(self._name, "training-fs")
        self.file_system = aws.efs.FileSystem(
            fs_name,
            encrypted=True,
            kms_key_id=args.key_arns[classification],
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            tags=naming.aws_tags(args.site, args.stack, classification, dict(args.extra_tags), name=fs_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.efs.FileSystemPolicy(
            naming.child_name(fs_name, "policy"),
            file_system_id=self.file_system.id,
            policy=self.file_system.arn.apply(lambda arn: json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": {"AWS": "*"},
                    "Action": "*", "Resource": arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }, {
                    # A file system policy replaces EFS's default allow: grant mount and write, via mount targets only
                    # (which the security group limits to the node security group).
                    "Sid": "MountViaMountTargetsOnly", "Effect": "Allow", "Principal": {"AWS": "*"},
                    "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"], "Resource": arn,
                    "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
                }],
            }, sort_keys=True)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        sg_name = naming.child_name(fs_name, "sg")
        self.file_system_security_group = aws.ec2.SecurityGroup(
            sg_name,
            description="EFS training file system: NFS from GPU nodes only",
            vpc_id=args.vpc_id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=NFS_PORT, to_port=NFS_PORT,
                security_groups=[args.node_security_group_id], description="NFS from the node security group",
            )],
            egress=[],
            tags=naming.aws_tags(args.site, args.stack, extra=dict(args.extra_tags), name=sg_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        subnet_ids = pulumi.Output.from_input(args.node_subnet_ids)
        for i in range(args.node_subnet_count):
            aws.efs.MountTarget(
                naming.child_name(fs_name, "mount", str(i)),
                file_system_id=self.file_system.id,
                subnet_id=subnet_ids.apply(lambda ids, i=i: ids[i]),
                security_groups=[self.file_system_security_group.id],
                opts=pulumi.ResourceOptions(parent=self),
            )
