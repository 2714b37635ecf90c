"""Copies count: replicas, backup copies, snapshot copies and replica keys stay on sites allowed for the data's
classification, and the key protecting data is on the data's own site."""

from __future__ import annotations

from typing import Any, Optional

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    AWS_DATA_TYPES, BACKUP_PLAN, BACKUP_SELECTION, BACKUP_VAULT, CLUSTER_TYPES, DATASET, DEFAULT_PROVIDER_PACKAGES,
    DYNAMODB_TABLE, DYNAMODB_TABLE_REPLICA, EBS_SNAPSHOT, EBS_SNAPSHOT_COPY, EBS_VOLUME, EFS, EFS_REPLICATION, EKS_CLUSTER, ELASTICACHE_RG,
    FSX_LUSTRE, K8S_DATA_TYPES, LOG_GROUP, RDS_CLUSTER_INSTANCE, K8S_PROVIDER, K8S_PV, K8S_WORKLOAD_TYPES, KEY_TYPES, KMS_KEY, KMS_REPLICA_KEY,
    LABEL_CLASSIFICATION, LABEL_MODEL, LABEL_SITE, ML_TYPES, MODEL, RDS_CLUSTER, RDS_INSTANCE, S3_BUCKET_TYPES,
    S3_REPLICATION, S3_SSE_TYPES, UNKNOWN, Derived, Residency, StackIndex, as_list, aws_site, classification_of,
    describe, exempt_namespaces, failing_closed, get, k8s_label, k8s_label_values, max_classification, namespace_name,
    plain, pod_spec, region_site_from_arn, require_residency, residency_schema, resource_policy, site_label_value,
    stack_policy, violation_message,
props_of, )
from .common import _bucket_name_from_arn, _buckets_named, linked_buckets
from .residency import _FIX, SCHEMA
from .sites import check_placement as _check_placement, each_resource, underivable_site

# --- copies: S3 replication ------------------------------------------------------------------------------

def _key_sites(index: StackIndex, resource: Any, prop: str,
               value: Any) -> tuple[list[tuple[str, Derived]], Optional[str]]:
    """Sites of the KMS key(s) a key reference resolves to: via lineage first, else the ARN's region."""
    keys = index.refs(resource, prop, KEY_TYPES)
    if keys:
        return [(describe(k), index.aws_site(k)) for k in keys], None
    arn_site = region_site_from_arn(value)
    if arn_site is not None:
        return [(f"KMS key {value}", Derived(arn_site))], None
    shown = "unknown during preview" if value is UNKNOWN else repr(value)
    return [], f"its KMS key reference ({prop}: {shown}) resolves to no KMS key in the stack and carries no region"


def _check_s3_replication_rules(index: StackIndex, report: ReportViolation, owner: Any, sources: list,
                                source_cls: str, rules: list, prop: str, residency: Residency) -> None:
    """Each rule's destination bucket (and replica KMS key) must be on a site allowed for ``source_cls``.

    ``prop`` is the top-level prop the rules live in (``rules`` of a BucketReplicationConfig,
    ``replicationConfiguration`` of a bucket), whose lineage resolves unknown destinations."""
    candidates = [b for b in index.refs(owner, prop, S3_BUCKET_TYPES) if b not in sources]
    for position, rule in enumerate(rules):
        destination = get(rule, "destination", "bucket")
        name = _bucket_name_from_arn(destination)
        if name is not None:
            targets = _buckets_named(index, name) or [b for b in candidates if get(index.props(b), "bucket") == name]
            if not targets:
                report(violation_message(
                    f"{describe(owner)} rule {position} replicates to bucket {name!r}, which is not in this "
                    "stack; its region cannot be derived (S3 ARNs carry none); failing closed.",
                    None, source_cls), owner.urn)
                continue
        elif candidates:
            targets = candidates  # unknown ARN: every bucket the rules were computed from must qualify
        else:
            shown = "unknown during preview" if destination is UNKNOWN else repr(destination)
            report(violation_message(
                f"{describe(owner)} rule {position} destination bucket ({shown}) resolves to no bucket in "
                "the stack; failing closed.", None, source_cls), owner.urn)
            continue
        replica_key = get(rule, "destination", "encryptionConfiguration", "replicaKmsKeyId")
        if replica_key is None:
            replica_key = get(rule, "destination", "replicaKmsKeyId")  # inline bucket replicationConfiguration
        for target in targets:
            site = index.aws_site(target)
            _check_placement(report, owner.urn, f"{describe(owner)} rule {position} replica {describe(target)}",
                             site, source_cls, residency)
            if replica_key is None:
                continue
            key_sites, problem = _key_sites(index, owner, prop, replica_key)
            if problem:
                report(violation_message(f"{describe(owner)} rule {position}: {problem}; failing closed.",
                                         site.value, source_cls), owner.urn)
            for key_name, key_site in key_sites:
                if not key_site.known or key_site.value != site.value:
                    report(violation_message(
                        f"{describe(owner)} rule {position}: replica {key_name} is at "
                        f"{key_site.value or 'an underivable site (' + str(key_site.reason) + ')'}, not at the "
                        f"replica bucket's site.", site.value, source_cls), owner.urn)


