"""Encryption: data at rest under customer-managed KMS keys, in transit where the resource can express it.

Unknown values never pass: a flag or policy that preview cannot know is reported (fail closed). A key
reference that is an unknown Output counts as "a key is configured" here; which key it is, and where,
is resolved through lineage by residency-kms-key-colocated and encryption-s3-sse-kms-cmk.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Optional

from pulumi_policy import PolicyConfigSchema, ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .common import (
    DYNAMODB_TABLE, EBS_DEFAULT_ENCRYPTION, EBS_SNAPSHOT_COPY, EBS_VOLUME, EC2_INSTANCE, EFS, EKS_CLUSTER,
    ELASTICACHE_RG, FSX_LUSTRE, KEY_TYPES, KMS_KEY, KMS_KEY_POLICY, KMS_REPLICA_KEY, LAUNCH_TEMPLATE, RDS_CLUSTER,
    RDS_INSTANCE, S3_BUCKET_TYPES, S3_POLICY, S3_SSE_TYPES, UNKNOWN, StackIndex, as_bool, as_list, aws_site,
    classification_of, describe, failing_closed, get, plain, resource_policy, stack_policy, violation_message,
props_of, )
from .common import linked_buckets

KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")


def _context(args: Any, props: Any) -> tuple[Optional[str], Optional[str]]:
    return aws_site(props, args.provider).value, classification_of(args.resource_type, props).value


def _require_true(report: ReportViolation, args: Any, props: Any, value: Any, what: str,
                  absent_means: Optional[bool] = None) -> None:
    """Report unless ``value`` is true; ``absent_means`` is the provider default when the prop is unset."""
    flag = as_bool(value)
    if flag is None and value is None:
        flag = absent_means
    site, cls = _context(args, props)
    if flag is UNKNOWN:
        report(violation_message(f"{describe(args)}: {what} is unknown during preview; failing closed.", site, cls),
               args.urn)
    elif flag is not True:
        state = "not set" if value is None else f"{value!r}"
        report(violation_message(f"{describe(args)}: {what} must be true (is {state}).", site, cls), args.urn)


# --- S3 --------------------------------------------------------------------------------------------------------

def _sse_configs_for(index: StackIndex, bucket: Any) -> list[Any]:
    return [c for c in index.of_type(*S3_SSE_TYPES) if bucket in linked_buckets(index, c)]


def s3_sse_kms_cmk(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    for bucket in index.of_type(*S3_BUCKET_TYPES):
        with failing_closed(report, bucket.urn, describe(bucket)):
            site, cls = index.aws_site(bucket).value, index.classification(bucket).value
            configs = _sse_configs_for(index, bucket)
            inline = get(index.props(bucket), "serverSideEncryptionConfiguration")
            if not configs and inline is None:
                report(violation_message(f"{describe(bucket)} has no server-side encryption configuration.", site, cls),
                       bucket.urn)
                continue
            for config in configs:
                problems = _sse_problems(index, config)
                for problem in problems:
                    report(violation_message(f"{describe(bucket)}: {describe(config)} {problem}.", site, cls),
                           bucket.urn)
            if inline is not None:  # the deprecated inline input of aws.s3.Bucket encrypts just the same
                rules = UNKNOWN if inline is UNKNOWN else as_list(get(inline, "rule"))
                for problem in _rules_problems(index, bucket, "serverSideEncryptionConfiguration", rules):
                    report(violation_message(f"{describe(bucket)}: its inline serverSideEncryptionConfiguration "
                                             f"{problem}.", site, cls), bucket.urn)


def _sse_problems(index: StackIndex, config: Any) -> list[str]:
    return _rules_problems(index, config, "rules", as_list(get(index.props(config), "rules")))


def _rules_problems(index: StackIndex, owner: Any, prop: str, rules: Any) -> list[str]:
    if rules is UNKNOWN:
        return ["has rules that are unknown during preview (failing closed)"]
    if not rules:
        return ["has no rules"]
    stack_keys = index.refs(owner, prop, KEY_TYPES)
    problems = []
    for position, rule in enumerate(rules):
        default = get(rule, "applyServerSideEncryptionByDefault")
        algorithm = get(default, "sseAlgorithm")
        key = get(default, "kmsMasterKeyId")
        if default is UNKNOWN or algorithm is UNKNOWN:
            problems.append(f"rule {position} has an SSE algorithm unknown during preview (failing closed)")
        elif algorithm not in KMS_ALGORITHMS:
            problems.append(f"rule {position} uses {algorithm!r}; use aws:kms or aws:kms:dsse with a "
                            "customer-managed key")
        elif key is None:
            problems.append(f"rule {position} uses the AWS managed key aws/s3; set kmsMasterKeyId to a "
                            "customer-managed key")
        elif isinstance(key, str) and key is not UNKNOWN and "alias/aws/" in key:
            problems.append(f"rule {position} uses the AWS managed key {key}")
        elif not stack_keys:
            shown = "unknown during preview" if key is UNKNOWN else repr(key)
            problems.append(f"rule {position} key ({shown}) is not a customer-managed KMS key of this stack "
                            "(failing closed)")
    return problems


def s3_bucket_key(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in S3_SSE_TYPES + S3_BUCKET_TYPES:
        return
    props = props_of(args)
    if args.resource_type in S3_BUCKET_TYPES:  # the deprecated inline configuration, when used
        inline = get(props, "serverSideEncryptionConfiguration")
        if inline is None:
            return
        rules = UNKNOWN if inline is UNKNOWN else as_list(get(inline, "rule"))
    else:
        rules = as_list(get(props, "rules"))
    site = aws_site(props, args.provider).value
    if rules is UNKNOWN:
        report(violation_message(f"{describe(args)}: its rules are unknown during preview; failing closed.", site),
               args.urn)
        return
    for position, rule in enumerate(rules):
        algorithm = get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        if algorithm == "aws:kms:dsse":
            continue  # S3 Bucket Keys are not supported with DSSE-KMS
        enabled = as_bool(get(rule, "bucketKeyEnabled"))
        if enabled is UNKNOWN:
            report(violation_message(f"{describe(args)} rule {position}: bucketKeyEnabled is unknown during preview; "
                                     "failing closed.", site), args.urn)
        elif enabled is not True:
            report(violation_message(f"{describe(args)} rule {position}: bucketKeyEnabled must be true.", site),
                   args.urn)


def _policy_statements(policy: Any) -> tuple[Optional[list], Optional[str]]:
    if policy is UNKNOWN:
        return None, "is unknown during preview (build it from known names so preview can check it)"
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as error:
            return None, f"is not valid JSON ({error})"
    if not isinstance(policy, dict):
        return None, "is not a JSON policy document"
    statements = policy.get("Statement")
    if statements is UNKNOWN or any(s is UNKNOWN for s in as_list(statements)):
        return None, "has statements unknown during preview"
    return [s for s in as_list(statements) if isinstance(s, dict)], None


def _values(value: Any) -> list[Any]:
    return [v for v in as_list(value)] if value is not UNKNOWN else [UNKNOWN]


def _principal_values(principal: Any) -> list[Any]:
    """Every principal a Principal block names, whatever its shape: "*", ["*", ...], {"AWS": "*"},
    {"AWS": ["arn:...", "*"]}, {"Service": [...], "AWS": ...}."""
    if isinstance(principal, dict):
        return [v for value in principal.values() for v in _values(value)]
    return _values(principal)


def _is_wildcard_principal(principal: Any) -> bool:
    """True when any named principal is everyone: "*" or an ARN whose account is a wildcard (arn:aws:iam::*:root)."""
    for value in _principal_values(principal):
        if value == "*":
            return True
        if isinstance(value, str) and value is not UNKNOWN and value.startswith("arn:") and \
                ":iam::*:" in value:
            return True
    return False


ACCOUNT_CONDITION_KEYS = ("kms:calleraccount", "aws:principalaccount", "aws:sourceaccount")
_ACCOUNT_RE = __import__("re").compile(r"^\d{12}$")


def _restricted_to_accounts(statement: dict, accounts: tuple[str, ...]) -> bool:
    """A wildcard principal is fine when a condition pins the caller to the stack's own account(s): StringEquals
    (not ...IfExists, not a negated or like operator) on kms:CallerAccount, aws:PrincipalAccount or
    aws:SourceAccount with only concrete 12-digit account ids, all of them the stack's own when it names them."""
    condition = statement.get("Condition")
    if not isinstance(condition, dict):
        return False
    for operator, block in condition.items():
        if operator not in ("StringEquals", "ForAnyValue:StringEquals") or not isinstance(block, dict):
            continue
        for key, value in block.items():
            if not isinstance(key, str) or key.lower() not in ACCOUNT_CONDITION_KEYS:
                continue
            values = _values(value)
            if values and all(isinstance(v, str) and v is not UNKNOWN and _ACCOUNT_RE.match(v) for v in values) \
                    and (not accounts or all(v in accounts for v in values)):
                return True
    return False


