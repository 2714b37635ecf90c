"""Residency: every data-bearing resource, and every copy of its data, stays on sites allowed for its class.

Classification problems (missing, unknown, invalid) are reported once, by residency-classification-required;
the other residency rules skip a resource whose classification is missing and fail closed on everything else.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

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

SCHEMA = residency_schema()


def _not_allowed(what: str, site: str, cls: str, residency: Residency) -> str:
    return violation_message(
        f"{what} is at {site}, which is not allowed for {cls} data (allowed: {residency.patterns(cls)}).", site, cls)


def _check_placement(report: ReportViolation, urn: str, what: str, site: Derived, cls: Optional[str],
                     residency: Residency) -> None:
    if not site.known:
        report(violation_message(f"{what} has no derivable site: {site.reason}; failing closed.", None, cls), urn)
    elif not residency.allowed(site.value, cls):
        report(_not_allowed(what, site.value, cls, residency), urn)


def _exempt_unlabelled(index: StackIndex, resource: Any, exempt: tuple[str, ...]) -> bool:
    """System workloads in exempt namespaces need no classification (they carry no business data)."""
    props = index.props(resource)
    return (resource.resource_type in K8S_WORKLOAD_TYPES and namespace_name(props) in exempt
            and k8s_label(resource.resource_type, props, LABEL_CLASSIFICATION) is None)


# --- residency-classification-required -------------------------------------------------------------

def classification_required(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    exempt = exempt_namespaces(args.get_config())
    applicable = [r for r in index.resources
                  if (r.resource_type in AWS_DATA_TYPES or r.resource_type in K8S_DATA_TYPES
                      or r.resource_type in ML_TYPES) and not _exempt_unlabelled(index, r, exempt)]
    if require_residency(args, report, applicable) is None:
        return
    for resource in applicable:
        with failing_closed(report, resource.urn, describe(resource)):
            cls = index.classification(resource)
            if not cls.known:
                report(violation_message(f"{describe(resource)} has no usable classification: {cls.reason}.",
                                         None, None), resource.urn)


# --- residency-aws-data-site -------------------------------------------------------------------------

def aws_data_site(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in AWS_DATA_TYPES:
        return
    residency = require_residency(args, report, [args])
    if residency is None:
        return
    props = props_of(args)
    cls = classification_of(args.resource_type, props)
    if not cls.known:
        return  # reported by residency-classification-required
    _check_placement(report, args.urn, describe(args), aws_site(props, args.provider), cls.value, residency)


# --- residency-aws-site-declared ---------------------------------------------------------------------

def aws_site_declared(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.resource_type.startswith("aws:"):
        return
    residency = require_residency(args, report, [args])
    if residency is None:
        return
    site = aws_site(props_of(args), args.provider)
    if not site.known:
        report(violation_message(f"{describe(args)} has no derivable site: {site.reason}; failing closed."), args.urn)
    elif not residency.declared(site.value):
        report(violation_message(f"{describe(args)} is at {site.value}, which the stack does not declare in "
                                 f"config `sites` ({', '.join(residency.sites) or 'none'}).", site.value), args.urn)


# --- residency-provider-allowlist -----------------------------------------------------------------------------

PROVIDER_ALLOWLIST_SCHEMA = residency_schema()
PROVIDER_ALLOWLIST_SCHEMA.properties["allowedProviderPackages"] = {
    "type": "array",
    "description": "provider packages whose resources the pack can derive a site for (default aws, kubernetes, "
                   "command)",
    "items": {"type": "string"},
    "default": list(DEFAULT_PROVIDER_PACKAGES),
}


def _package(type_token: str) -> str:
    parts = type_token.split(":")
    if len(parts) >= 3 and parts[0] == "pulumi" and parts[1] == "providers":
        return parts[2]
    return parts[0]


def provider_allowlist(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A custom resource of any other provider package (aws-native, gcp, azure, ...) has no site this pack can
    derive, so none of the residency rules would see it: it is a violation."""
    is_provider = args.resource_type.startswith("pulumi:providers:")
    if args.provider is None and not is_provider:
        return  # a component resource (custom resources always have a provider, default or explicit)
    residency = require_residency(args, report, [args])
    if residency is None:
        return
    allowed = plain(args.get_config() or {}).get("allowedProviderPackages", list(DEFAULT_PROVIDER_PACKAGES))
    if not isinstance(allowed, list) or not all(isinstance(p, str) for p in allowed):
        report(f"{describe(args)} cannot be checked: the policy config `allowedProviderPackages` must be a list of "
               "package names; failing closed.", args.urn)
        return
    packages = [_package(args.resource_type)]
    if args.provider is not None:
        packages.append(_package(args.provider.resource_type))
    for package in dict.fromkeys(packages):
        if package not in allowed:
            report(violation_message(f"{describe(args)}: cannot derive a site for package {package!r} (allowed "
                                     f"provider packages: {', '.join(allowed) or 'none'}); failing closed."),
                   args.urn)


