"""Every data store is encrypted with a customer-managed key of its own site: not an AWS-managed key, not none.

"Customer-managed key of the site" is decided by lineage: the store's key input must be computed from a KMS key,
replica key or alias of this stack, and that key must be at the store's site. A literal ARN or alias cannot prove
either (an AWS-managed key has an ARN too), so it fails closed - except ``alias/aws/...``, which is reported for what
it is. S3 buckets are held to the same standard by encryption-s3-sse-kms-cmk and residency-kms-key-colocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    BACKUP_VAULT, DYNAMODB_TABLE, EBS_SNAPSHOT, EBS_SNAPSHOT_COPY, EBS_VOLUME, EFS, ELASTICACHE_RG, KEY_TYPES,
    LOG_GROUP, RDS_CLUSTER, RDS_CLUSTER_INSTANCE, RDS_INSTANCE, UNKNOWN, StackIndex, as_bool, as_list, describe,
    failing_closed, get, stack_policy, violation_message,
)

SQS_QUEUE = "aws:sqs/queue:Queue"
SNS_TOPIC = "aws:sns/topic:Topic"
SECRET = "aws:secretsmanager/secret:Secret"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
KINESIS_STREAM = "aws:kinesis/stream:Stream"
MSK_CLUSTER = "aws:msk/cluster:Cluster"
OPENSEARCH_DOMAIN = "aws:opensearch/domain:Domain"


@dataclass(frozen=True)
class KeyInput:
    """One place a store names its key: top-level prop (for lineage), path to the value, what to call it, and
    when it applies (a predicate over the store's props; None: always)."""

    prop: str
    path: tuple[Any, ...]
    what: str
    applies: Optional[Callable[[Any], Any]] = None


def _flag(*path: str, default: Optional[bool] = None) -> Callable[[Any], Any]:
    def check(props: Any) -> Any:
        value = as_bool(get(props, *path))
        return default if value is None else value
    return check


STORE_KEYS: dict[str, tuple[KeyInput, ...]] = {
    EBS_VOLUME: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    EBS_SNAPSHOT_COPY: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    EFS: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    RDS_INSTANCE: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId (storage)"),
                   KeyInput("performanceInsightsKmsKeyId", ("performanceInsightsKmsKeyId",),
                            "performanceInsightsKmsKeyId", _flag("performanceInsightsEnabled", default=False))),
    RDS_CLUSTER: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId (storage)"),
                  KeyInput("performanceInsightsKmsKeyId", ("performanceInsightsKmsKeyId",),
                           "performanceInsightsKmsKeyId", _flag("performanceInsightsEnabled", default=False))),
    RDS_CLUSTER_INSTANCE: (KeyInput("performanceInsightsKmsKeyId", ("performanceInsightsKmsKeyId",),
                                    "performanceInsightsKmsKeyId",
                                    _flag("performanceInsightsEnabled", default=False)),),
    ELASTICACHE_RG: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId (at rest)"),),
    DYNAMODB_TABLE: (KeyInput("serverSideEncryption", ("serverSideEncryption", "kmsKeyArn"),
                              "serverSideEncryption.kmsKeyArn"),),
    SQS_QUEUE: (KeyInput("kmsMasterKeyId", ("kmsMasterKeyId",), "kmsMasterKeyId"),),
    SNS_TOPIC: (KeyInput("kmsMasterKeyId", ("kmsMasterKeyId",), "kmsMasterKeyId"),),
    LOG_GROUP: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    SECRET: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    ECR_REPOSITORY: (KeyInput("encryptionConfigurations", ("encryptionConfigurations", 0, "kmsKey"),
                              "encryptionConfigurations[0].kmsKey"),),
    KINESIS_STREAM: (KeyInput("kmsKeyId", ("kmsKeyId",), "kmsKeyId"),),
    MSK_CLUSTER: (KeyInput("encryptionInfo", ("encryptionInfo", "encryptionAtRestKmsKeyArn"),
                           "encryptionInfo.encryptionAtRestKmsKeyArn"),),
    OPENSEARCH_DOMAIN: (KeyInput("encryptAtRest", ("encryptAtRest", "kmsKeyId"), "encryptAtRest.kmsKeyId"),),
    BACKUP_VAULT: (KeyInput("kmsKeyArn", ("kmsKeyArn",), "kmsKeyArn"),),
}
DATA_STORE_TYPES = tuple(STORE_KEYS) + (EBS_SNAPSHOT,)


