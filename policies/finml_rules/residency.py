"""Residency: where data and workloads are placed - every data-bearing resource on a site allowed for its class.

Copies of data (replicas, backups, snapshot copies, replica keys) are in copies.py; models and datasets in
lineage.py; logs in logs.py.

Classification problems (missing, unknown, invalid) are reported once, by residency-classification-required;
the other residency rules skip a resource whose classification is missing and fail closed on everything else.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .common import (
    AWS_DATA_TYPES, CLUSTER_TYPES, DEFAULT_PROVIDER_PACKAGES, EBS_VOLUME, EFS, FSX_LUSTRE, K8S_DATA_TYPES,
    K8S_PROVIDER, K8S_PV, K8S_WORKLOAD_TYPES, LABEL_CLASSIFICATION, LABEL_SITE, ML_TYPES, UNKNOWN, Derived,
    Residency, StackIndex, as_list, aws_site, classification_of, describe, exempt_namespaces, failing_closed, get,
    k8s_label, namespace_name, pod_spec, require_residency, residency_schema, resource_policy, site_label_value,
    stack_policy, violation_message, props_of,
)
from .sites import check_placement, each_resource, not_allowed, underivable_site

SCHEMA = residency_schema()


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

    def check(resource: Any, _residency: Residency) -> None:
        cls = index.classification(resource)
        if not cls.known:
            report(violation_message(f"{describe(resource)} has no usable classification: {cls.reason}.",
                                     None, None), resource.urn)

    each_resource(args, report, applicable, check)


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
    check_placement(report, args.urn, describe(args), aws_site(props, args.provider), cls.value, residency)


# --- residency-aws-site-declared ---------------------------------------------------------------------

def aws_site_declared(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.resource_type.startswith("aws:"):
        return
    residency = require_residency(args, report, [args])
    if residency is None:
        return
    site = aws_site(props_of(args), args.provider)
    if not site.known:
        report(underivable_site(describe(args), site), args.urn)
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
    allowed = (args.get_config() or {}).get("allowedProviderPackages", list(DEFAULT_PROVIDER_PACKAGES))
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

    def check(resource: Any, residency: Residency) -> None:
        cls = index.classification(resource).value
        site = index.k8s_site(resource, residency)
        check_placement(report, resource.urn, describe(resource), site, cls, residency)
        if resource.resource_type != K8S_PV:
            return
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
                report(not_allowed(f"{describe(resource)} backing storage ({what})", backing.value, cls,
                                   residency), resource.urn)

    each_resource(args, report, applicable, check)


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

    def check(resource: Any, residency: Residency) -> None:
        cls = index.classification(resource).value
        site = index.k8s_site(resource, residency)
        if not site.known:
            report(violation_message(f"{describe(resource)} cannot be checked for site pinning: {site.reason}; "
                                     "failing closed.", None, cls), resource.urn)
            return
        problems = _pin_problems(pod_spec(resource.resource_type, index.props(resource)), site.value, cls,
                                 residency)
        if problems:
            report(violation_message(f"{describe(resource)} is not pinned to an allowed site: "
                                     f"{'; '.join(problems)}.", site.value, cls), resource.urn)

    each_resource(args, report, applicable, check)


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
]