# --- residency-cluster-site ---------------------------------------------------------------------------

def cluster_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    clusters = index.of_type(*CLUSTER_TYPES)
    used_providers = {r.provider.urn for r in index.resources
                      if r.resource_type.startswith("kubernetes:") and r.provider is not None}
    providers = [r for r in index.of_type(K8S_PROVIDER) if r.urn in used_providers]
    residency = require_residency(args, report, clusters + providers)
    if residency is None:
        return
    for cluster in clusters:
        with failing_closed(report, cluster.urn, describe(cluster)):
            site = index.cluster_site(cluster, residency)
            if not site.known:
                report(violation_message(f"{describe(cluster)} has no valid site: {site.reason}."), cluster.urn)
    for provider in providers:
        with failing_closed(report, provider.urn, describe(provider)):
            cluster, reason = index.provider_cluster(provider)
            if cluster is None:
                report(f"{describe(provider)}: the site of the Kubernetes objects it deploys cannot be derived: "
                       f"{reason}.", provider.urn)


# --- residency-k8s-data-site ---------------------------------------------------------------------------

_REGION_IN_TEXT_RE = re.compile(
    r"(?<![a-z0-9])([a-z]{2}(?:-gov|-iso[a-z]*)?-(?:north|south|east|west|central|northeast|northwest|southeast|"
    r"southwest)-\d+)(?![0-9])")
_AWS_CSI_SUFFIX = ".csi.aws.com"
_FOREIGN_PV_SOURCES = ("gcePersistentDisk", "azureDisk", "azureFile", "cinder", "vsphereVolume", "portworxVolume")


def _region_site(text: str) -> Optional[str]:
    match = _REGION_IN_TEXT_RE.search(text)
    return f"aws:{match.group(1)}" if match else None


def pv_backing_sites(index: StackIndex, pv: Any) -> list[tuple[str, Derived]]:
    """Sites of the storage backing a PersistentVolume, as far as it names one: an AWS region in the NFS server or
    CSI volume handle, the AZ of an EBS volume ID, else the AWS storage resource in its lineage. AWS-backed storage
    whose site cannot be derived is returned with an unknown site."""
    spec = get(index.props(pv), "spec")
    if spec is UNKNOWN:
        return [("its spec", Derived(None, "its spec is unknown during preview"))]
    lineage = [(describe(r), index.aws_site(r)) for r in index.refs(pv, "spec", (EBS_VOLUME, EFS, FSX_LUSTRE))]

    def aws_backed(what: str, text: Any) -> list[tuple[str, Derived]]:
        if text is UNKNOWN:
            return lineage or [(what, Derived(None, f"{what} is unknown during preview"))]
        site = _region_site(text) if isinstance(text, str) else None
        if site is not None:
            return [(what, Derived(site))]
        return lineage or [(what, Derived(None, f"{what} ({text!r}) names no region and resolves to no AWS storage "
                                                "in the stack"))]

    found: list[tuple[str, Derived]] = []
    server = get(spec, "nfs", "server")
    if server is UNKNOWN or (isinstance(server, str) and (_region_site(server) or "amazonaws.com" in server)):
        found += aws_backed("nfs.server", server)
    driver, handle = get(spec, "csi", "driver"), get(spec, "csi", "volumeHandle")
    if driver is UNKNOWN or handle is UNKNOWN and driver is not None:
        found += aws_backed("csi.volumeHandle", UNKNOWN)
    elif isinstance(handle, str) and (_region_site(handle) or
                                      (isinstance(driver, str) and driver.endswith(_AWS_CSI_SUFFIX))):
        found += aws_backed("csi.volumeHandle", handle)
    if get(spec, "awsElasticBlockStore") is not None:
        found += aws_backed("awsElasticBlockStore.volumeID", get(spec, "awsElasticBlockStore", "volumeID"))
    for source in _FOREIGN_PV_SOURCES:
        if get(spec, source) is not None:
            found.append((source, Derived(None, f"{source} storage has no site this pack can derive")))
    return found