def s3_replication_destination(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    configs = index.of_type(S3_REPLICATION)
    inline = [b for b in index.of_type(*S3_BUCKET_TYPES)
              if get(index.props(b), "replicationConfiguration") is not None]
    residency = require_residency(args, report, configs + inline)
    if residency is None:
        return
    for config in configs:
        with failing_closed(report, config.urn, describe(config)):
            sources = linked_buckets(index, config)
            source_cls = max_classification(index.classification(b).value for b in sources)
            if not sources or source_cls is None or any(not index.classification(b).known for b in sources):
                report(violation_message(f"{describe(config)}: the classification of the source bucket cannot be "
                                         "derived; failing closed."), config.urn)
                continue
            rules = as_list(get(index.props(config), "rules"))
            if rules is UNKNOWN:
                report(violation_message(f"{describe(config)}: its rules are unknown during preview; failing closed.",
                                         None, source_cls), config.urn)
                continue
            _check_s3_replication_rules(index, report, config, sources, source_cls, rules, "rules", residency)
    for bucket in inline:  # a bucket's own (inline) replicationConfiguration copies its data just the same
        with failing_closed(report, bucket.urn, describe(bucket)):
            cls = index.classification(bucket)
            rules = as_list(get(index.props(bucket), "replicationConfiguration", "rules"))
            if not cls.known:
                report(violation_message(f"{describe(bucket)} replicates its objects, but {cls.reason}; failing "
                                         "closed."), bucket.urn)
            elif rules is UNKNOWN:
                report(violation_message(f"{describe(bucket)}: its replicationConfiguration rules are unknown during "
                                         "preview; failing closed.", None, cls.value), bucket.urn)
            else:
                _check_s3_replication_rules(index, report, bucket, [bucket], cls.value, rules,
                                            "replicationConfiguration", residency)


# --- copies: DynamoDB global-table replicas and EFS replication -----------------------------------------------

def _check_replica_key(index: StackIndex, report: ReportViolation, owner: Any, what: str, prop: str, key: Any,
                       site: Derived, cls: str) -> None:
    """A replica's KMS key (ARN region, else lineage) must be on the replica's own site."""
    if key is None:
        return
    arn_site = region_site_from_arn(key)
    if arn_site is not None:
        key_sites = [(f"KMS key {key}", Derived(arn_site))]
    else:
        key_sites, problem = _key_sites(index, owner, prop, key)
        if problem:
            report(violation_message(f"{what}: {problem}; failing closed.", site.value, cls), owner.urn)
            return
    for key_name, key_site in key_sites:
        if not key_site.known or key_site.value != site.value:
            where = key_site.value or f"an underivable site ({key_site.reason})"
            report(violation_message(f"{what}: its {key_name} is at {where}, not at the replica's site.",
                                     site.value, cls), owner.urn)


def _dynamodb_replicas(index: StackIndex, report: ReportViolation, table: Any, residency: Residency) -> None:
    replicas = as_list(get(index.props(table), "replicas"))
    if replicas == []:
        return
    cls = index.classification(table)
    if not cls.known:
        report(violation_message(f"{describe(table)} has replicas, but {cls.reason}; failing closed."), table.urn)
        return
    if replicas is UNKNOWN:
        report(violation_message(f"{describe(table)}: its replicas are unknown during preview; failing closed.", None,
                                 cls.value), table.urn)
        return
    for position, replica in enumerate(replicas):
        what = f"{describe(table)} replica {position}"
        region = get(replica, "regionName")
        if not isinstance(region, str) or region is UNKNOWN or not region:
            shown = "unknown during preview" if region is UNKNOWN or replica is UNKNOWN else repr(region)
            report(violation_message(f"{what}: its regionName ({shown}) gives no site; failing closed.", None,
                                     cls.value), table.urn)
            continue
        site = Derived(f"aws:{region}")
        _check_placement(report, table.urn, what, site, cls.value, residency)
        _check_replica_key(index, report, table, what, "replicas", get(replica, "kmsKeyArn"), site, cls.value)


def _dynamodb_table_replica(index: StackIndex, report: ReportViolation, replica: Any, residency: Residency) -> None:
    """A standalone TableReplica: its own site (region / provider) must be allowed for the global table's data."""
    tables = index.refs(replica, "globalTableArn", (DYNAMODB_TABLE,))
    classes = [index.classification(t) for t in tables] + [index.classification(replica)]
    cls = max_classification(c.value for c in classes)
    if not tables or cls is None or not all(c.known for c in classes[:-1]):
        report(violation_message(f"{describe(replica)}: the classification of the replicated table cannot be derived "
                                 "(its global table is not a classified table of this stack); failing closed."),
               replica.urn)
        return
    site = index.aws_site(replica)
    _check_placement(report, replica.urn, describe(replica), site, cls, residency)
    if site.known:
        _check_replica_key(index, report, replica, describe(replica), "kmsKeyArn",
                           get(index.props(replica), "kmsKeyArn"), site, cls)


def _efs_replication(index: StackIndex, report: ReportViolation, config: Any, residency: Residency) -> None:
    sources = index.refs(config, "sourceFileSystemId", (EFS,))
    classes = [index.classification(fs) for fs in sources]
    if not sources or not all(c.known for c in classes):
        reason = (next(c.reason for c in classes if not c.known) if sources else
                  "its source file system is not a file system of this stack")
        report(violation_message(f"{describe(config)}: the classification of the replicated data cannot be derived "
                                 f"({reason}); failing closed."), config.urn)
        return
    cls = max_classification(c.value for c in classes)
    destination = get(index.props(config), "destination")
    region = get(destination, "region")
    targets = index.refs(config, "destination", (EFS,))
    if destination is UNKNOWN or region is UNKNOWN:
        if not targets:
            report(violation_message(f"{describe(config)}: its destination region is unknown during preview and "
                                     "resolves to no file system in the stack; failing closed.", None, cls),
                   config.urn)
            return
        sites = [(describe(t), index.aws_site(t)) for t in targets]
    elif isinstance(region, str) and region:
        sites = [(f"region {region}", Derived(f"aws:{region}"))]
    elif targets:
        sites = [(describe(t), index.aws_site(t)) for t in targets]
    else:
        report(violation_message(f"{describe(config)}: its destination names neither a region nor a file system of "
                                 "this stack, so its site cannot be derived; failing closed.", None, cls), config.urn)
        return
    for name, site in sites:
        what = f"{describe(config)} destination {name}"
        _check_placement(report, config.urn, what, site, cls, residency)
        if site.known:
            _check_replica_key(index, report, config, what, "destination", get(destination, "kmsKeyId"), site, cls)


def replica_destination(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    tables, configs = index.of_type(DYNAMODB_TABLE), index.of_type(EFS_REPLICATION)
    table_replicas = index.of_type(DYNAMODB_TABLE_REPLICA)
    residency = require_residency(args, report, tables + table_replicas + configs)
    if residency is None:
        return
    for replica in table_replicas:
        with failing_closed(report, replica.urn, describe(replica)):
            _dynamodb_table_replica(index, report, replica, residency)
    for table in tables:
        with failing_closed(report, table.urn, describe(table)):
            _dynamodb_replicas(index, report, table, residency)
    for config in configs:
        with failing_closed(report, config.urn, describe(config)):
            _efs_replication(index, report, config, residency)


# --- copies: AWS Backup copy actions ----------------------------------------------------------------------

def _plan_classification(index: StackIndex, plan: Any) -> Derived:
    own = index.classification(plan)
    if own.known:
        return own
    protected = []
    for selection in index.of_type(BACKUP_SELECTION):
        if plan in index.refs(selection, "planId", (BACKUP_PLAN,)):
            protected.extend(index.refs(selection, "resources", AWS_DATA_TYPES))
    classes = [index.classification(r) for r in protected]
    if not protected or not all(c.known for c in classes):
        return Derived(None, "neither its tag nor the classified resources its backup selections cover decide it")
    return Derived(max_classification(c.value for c in classes))


def backup_copy_destination(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    plans = index.of_type(BACKUP_PLAN)
    residency = require_residency(args, report, plans)
    if residency is None:
        return
    for plan in plans:
        with failing_closed(report, plan.urn, describe(plan)):
            rules = as_list(get(index.props(plan), "rules"))
            actions = [] if rules is UNKNOWN else [
                (position, action) for position, rule in enumerate(rules)
                for action in (as_list(get(rule, "copyActions")) if get(rule, "copyActions") is not UNKNOWN
                               else [UNKNOWN])]
            if rules is not UNKNOWN and not actions:
                continue  # no copies
            cls = _plan_classification(index, plan)
            if not cls.known:
                report(violation_message(f"{describe(plan)} copies backups, but its classification cannot be derived: "
                                         f"{cls.reason}; failing closed."), plan.urn)
                continue
            if rules is UNKNOWN:
                report(violation_message(f"{describe(plan)}: its rules are unknown during preview; failing closed.",
                                         None, cls.value), plan.urn)
                continue
            vaults = index.refs(plan, "rules", (BACKUP_VAULT,))
            for position, action in actions:
                arn = get(action, "destinationVaultArn") if action is not UNKNOWN else UNKNOWN
                arn_site = region_site_from_arn(arn)
                if arn_site is not None:
                    targets = [(f"vault {arn}", Derived(arn_site))]
                elif vaults:
                    targets = [(describe(v), index.aws_site(v)) for v in vaults]
                else:
                    report(violation_message(f"{describe(plan)} rule {position}: the copy destination vault is unknown "
                                             "during preview and resolves to no vault in the stack; failing closed.",
                                             None, cls.value), plan.urn)
                    continue
                for name, site in targets:
                    _check_placement(report, plan.urn, f"{describe(plan)} rule {position} copy to {name}", site,
                                     cls.value, residency)


# --- copies: EBS snapshot copies ---------------------------------------------------------------------------

def _snapshot_classification(index: StackIndex, copy: Any) -> Derived:
    classes = [index.classification(copy)]
    for source in index.refs(copy, "sourceSnapshotId", (EBS_SNAPSHOT, EBS_SNAPSHOT_COPY)):
        classes.append(index.classification(source))
        for volume in index.refs(source, "volumeId", (EBS_VOLUME,)):
            classes.append(index.classification(volume))
    known = max_classification(c.value for c in classes)
    if known is None:
        return Derived(None, "neither its tag nor its source snapshot/volume lineage gives a classification")
    return Derived(known)


def ebs_snapshot_copy(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)

    def check(copy: Any, residency: Residency) -> None:
        cls = _snapshot_classification(index, copy)
        if not cls.known:
            report(violation_message(f"{describe(copy)}: {cls.reason}; failing closed."), copy.urn)
            return
        _check_placement(report, copy.urn, describe(copy), index.aws_site(copy), cls.value, residency)

    each_resource(args, report, index.of_type(EBS_SNAPSHOT_COPY), check)


# --- copies: KMS replica keys -------------------------------------------------------------------------------

_KEY_PROPS = {  # data resource type -> (top-level prop, path to the key reference)
    EBS_VOLUME: ("kmsKeyId", ("kmsKeyId",)),
    EBS_SNAPSHOT_COPY: ("kmsKeyId", ("kmsKeyId",)),
    EFS: ("kmsKeyId", ("kmsKeyId",)),
    FSX_LUSTRE: ("kmsKeyId", ("kmsKeyId",)),
    RDS_INSTANCE: ("kmsKeyId", ("kmsKeyId",)),
    RDS_CLUSTER: ("kmsKeyId", ("kmsKeyId",)),
    ELASTICACHE_RG: ("kmsKeyId", ("kmsKeyId",)),
    EKS_CLUSTER: ("encryptionConfig", ("encryptionConfig", "provider", "keyArn")),
    DYNAMODB_TABLE: ("serverSideEncryption", ("serverSideEncryption", "kmsKeyArn")),
    BACKUP_VAULT: ("kmsKeyArn", ("kmsKeyArn",)),
    LOG_GROUP: ("kmsKeyId", ("kmsKeyId",)),
    RDS_CLUSTER_INSTANCE: ("performanceInsightsKmsKeyId", ("performanceInsightsKmsKeyId",)),
}


def _key_consumers(index: StackIndex, key: Any) -> list[Any]:
    """Data resources whose encryption uses ``key`` (SSE configs stand for their buckets)."""
    found = []
    for resource in index.resources:
        if resource.resource_type in S3_SSE_TYPES and key in index.refs(resource, "rules", KEY_TYPES):
            found.extend(linked_buckets(index, resource))
        elif resource.resource_type in _KEY_PROPS and key in index.refs(resource, _KEY_PROPS[resource.resource_type][0],
                                                                            KEY_TYPES):
            found.append(resource)
    return found


def key_classification(index: StackIndex, key: Any) -> Derived:
    own = index.classification(key)
    if own.known:
        return own
    consumers = [c for c in _key_consumers(index, key) if c.resource_type in AWS_DATA_TYPES]
    known = max_classification(index.classification(c).value for c in consumers)
    if known is None:
        return Derived(None, f"{describe(key)} has no classification tag and protects no classified data in the stack")
    return Derived(known)


def kms_replica_key(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)

    def check(replica: Any, residency: Residency) -> None:
        primaries = index.refs(replica, "primaryKeyArn", (KMS_KEY,))
        if not primaries:
            report(violation_message(f"{describe(replica)}: its primary key is not a key in this stack, so the "
                                     "classification it protects cannot be derived; failing closed."),
                   replica.urn)
            return
        classes = [key_classification(index, p) for p in primaries] + [index.classification(replica)]
        cls = max_classification(c.value for c in classes)
        if cls is None:
            report(violation_message(f"{describe(replica)}: {classes[0].reason}; failing closed."), replica.urn)
            return
        _check_placement(report, replica.urn, describe(replica), index.aws_site(replica), cls, residency)

    each_resource(args, report, index.of_type(KMS_REPLICA_KEY), check)


# --- residency-kms-key-colocated ----------------------------------------------------------------------------

def kms_key_colocated(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    users = [r for r in index.resources if r.resource_type in _KEY_PROPS or r.resource_type in S3_SSE_TYPES
             or (r.resource_type in S3_BUCKET_TYPES
                 and get(index.props(r), "serverSideEncryptionConfiguration") is not None)]
    residency = require_residency(args, report, users)
    if residency is None:
        return
    for user in users:
        with failing_closed(report, user.urn, describe(user)):
            props = index.props(user)
            if user.resource_type in S3_BUCKET_TYPES:
                inline = get(props, "serverSideEncryptionConfiguration")
                rules = UNKNOWN if inline is UNKNOWN else as_list(get(inline, "rule"))
                refs = ([UNKNOWN] if rules is UNKNOWN else
                        [get(r, "applyServerSideEncryptionByDefault", "kmsMasterKeyId") for r in rules])
                prop, data = "serverSideEncryptionConfiguration", [user]
            elif user.resource_type in S3_SSE_TYPES:
                rules = as_list(get(props, "rules"))
                refs = ([UNKNOWN] if rules is UNKNOWN else
                        [get(r, "applyServerSideEncryptionByDefault", "kmsMasterKeyId") for r in rules])
                prop, data = "rules", linked_buckets(index, user)
                if not data:
                    report(violation_message(f"{describe(user)}: the bucket it encrypts is not derivable; "
                                             "failing closed."), user.urn)
                    continue
            else:
                prop, path = _KEY_PROPS[user.resource_type]
                refs, data = [get(props, *path)], [user]
            for ref in refs:
                if ref is None:
                    continue  # no CMK configured: the encryption rules report that
                key_sites, problem = _key_sites(index, user, prop, ref)
                for item in data:
                    data_site = index.aws_site(item)
                    cls = index.classification(item).value
                    if problem:
                        report(violation_message(f"{describe(user)}: {problem}; failing closed.", data_site.value,
                                                 cls), user.urn)
                        continue
                    if not data_site.known:
                        report(underivable_site(describe(item), data_site, cls), user.urn)
                        continue
                    for key_name, key_site in key_sites:
                        if key_site.value != data_site.value:
                            where = key_site.value or f"an underivable site ({key_site.reason})"
                            report(violation_message(f"{key_name} protecting {describe(item)} is at {where}, not at "
                                                     f"the data's site.", data_site.value, cls), user.urn)


POLICIES: list = [
    stack_policy("residency-s3-replication-destination",
                 "Ensure S3 replication destinations and their replica KMS keys are in sites allowed for the source "
                 "data.",
                 s3_replication_destination, Severity.CRITICAL,
                 "Replicate only to a bucket (and replica key) of this stack on an allowed site.", SCHEMA),
    stack_policy("residency-replica-destination",
                 "Ensure DynamoDB global-table replicas (inline or TableReplica) and EFS replication destinations "
                 "(and their KMS keys) are in sites allowed for the replicated data.",
                 replica_destination, Severity.CRITICAL,
                 "Replicate only to regions allowed for the data's classification, with a KMS key of that region.",
                 SCHEMA),
    stack_policy("residency-backup-copy-destination",
                 "Ensure AWS Backup copy actions only copy to vaults in sites allowed for the protected data.",
                 backup_copy_destination, Severity.CRITICAL,
                 "Point copyActions at a vault on an allowed site (or tag the plan with its classification).",
                 SCHEMA),
    stack_policy("residency-ebs-snapshot-copy",
                 "Ensure EBS snapshot copies land only in sites allowed for the source data.",
                 ebs_snapshot_copy, Severity.CRITICAL,
                 "Copy snapshots only with the provider of an allowed site; tag the copy with its classification.",
                 SCHEMA),
    stack_policy("residency-kms-replica-key",
                 "Ensure KMS replica keys are only in sites allowed for the data the primary key protects.",
                 kms_replica_key, Severity.HIGH,
                 "Replicate the key only to sites allowed for its classification.", SCHEMA),
    stack_policy("residency-kms-key-colocated",
                 "Ensure the KMS key protecting a data store is in the same site as the data.",
                 kms_key_colocated, Severity.HIGH,
                 "Use the customer-managed key of the data's own site.", SCHEMA),
]
