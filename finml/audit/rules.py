"""The pack's residency, encryption and isolation rules, evaluated over the live inventory.

Rule ids are the pack's (``finml_rules``); where a rule's subject exists only live (the audit's own coverage, log-group
keys, VPC endpoints) the id is an audit-only one from :mod:`finml.audit.catalogue`. Where the pack's logic is a pure
function over a policy document (TLS-only bucket policies, wildcard principals, world-open CIDRs) it is called, not
re-implemented, so preview and audit judge a document the same way.

Site of a live resource: the region AWS reports for it. Classification: its ``finml:classification`` tag; a data
store without a valid one is a finding, and an unknown classification counts as the highest wherever a copy's
destination is judged.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

from finml.audit import catalogue as cat
from finml.audit.collect import (EBS_DEFAULT_ENCRYPTION, EBS_VOLUME, EKS_CLUSTER, ELASTICACHE_RG, KMS_KEY, LOG_GROUP,
                                 RDS_INSTANCE, S3_BUCKET, SECURITY_GROUP, SUBNET, VPC, VPC_ENDPOINT, Inventory,
                                 LiveResource)

if str(cat.PACK_DIR) not in sys.path:
    sys.path.insert(0, str(cat.PACK_DIR))
from finml_rules.common import CLASSIFICATIONS, Residency  # noqa: E402
from finml_rules.encryption import _denies_insecure_transport, _is_wildcard_principal  # noqa: E402
from finml_rules.network import _open_to_world  # noqa: E402

# What components/network.py creates in every VPC (tests pin the two lists together).
REQUIRED_GATEWAY_ENDPOINTS = ("s3",)
REQUIRED_INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "kms", "logs", "ec2", "eks", "eks-auth",
                                "elasticloadbalancing", "autoscaling", "elasticfilesystem")
OWN_ACCOUNT_CONDITION_KEYS = ("kms:calleraccount", "aws:principalaccount", "aws:sourceaccount")
DATA_STORE_TYPES = (S3_BUCKET, EBS_VOLUME, RDS_INSTANCE, ELASTICACHE_RG)
HIGHEST = CLASSIFICATIONS[-1]


@dataclass(frozen=True)
class Finding:
    rule: str
    arn: str
    resource_type: str
    name: str
    site: str
    classification: str
    message: str


def _region_of_arn(arn: Optional[str]) -> Optional[str]:
    if isinstance(arn, str) and arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


class _Evaluator:
    def __init__(self, inv: Inventory, residency: Residency):
        self.inv = inv
        self.residency = residency
        self.findings: list[Finding] = []
        self.buckets = {r.name: r for r in inv.of_type(S3_BUCKET)}

    def report(self, rule: str, res: LiveResource, message: str, classification: Optional[str] = None) -> None:
        cls = classification or res.classification or "unknown"
        self.findings.append(Finding(rule, res.arn, res.type, res.name, res.site, cls, message))

    # ------------------------------------------------------------------------------------------------ shared

    def valid_classification(self, res: LiveResource) -> Optional[str]:
        return res.classification if res.classification in CLASSIFICATIONS else None

    def placement(self, res: LiveResource, what: str, data_store: bool) -> None:
        cls = self.valid_classification(res)
        if data_store and cls is None:
            found = f"has {cat_tag(res)}" if res.classification else "has no finml:classification tag"
            self.report("residency-classification-required", res,
                        f"{what} {found}; allowed: {', '.join(CLASSIFICATIONS)}.")
        if cls is not None and not self.residency.allowed(res.site, cls):
            self.report("residency-aws-data-site", res,
                        f"{what} holds {cls} data in {res.site}, which residency does not allow for {cls} "
                        f"(allowed: {self.residency.patterns(cls)}).")
        if not self.residency.declared(res.site):
            self.report("residency-aws-site-declared", res,
                        f"{what} is in {res.site}, which is not a site of this stack "
                        f"(declared: {', '.join(self.residency.sites)}).")

    def colocated_key(self, res: LiveResource, what: str, key_ref: Optional[str]) -> None:
        if not key_ref:
            return
        key_region = _region_of_arn(key_ref) or res.region
        if key_region != res.region:
            self.report("residency-kms-key-colocated", res,
                        f"{what} in {res.site} is encrypted with KMS key {key_ref} of aws:{key_region}; use the key "
                        f"of its own site.")

    def copy_allowed(self, cls: Optional[str], site: str) -> bool:
        return self.residency.allowed(site, cls if cls in CLASSIFICATIONS else HIGHEST)

    # ------------------------------------------------------------------------------------------------ S3

    def bucket(self, b: LiveResource) -> None:
        what = f"S3 bucket {b.name}"
        self.placement(b, what, data_store=True)
        unread = set(b.props.get("unread", []))
        if "sse" not in unread:
            self.bucket_sse(b, what)
        if "pab" not in unread:
            pab = b.props.get("pab") or {}
            missing = [flag for flag in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                         "RestrictPublicBuckets") if pab.get(flag) is not True]
            if missing:
                self.report("network-s3-public-access-block", b,
                            f"{what} has no public access block" if not pab else
                            f"{what}'s public access block leaves {', '.join(missing)} off.")
        if "policy" not in unread:
            policy = b.props.get("policy")
            statements = policy.get("Statement", []) if isinstance(policy, dict) else []
            statements = statements if isinstance(statements, list) else [statements]
            if not any(isinstance(s, dict) and _denies_insecure_transport(s, b.name) for s in statements):
                self.report("encryption-s3-tls-only", b,
                            f"{what} has no bucket policy denying non-TLS access" if not policy else
                            f"{what}'s bucket policy does not deny s3:* when aws:SecureTransport is false on the "
                            f"bucket and its objects.")
        if "replication" not in unread:
            self.bucket_replication(b, what)

    def bucket_sse(self, b: LiveResource, what: str) -> None:
        rules = b.props.get("sse")
        if not rules:
            self.report("encryption-s3-sse-kms-cmk", b, f"{what} has no default encryption configuration.")
            return
        for rule in rules:
            default = rule.get("ApplyServerSideEncryptionByDefault") or {}
            algorithm, key_ref = default.get("SSEAlgorithm"), default.get("KMSMasterKeyID")
            if algorithm not in ("aws:kms", "aws:kms:dsse"):
                self.report("encryption-s3-sse-kms-cmk", b,
                            f"{what} encrypts with {algorithm or 'no algorithm'}, not SSE-KMS with a customer-managed "
                            f"key.")
                continue
            if not rule.get("BucketKeyEnabled"):
                self.report("encryption-s3-bucket-key", b, f"{what} uses SSE-KMS without the S3 Bucket Key.")
            if not key_ref:
                self.report("encryption-s3-sse-kms-cmk", b, f"{what} uses SSE-KMS with the AWS-managed aws/s3 key.")
                continue
            key = self.inv.key(key_ref, b.region)
            if key is None:
                self.report("encryption-s3-sse-kms-cmk", b,
                            f"{what}'s SSE-KMS key {key_ref} is not an enabled key of account {self.inv.account}.")
            elif key.props.get("KeyManager") != "CUSTOMER":
                self.report("encryption-s3-sse-kms-cmk", b, f"{what}'s SSE-KMS key {key_ref} is AWS-managed.")
            self.colocated_key(b, what, key.arn if key else key_ref)

    def bucket_replication(self, b: LiveResource, what: str) -> None:
        for rule in b.props.get("replication") or []:
            if rule.get("Status") != "Enabled":
                continue
            dest = rule.get("Destination") or {}
            dest_name = str(dest.get("Bucket", "")).removeprefix("arn:aws:s3:::")
            rule_id = rule.get("ID") or "(unnamed)"
            target = self.buckets.get(dest_name)
            if target is None:
                self.report("residency-s3-replication-destination", b,
                            f"{what} replication rule {rule_id!r} copies to bucket {dest_name}, which is not a bucket "
                            f"of account {self.inv.account}; its site cannot be derived.")
            elif not self.copy_allowed(b.classification, target.site):
                self.report("residency-s3-replication-destination", b,
                            f"{what} replication rule {rule_id!r} copies {b.classification or 'unclassified'} data to "
                            f"bucket {dest_name} in {target.site}, which residency does not allow "
                            f"(allowed: {self.residency.patterns(b.classification or HIGHEST)}).")
            replica_key = (dest.get("EncryptionConfiguration") or {}).get("ReplicaKmsKeyID")
            key_region = _region_of_arn(replica_key)
            if replica_key and key_region and not self.copy_allowed(b.classification, f"aws:{key_region}"):
                self.report("residency-s3-replication-destination", b,
                            f"{what} replication rule {rule_id!r} encrypts replicas with KMS key {replica_key} of "
                            f"aws:{key_region}, which residency does not allow for this data.")

    # ------------------------------------------------------------------------------------------------ KMS

    def key(self, k: LiveResource) -> None:
        if k.props.get("KeyManager") != "CUSTOMER":
            return
        what = f"KMS key {k.name}"
        multi = k.props.get("MultiRegionConfiguration") or {}
        # Primary or replica by the primary's ARN, not by MultiRegionKeyType alone (moto shares that field between a
        # primary and its replicas; the ARN comparison is right everywhere).
        primary = bool(multi) and (multi.get("PrimaryKey") or {}).get("Arn") == k.arn
        replica = bool(multi) and not primary
        if not replica and not self.residency.declared(k.site):
            self.report("residency-aws-site-declared", k, f"{what} is in {k.site}, which is not a site of this "
                        f"stack (declared: {', '.join(self.residency.sites)}).")
        if k.props.get("RotationEnabled") is False and not replica:
            self.report("encryption-kms-rotation", k, f"{what} does not rotate automatically.")
        policy = k.props.get("Policy") or {}
        statements = policy.get("Statement", [])
        for position, statement in enumerate(statements if isinstance(statements, list) else [statements]):
            if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                continue
            wildcard = "NotPrincipal" in statement or _is_wildcard_principal(statement.get("Principal")) or (
                isinstance(statement.get("Principal"), dict) and any(
                    "*" in (v if isinstance(v, list) else [v]) for v in statement["Principal"].values()))
            if wildcard and not self._own_account_only(statement):
                self.report("encryption-kms-no-wildcard-principal", k,
                            f"{what}: key policy statement {statement.get('Sid', position)!r} allows a wildcard "
                            f"principal.")
        if primary:
            cls = self.valid_classification(k)
            for rep in multi.get("ReplicaKeys") or []:
                site = f"aws:{rep.get('Region')}"
                if not self.copy_allowed(cls, site):
                    self.report("residency-kms-replica-key", k,
                                f"{what} ({cls or 'unclassified, so treated as ' + HIGHEST}) has a replica in {site}, "
                                f"which residency does not allow (allowed: {self.residency.patterns(cls or HIGHEST)}).")

    def _own_account_only(self, statement: dict) -> bool:
        for operator, conditions in (statement.get("Condition") or {}).items():
            if operator not in ("StringEquals", "ArnEquals"):
                continue
            for key, value in (conditions or {}).items():
                values = value if isinstance(value, list) else [value]
                if key.lower() in OWN_ACCOUNT_CONDITION_KEYS and values == [self.inv.account]:
                    return True
        return False

    # ------------------------------------------------------------------------------------------------ EC2

    def volume(self, v: LiveResource) -> None:
        what = f"EBS volume {v.name}"
        self.placement(v, what, data_store=True)
        if not v.props.get("Encrypted"):
            self.report("encryption-ebs-encrypted", v, f"{what} is not encrypted.")
        else:
            self.customer_key(v, what, v.props.get("KmsKeyId"))
        self.colocated_key(v, what, v.props.get("KmsKeyId"))

    def ebs_default(self, e: LiveResource) -> None:
        if not e.props.get("Enabled"):
            self.report("encryption-ebs-encrypted", e,
                        f"EBS encryption by default is off in {e.site}; new volumes would be unencrypted.")

    def security_group(self, sg: LiveResource) -> None:
        opened: list[str] = []
        for perm in sg.props.get("IpPermissions", []):
            ports = "all ports" if perm.get("IpProtocol") == "-1" else (
                f"{perm.get('IpProtocol')} {perm.get('FromPort')}-{perm.get('ToPort')}")
            cidrs = [r.get("CidrIp") for r in perm.get("IpRanges", [])] + \
                    [r.get("CidrIpv6") for r in perm.get("Ipv6Ranges", [])]
            opened += [f"{cidr} ({ports})" for cidr in cidrs if cidr and _open_to_world(cidr)]
        if opened:
            self.report("network-sg-no-public-ingress", sg,
                        f"security group {sg.name} ({sg.props.get('GroupName')}) admits ingress from "
                        f"{', '.join(opened)}.")

    def subnet(self, sn: LiveResource) -> None:
        if sn.props.get("MapPublicIpOnLaunch") and not sn.props.get("DefaultVpc"):
            self.report("network-subnet-no-public-ip", sn, f"subnet {sn.name} assigns public IPs on launch.")

    def vpc(self, vpc: LiveResource, endpoints: list[LiveResource]) -> None:
        if vpc.props.get("IsDefault"):
            return  # default VPCs are outside the stack; see README "Known limits"
        what = f"VPC {vpc.name}"
        if not self.residency.declared(vpc.site):
            self.report("residency-aws-site-declared", vpc, f"{what} is in {vpc.site}, which is not a site of this "
                        f"stack (declared: {', '.join(self.residency.sites)}).")
        have = {str(ep.props.get("ServiceName", "")).removeprefix(f"com.amazonaws.{vpc.region}.")
                for ep in endpoints if ep.props.get("VpcId") == vpc.name
                and ep.props.get("State", "available").lower() in ("available", "pending", "pendingacceptance")}
        missing = [s for s in REQUIRED_GATEWAY_ENDPOINTS + REQUIRED_INTERFACE_ENDPOINTS if s not in have]
        if missing:
            self.report(cat.VPC_ENDPOINTS, vpc, f"{what} lacks VPC endpoints for {', '.join(missing)}.")

    # ------------------------------------------------------------------------------------------------ others

    def eks(self, c: LiveResource) -> None:
        what = f"EKS cluster {c.name}"
        if not self.residency.declared(c.site):
            self.report("residency-cluster-site", c, f"{what} is in {c.site}, which is not a site of this stack "
                        f"(declared: {', '.join(self.residency.sites)}).")
        if c.props.get("endpointPublicAccess") is not False:
            self.report("network-eks-endpoint-private", c, f"{what} has a public API endpoint.")
        secrets = [e for e in c.props.get("encryptionConfig", []) if "secrets" in (e.get("resources") or [])
                   and (e.get("provider") or {}).get("keyArn")]
        if not secrets:
            self.report("encryption-eks-secrets", c, f"{what} does not envelope-encrypt secrets with a KMS key.")
        for e in secrets:
            self.colocated_key(c, what, e["provider"]["keyArn"])

    def rds(self, db: LiveResource) -> None:
        what = f"RDS instance {db.name}"
        self.placement(db, what, data_store=True)
        if not db.props.get("StorageEncrypted"):
            self.report("encryption-rds-at-rest", db, f"{what} does not encrypt storage at rest.")
        else:
            self.customer_key(db, what, db.props.get("KmsKeyId"))
        if db.props.get("PubliclyAccessible"):
            self.report("network-rds-not-public", db, f"{what} is publicly accessible.")
        self.colocated_key(db, what, db.props.get("KmsKeyId"))

    def elasticache(self, rg: LiveResource) -> None:
        what = f"ElastiCache replication group {rg.name}"
        self.placement(rg, what, data_store=True)
        off = [k for k, label in (("AtRestEncryptionEnabled", "at rest"), ("TransitEncryptionEnabled", "in transit"))
               if not rg.props.get(k)]
        if off:
            self.report("encryption-elasticache", rg, f"{what} does not encrypt "
                        f"{' or '.join('at rest' if k.startswith('AtRest') else 'in transit' for k in off)}.")
        if rg.props.get("AtRestEncryptionEnabled"):
            self.customer_key(rg, what, rg.props.get("KmsKeyId"))
        self.colocated_key(rg, what, rg.props.get("KmsKeyId"))

    def log_group(self, lg: LiveResource) -> None:
        what = f"log group {lg.name}"
        self.placement(lg, what, data_store=False)
        self.customer_key(lg, what, lg.props.get("kmsKeyId"))
        self.colocated_key(lg, what, lg.props.get("kmsKeyId"))

    def customer_key(self, res: LiveResource, what: str, key_ref: Optional[str]) -> None:
        """An encrypted store must use a customer-managed key of this account, not an AWS-managed one or none."""
        if not key_ref:
            self.report("encryption-data-store-cmk", res, f"{what} is not encrypted with a customer-managed KMS key.")
            return
        key = self.inv.key(key_ref, res.region)
        if key is None:
            self.report("encryption-data-store-cmk", res, f"{what}'s KMS key {key_ref} is not an enabled key of "
                        f"account {self.inv.account}.")
        elif key.props.get("KeyManager") != "CUSTOMER":
            self.report("encryption-data-store-cmk", res, f"{what} uses the AWS-managed key {key_ref}, not a "
                        f"customer-managed one.")

    def coverage(self) -> None:
        for gap in self.inv.gaps:
            region = "" if gap.region == "global" else f" in {gap.region}"
            arn = gap.arn or f"aws:{gap.service}:{gap.region}"
            site = f"aws:{gap.region}" if gap.region != "global" else "aws:global"
            self.findings.append(Finding(cat.AUDIT_COVERAGE, arn, f"aws:{gap.service}", gap.service, site, "unknown",
                                         f"could not audit {gap.service}{region} ({gap.what}): {gap.error}"))

    def run(self) -> list[Finding]:
        endpoints = self.inv.of_type(VPC_ENDPOINT)
        handlers = {S3_BUCKET: self.bucket, KMS_KEY: self.key, EBS_VOLUME: self.volume,
                    EBS_DEFAULT_ENCRYPTION: self.ebs_default, SECURITY_GROUP: self.security_group,
                    SUBNET: self.subnet, EKS_CLUSTER: self.eks, RDS_INSTANCE: self.rds,
                    ELASTICACHE_RG: self.elasticache, LOG_GROUP: self.log_group,
                    VPC: lambda r: self.vpc(r, endpoints)}
        for res in self.inv.resources:
            handler = handlers.get(res.type)
            if handler:
                handler(res)
        self.coverage()
        return sorted(set(self.findings), key=lambda f: (f.rule, f.arn, f.message))


def cat_tag(res: LiveResource) -> str:
    return f"finml:classification={res.classification!r}, not a classification"


def evaluate(inv: Inventory, residency: Residency) -> list[Finding]:
    return _Evaluator(inv, residency).run()


def audited_count(inv: Inventory) -> int:
    """Resources the rules looked at (endpoints are read as VPC properties, not counted on their own)."""
    return sum(1 for r in inv.resources if r.type != VPC_ENDPOINT)