def _extra_problems(store: Any, props: Any) -> list[str]:
    """What else a store type needs for its CMK to be the whole story."""
    kind = store.resource_type
    problems: list[str] = []

    def need(value: Any, what: str) -> None:
        flag = as_bool(value)
        if flag is UNKNOWN:
            problems.append(f"{what} is unknown during preview (failing closed)")
        elif flag is not True:
            problems.append(f"{what} must be true")

    if kind in (EBS_VOLUME, EBS_SNAPSHOT_COPY, EFS):
        need(get(props, "encrypted"), "`encrypted`")
    elif kind in (RDS_INSTANCE, RDS_CLUSTER):
        if get(props, "replicateSourceDb") is None:
            need(get(props, "storageEncrypted"), "`storageEncrypted`")
    elif kind == ELASTICACHE_RG:
        need(get(props, "atRestEncryptionEnabled"), "`atRestEncryptionEnabled`")
        need(get(props, "transitEncryptionEnabled"), "`transitEncryptionEnabled`")
        if get(props, "authToken") is None:  # a secret or unknown value counts as set; absence does not
            problems.append("has no authToken (Redis AUTH) although it encrypts in transit")
    elif kind == ECR_REPOSITORY:
        types = [get(c, "encryptionType") for c in as_list(get(props, "encryptionConfigurations"))
                 if as_list(get(props, "encryptionConfigurations")) is not UNKNOWN]
        if UNKNOWN in types:
            problems.append("encryptionType is unknown during preview (failing closed)")
        elif "KMS" not in types:
            problems.append("encryptionConfigurations must use encryptionType KMS (AES256 is an AWS-managed key)")
    elif kind == KINESIS_STREAM:
        value = get(props, "encryptionType")
        if value is UNKNOWN:
            problems.append("encryptionType is unknown during preview (failing closed)")
        elif value != "KMS":
            problems.append(f"encryptionType must be KMS (is {value!r})")
    elif kind == OPENSEARCH_DOMAIN:
        need(get(props, "encryptAtRest", "enabled"), "encryptAtRest.enabled")
    elif kind == DYNAMODB_TABLE:
        need(get(props, "serverSideEncryption", "enabled"), "serverSideEncryption.enabled")
    return problems


def _key_problem(index: StackIndex, store: Any, site: Optional[str], key: KeyInput) -> Optional[str]:
    value = get(index.props(store), *key.path)
    keys = index.refs(store, key.prop, KEY_TYPES)
    if value is None:  # not set: plain dependencies on a key (the fallback lineage) do not make it set
        return f"has no {key.what}: it would use an AWS-managed key (or none); set a customer-managed key of its site"
    if isinstance(value, str) and value is not UNKNOWN and "alias/aws/" in value:
        return f"{key.what} is the AWS-managed key {value}"
    if not keys:
        shown = "unknown during preview" if value is UNKNOWN else repr(value)
        return (f"{key.what} ({shown}) resolves to no customer-managed KMS key of this stack, so neither that it is "
                "customer-managed nor where it is can be shown (failing closed)")
    for found in keys:
        key_site = index.aws_site(found)
        if not key_site.known:
            return f"{key.what}: {describe(found)} has no derivable site ({key_site.reason}; failing closed)"
        if site is not None and key_site.value != site:
            return f"{key.what} is {describe(found)} at {key_site.value}, not a key of the store's site {site}"
    return None


def data_store_cmk(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    for store in index.of_type(*DATA_STORE_TYPES):
        with failing_closed(report, store.urn, describe(store)):
            props = index.props(store)
            site = index.aws_site(store)
            cls = index.classification(store).value
            if store.resource_type == EBS_SNAPSHOT:
                # A snapshot takes its volume's key: the volume must be a store of this stack (checked itself).
                if not index.refs(store, "volumeId", (EBS_VOLUME,)):
                    report(violation_message(f"{describe(store)}: its volume is not a volume of this stack, so the "
                                             "key it inherits cannot be shown to be a customer-managed key of the "
                                             "site; failing closed.", site.value, cls), store.urn)
                continue
            problems = _extra_problems(store, props)
            for key in STORE_KEYS[store.resource_type]:
                applies = True if key.applies is None else key.applies(props)
                if applies is UNKNOWN:
                    problems.append(f"whether {key.what} is needed is unknown during preview (failing closed)")
                    continue
                if not applies:
                    continue
                if store.resource_type in (RDS_INSTANCE, RDS_CLUSTER) and key.prop == "kmsKeyId" and \
                        get(props, "replicateSourceDb") is not None and get(props, "kmsKeyId") is None:
                    problem = _replica_inherits(index, store, site.value)
                else:
                    problem = _key_problem(index, store, site.value, key)
                if problem:
                    problems.append(problem)
            if not site.known:
                problems.append(f"has no derivable site ({site.reason}), so its key cannot be shown to be of the same "
                                "site (failing closed)")
            for problem in problems:
                report(violation_message(f"{describe(store)} {problem}.", site.value, cls), store.urn)


def _replica_inherits(index: StackIndex, replica: Any, site: Optional[str]) -> Optional[str]:
    """A same-site read replica without its own kmsKeyId inherits its primary's key."""
    primaries = index.refs(replica, "replicateSourceDb", (RDS_INSTANCE, RDS_CLUSTER))
    if not primaries:
        return ("is a read replica of a database that is not in this stack and sets no kmsKeyId, so the key it "
                "inherits cannot be shown to be a customer-managed key of its site (failing closed)")
    for primary in primaries:
        primary_site = index.aws_site(primary)
        if primary_site.value != site:
            return (f"is a read replica of {describe(primary)} at {primary_site.value or '?'} in another site; a "
                    "cross-site replica must set kmsKeyId to a key of its own site")
        problem = _key_problem(index, primary, site, STORE_KEYS[primary.resource_type][0])
        if problem:
            return f"inherits the key of {describe(primary)}, which {problem}"
    return None


POLICIES: list = [
    stack_policy("encryption-data-store-cmk",
                 "Ensure every data store (EBS, EFS, RDS/Aurora incl. Performance Insights, ElastiCache, DynamoDB, "
                 "SQS, SNS, CloudWatch Logs, Secrets Manager, ECR, Kinesis, MSK, OpenSearch, Backup vaults) is "
                 "encrypted with a customer-managed KMS key of its own site.",
                 data_store_cmk, Severity.HIGH,
                 "Pass the site's customer-managed key (an aws.kms.Key of this stack at the same site) to the "
                 "store's key input, and turn its encryption flags on."),
]