def k8s_data_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    applicable = [r for r in index.of_type(*K8S_DATA_TYPES, K8S_PV) if index.classification(r).known]
    residency = require_residency(args, report, applicable)
    if residency is None:
        return
    for resource in applicable:
        with failing_closed(report, resource.urn, describe(resource)):
            cls = index.classification(resource).value
            site = index.k8s_site(resource, residency)
            _check_placement(report, resource.urn, describe(resource), site, cls, residency)
            if resource.resource_type != K8S_PV:
                continue
            for what, backing in pv_backing_sites(index, resource):
                if not backing.known:
                    report(violation_message(f"{describe(resource)}: the site of its backing storage cannot be "
                                             f"derived: {backing.reason}; failing closed.", site.value, cls),
                           resource.urn)
                elif site.known and backing.value != site.value:
                    report(violation_message(f"{describe(resource)}: its backing storage ({what}) is at "
                                             f"{backing.value}, outside its cluster's site.", site.value, cls),
                           resource.urn)
                elif not residency.allowed(backing.value, cls):
                    report(_not_allowed(f"{describe(resource)} backing storage ({what})", backing.value, cls,
                                        residency), resource.urn)


# --- residency-k8s-site-pinning -------------------------------------------------------------------------

def _pin_problems(spec: Any, cluster_site: str, cls: str, residency: Residency) -> list[str]:
    """Why the pod spec does not pin to the cluster's (allowed) site; empty when it does."""
    if spec is UNKNOWN:
        return ["its pod spec is unknown during preview"]
    problems: list[str] = []

    def check_values(values: Any, where: str) -> bool:
        if values is UNKNOWN or any(v is UNKNOWN for v in values):
            problems.append(f"{where} is unknown during preview")
            return False
        expected = site_label_value(cluster_site)
        bad = [v for v in values if v != expected or not residency.allowed(cluster_site, cls)]
        if bad:
            problems.append(f"{where} allows {', '.join(map(str, bad))}, but only the cluster's site label "
                            f"{expected} (site {cluster_site}, if allowed for {cls}: {residency.patterns(cls)}) "
                            f"may be used")
            return False
        return bool(values)

    pinned = False
    selector = get(spec, "nodeSelector", default={})
    if selector is UNKNOWN:
        problems.append("its nodeSelector is unknown during preview")
    elif get(selector, LABEL_SITE) is not None:
        pinned = check_values([get(selector, LABEL_SITE)], f"nodeSelector {LABEL_SITE}") or pinned
    terms = as_list(get(spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                        "nodeSelectorTerms"))
    if terms is UNKNOWN:
        problems.append("its required node affinity is unknown during preview")
    elif terms:
        all_terms_pin = True
        for position, term in enumerate(terms):
            expressions = as_list(get(term, "matchExpressions"))
            if expressions is UNKNOWN:
                problems.append(f"node affinity term {position} is unknown during preview")
                all_terms_pin = False
                continue
            site_values = [get(e, "values", default=[]) for e in expressions
                           if get(e, "key") == LABEL_SITE and get(e, "operator") == "In"]
            if any(get(e, "key") is UNKNOWN for e in expressions):
                problems.append(f"node affinity term {position} has an unknown key")
                all_terms_pin = False
            elif not site_values:
                all_terms_pin = False
            else:
                for values in site_values:
                    if not check_values(as_list(values), f"node affinity term {position} ({LABEL_SITE} In)"):
                        all_terms_pin = False
        pinned = pinned or all_terms_pin
    if not pinned and not problems:
        problems.append(f"it is not pinned to its cluster's site with a nodeSelector or required node affinity on "
                        f"{LABEL_SITE}")
    return problems


