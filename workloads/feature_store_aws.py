"""FeatureStoreAws: the AWS half of a site's feature store — online store and offline-store access.

- Online store: an ElastiCache (Valkey) replication group in the data subnets; at-rest encryption under the site's
  CMK for the store's classification, in-transit encryption required, an AUTH token from pulumi-random (a Pulumi
  secret); multi-AZ with automatic failover in prod stacks; its security group admits only the node security group.
- Registry: none here — Feast's SQL registry is a database of its own (`feast_registry`, role `feast`) on the model
  registry's RDS instance of the site (`ModelRegistry`, `database_clients`); that instance's security group admits
  the node security group, where the feature server and the materialization job run.
- Offline store: Parquet under `feature-store/` in the classification's encrypted bucket, reached through IRSA roles
  for the feature server (read) and the materialization job (read; Feast's file offline store only reads) scoped to
  that prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import naming
from components.gpu_cluster import irsa_trust_policy

TYPE_TOKEN = "finml:workloads:FeatureStoreAws"
REDIS_PORT = 6379
OFFLINE_PREFIX = "feature-store"
DEFAULT_NODE_TYPE = "cache.r7g.large"
VALKEY_VERSION = "8.0"


@dataclass(frozen=True)
class FeatureStoreAwsArgs:
    site: str
    stack: str
    classification: str
    kms_key_arn: pulumi.Input[str]
    """The site's CMK for `classification` (ElastiCache at rest)."""
    bucket_name: pulumi.Input[str]
    """The classification's data bucket; the offline store lives under `feature-store/`."""
    vpc_id: pulumi.Input[str]
    data_subnet_ids: pulumi.Input[list[str]]
    node_security_group_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    namespace: str
    server_service_account: str
    materializer_service_account: str
    production: bool = False
    """Prod stacks: two cache nodes across AZs with automatic failover."""
    node_type: str = DEFAULT_NODE_TYPE
    extra_tags: Mapping[str, str] = field(default_factory=dict)


class FeatureStoreAws(pulumi.ComponentResource):
    replication_group: aws.elasticache.ReplicationGroup
    online_host: pulumi.Output[str]
    auth_token: pulumi.Output[str]
    offline_uri: pulumi.Output[str]
    server_role_arn: pulumi.Output[str]
    materializer_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: FeatureStoreAwsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, {"site": args.site, "classification": args.classification}, opts)
        self._name = name
        self._args = args
        # Default providers are disabled stack-wide; random computes into the state only.
        self._random = random.Provider(self._child("random"), opts=pulumi.ResourceOptions(parent=self))
        self._create_online_store()
        self._create_roles()
        self.online_host = self.replication_group.primary_endpoint_address
        self.auth_token = pulumi.Output.secret(self._auth_token.result)
        self.offline_uri = pulumi.Output.concat("s3://", args.bucket_name, f"/{OFFLINE_PREFIX}")
        self.register_outputs({"online_host": self.online_host, "offline_uri": self.offline_uri,
                               "server_role_arn": self.server_role_arn,
                               "materializer_role_arn": self.materializer_role_arn})

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _child(self, *parts: str) -> str:
        return naming.child_name(self._name, *parts)

    def _tags(self, resource_name: str, data: bool = False) -> dict[str, str]:
        a = self._args
        return naming.aws_tags(a.site, a.stack, a.classification if data else None,
                               {**a.extra_tags, "Name": resource_name, "finml:component": "feature-store"})

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _security_group(self, what: str, port: int) -> aws.ec2.SecurityGroup:
        sg_name = self._child(what, "sg")
        return aws.ec2.SecurityGroup(
            sg_name, vpc_id=self._args.vpc_id,
            description=f"finml feature store {what}: only the cluster nodes, on {port}",
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=port, to_port=port, security_groups=[self._args.node_security_group_id],
                description="EKS nodes (feature server, materialization)")],
            egress=[], tags=self._tags(sg_name), opts=self._opts())

    # -- online store ----------------------------------------------------------------------------------------------

    def _create_online_store(self) -> None:
        a = self._args
        self._auth_token = random.RandomPassword(
            self._child("auth-token"), length=48, special=False, min_upper=4, min_lower=4, min_numeric=4,
            opts=pulumi.ResourceOptions(parent=self, provider=self._random))
        subnets_name = self._child("online-subnets")
        subnets = aws.elasticache.SubnetGroup(
            subnets_name, description="finml feature store: data subnets only", subnet_ids=a.data_subnet_ids,
            tags=self._tags(subnets_name), opts=self._opts())
        self.online_security_group = self._security_group("online", REDIS_PORT)
        rg_name = self._child("online")
        self.replication_group = aws.elasticache.ReplicationGroup(
            rg_name,
            description=f"finml feature store online store ({a.classification})",
            engine="valkey", engine_version=VALKEY_VERSION, node_type=a.node_type, port=REDIS_PORT,
            num_cache_clusters=2 if a.production else 1,
            automatic_failover_enabled=a.production, multi_az_enabled=a.production,
            at_rest_encryption_enabled=True, kms_key_id=a.kms_key_arn,
            transit_encryption_enabled=True, transit_encryption_mode="required",
            auth_token=self._auth_token.result, auth_token_update_strategy="ROTATE",
            subnet_group_name=subnets.name, security_group_ids=[self.online_security_group.id],
            snapshot_retention_limit=7 if a.production else 1, auto_minor_version_upgrade=True,
            apply_immediately=False, tags=self._tags(rg_name, data=True),
            opts=self._opts(additional_secret_outputs=["authToken"]))

    # -- IRSA ------------------------------------------------------------------------------------------------------

    def _irsa_role(self, what: str, service_account: str) -> aws.iam.Role:
        a = self._args

        role_name = self._child(what, "role")
        role = aws.iam.Role(role_name, description=f"finml feature store {what} (IRSA)",
                            assume_role_policy=pulumi.Output.all(a.oidc_provider_arn, a.oidc_issuer_url).apply(
                                lambda v: irsa_trust_policy(v[0], v[1], a.namespace, service_account)),
                            tags=self._tags(role_name), opts=self._opts())

        def policy(values: list[Any]) -> str:
            bucket, key_arn = values
            return json.dumps({"Version": "2012-10-17", "Statement": [
                {"Sid": "ListOfflineStore", "Effect": "Allow", "Action": "s3:ListBucket",
                 "Resource": f"arn:aws:s3:::{bucket}",
                 "Condition": {"StringLike": {"s3:prefix": [f"{OFFLINE_PREFIX}/*"]}}},
                {"Sid": "ReadOfflineStore", "Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": f"arn:aws:s3:::{bucket}/{OFFLINE_PREFIX}/*"},
                {"Sid": "DecryptViaS3", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
                 "Condition": {"StringEquals": {"kms:ViaService": f"s3.{a.site.split(':', 1)[1]}.amazonaws.com"}}},
            ]}, sort_keys=True)

        aws.iam.RolePolicy(self._child(what, "offline-read"), role=role.id,
                           policy=pulumi.Output.all(a.bucket_name, a.kms_key_arn).apply(policy),
                           opts=pulumi.ResourceOptions(parent=role))
        return role

    def _create_roles(self) -> None:
        a = self._args
        self.server_role_arn = self._irsa_role("server", a.server_service_account).arn
        self.materializer_role_arn = self._irsa_role("materializer", a.materializer_service_account).arn
