"""A moto server on loopback and a seeded account with known compliant resources and one of each violation.

Used by tests/audit and scripts/bench_audit.py; nothing here runs against a real account. The seed returns the exact
set of findings ``(rule, resource name)`` the audit must report for the ``audit-test`` stack
(tests/audit/stacks/Pulumi.audit-test.yaml: sites aws:eu-central-1 and aws:eu-west-1; residency public aws:eu-*,
internal eu-central-1 + eu-west-1, confidential eu-central-1 only).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import boto3

ACCOUNT = "123456789012"
HOME, REPLICA, OUTSIDE = "eu-central-1", "eu-west-1", "us-east-1"
STACK = "audit-test"
DUMMY_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
             "AWS_DEFAULT_REGION": HOME}
MOTO_SERVER = Path(os.environ.get("FINML_MOTO_SERVER", Path(sys.executable).parent / "moto_server"))
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "kms", "logs", "ec2", "eks", "eks-auth", "elasticloadbalancing",
                       "autoscaling", "elasticfilesystem")


ROOT = Path(__file__).resolve().parents[2]
TEST_STACKS = ROOT / "tests" / "audit" / "stacks"


def aws_env(**extra: str) -> dict[str, str]:
    """The environment with dummy credentials only: no profile, no metadata service, no real endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DUMMY_ENV)
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def run_finml(*args: str, env: Optional[dict[str, str]] = None, stacks: Path = TEST_STACKS,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m finml.cli --stacks-dir STACKS ARGS…` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(stacks), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env or aws_env(), timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server`` on 127.0.0.1 and a free port; stopped (and waited for) on exit."""

    def __init__(self, executable: Optional[Path] = None, env: Optional[dict[str, str]] = None):
        self.executable = Path(executable or MOTO_SERVER)
        if not self.executable.exists():
            import shutil
            found = shutil.which("moto_server")
            self.executable = Path(found) if found else self.executable
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "MotoServer":
        self.proc = subprocess.Popen([str(self.executable), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("moto_server did not answer within 60s")

    def __exit__(self, *_: Any) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()

    def enforce_iam(self) -> None:
        """From now on every request must be signed by an IAM identity the server knows and is allowed."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})  # a form body would be swallowed
        urllib.request.urlopen(req, timeout=10).read()

    def client(self, service: str, region: str = HOME, **creds: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id=creds.get("key", "testing"),
                            aws_secret_access_key=creds.get("secret", "testing"))


def tags(name: str, classification: Optional[str] = None, stack: Optional[str] = STACK,
         site: Optional[str] = None) -> dict[str, str]:
    t = {"Name": name, "finml:managed-by": "finml"}
    if stack:
        t["finml:stack"] = stack
    if site:
        t["finml:site"] = site
    if classification:
        t["finml:classification"] = classification
    return t


def _tag_list(t: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in t.items()]


@dataclass
class Seeded:
    expected: set[tuple[str, str]] = field(default_factory=set)  # (rule, resource name)
    keys: dict[str, str] = field(default_factory=dict)  # label -> key ARN
    names: dict[str, str] = field(default_factory=dict)  # label -> resource name/id
    resources: int = 0


class Seeder:
    def __init__(self, server: MotoServer):
        self.s = server
        self.out = Seeded()

    def expect(self, rule: str, name: str) -> None:
        self.out.expected.add((rule, name))

    # ---------------------------------------------------------------------------------------------- KMS

    def key(self, label: str, region: str, classification: Optional[str], rotate: bool = True,
            policy: Optional[dict] = None, multi_region: bool = False, stack: Optional[str] = STACK) -> str:
        kms = self.s.client("kms", region)
        args: dict[str, Any] = {"Description": label, "Tags": _tag_list(tags(label, classification, stack),
                                                                          "TagKey", "TagValue")}
        if policy is not None:
            args["Policy"] = json.dumps(policy)
        if multi_region:
            args["MultiRegion"] = True
        meta = kms.create_key(**args)["KeyMetadata"]
        if rotate:
            kms.enable_key_rotation(KeyId=meta["KeyId"])
        self.out.keys[label] = meta["Arn"]
        self.out.names[label] = meta["KeyId"]
        self.out.resources += 1
        return meta["Arn"]

    # ---------------------------------------------------------------------------------------------- S3

    def bucket(self, name: str, region: str, classification: Optional[str], key_arn: Optional[str],
               bucket_key: bool = True, pab: bool = True, tls: bool = True, sse: bool = True,
               stack: Optional[str] = STACK) -> str:
        s3 = self.s.client("s3", region)
        create: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**create)
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tag_list(tags(name, classification, stack))})
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if sse:
            default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn} if key_arn else {"SSEAlgorithm": "AES256"}
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
                {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bucket_key}]})
        else:
            try:
                s3.delete_bucket_encryption(Bucket=name)
            except Exception:  # noqa: BLE001 — moto may hold no default configuration at all
                pass
        if pab:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True})
        if tls:
            arn = f"arn:aws:s3:::{name}"
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        self.out.resources += 1
        return name

    def replicate(self, source: str, dest: str, replica_key: Optional[str], region: str) -> None:
        rule: dict[str, Any] = {"ID": f"to-{dest}", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
                                "DeleteMarkerReplication": {"Status": "Disabled"},
                                "Destination": {"Bucket": f"arn:aws:s3:::{dest}"}}
        if replica_key:
            rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": replica_key}
            rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
        self.s.client("s3", region).put_bucket_replication(Bucket=source, ReplicationConfiguration={
            "Role": f"arn:aws:iam::{ACCOUNT}:role/replication", "Rules": [rule]})

    # ---------------------------------------------------------------------------------------------- network

    def vpc(self, label: str, region: str, cidr: str, endpoints: bool = True, public_subnet: bool = False,
            open_sg: bool = False) -> str:
        ec2 = self.s.client("ec2", region)
        vpc_id = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=[
            {"ResourceType": "vpc", "Tags": _tag_list(tags(label, site=f"aws:{region}"))}])["Vpc"]["VpcId"]
        net = cidr.split("/")[0].rsplit(".", 2)[0]
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{net}.0.0/20", AvailabilityZone=f"{region}a",
                                   TagSpecifications=[{"ResourceType": "subnet",
                                                       "Tags": _tag_list(tags(f"{label}-nodes-a"))}])["Subnet"]
        if public_subnet:
            ec2.modify_subnet_attribute(SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": True})
            self.expect("network-subnet-no-public-ip", subnet["SubnetId"])
        sg = ec2.create_security_group(GroupName=f"{label}-nodes", Description="nodes", VpcId=vpc_id,
                                       TagSpecifications=[{"ResourceType": "security-group",
                                                           "Tags": _tag_list(tags(f"{label}-nodes-sg"))}])["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}])
        if open_sg:
            ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
            self.expect("network-sg-no-public-ingress", sg)
        if endpoints:
            ec2.create_vpc_endpoint(VpcId=vpc_id, ServiceName=f"com.amazonaws.{region}.s3",
                                    VpcEndpointType="Gateway")
            for service in INTERFACE_ENDPOINTS:
                ec2.create_vpc_endpoint(VpcId=vpc_id, ServiceName=f"com.amazonaws.{region}.{service}",
                                        VpcEndpointType="Interface", SubnetIds=[subnet["SubnetId"]])
        else:
            self.expect("network-vpc-endpoints-present", vpc_id)
        self.out.names[label] = vpc_id
        self.out.names[f"{label}-subnet"] = subnet["SubnetId"]
        self.out.names[f"{label}-sg"] = sg
        self.out.resources += 4  # the VPC, its subnet, its SG and the default SG moto adds
        return subnet["SubnetId"]


def seed_account(server: MotoServer) -> Seeded:
    """Compliant resources of every audited kind, plus one of each violation; returns the expected findings."""
    z = Seeder(server)
    e = z.expect
    # -- account settings: EBS default encryption on at both sites
    for region in (HOME, REPLICA):
        server.client("ec2", region).enable_ebs_encryption_by_default()

    # -- keys
    account_root = {"Version": "2012-10-17", "Statement": [{"Sid": "Account", "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}]}
    conf = z.key("key-confidential", HOME, "confidential", policy=account_root)
    internal = z.key("key-internal", HOME, "internal")
    replica_internal = z.key("key-replica-internal", REPLICA, "internal")
    own_account_wildcard = {"Version": "2012-10-17", "Statement": [account_root["Statement"][0], {
        "Sid": "AnyoneInAccount", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
        "Resource": "*", "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}}}]}
    z.key("key-own-account-wildcard", HOME, "internal", policy=own_account_wildcard)
    z.key("key-no-rotation", HOME, "internal", rotate=False)
    e("encryption-kms-rotation", z.out.names["key-no-rotation"])
    wildcard = {"Version": "2012-10-17", "Statement": [account_root["Statement"][0], {
        "Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}
    z.key("key-wildcard", HOME, "internal", policy=wildcard)
    e("encryption-kms-no-wildcard-principal", z.out.names["key-wildcard"])
    primary = z.key("key-multi-region", HOME, "confidential", multi_region=True)
    server.client("kms", HOME).replicate_key(KeyId=z.out.names["key-multi-region"], ReplicaRegion=REPLICA)
    z.out.resources += 1
    e("residency-kms-replica-key", z.out.names["key-multi-region"])
    outside_key = z.key("key-outside", OUTSIDE, "internal")
    e("residency-aws-site-declared", z.out.names["key-outside"])

    # -- buckets: compliant, with a compliant replication (internal -> Ireland)
    z.bucket("finml-good-confidential", HOME, "confidential", conf)
    z.bucket("finml-good-internal", HOME, "internal", internal)
    z.bucket("finml-good-replica", REPLICA, "internal", replica_internal)
    z.replicate("finml-good-internal", "finml-good-replica", replica_internal, HOME)
    # violations
    z.bucket("finml-bad-region", OUTSIDE, "internal", outside_key)  # a region no site allows
    e("residency-aws-data-site", "finml-bad-region")
    e("residency-aws-site-declared", "finml-bad-region")
    z.bucket("finml-bad-replication-us", HOME, "internal", internal)  # replicates to that region
    z.replicate("finml-bad-replication-us", "finml-bad-region", None, HOME)
    e("residency-s3-replication-destination", "finml-bad-replication-us")
    z.bucket("finml-bad-replication-conf", HOME, "confidential", conf)  # confidential may not go to Ireland
    z.replicate("finml-bad-replication-conf", "finml-good-replica", replica_internal, HOME)
    e("residency-s3-replication-destination", "finml-bad-replication-conf")
    z.bucket("finml-bad-sse-s3", HOME, "internal", None)
    e("encryption-s3-sse-kms-cmk", "finml-bad-sse-s3")
    z.bucket("finml-bad-no-bucket-key", HOME, "internal", internal, bucket_key=False)
    e("encryption-s3-bucket-key", "finml-bad-no-bucket-key")
    z.bucket("finml-bad-foreign-key", HOME, "internal", replica_internal)
    e("residency-kms-key-colocated", "finml-bad-foreign-key")
    z.bucket("finml-bad-no-pab", HOME, "internal", internal, pab=False)
    e("network-s3-public-access-block", "finml-bad-no-pab")
    z.bucket("finml-bad-no-tls", HOME, "internal", internal, tls=False)
    e("encryption-s3-tls-only", "finml-bad-no-tls")
    z.bucket("finml-bad-unclassified", HOME, None, internal)
    e("residency-classification-required", "finml-bad-unclassified")
    z.bucket("finml-bad-conf-in-ireland", REPLICA, "confidential", replica_internal)
    e("residency-aws-data-site", "finml-bad-conf-in-ireland")

    # -- EBS: default encryption off where nothing should run is not checked; off at a site is
    ec2 = server.client("ec2", HOME)
    vol = ec2.create_volume(AvailabilityZone=f"{HOME}a", Size=10, Encrypted=True, KmsKeyId=internal,
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": _tag_list(tags("vol-good", "internal"))}])
    z.out.names["vol-good"] = vol["VolumeId"]
    bad_vol = ec2.create_volume(AvailabilityZone=f"{HOME}a", Size=10, TagSpecifications=[
        {"ResourceType": "volume", "Tags": _tag_list(tags("vol-plain", "internal"))}])["VolumeId"]
    e("encryption-ebs-encrypted", bad_vol)
    z.out.resources += 2

    # -- network: a compliant VPC at the home site, a leaky one, and one in a region that is no site
    z.vpc("vpc-good", HOME, "10.40.0.0/16")
    z.vpc("vpc-leaky", HOME, "10.41.0.0/16", endpoints=False, public_subnet=True, open_sg=True)
    z.vpc("vpc-elsewhere", "us-east-2", "10.42.0.0/16")
    e("residency-aws-site-declared", z.out.names["vpc-elsewhere"])

    # -- EKS
    eks = server.client("eks", HOME)
    vpc_cfg = {"subnetIds": [z.out.names["vpc-good-subnet"]], "endpointPublicAccess": False,
               "endpointPrivateAccess": True}
    eks.create_cluster(name="eks-good", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks", resourcesVpcConfig=vpc_cfg,
                       encryptionConfig=[{"resources": ["secrets"], "provider": {"keyArn": conf}}],
                       tags=tags("eks-good", "confidential"))
    eks.create_cluster(name="eks-public", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
                       resourcesVpcConfig={**vpc_cfg, "endpointPublicAccess": True}, tags=tags("eks-public"))
    e("network-eks-endpoint-private", "eks-public")
    e("encryption-eks-secrets", "eks-public")
    server.client("eks", "ap-southeast-1").create_cluster(
        name="eks-elsewhere", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
        resourcesVpcConfig={"subnetIds": [], "endpointPublicAccess": False, "endpointPrivateAccess": True},
        encryptionConfig=[{"resources": ["secrets"], "provider": {
            "keyArn": f"arn:aws:kms:ap-southeast-1:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000"}}])
    e("residency-cluster-site", "eks-elsewhere")
    z.out.resources += 3

    # -- RDS
    rds = server.client("rds", HOME)
    rds.create_db_instance(DBInstanceIdentifier="db-good", DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="admin1", MasterUserPassword="secret-Passw0rd", AllocatedStorage=20,
                           StorageEncrypted=True, KmsKeyId=conf, PubliclyAccessible=False,
                           Tags=_tag_list(tags("db-good", "confidential")))
    rds.create_db_instance(DBInstanceIdentifier="db-bad", DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="admin1", MasterUserPassword="secret-Passw0rd", AllocatedStorage=20,
                           StorageEncrypted=False, PubliclyAccessible=True,
                           Tags=_tag_list(tags("db-bad", "internal")))
    e("encryption-rds-at-rest", "db-bad")
    e("network-rds-not-public", "db-bad")
    z.out.resources += 2

    # -- ElastiCache
    cache = server.client("elasticache", HOME)
    cache.create_replication_group(ReplicationGroupId="cache-good", ReplicationGroupDescription="online store",
                                   Engine="redis", CacheNodeType="cache.t3.micro", AtRestEncryptionEnabled=True,
                                   TransitEncryptionEnabled=True, KmsKeyId=internal,
                                   Tags=_tag_list(tags("cache-good", "internal")))
    cache.create_replication_group(ReplicationGroupId="cache-plain", ReplicationGroupDescription="plaintext",
                                   Engine="redis", CacheNodeType="cache.t3.micro", AtRestEncryptionEnabled=True,
                                   TransitEncryptionEnabled=False, Tags=_tag_list(tags("cache-plain", "internal")))
    e("encryption-elasticache", "cache-plain")
    e("encryption-data-store-cmk", "cache-plain")  # encrypted at rest, but with the AWS-managed key
    z.out.resources += 2

    # -- CloudWatch Logs
    logs = server.client("logs", HOME)
    logs.create_log_group(logGroupName="/finml/good", kmsKeyId=internal, tags=tags("/finml/good", "internal"))
    logs.create_log_group(logGroupName="/finml/plain", tags=tags("/finml/plain", "internal"))
    e("encryption-data-store-cmk", "/finml/plain")
    z.out.resources += 2
    return z.out


def seed_bulk(server: MotoServer, n: int, region: str = HOME) -> int:
    """``n`` compliant resources (buckets, keys, log groups, security groups in turn) for the benchmark."""
    z = Seeder(server)
    key = z.key("bulk-key", region, "internal")
    logs, ec2 = server.client("logs", region), server.client("ec2", region)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    for i in range(n):
        kind = i % 4
        if kind == 0:
            z.bucket(f"finml-bulk-{i:05d}", region, "internal", key)
        elif kind == 1:
            z.key(f"bulk-key-{i}", region, "internal")
        elif kind == 2:
            logs.create_log_group(logGroupName=f"/finml/bulk/{i}", kmsKeyId=key, tags=tags(f"bulk-{i}", "internal"))
        else:
            ec2.create_security_group(GroupName=f"bulk-{i}", Description="bulk", VpcId=vpc)
    return n