def k8s_site_pinning(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    applicable = [r for r in index.of_type(*K8S_WORKLOAD_TYPES) if index.classification(r).known]
    residency = require_residency(args, report, applicable)
    if residency is None:
        return
    for resource in applicable:
        with failing_closed(report, resource.urn, describe(resource)):
            cls = index.classification(resource).value
            site = index.k8s_site(resource, residency)
            if not site.known:
                report(violation_message(f"{describe(resource)} cannot be checked for site pinning: {site.reason}; "
                                         "failing closed.", None, cls), resource.urn)
                continue
            problems = _pin_problems(pod_spec(resource.resource_type, index.props(resource)), site.value, cls,
                                     residency)
            if problems:
                report(violation_message(f"{describe(resource)} is not pinned to an allowed site: "
                                         f"{'; '.join(problems)}.", site.value, cls), resource.urn)


# --- copies: S3 replication ------------------------------------------------------------------------------

def _bucket_name_from_arn(arn: Any) -> Optional[str]:
    if isinstance(arn, str) and arn is not UNKNOWN and arn.startswith("arn:aws") and ":s3:::" in arn:
        return arn.split(":::", 1)[1].split("/", 1)[0]
    return None


def _buckets_named(index: StackIndex, name: str) -> list[Any]:
    return [b for b in index.of_type(*S3_BUCKET_TYPES) if get(index.props(b), "bucket") == name]


def linked_buckets(index: StackIndex, resource: Any) -> list[Any]:
    """The bucket(s) a bucket-scoped resource (SSE config, policy, PAB, replication) applies to.

    Property dependencies of ``bucket`` decide; without any (a plan that records only plain dependencies),
    a known bucket name decides, and only then the Bucket resources among the plain dependencies."""
    name = get(index.props(resource), "bucket")
    if resource.property_dependencies:
        found = index.refs(resource, "bucket", S3_BUCKET_TYPES)
        if found or not isinstance(name, str) or name is UNKNOWN:
            return found
        return _buckets_named(index, name)
    if isinstance(name, str) and name is not UNKNOWN:
        return _buckets_named(index, name)
    return index.refs(resource, "bucket", S3_BUCKET_TYPES)


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
    copies = index.of_type(EBS_SNAPSHOT_COPY)
    residency = require_residency(args, report, copies)
    if residency is None:
        return
    for copy in copies:
        with failing_closed(report, copy.urn, describe(copy)):
            cls = _snapshot_classification(index, copy)
            if not cls.known:
                report(violation_message(f"{describe(copy)}: {cls.reason}; failing closed."), copy.urn)
                continue
            _check_placement(report, copy.urn, describe(copy), index.aws_site(copy), cls.value, residency)


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
    replicas = index.of_type(KMS_REPLICA_KEY)
    residency = require_residency(args, report, replicas)
    if residency is None:
        return
    for replica in replicas:
        with failing_closed(report, replica.urn, describe(replica)):
            primaries = index.refs(replica, "primaryKeyArn", (KMS_KEY,))
            if not primaries:
                report(violation_message(f"{describe(replica)}: its primary key is not a key in this stack, so the "
                                         "classification it protects cannot be derived; failing closed."),
                       replica.urn)
                continue
            classes = [key_classification(index, p) for p in primaries] + [index.classification(replica)]
            cls = max_classification(c.value for c in classes)
            if cls is None:
                report(violation_message(f"{describe(replica)}: {classes[0].reason}; failing closed."), replica.urn)
                continue
            _check_placement(report, replica.urn, describe(replica), index.aws_site(replica), cls, residency)


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
                        report(violation_message(f"{describe(item)} has no derivable site: {data_site.reason}; "
                                                 "failing closed.", None, cls), user.urn)
                        continue
                    for key_name, key_site in key_sites:
                        if key_site.value != data_site.value:
                            where = key_site.value or f"an underivable site ({key_site.reason})"
                            report(violation_message(f"{key_name} protecting {describe(item)} is at {where}, not at "
                                                     f"the data's site.", data_site.value, cls), user.urn)


# --- ML lineage ---------------------------------------------------------------------------------------------

def _datasets_by_name(index: StackIndex) -> dict[str, Any]:
    return {get(index.props(d), "name"): d for d in index.of_type(DATASET)
            if isinstance(get(index.props(d), "name"), str) and get(index.props(d), "name") is not UNKNOWN}


def model_effective_classification(index: StackIndex, model: Any) -> Derived:
    """max(declared, datasets'); unknown if any training dataset is missing or unclassified."""
    datasets = _datasets_by_name(index)
    trained_on = as_list(get(index.props(model), "trainedOn"))
    if trained_on is UNKNOWN or any(n is UNKNOWN for n in trained_on):
        return Derived(None, f"the training datasets of model '{model.name}' are unknown during preview")
    classes = []
    for name in trained_on:
        if name not in datasets:
            return Derived(None, f"model '{model.name}' is trained on dataset {name!r}, which is not in the stack")
        cls = index.classification(datasets[name])
        if not cls.known:
            return Derived(None, f"dataset {name!r}: {cls.reason}")
        classes.append(cls.value)
    declared = index.classification(model)
    return Derived(max_classification(classes + [declared.value]) or None,
                   None if classes or declared.known else f"model '{model.name}' has no classification")


def model_training_lineage(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    models = index.of_type(MODEL)
    if require_residency(args, report, models) is None:
        return
    for model in models:
        with failing_closed(report, model.urn, describe(model)):
            effective = model_effective_classification(index, model)
            declared = index.classification(model)
            if not effective.known:
                report(violation_message(f"{describe(model)}: {effective.reason}; failing closed.", None,
                                         declared.value), model.urn)
            elif declared.known and declared.value != effective.value:
                report(violation_message(f"{describe(model)} is declared {declared.value}, below the "
                                         f"{effective.value} data it was trained on.", None, effective.value),
                       model.urn)


def model_serving_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    serving = [r for r in index.of_type(*K8S_WORKLOAD_TYPES)
               if k8s_label(r.resource_type, index.props(r), LABEL_MODEL) is not None]
    residency = require_residency(args, report, serving)
    if residency is None:
        return
    models = {get(index.props(m), "name"): m for m in index.of_type(MODEL)
              if isinstance(get(index.props(m), "name"), str) and get(index.props(m), "name") is not UNKNOWN}
    for workload in serving:
        with failing_closed(report, workload.urn, describe(workload)):
            names = k8s_label_values(workload.resource_type, index.props(workload), LABEL_MODEL)
            site = index.k8s_site(workload, residency)
            if names is not UNKNOWN and len(set(names)) > 1:
                report(violation_message(f"{describe(workload)}: its metadata label {LABEL_MODEL}={names[0]!r} and "
                                         f"its pod template label {LABEL_MODEL}={names[1]!r} name different models, "
                                         "so which model its pods serve cannot be decided; failing closed.",
                                         site.value), workload.urn)
                continue
            name = UNKNOWN if names is UNKNOWN else names[0]
            if name is UNKNOWN or name not in models:
                shown = "unknown during preview" if name is UNKNOWN else repr(name)
                report(violation_message(f"{describe(workload)} serves model {shown}, which is not a model in the "
                                         "stack, so its classification cannot be derived; failing closed.",
                                         site.value), workload.urn)
                continue
            cls = model_effective_classification(index, models[name])
            if not cls.known:
                report(violation_message(f"{describe(workload)} serves model {name!r}: {cls.reason}; failing closed.",
                                         site.value), workload.urn)
                continue
            _check_placement(report, workload.urn, f"{describe(workload)} serving model {name!r}", site, cls.value,
                             residency)


def dataset_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    datasets = [d for d in index.of_type(DATASET) if index.classification(d).known]
    residency = require_residency(args, report, datasets)
    if residency is None:
        return
    for dataset in datasets:
        with failing_closed(report, dataset.urn, describe(dataset)):
            cls = index.classification(dataset).value
            site = index.site(dataset, residency)
            if site.known and not residency.declared(site.value):
                report(violation_message(f"{describe(dataset)} is at {site.value}, which the stack does not declare "
                                         "in config `sites`.", site.value, cls), dataset.urn)
                continue
            _check_placement(report, dataset.urn, describe(dataset), site, cls, residency)


# --- the rules ------------------------------------------------------------------------------------------------

_FIX = "Place the data (and every copy) on a site allowed for its classification in the policy config `residency`."

POLICIES: list = [
    stack_policy("residency-classification-required",
                 "Ensure every data-bearing resource (AWS data stores, Kubernetes PVCs and workloads, datasets, "
                 "models) declares a valid classification.",
                 classification_required, Severity.HIGH,
                 "Tag AWS resources with finml:classification, label Kubernetes objects with "
                 "finml.io/classification, set `classification` on datasets and models.",
                 residency_schema(with_exempt_namespaces=True)),
    resource_policy("residency-aws-data-site",
                    "Ensure every AWS data store is in a site allowed for its classification.",
                    aws_data_site, Severity.CRITICAL, _FIX, SCHEMA, types=AWS_DATA_TYPES),
    resource_policy("residency-aws-site-declared",
                    "Ensure every AWS resource has a derivable site (own region or explicit provider) declared by "
                    "the stack.",
                    aws_site_declared, Severity.HIGH,
                    "Create the resource with the explicit per-site AWS provider of a declared site.", SCHEMA, prefix="aws:"),
    resource_policy("residency-provider-allowlist",
                    "Ensure every custom resource comes from a provider package whose sites the pack can derive.",
                    provider_allowlist, Severity.HIGH,
                    "Use the aws, kubernetes or command providers (or extend config allowedProviderPackages once the "
                    "pack derives sites for the package).", PROVIDER_ALLOWLIST_SCHEMA),
    stack_policy("residency-cluster-site",
                 "Ensure every GPU cluster has a derivable, declared site and every Kubernetes provider hangs under "
                 "a cluster component.",
                 cluster_site, Severity.HIGH,
                 "Create the Kubernetes provider as a child of its GpuCluster/OnPremCluster and declare the site.",
                 SCHEMA),
    stack_policy("residency-k8s-data-site",
                 "Ensure every classified Kubernetes PVC and workload runs on a cluster whose site is allowed for "
                 "its classification.",
                 k8s_data_site, Severity.CRITICAL, _FIX, SCHEMA),
    stack_policy("residency-k8s-site-pinning",
                 "Ensure classified workloads pin their pods to their cluster's site via nodeSelector or required "
                 "node affinity on finml.io/site.",
                 k8s_site_pinning, Severity.HIGH,
                 "Add nodeSelector finml.io/site: <cluster site> (or a required node affinity with only that site).",
                 SCHEMA),
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
    stack_policy("residency-model-training-lineage",
                 "Ensure a model's classification is not below the classification of the datasets it was trained on.",
                 model_training_lineage, Severity.HIGH,
                 "Declare the model with the highest classification of its training datasets.", SCHEMA),
    stack_policy("residency-model-serving-site",
                 "Ensure models are served only on sites allowed for their effective classification.",
                 model_serving_site, Severity.CRITICAL,
                 "Serve the model only on a cluster whose site is allowed for its training data's classification.",
                 SCHEMA),
    stack_policy("residency-dataset-site",
                 "Ensure every dataset is declared on a site of the stack that is allowed for its classification.",
                 dataset_site, Severity.CRITICAL, _FIX, SCHEMA),
]