def _covers(patterns: list, target: str) -> bool:
    """Whether one of the statement's Resource patterns (IAM wildcards * and ?) matches ``target``."""
    return any(isinstance(p, str) and p is not UNKNOWN and fnmatch.fnmatchcase(target, p) for p in patterns)


def _denies_insecure_transport(statement: dict, bucket_name: Any) -> bool:
    """A Deny of s3:* to everyone when aws:SecureTransport is false, on the bucket ARN *and* its objects."""
    if statement.get("Effect") != "Deny" or not _is_wildcard_principal(statement.get("Principal")):
        return False
    actions = _values(statement.get("Action"))
    if "s3:*" not in actions and "*" not in actions:
        return False
    condition = get(statement, "Condition", "Bool", "aws:SecureTransport")
    if as_bool(condition if not isinstance(condition, list) else (condition[0] if len(condition) == 1 else None)) \
            is not False:
        return False
    resources = _values(statement.get("Resource"))
    if "*" in resources:
        return True
    if not isinstance(bucket_name, str) or bucket_name is UNKNOWN:
        return False  # the bucket's ARN is unknown: only Resource "*" provably covers it
    arn = f"arn:aws:s3:::{bucket_name}"
    return _covers(resources, arn) and _covers(resources, f"{arn}/*")


