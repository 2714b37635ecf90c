"""Kubernetes isolation: default-deny networking, Pod Security `restricted`, no host access.

Namespaces listed in the rule config `exemptNamespaces` (default kube-system, because the NVIDIA device
plugin needs hostPath and privileged access) are skipped; a namespace that is unknown during preview is
never treated as exempt.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .common import (
    K8S_NAMESPACE, K8S_NETWORK_POLICY, K8S_WORKLOAD_TYPES, UNKNOWN, StackIndex, as_bool, as_list, containers,
    describe, exempt_namespaces, exempt_schema, get, namespace_name, plain, pod_spec,
    resource_policy, stack_policy,
props_of, )

PSS_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


def _exempt(args: Any, props: Any) -> bool:
    namespace = namespace_name(props)
    return namespace is not UNKNOWN and namespace in exempt_namespaces(args.get_config())


def _workload_spec(args: ResourceValidationArgs) -> Any:
    """Pod spec of a non-exempt workload, else None."""
    if args.resource_type not in K8S_WORKLOAD_TYPES:
        return None
    props = props_of(args)
    if _exempt(args, props):
        return None
    return pod_spec(args.resource_type, props)


def _unknown_spec(args: Any, report: ReportViolation) -> None:
    report(f"{describe(args)}: its pod spec is unknown during preview; failing closed.", args.urn)


# --- default deny -----------------------------------------------------------------------------------------------

def _empty_selector(selector: Any) -> bool:
    if selector is None:
        return True
    if selector is UNKNOWN or not isinstance(selector, dict):
        return False
    return not get(selector, "matchLabels", default={}) and not get(selector, "matchExpressions", default=[])


def _default_denies(props: Any, direction: str) -> bool:
    spec = get(props, "spec")
    if spec is UNKNOWN or not _empty_selector(get(spec, "podSelector")):
        return False
    types = get(spec, "policyTypes")
    if types is None:  # Kubernetes default: Ingress, plus Egress if egress rules exist
        types = ["Ingress"] + (["Egress"] if get(spec, "egress") else [])
    if types is UNKNOWN or direction not in types:
        return False
    rules = get(spec, direction.lower())
    return rules is not UNKNOWN and not rules


def namespace_default_deny(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    exempt = exempt_namespaces(args.get_config())
    workloads: dict[Any, list[Any]] = defaultdict(list)
    for workload in index.of_type(*K8S_WORKLOAD_TYPES):
        key = index.namespace_key(workload)
        if key is UNKNOWN:
            report(f"{describe(workload)}: its namespace is unknown during preview and not derivable from lineage, "
                   "so its NetworkPolicies cannot be found; failing closed.", workload.urn)
        elif key[1] not in exempt:
            workloads[key].append(workload)
    covered: dict[Any, set[str]] = defaultdict(set)
    for policy in index.of_type(K8S_NETWORK_POLICY):
        key = index.namespace_key(policy)
        if key is UNKNOWN:
            continue
        for direction in ("Ingress", "Egress"):
            if _default_denies(index.props(policy), direction):
                covered[key].add(direction)
    namespaces = {index.namespace_key(n): n for n in index.of_type(K8S_NAMESPACE)}
    # A namespace the stack declares is held to the rule before anything runs in it: workloads can arrive later,
    # out of band, and must land behind a default deny.
    for key in namespaces:
        if key is not UNKNOWN and key[1] not in exempt:
            workloads.setdefault(key, [])
    for key, members in workloads.items():
        missing = [d for d in ("Ingress", "Egress") if d not in covered[key]]
        if not missing:
            continue
        shown = key[1][4:] if str(key[1]).startswith("urn:") else key[1]
        text = (f"namespace {shown!r} has no default-deny {' and '.join(missing)} NetworkPolicy "
                "(podSelector {} with no rules for that direction).")
        targets = [namespaces[key]] if key in namespaces else members
        for target in targets:
            report(f"{describe(target)}: {text}", target.urn)


def pod_security_restricted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != K8S_NAMESPACE:
        return
    props = props_of(args)
    name = get(props, "metadata", "name")
    if name is not UNKNOWN and name in exempt_namespaces(args.get_config()):
        return
    labels = get(props, "metadata", "labels", default={})
    level = UNKNOWN if labels is UNKNOWN else get(labels, PSS_ENFORCE_LABEL)
    if level is UNKNOWN:
        report(f"{describe(args)}: its {PSS_ENFORCE_LABEL} label is unknown during preview; failing closed.", args.urn)
    elif level != "restricted":
        report(f"{describe(args)}: label {PSS_ENFORCE_LABEL} must be 'restricted' (is {level!r}).", args.urn)


# --- pod hardening ----------------------------------------------------------------------------------------------

def no_privileged_containers(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _workload_spec(args)
    if spec is None:
        return
    items = containers(spec)
    if items is UNKNOWN:
        _unknown_spec(args, report)
        return
    for container in items:
        name = get(container, "name", default="?")
        privileged = as_bool(get(container, "securityContext", "privileged"))
        if privileged is UNKNOWN:
            report(f"{describe(args)}: container {name!r} securityContext.privileged is unknown during preview; "
                   "failing closed.", args.urn)
        elif privileged is True:
            report(f"{describe(args)}: container {name!r} is privileged.", args.urn)


def no_host_namespaces(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _workload_spec(args)
    if spec is None:
        return
    if spec is UNKNOWN:
        _unknown_spec(args, report)
        return
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        value = as_bool(get(spec, field))
        if value is UNKNOWN:
            report(f"{describe(args)}: {field} is unknown during preview; failing closed.", args.urn)
        elif value is True:
            report(f"{describe(args)}: sets {field}: true.", args.urn)


def no_hostpath_volumes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _workload_spec(args)
    if spec is None:
        return
    volumes = as_list(get(spec, "volumes"))
    if spec is UNKNOWN or volumes is UNKNOWN:
        _unknown_spec(args, report)
        return
    for volume in volumes:
        if volume is UNKNOWN or get(volume, "hostPath") is not None:
            name = "?" if volume is UNKNOWN else get(volume, "name", default="?")
            report(f"{describe(args)}: volume {name!r} is a hostPath volume (or unknown during preview).", args.urn)


_EXEMPT = exempt_schema()

POLICIES: list = [
    stack_policy("k8s-namespace-default-deny",
                 "Ensure every namespace the stack declares or runs workloads in has default-deny ingress and egress "
                 "NetworkPolicies.",
                 namespace_default_deny, Severity.HIGH,
                 "Add a NetworkPolicy with podSelector {} and policyTypes [Ingress, Egress] and no rules; then allow "
                 "specific flows.", _EXEMPT),
    resource_policy("k8s-namespace-pod-security-restricted",
                    "Ensure namespaces enforce the Pod Security `restricted` standard.",
                    pod_security_restricted, Severity.HIGH,
                    "Label the namespace pod-security.kubernetes.io/enforce: restricted.", _EXEMPT, types=(K8S_NAMESPACE,)),
    resource_policy("k8s-no-privileged-containers",
                    "Ensure no container runs privileged outside exempt system namespaces.",
                    no_privileged_containers, Severity.CRITICAL,
                    "Remove securityContext.privileged; grant only the capabilities needed.", _EXEMPT, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-no-host-namespaces",
                    "Ensure pods do not share the node's network, PID or IPC namespaces.",
                    no_host_namespaces, Severity.HIGH, "Remove hostNetwork/hostPID/hostIPC.", _EXEMPT, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-no-hostpath-volumes",
                    "Ensure pods do not mount hostPath volumes outside exempt system namespaces.",
                    no_hostpath_volumes, Severity.HIGH,
                    "Use a PersistentVolumeClaim, emptyDir, configMap or secret volume instead of hostPath.", _EXEMPT, types=K8S_WORKLOAD_TYPES),
]
