"""EncryptionKeys: one customer-managed KMS key per (site, classification), plus replica keys for replication targets.

Keys stay in their region (`multi_region=False`) unless the site's storage replicates to another site; only then are
the primary keys multi-Region and a `aws.kms.ReplicaKey` is created in the target region, with the target site's
provider and the classification tag, so the policy pack sees every copy of key material.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components import naming
from finml.config import classification_rank, region_of

TYPE_TOKEN = "finml:encryption:EncryptionKeys"
DEFAULT_DELETION_WINDOW_DAYS = 30
KEY_ADMIN_ACTIONS = ["kms:*"]
KEY_USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
# AWS services that use the keys through a principal of this account; scoped with kms:ViaService.
VIA_SERVICES = ("ec2", "s3", "eks", "elasticfilesystem", "logs")


def key_policy(account_id: str, region: str) -> str:
    """The key policy JSON: the account root (IAM delegation) and the services that need the key, never `"*"`.

    Service principals are scoped to this account with `aws:SourceAccount` (and `kms:ViaService` where AWS calls the
    key on behalf of an IAM principal), so no other account's resources can use the key through a confused deputy.
    """
    account_root = f"arn:aws:iam::{account_id}:root"
    statements = [
        {
            "Sid": "AccountRootAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": account_root},
            "Action": KEY_ADMIN_ACTIONS,
            "Resource": "*",
        },
        {
            "Sid": "AccountPrincipalsUseViaRegionalServices",
            "Effect": "Allow",
            "Principal": {"AWS": account_root},
            "Action": [*KEY_USE_ACTIONS, "kms:CreateGrant"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": account_id,
                    "kms:ViaService": [f"{svc}.{region}.amazonaws.com" for svc in VIA_SERVICES],
                }
            },
        },
        {
            # EKS managed node groups launch through the Auto Scaling service-linked role, whose policy cannot be
            # edited; without this, instances with CMK-encrypted root volumes fail to launch.
            "Sid": "AutoScalingUsesKeyForEncryptedVolumes",
            "Effect": "Allow",
            "Principal": {"AWS": autoscaling_service_role_arn(account_id)},
            "Action": KEY_USE_ACTIONS,
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": f"ec2.{region}.amazonaws.com"}},
        },
        {
            "Sid": "AutoScalingCreatesGrantsForAwsResources",
            "Effect": "Allow",
            "Principal": {"AWS": autoscaling_service_role_arn(account_id)},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
        {
            # VPC flow logs delivered to an SSE-KMS bucket.
            "Sid": "LogDeliveryEncryptsFlowLogs",
            "Effect": "Allow",
            "Principal": {"Service": "delivery.logs.amazonaws.com"},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": f"arn:aws:logs:{region}:{account_id}:*"},
            },
        },
        {
            # S3 server access logs delivered to an SSE-KMS bucket.
            "Sid": "S3LoggingEncryptsAccessLogs",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": ["kms:GenerateDataKey*", "kms:Encrypt"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        },
        {
            # CloudWatch Logs groups encrypted with the key (EKS control-plane logs).
            "Sid": "CloudWatchLogsEncryptsLogGroups",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": KEY_USE_ACTIONS,
            "Resource": "*",
            "Condition": {
                "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account_id}:log-group:*"}
            },
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Id": "finml-key-policy", "Statement": statements}, sort_keys=True)


def autoscaling_service_role_arn(account_id: str) -> str:
    return (f"arn:aws:iam::{account_id}:role/aws-service-role/autoscaling.amazonaws.com/"
            "AWSServiceRoleForAutoScaling")


def alias_name(stack: str, classification: str) -> str:
    return f"alias/finml/{naming.slug(stack)}/{classification}"


def replica_alias_name(stack: str, classification: str, source_site: str) -> str:
    # The replica region may be a declared site holding the same classification: its own alias must stay free.
    return f"alias/finml/{naming.slug(stack)}/{classification}/replica-of-{naming.slug(region_of(source_site))}"


def pick_classification(available: Sequence[str], wanted: str) -> str:
    """The lowest available classification at or above `wanted`; else the highest available one.

    Used where a resource has a fixed classification (logs are `internal`) but the site may not hold a key for it:
    encrypting with a key of a higher classification is never weaker.
    """
    ordered = sorted(available, key=classification_rank)
    for classification in ordered:
        if classification_rank(classification) >= classification_rank(wanted):
            return classification
    return ordered[-1]


@dataclass
class EncryptionKeysArgs:
    site: str
    """Site of the keys, `aws:<region>`; the component's provider must be this site's provider."""
    stack: str
    classifications: Sequence[str]
    """One key per classification."""
    account_id: str
    """AWS account id named in the key policies (no invokes: offline preview has no AWS)."""
    replicate_to: str | None = None
    """Site (`aws:<region>`) that receives replicas of every key; needs `replica_provider`."""
    replica_provider: aws.Provider | None = None
    deletion_window_in_days: int = DEFAULT_DELETION_WINDOW_DAYS
    multi_region: bool = False
    """Opt-in for multi-Region primaries without replicas; replication turns it on for the replicated keys."""
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()
    """Account prerequisites the key policies name (the Auto Scaling service-linked role)."""
    protect: bool = True
    """Keys guard data: `pulumi destroy` must not remove one by accident (unprotect explicitly first)."""


class EncryptionKeys(pulumi.ComponentResource):
    keys: dict[str, aws.kms.Key]
    key_arns: dict[str, pulumi.Output[str]]
    aliases: dict[str, aws.kms.Alias]
    replica_keys: dict[str, aws.kms.ReplicaKey]
    replica_key_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: EncryptionKeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._name = name
        self._args = args
        if not args.classifications:
            raise ValueError(f"{name}: EncryptionKeys needs at least one classification")
        if args.replicate_to is not None and args.replica_provider is None:
            raise ValueError(f"{name}: replicate_to={args.replicate_to!r} needs replica_provider "
                             "(that site's provider)")

        self._create_keys()
        self._create_replicas()

        self.key_arns = {c: k.arn for c, k in self.keys.items()}
        self.replica_key_arns = {c: k.arn for c, k in self.replica_keys.items()}
        self.register_outputs({
            "key_arns": self.key_arns,
            "replica_key_arns": self.replica_key_arns,
        })

    # -- helpers used by other components ------------------------------------------------------------------------

    def key_for(self, classification: str) -> aws.kms.Key:
        """The key for `classification`, or the next higher one held at this site (see pick_classification)."""
        return self.keys[pick_classification(list(self.keys), classification)]

    def highest_classification(self) -> str:
        return max(self.keys, key=classification_rank)

    # -- children ------------------------------------------------------------------------------------------------

    def _create_keys(self) -> None:
        args = self._args
        region = region_of(args.site)
        self.keys = {}
        self.aliases = {}
        for classification in sorted(set(args.classifications), key=classification_rank):
            key_name = naming.child_name(self._name, "key", classification)
            key = aws.kms.Key(
                key_name,
                description=f"finml {args.stack} {args.site} {classification} data",
                key_usage="ENCRYPT_DECRYPT",
                customer_master_key_spec="SYMMETRIC_DEFAULT",
                enable_key_rotation=True,
                deletion_window_in_days=args.deletion_window_in_days,
                multi_region=args.multi_region or args.replicate_to is not None,
                policy=key_policy(args.account_id, region),
                tags=naming.aws_tags(args.site, args.stack, classification, dict(args.extra_tags), name=key_name),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on), protect=args.protect),
            )
            self.keys[classification] = key
            self.aliases[classification] = aws.kms.Alias(
                naming.child_name(self._name, "alias", classification),
                name=alias_name(args.stack, classification),
                target_key_id=key.key_id,
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _create_replicas(self) -> None:
        args = self._args
        self.replica_keys = {}
        if args.replicate_to is None:
            return
        target_region = region_of(args.replicate_to)
        for classification, key in self.keys.items():
            replica_name = naming.child_name(self._name, "replica-key", classification)
            replica = aws.kms.ReplicaKey(
                replica_name,
                description=f"finml {args.stack} replica of {args.site} {classification} key in {args.replicate_to}",
                primary_key_arn=key.arn,
                deletion_window_in_days=args.deletion_window_in_days,
                policy=key_policy(args.account_id, target_region),
                tags=naming.aws_tags(args.replicate_to, args.stack, classification,
                                     {**args.extra_tags, "finml:replica-of": args.site}, name=replica_name),
                opts=pulumi.ResourceOptions(parent=self, provider=args.replica_provider,
                                            depends_on=list(args.depends_on), protect=args.protect),
            )
            self.replica_keys[classification] = replica
            aws.kms.Alias(
                naming.child_name(self._name, "replica-alias", classification),
                name=replica_alias_name(args.stack, classification, args.site),
                target_key_id=replica.key_id,
                opts=pulumi.ResourceOptions(parent=self, provider=args.replica_provider),
            )
