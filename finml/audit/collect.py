"""Read-only collectors: what the account actually holds, per service and enabled region.

Every list call paginates. Every call goes through :class:`AwsContext` clients (standard retry mode: throttling and
5xx are retried with exponential backoff and jitter). A call that fails — access denied, an unreachable endpoint, an
unexpected error — becomes a :class:`Gap` for that service/region or resource, which the rules turn into a "could not
audit …" finding: the audit never crashes on one service and never passes what it could not see.
"""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import botocore.exceptions

from finml.audit.aws import AwsContext, describe_error, error_code

TAG_CLASSIFICATION = "finml:classification"
TAG_STACK = "finml:stack"

S3_BUCKET = "aws:s3/bucket:Bucket"
KMS_KEY = "aws:kms/key:Key"
EBS_VOLUME = "aws:ebs/volume:Volume"
EBS_DEFAULT_ENCRYPTION = "aws:ebs/encryptionByDefault:EncryptionByDefault"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SUBNET = "aws:ec2/subnet:Subnet"
VPC = "aws:ec2/vpc:Vpc"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
RDS_INSTANCE = "aws:rds/instance:Instance"
ELASTICACHE_RG = "aws:elasticache/replicationGroup:ReplicationGroup"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"

# Absent configuration is an answer, not an error: these codes mean "not set".
S3_ABSENT = {
    "get_bucket_tagging": {"NoSuchTagSet", "NoSuchTagSetError"},
    "get_bucket_encryption": {"ServerSideEncryptionConfigurationNotFoundError"},
    "get_public_access_block": {"NoSuchPublicAccessBlockConfiguration"},
    "get_bucket_policy": {"NoSuchBucketPolicy"},
    "get_bucket_replication": {"ReplicationConfigurationNotFoundError"},
}


@dataclass
class LiveResource:
    type: str  # the Pulumi type token of the resource kind, so findings and drift speak the plan's language
    arn: str
    name: str
    region: str
    tags: dict[str, str] = field(default_factory=dict)
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def site(self) -> str:
        return f"aws:{self.region}"

    @property
    def classification(self) -> Optional[str]:
        return self.tags.get(TAG_CLASSIFICATION)


@dataclass(frozen=True)
class Gap:
    service: str
    region: str
    what: str
    error: str
    arn: str = ""


@dataclass
class Inventory:
    account: str
    regions: list[str]
    resources: list[LiveResource] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (region, alias/name) -> key id

    def of_type(self, type_: str) -> list[LiveResource]:
        return [r for r in self.resources if r.type == type_]

    def key(self, ref: Optional[str], region: str) -> Optional[LiveResource]:
        """The KMS key a reference names: key ARN, alias ARN, key id or alias name (the latter two in ``region``)."""
        if not ref:
            return None
        if ref.startswith("arn:"):
            parts = ref.split(":", 5)
            region, resource = parts[3], parts[5]
            ref = resource.removeprefix("key/") if resource.startswith("key/") else resource
        if ref.startswith("alias/"):
            ref = self.aliases.get((region, ref), "")
        for res in self.resources:
            if res.type == KMS_KEY and res.region == region and res.props.get("KeyId") == ref:
                return res
        return None


def _tags(items: Any, key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t[value] for t in items or [] if key in t}


