"""TrainingAws: the AWS identity of training runs on an EKS site — the IRSA role of the `finml-training` service
account.

Only `system:serviceaccount:finml-training:finml-training` of the site's cluster can assume it (web identity from the
cluster's OIDC provider, audience sts.amazonaws.com). It grants, per classification the site holds (the same set as
the checkpoint claims), in that classification's data bucket only:

- `training-sets/` — read: point-in-time training sets (parquet + lineage) exported from the feature store;
- `training/` — read and write, no delete: checkpoints and run artifacts a run copies out of its EFS claim (the bucket
  is versioned; clean-up is the bucket owner's lifecycle, not the trainer's);
- listing of those two prefixes only;
- kms:Decrypt / kms:GenerateDataKey on that classification's CMK of this site, only when S3 in the site's region asks
  for it on behalf of the run, for that bucket (S3 Bucket Keys: the encryption context is the bucket's ARN).

No other AWS API: checkpoints live on the EFS claim (mounted by the CSI driver, not by the run's identity), and model
artifacts go through the model registry's artifact proxy (MLflow `--serve-artifacts`), whose own role writes S3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import naming
from components.gpu_cluster import irsa_trust_policy
from finml.config import classification_rank, region_of
from workloads.cluster_base import TRAINING_NAMESPACE
from workloads.training_job import SERVICE_ACCOUNT

TYPE_TOKEN = "finml:workloads:TrainingAws"
#: Prefixes of a classification's data bucket the training runs use.
TRAINING_SET_PREFIX = "training-sets"
OUTPUT_PREFIX = "training"
READ_ACTIONS = ("s3:GetObject",)
WRITE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
KMS_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


@dataclass(frozen=True)
class TrainingAwsArgs:
    site: str
    stack: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    buckets: Mapping[str, pulumi.Input[str]]
    """Classification → name of the site's data bucket of that classification (Storage.bucket_names)."""
    key_arns: Mapping[str, pulumi.Input[str]]
    """Classification → the site's CMK of that classification (EncryptionKeys.key_arns): the bucket's SSE-KMS key."""
    namespace: str = TRAINING_NAMESPACE
    service_account: str = SERVICE_ACCOUNT
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.buckets:
            raise ValueError(f"training on {self.site}: the IRSA role needs at least one classification's bucket")
        missing = sorted(set(self.buckets) - set(self.key_arns))
        if missing:
            raise ValueError(f"training on {self.site}: no key ARN for the bucket(s) of {', '.join(missing)}; "
                             f"keys: {', '.join(sorted(self.key_arns)) or 'none'}")


def training_access_policy(region: str, buckets_and_keys: Mapping[str, tuple[str, str]]) -> str:
    """The role's inline policy from known values: classification → (bucket name, key ARN)."""
    statements: list[dict[str, Any]] = []
    for classification in sorted(buckets_and_keys, key=classification_rank):
        bucket, key_arn = buckets_and_keys[classification]
        sid = classification.capitalize()
        bucket_arn = f"arn:aws:s3:::{bucket}"
        statements += [
            {"Sid": f"List{sid}TrainingPrefixes", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{TRAINING_SET_PREFIX}/*", f"{OUTPUT_PREFIX}/*"]}}},
            {"Sid": f"Read{sid}TrainingSets", "Effect": "Allow", "Action": list(READ_ACTIONS),
             "Resource": f"{bucket_arn}/{TRAINING_SET_PREFIX}/*"},
            {"Sid": f"Write{sid}TrainingOutputs", "Effect": "Allow", "Action": list(WRITE_ACTIONS),
             "Resource": f"{bucket_arn}/{OUTPUT_PREFIX}/*"},
            {"Sid": f"Use{sid}KeyViaS3", "Effect": "Allow", "Action": list(KMS_ACTIONS), "Resource": key_arn,
             "Condition": {
                 "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
                 # Bucket Keys: S3 asks KMS with the bucket's ARN; per-object keys would carry the object's.
                 "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                     bucket_arn, f"{bucket_arn}/{TRAINING_SET_PREFIX}/*", f"{bucket_arn}/{OUTPUT_PREFIX}/*"]},
             }},
        ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


class TrainingAws(pulumi.ComponentResource):
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: TrainingAwsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, {"site": args.site, "classifications": sorted(args.buckets)}, opts)
        self._name = name
        self._args = args
        self._create_role()
        self._create_policy()
        self.role_arn = self.role.arn
        self.register_outputs({"role_arn": self.role_arn})

    def _create_role(self) -> None:
        a = self._args
        role_name = naming.child_name(self._name, "role")
        self.role = aws.iam.Role(
            role_name,
            description=f"finml training runs ({a.namespace}/{a.service_account}, IRSA) on {a.site}",
            assume_role_policy=pulumi.Output.all(a.oidc_provider_arn, a.oidc_issuer_url).apply(
                lambda v: irsa_trust_policy(v[0], v[1], a.namespace, a.service_account)),
            tags=naming.aws_tags(a.site, a.stack, extra={**a.extra_tags, "finml:component": "training"},
                                 name=role_name),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_policy(self) -> None:
        a = self._args
        classifications = sorted(a.buckets, key=classification_rank)
        region = region_of(a.site)
        values = pulumi.Output.all(*(a.buckets[c] for c in classifications), *(a.key_arns[c] for c in classifications))

        def policy(v: list[str]) -> str:
            n = len(classifications)
            return training_access_policy(region, {c: (v[i], v[n + i]) for i, c in enumerate(classifications)})

        self.role_policy = aws.iam.RolePolicy(
            naming.child_name(self._name, "data-access"),
            role=self.role.id,
            policy=values.apply(policy),
            opts=pulumi.ResourceOptions(parent=self.role),
        )