def s3_tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    policies = index.of_type(S3_POLICY)
    for bucket in index.of_type(*S3_BUCKET_TYPES):
        with failing_closed(report, bucket.urn, describe(bucket)):
            site, cls = index.aws_site(bucket).value, index.classification(bucket).value
            attached = [p for p in policies if bucket in linked_buckets(index, p)]
            if not attached:
                report(violation_message(f"{describe(bucket)} has no bucket policy denying non-TLS access.", site, cls),
                       bucket.urn)
                continue
            name = get(index.props(bucket), "bucket")
            problems, enforced = [], False
            for policy in attached:
                statements, problem = _policy_statements(get(index.props(policy), "policy"))
                if problem:
                    problems.append(f"{describe(policy)} {problem}")
                elif any(_denies_insecure_transport(s, name) for s in statements):
                    enforced = True
            if not enforced:
                detail = ("; ".join(problems) if problems
                          else "no statement denies s3:* when aws:SecureTransport is false on both the bucket ARN "
                               "and <bucket ARN>/* (or Resource \"*\")")
                report(violation_message(f"{describe(bucket)} does not enforce TLS-only access: {detail}.", site, cls),
                       bucket.urn)


# --- block storage -----------------------------------------------------------------------------------------------

def ebs_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = props_of(args)
    if args.resource_type in (EBS_VOLUME, EBS_SNAPSHOT_COPY):
        _require_true(report, args, props, get(props, "encrypted"), "`encrypted`", absent_means=False)
    elif args.resource_type == EBS_DEFAULT_ENCRYPTION:
        _require_true(report, args, props, get(props, "enabled"), "`enabled`", absent_means=True)