def _paginate(client: Any, operation: str, result_key: str, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    if client.can_paginate(operation):
        for page in client.get_paginator(operation).paginate(**kwargs):
            items += page.get(result_key, []) or []
    else:
        items += getattr(client, operation)(**kwargs).get(result_key, []) or []
    return items


class _Collector:
    def __init__(self, ctx: AwsContext, account: str, regions: list[str], stack_regions: set[str]):
        self.ctx = ctx
        self.inv = Inventory(account=account, regions=regions)
        self.stack_regions = stack_regions
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def guard(self, service: str, region: str, what: str, arn: str = "") -> Iterator[None]:
        try:
            yield
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self.gap(service, region, what, describe_error(exc), arn)
        except Exception as exc:  # noqa: BLE001 — an unexpected answer shape is a gap, never a crash
            self.gap(service, region, what, f"{type(exc).__name__}: {exc}", arn)

    def gap(self, service: str, region: str, what: str, error: str, arn: str = "") -> None:
        with self._lock:
            self.inv.gaps.append(Gap(service, region, what, error, arn))

    def add(self, resource: LiveResource) -> None:
        with self._lock:
            self.inv.resources.append(resource)

    def arn(self, service: str, region: str, resource: str) -> str:
        return f"arn:aws:{service}:{region}:{self.inv.account}:{resource}"

    # ---------------------------------------------------------------------------------------------- S3

    def s3_buckets(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        with self.guard("s3", "global", "list buckets"):
            client = self.ctx.client("s3", "us-east-1")
            for bucket in _paginate(client, "list_buckets", "Buckets"):
                name = bucket["Name"]
                with self.guard("s3", "global", f"location of bucket {name}", f"arn:aws:s3:::{name}"):
                    location = client.get_bucket_location(Bucket=name).get("LocationConstraint")
                    region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
                    found.append((name, region))
        return found

    def _s3_get(self, client: Any, operation: str, name: str, region: str) -> tuple[bool, Any]:
        """(read, response): absent configuration reads as (True, None); a failure is a gap and (False, None)."""
        arn = f"arn:aws:s3:::{name}"
        try:
            return True, getattr(client, operation)(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in S3_ABSENT.get(operation, ()):
                return True, None
            self.gap("s3", region, f"{operation.removeprefix('get_').replace('_', ' ')} of bucket {name}",
                     describe_error(exc), arn)
        except botocore.exceptions.BotoCoreError as exc:
            self.gap("s3", region, f"{operation} of bucket {name}", describe_error(exc), arn)
        return False, None

    def s3_bucket(self, name: str, region: str) -> None:
        with self.guard("s3", region, f"bucket {name}", f"arn:aws:s3:::{name}"):
            self._s3_bucket(name, region)

    def _s3_bucket(self, name: str, region: str) -> None:
        client = self.ctx.client("s3", region)
        props: dict[str, Any] = {"unread": []}
        ok, tagging = self._s3_get(client, "get_bucket_tagging", name, region)
        tags = _tags(tagging.get("TagSet")) if tagging else {}
        for operation, key in (("get_bucket_encryption", "sse"), ("get_public_access_block", "pab"),
                               ("get_bucket_policy", "policy"), ("get_bucket_replication", "replication")):
            ok, response = self._s3_get(client, operation, name, region)
            if not ok:
                props["unread"].append(key)
                continue
            if response is None:
                props[key] = None
            elif key == "sse":
                props[key] = response["ServerSideEncryptionConfiguration"].get("Rules", [])
            elif key == "pab":
                props[key] = response["PublicAccessBlockConfiguration"]
            elif key == "policy":
                props[key] = json.loads(response["Policy"])
            else:
                props[key] = response["ReplicationConfiguration"].get("Rules", [])
        self.add(LiveResource(S3_BUCKET, f"arn:aws:s3:::{name}", name, region, tags, props))

    # ---------------------------------------------------------------------------------------------- KMS

    def kms(self, region: str) -> None:
        client = self.ctx.client("kms", region)
        with self.guard("kms", region, "list aliases"):
            for alias in _paginate(client, "list_aliases", "Aliases"):
                if alias.get("TargetKeyId"):
                    with self._lock:
                        self.inv.aliases[(region, alias["AliasName"])] = alias["TargetKeyId"]
        with self.guard("kms", region, "list keys"):
            for key in _paginate(client, "list_keys", "Keys"):
                with self.guard("kms", region, f"key {key['KeyId']}", key["KeyArn"]):
                    meta = client.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
                    if meta.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
                        continue
                    props: dict[str, Any] = {k: meta.get(k) for k in (
                        "KeyId", "KeyManager", "KeySpec", "KeyUsage", "KeyState", "Origin", "MultiRegion",
                        "MultiRegionConfiguration", "Description")}
                    tags: dict[str, str] = {}
                    if meta.get("KeyManager") == "CUSTOMER":
                        props["Policy"] = json.loads(client.get_key_policy(KeyId=key["KeyId"],
                                                                           PolicyName="default")["Policy"])
                        if meta.get("KeySpec") == "SYMMETRIC_DEFAULT" and meta.get("Origin") == "AWS_KMS":
                            props["RotationEnabled"] = client.get_key_rotation_status(
                                KeyId=key["KeyId"])["KeyRotationEnabled"]
                        tags = _tags(_paginate(client, "list_resource_tags", "Tags", KeyId=key["KeyId"]),
                                     "TagKey", "TagValue")
                    self.add(LiveResource(KMS_KEY, meta["Arn"], key["KeyId"], region, tags, props))

    # ---------------------------------------------------------------------------------------------- EC2

    def ec2(self, region: str) -> None:
        client = self.ctx.client("ec2", region)
        if region in self.stack_regions:
            with self.guard("ec2", region, "EBS encryption by default"):
                enabled = client.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
                self.add(LiveResource(EBS_DEFAULT_ENCRYPTION, self.arn("ec2", region, "ebs-encryption-by-default"),
                                      "ebs-encryption-by-default", region, {}, {"Enabled": enabled}))
        with self.guard("ec2", region, "list volumes"):
            for vol in _paginate(client, "describe_volumes", "Volumes"):
                self.add(LiveResource(EBS_VOLUME, self.arn("ec2", region, f"volume/{vol['VolumeId']}"),
                                      vol["VolumeId"], region, _tags(vol.get("Tags")),
                                      {"Encrypted": vol.get("Encrypted"), "KmsKeyId": vol.get("KmsKeyId")}))
        default_vpcs: set[str] = set()
        with self.guard("ec2", region, "list VPCs"):
            for vpc in _paginate(client, "describe_vpcs", "Vpcs"):
                if vpc.get("IsDefault"):
                    default_vpcs.add(vpc["VpcId"])
                self.add(LiveResource(VPC, self.arn("ec2", region, f"vpc/{vpc['VpcId']}"), vpc["VpcId"], region,
                                      _tags(vpc.get("Tags")),
                                      {"IsDefault": bool(vpc.get("IsDefault")), "CidrBlock": vpc.get("CidrBlock")}))
        # Endpoints are checked per non-default VPC: a region with none needs no listing.
        with self.guard("ec2", region, "list VPC endpoints"):
            for ep in _paginate(client, "describe_vpc_endpoints", "VpcEndpoints") if self._has_own_vpc(region) else []:
                self.add(LiveResource(VPC_ENDPOINT, self.arn("ec2", region, f"vpc-endpoint/{ep['VpcEndpointId']}"),
                                      ep["VpcEndpointId"], region, _tags(ep.get("Tags")),
                                      {"VpcId": ep.get("VpcId"), "ServiceName": ep.get("ServiceName"),
                                       "State": ep.get("State")}))
        with self.guard("ec2", region, "list security groups"):
            for sg in _paginate(client, "describe_security_groups", "SecurityGroups"):
                self.add(LiveResource(SECURITY_GROUP, self.arn("ec2", region, f"security-group/{sg['GroupId']}"),
                                      sg["GroupId"], region, _tags(sg.get("Tags")),
                                      {"GroupName": sg.get("GroupName"), "VpcId": sg.get("VpcId"),
                                       "IpPermissions": sg.get("IpPermissions", []),
                                       "DefaultVpc": sg.get("VpcId") in default_vpcs}))
        with self.guard("ec2", region, "list subnets"):
            for sn in _paginate(client, "describe_subnets", "Subnets"):
                self.add(LiveResource(SUBNET, sn.get("SubnetArn") or self.arn("ec2", region, f"subnet/{sn['SubnetId']}"),
                                      sn["SubnetId"], region, _tags(sn.get("Tags")),
                                      {"MapPublicIpOnLaunch": bool(sn.get("MapPublicIpOnLaunch")),
                                       "DefaultForAz": bool(sn.get("DefaultForAz")), "VpcId": sn.get("VpcId"),
                                       "CidrBlock": sn.get("CidrBlock"), "DefaultVpc": sn.get("VpcId") in default_vpcs}))

    def _has_own_vpc(self, region: str) -> bool:
        with self._lock:
            return any(r.type == VPC and r.region == region and not r.props.get("IsDefault")
                       for r in self.inv.resources)

    # ---------------------------------------------------------------------------------------------- EKS

    def eks(self, region: str) -> None:
        client = self.ctx.client("eks", region)
        with self.guard("eks", region, "list clusters"):
            for name in _paginate(client, "list_clusters", "clusters"):
                with self.guard("eks", region, f"cluster {name}", self.arn("eks", region, f"cluster/{name}")):
                    c = client.describe_cluster(name=name)["cluster"]
                    vpc = c.get("resourcesVpcConfig", {})
                    self.add(LiveResource(EKS_CLUSTER, c["arn"], name, region, dict(c.get("tags") or {}), {
                        "endpointPublicAccess": vpc.get("endpointPublicAccess"),
                        "endpointPrivateAccess": vpc.get("endpointPrivateAccess"),
                        "publicAccessCidrs": vpc.get("publicAccessCidrs"),
                        "encryptionConfig": c.get("encryptionConfig") or [],
                        "version": c.get("version"),
                    }))

    # ---------------------------------------------------------------------------------------------- RDS

    def rds(self, region: str) -> None:
        client = self.ctx.client("rds", region)
        with self.guard("rds", region, "list DB instances"):
            for db in _paginate(client, "describe_db_instances", "DBInstances"):
                tags = _tags(db.get("TagList"))
                self.add(LiveResource(RDS_INSTANCE, db["DBInstanceArn"], db["DBInstanceIdentifier"], region, tags, {
                    "StorageEncrypted": db.get("StorageEncrypted"), "KmsKeyId": db.get("KmsKeyId"),
                    "PubliclyAccessible": db.get("PubliclyAccessible"), "Engine": db.get("Engine")}))

    # ---------------------------------------------------------------------------------------------- ElastiCache

    def elasticache(self, region: str) -> None:
        client = self.ctx.client("elasticache", region)
        with self.guard("elasticache", region, "list replication groups"):
            for rg in _paginate(client, "describe_replication_groups", "ReplicationGroups"):
                arn = rg.get("ARN") or self.arn("elasticache", region, f"replicationgroup:{rg['ReplicationGroupId']}")
                tags: dict[str, str] = {}
                with self.guard("elasticache", region, f"tags of {rg['ReplicationGroupId']}", arn):
                    tags = _tags(client.list_tags_for_resource(ResourceName=arn).get("TagList"))
                self.add(LiveResource(ELASTICACHE_RG, arn, rg["ReplicationGroupId"], region, tags, {
                    "AtRestEncryptionEnabled": rg.get("AtRestEncryptionEnabled"),
                    "TransitEncryptionEnabled": rg.get("TransitEncryptionEnabled"),
                    "KmsKeyId": rg.get("KmsKeyId")}))

    # ---------------------------------------------------------------------------------------------- Logs

    def logs(self, region: str) -> None:
        client = self.ctx.client("logs", region)
        with self.guard("logs", region, "list log groups"):
            for group in _paginate(client, "describe_log_groups", "logGroups"):
                name = group["logGroupName"]
                arn = (group.get("arn") or self.arn("logs", region, f"log-group:{name}")).removesuffix(":*")
                tags: dict[str, str] = {}
                with self.guard("logs", region, f"tags of log group {name}", arn):
                    tags = dict(client.list_tags_log_group(logGroupName=name).get("tags") or {})
                self.add(LiveResource(LOG_GROUP, arn, name, region, tags, {
                    "kmsKeyId": group.get("kmsKeyId"), "retentionInDays": group.get("retentionInDays")}))


REGIONAL = ("kms", "ec2", "eks", "rds", "elasticache", "logs")


def enabled_regions(ctx: AwsContext, home_region: str) -> list[str]:
    """Every region the account has enabled (opt-in regions not opted into are not listed by EC2), in the home
    region's partition: an account of the aws partition has no resources in aws-cn or aws-us-gov (moto lists them)."""
    response = ctx.client("ec2", home_region).describe_regions(AllRegions=False)
    partition = ctx.partition(home_region)
    return sorted(r["RegionName"] for r in response["Regions"]
                  if r.get("OptInStatus", "opt-in-not-required") != "not-opted-in"
                  and ctx.partition(r["RegionName"]) == partition)


def collect(ctx: AwsContext, account: str, regions: list[str], stack_regions: set[str], workers: int = 16,
            progress: Optional[Callable[[str], None]] = None) -> Inventory:
    collector = _Collector(ctx, account, regions, stack_regions)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        buckets_future = pool.submit(collector.s3_buckets)
        futures = [pool.submit(getattr(collector, service), region) for region in regions for service in REGIONAL]
        buckets = buckets_future.result()
        if progress:
            progress(f"{len(buckets)} buckets; reading their settings…")
        futures += [pool.submit(collector.s3_bucket, name, region) for name, region in buckets]
        for f in futures:
            f.result()
    collector.inv.resources.sort(key=lambda r: (r.type, r.region, r.arn))
    collector.inv.gaps.sort(key=lambda g: (g.service, g.region, g.what))
    return collector.inv