def block_devices_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = props_of(args)
    if args.resource_type == LAUNCH_TEMPLATE:
        devices = as_list(get(props, "blockDeviceMappings"))
        if devices is UNKNOWN:
            _require_true(report, args, props, UNKNOWN, "blockDeviceMappings")
            return
        for position, device in enumerate(devices):
            if get(device, "ebs") is None and get(device, "virtualName") is not None:
                continue  # instance-store volume, no EBS
            _require_true(report, args, props, get(device, "ebs", "encrypted"),
                          f"blockDeviceMappings[{position}].ebs.encrypted", absent_means=False)
    elif args.resource_type == EC2_INSTANCE:
        _require_true(report, args, props, get(props, "rootBlockDevice", "encrypted"), "rootBlockDevice.encrypted",
                      absent_means=False)
        devices = as_list(get(props, "ebsBlockDevices"))
        if devices is UNKNOWN:
            _require_true(report, args, props, UNKNOWN, "ebsBlockDevices")
            return
        for position, device in enumerate(devices):
            _require_true(report, args, props, get(device, "encrypted"), f"ebsBlockDevices[{position}].encrypted",
                          absent_means=False)


# --- managed services ----------------------------------------------------------------------------------------------

def eks_secrets(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    for cluster in index.of_type(EKS_CLUSTER):
        with failing_closed(report, cluster.urn, describe(cluster)):
            site = index.aws_site(cluster).value
            config = get(index.props(cluster), "encryptionConfig")
            resources = as_list(get(config, "resources"))
            key = get(config, "provider", "keyArn")
            if config is None:
                problem = "has no encryptionConfig"
            elif resources is UNKNOWN or key is UNKNOWN and not index.refs(cluster, "encryptionConfig", KEY_TYPES):
                problem = "has an encryptionConfig unknown during preview that lineage cannot resolve (failing closed)"
            elif "secrets" not in resources:
                problem = "does not encrypt `secrets` in its encryptionConfig"
            elif key is None:
                problem = "has no encryptionConfig.provider.keyArn"
            else:
                continue
            report(violation_message(f"{describe(cluster)} {problem}.", site), cluster.urn)


def file_systems_at_rest(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = props_of(args)
    if args.resource_type == EFS:
        _require_true(report, args, props, get(props, "encrypted"), "`encrypted`", absent_means=False)
    elif args.resource_type == FSX_LUSTRE:
        # Lustre always encrypts at rest; persistent file systems must use a customer-managed key.
        deployment = get(props, "deploymentType")
        key = get(props, "kmsKeyId")
        site, cls = _context(args, props)
        if deployment is UNKNOWN:
            report(violation_message(f"{describe(args)}: deploymentType is unknown during preview; failing closed.",
                                     site, cls), args.urn)
        elif isinstance(deployment, str) and deployment.startswith("PERSISTENT") and key is None:
            report(violation_message(f"{describe(args)}: a {deployment} file system must set kmsKeyId to a "
                                     "customer-managed key.", site, cls), args.urn)


def rds_at_rest(args: StackValidationArgs, report: ReportViolation) -> None:
    """storageEncrypted must be true - except on a read replica that leaves it unset: a replica of an encrypted
    primary in the same site is encrypted too (AWS inherits it); a cross-site one must set its own key."""
    index = StackIndex.of(args)
    for database in index.of_type(RDS_INSTANCE, RDS_CLUSTER):
        with failing_closed(report, database.urn, describe(database)):
            props = index.props(database)
            site, cls = index.aws_site(database).value, index.classification(database).value
            flag = as_bool(get(props, "storageEncrypted"))
            source = get(props, "replicateSourceDb")
            if flag is True:
                continue
            if flag is UNKNOWN:
                problem = "`storageEncrypted` is unknown during preview; failing closed"
            elif flag is None and source is not None:
                problem = _replica_encryption_problem(index, database, site)
                if problem is None:
                    continue
            else:
                problem = f"`storageEncrypted` must be true (is {'not set' if flag is None else repr(flag)})"
            report(violation_message(f"{describe(database)}: {problem}.", site, cls), database.urn)


def _replica_encryption_problem(index: StackIndex, replica: Any, site: Optional[str]) -> Optional[str]:
    primaries = index.refs(replica, "replicateSourceDb", (RDS_INSTANCE, RDS_CLUSTER))
    if not primaries:
        return ("it is a read replica of a database outside this stack and does not set `storageEncrypted`, so "
                "whether it inherits encryption cannot be shown; failing closed")
    for primary in primaries:
        primary_site = index.aws_site(primary).value
        if as_bool(get(index.props(primary), "storageEncrypted")) is not True:
            return f"it is a read replica of {describe(primary)}, which is not encrypted at rest"
        if primary_site != site and get(index.props(replica), "kmsKeyId") is None:
            return (f"it is a cross-site read replica of {describe(primary)} ({primary_site} -> {site}); set "
                    "`storageEncrypted: true` and kmsKeyId to a key of its own site")
    return None


RDS_PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
RDS_CLUSTER_PARAMETER_GROUP = "aws:rds/clusterParameterGroup:ClusterParameterGroup"
# engine prefix -> (parameter that forces TLS, accepted values); other engines (Oracle: option groups) are not
# expressible through parameters and are not checked here.
TLS_PARAMETERS = (
    ("aurora-postgresql", "rds.force_ssl", ("1",)),
    ("postgres", "rds.force_ssl", ("1",)),
    ("aurora-mysql", "require_secure_transport", ("1", "ON", "on")),
    ("mysql", "require_secure_transport", ("1", "ON", "on")),
    ("mariadb", "require_secure_transport", ("1", "ON", "on")),
    ("sqlserver", "rds.force_ssl", ("1",)),
)


def _rds_tls_problem(index: StackIndex, database: Any) -> Optional[str]:
    props = index.props(database)
    engine = get(props, "engine")
    if engine is UNKNOWN:
        return "its engine is unknown during preview, so the TLS parameter cannot be checked (failing closed)"
    match = next((t for t in TLS_PARAMETERS if isinstance(engine, str) and engine.startswith(t[0])), None)
    if match is None:
        return None
    _, parameter, accepted = match
    if database.resource_type == RDS_INSTANCE and engine.startswith("aurora"):
        return None  # Aurora instances take TLS settings from their cluster's parameter group
    if database.resource_type == RDS_CLUSTER:
        prop, group_type = "dbClusterParameterGroupName", RDS_CLUSTER_PARAMETER_GROUP
    else:
        prop, group_type = "parameterGroupName", RDS_PARAMETER_GROUP
    name = get(props, prop)
    groups = index.refs(database, prop, (group_type,))
    if not groups and isinstance(name, str) and name is not UNKNOWN:
        groups = [g for g in index.of_type(group_type) if get(index.props(g), "name") == name]
    if name is None:
        return f"uses the default parameter group; set {prop} to a group with {parameter}={accepted[0]}"
    if not groups:
        shown = "unknown during preview" if name is UNKNOWN else repr(name)
        return f"its {prop} ({shown}) is not a parameter group of this stack, so {parameter} cannot be checked"
    for group in groups:
        parameters = as_list(get(index.props(group), "parameters"))
        if parameters is UNKNOWN:
            return f"the parameters of {describe(group)} are unknown during preview (failing closed)"
        values = [get(p, "value") for p in parameters if get(p, "name") == parameter]
        if any(v is UNKNOWN for v in values):
            return f"{parameter} in {describe(group)} is unknown during preview (failing closed)"
        if not any(str(v) in accepted for v in values):
            return f"{describe(group)} does not set {parameter}={accepted[0]}"
    return None


def rds_in_transit(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    for database in index.of_type(RDS_INSTANCE, RDS_CLUSTER):
        with failing_closed(report, database.urn, describe(database)):
            problem = _rds_tls_problem(index, database)
            if problem:
                report(violation_message(f"{describe(database)} does not enforce TLS in transit: {problem}.",
                                         index.aws_site(database).value, index.classification(database).value),
                       database.urn)


def elasticache_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != ELASTICACHE_RG:
        return
    props = props_of(args)
    _require_true(report, args, props, get(props, "atRestEncryptionEnabled"), "`atRestEncryptionEnabled`",
                  absent_means=None)
    _require_true(report, args, props, get(props, "transitEncryptionEnabled"), "`transitEncryptionEnabled`",
                  absent_means=False)


def dynamodb_cmk(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != DYNAMODB_TABLE:
        return
    props = props_of(args)
    _require_true(report, args, props, get(props, "serverSideEncryption", "enabled"), "serverSideEncryption.enabled",
                  absent_means=False)
    if as_bool(get(props, "serverSideEncryption", "enabled")) is True and get(props, "serverSideEncryption",
                                                                              "kmsKeyArn") is None:
        site, cls = _context(args, props)
        report(violation_message(f"{describe(args)}: serverSideEncryption.kmsKeyArn must name a customer-managed key.",
                                 site, cls), args.urn)


# --- KMS ---------------------------------------------------------------------------------------------------------

def kms_rotation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != KMS_KEY:
        return
    props = props_of(args)
    usage, specs = get(props, "keyUsage"), [get(props, "keySpec"), get(props, "customerMasterKeySpec")]
    if usage is UNKNOWN or any(spec is UNKNOWN for spec in specs):
        site, cls = _context(args, props)
        report(violation_message(f"{describe(args)}: its keyUsage/keySpec is unknown during preview, so whether it "
                                 "must rotate cannot be decided; failing closed.", site, cls), args.urn)
        return
    if usage not in (None, "ENCRYPT_DECRYPT") or any(spec not in (None, "SYMMETRIC_DEFAULT") for spec in specs):
        args.not_applicable("AWS KMS rotates only symmetric encryption keys (not asymmetric or HMAC keys)")
    _require_true(report, args, props, get(props, "enableKeyRotation"), "`enableKeyRotation`", absent_means=False)


def kms_no_wildcard_principal(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (KMS_KEY, KMS_REPLICA_KEY, KMS_KEY_POLICY):
        return
    props = props_of(args)
    policy = get(props, "policy")
    if policy is None and args.resource_type != KMS_KEY_POLICY:
        return  # the default key policy grants only the account
    if policy is None:
        policy = "null"  # a KeyPolicy resource without a policy document: fail closed
    site, cls = _context(args, props)
    statements, problem = _policy_statements(policy)
    if problem:
        report(violation_message(f"{describe(args)}: its key policy {problem}; failing closed.", site, cls), args.urn)
        return
    accounts = tuple(a for a in as_list(plain(args.get_config() or {}).get("accountIds")) if isinstance(a, str))
    for position, statement in enumerate(statements):
        if statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid", position)
        principals = _principal_values(statement.get("Principal"))
        if "NotPrincipal" in statement:
            report(violation_message(f"{describe(args)}: key policy statement {sid!r} allows everyone but a "
                                     "NotPrincipal list.", site, cls), args.urn)
        elif UNKNOWN in principals:
            report(violation_message(f"{describe(args)}: key policy statement {sid!r} has a principal unknown during "
                                     "preview; failing closed.", site, cls), args.urn)
        elif _is_wildcard_principal(statement.get("Principal")) and not _restricted_to_accounts(statement, accounts):
            report(violation_message(f"{describe(args)}: key policy statement {sid!r} allows a wildcard principal "
                                     "without a condition pinning the caller to this stack's account "
                                     "(kms:CallerAccount, aws:PrincipalAccount or aws:SourceAccount).",
                                     site, cls), args.urn)


POLICIES: list = [
    stack_policy("encryption-s3-sse-kms-cmk",
                 "Ensure every S3 bucket has an SSE configuration using aws:kms or aws:kms:dsse with a "
                 "customer-managed key from this stack.",
                 s3_sse_kms_cmk, Severity.CRITICAL,
                 "Add a BucketServerSideEncryptionConfiguration with sseAlgorithm aws:kms and the site's KMS key."),
    resource_policy("encryption-s3-bucket-key",
                    "Ensure SSE-KMS bucket encryption enables the S3 Bucket Key.",
                    s3_bucket_key, Severity.MEDIUM, "Set bucketKeyEnabled: true on every SSE-KMS rule.",
                    types=S3_SSE_TYPES + S3_BUCKET_TYPES),
    stack_policy("encryption-s3-tls-only",
                 "Ensure every S3 bucket has a bucket policy denying requests without TLS on the bucket and its "
                 "objects.",
                 s3_tls_only, Severity.HIGH,
                 "Attach a bucket policy with Deny s3:* for Principal * when aws:SecureTransport is false."),
    resource_policy("encryption-ebs-encrypted",
                    "Ensure EBS volumes and snapshot copies are encrypted and account default encryption stays on.",
                    ebs_encrypted, Severity.HIGH, "Set encrypted: true with the site's KMS key.", types=(EBS_VOLUME, EBS_SNAPSHOT_COPY, EBS_DEFAULT_ENCRYPTION)),
    resource_policy("encryption-block-devices-encrypted",
                    "Ensure launch-template and instance EBS block devices are encrypted.",
                    block_devices_encrypted, Severity.HIGH,
                    "Set ebs.encrypted (launch templates) / encrypted (instances) to true with the site's KMS key.", types=(LAUNCH_TEMPLATE, EC2_INSTANCE)),
    stack_policy("encryption-eks-secrets",
                 "Ensure EKS clusters envelope-encrypt Kubernetes secrets with a KMS key.",
                 eks_secrets, Severity.HIGH,
                 "Set encryptionConfig {resources: [secrets], provider.keyArn: <site KMS key>}."),
    resource_policy("encryption-file-systems-at-rest",
                    "Ensure EFS and persistent FSx for Lustre file systems are encrypted at rest with a KMS key.",
                    file_systems_at_rest, Severity.HIGH,
                    "Set encrypted: true (EFS) / kmsKeyId (persistent FSx for Lustre).", types=(EFS, FSX_LUSTRE)),
    stack_policy("encryption-rds-at-rest",
                 "Ensure RDS instances and clusters encrypt storage at rest (same-site read replicas of an encrypted "
                 "primary inherit it).",
                 rds_at_rest, Severity.HIGH, "Set storageEncrypted: true with the site's KMS key."),
    stack_policy("encryption-rds-in-transit",
                 "Ensure RDS databases force TLS in transit through their parameter group.",
                 rds_in_transit, Severity.HIGH,
                 "Attach a parameter group with rds.force_ssl=1 (PostgreSQL, SQL Server) or "
                 "require_secure_transport=ON (MySQL, MariaDB)."),
    resource_policy("encryption-elasticache",
                    "Ensure ElastiCache replication groups encrypt data at rest and in transit.",
                    elasticache_encrypted, Severity.HIGH,
                    "Set atRestEncryptionEnabled and transitEncryptionEnabled to true.", types=(ELASTICACHE_RG,)),
    resource_policy("encryption-dynamodb-cmk",
                    "Ensure DynamoDB tables use server-side encryption with a customer-managed key.",
                    dynamodb_cmk, Severity.MEDIUM,
                    "Set serverSideEncryption {enabled: true, kmsKeyArn: <site KMS key>}.", types=(DYNAMODB_TABLE,)),
    resource_policy("encryption-kms-rotation",
                    "Ensure symmetric customer-managed KMS keys rotate automatically.",
                    kms_rotation, Severity.MEDIUM, "Set enableKeyRotation: true.", types=(KMS_KEY,)),
    resource_policy("encryption-kms-no-wildcard-principal",
                    "Ensure KMS key policies (on keys, replica keys and aws:kms/keyPolicy resources) never allow a "
                    "wildcard principal.",
                    kms_no_wildcard_principal, Severity.CRITICAL,
                    "Name explicit account/role principals in the key policy instead of \"*\" (or pin \"*\" to the "
                    "account with a kms:CallerAccount condition).",
                    PolicyConfigSchema(properties={"accountIds": {
                        "type": "array", "items": {"type": "string"},
                        "description": "the stack's AWS account ids: a wildcard principal pinned to one of them by "
                                       "a condition is not a wildcard"}}),
                    types=(KMS_KEY, KMS_REPLICA_KEY, KMS_KEY_POLICY)),
]
