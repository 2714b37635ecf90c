"""Container security for every pod template, checked on the workload itself (not left to the namespace's Pod Security
label, which one line of config can change).

Every workload type with a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod,
PodTemplate, ReplicationController, their server-side-apply patches and the deprecated API versions) and every
container in it (init, regular, ephemeral) is checked. Container-level securityContext settings win over the pod's,
as in Kubernetes. Node agents in the exempt namespaces (config ``exemptNamespaces``, default kube-system) may run as
root and use host ports; every other rule here applies to them too.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity

from .common import (
    DEPRECATED_WORKLOAD_TYPES, K8S_WORKLOAD_TYPES, UNKNOWN, as_bool, as_list, describe, exempt_namespaces,
    exempt_schema, get, namespace_name, pod_spec, pod_template_annotations, props_of, resource_policy,
)

#: Capabilities a container may add back after dropping ALL (the Pod Security `restricted` profile's only one).
ALLOWED_ADDED_CAPABILITIES = ("NET_BIND_SERVICE",)
#: Named in messages because they are how a container escapes or spies on its node.
DANGEROUS_CAPABILITIES = ("SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH",
                          "SYS_RAWIO", "SYS_BOOT", "BPF", "PERFMON", "ALL")
SECCOMP_TYPES = ("RuntimeDefault", "Localhost")
#: A pod template annotation carrying the reason a workload needs its service-account token (talks to the API).
API_ACCESS_ANNOTATION = "finml.io/kube-api-access"
_CONTAINER_KINDS = (("initContainers", "init container"), ("containers", "container"),
                    ("ephemeralContainers", "ephemeral container"))


def _spec(args: ResourceValidationArgs, report: ReportViolation, exempt_ok: bool = False) -> Any:
    """The pod spec to check, or None (not a workload, or exempt where the rule allows it). Reports an unknown one."""
    if args.resource_type not in K8S_WORKLOAD_TYPES:
        return None
    props = props_of(args)
    if exempt_ok:
        namespace = namespace_name(props)
        if namespace is not UNKNOWN and namespace in exempt_namespaces(args.get_config()):
            return None
    spec = pod_spec(args.resource_type, props)
    if spec is UNKNOWN:
        report(f"{describe(args)}: its pod spec is unknown during preview; failing closed.", args.urn)
        return None
    return spec if spec is not None else {}


def _containers(args: Any, report: ReportViolation, spec: Any) -> Iterator[tuple[str, str, Any]]:
    """(kind, name, container) for every container; reports unknown container lists."""
    for key, kind in _CONTAINER_KINDS:
        items = as_list(get(spec, key))
        if items is UNKNOWN:
            report(f"{describe(args)}: its {key} are unknown during preview; failing closed.", args.urn)
            continue
        for container in items:
            if container is UNKNOWN:
                report(f"{describe(args)}: a {kind} is unknown during preview; failing closed.", args.urn)
                continue
            yield kind, str(get(container, "name", default="?")), container


def _effective(container: Any, spec: Any, field: str) -> Any:
    """A securityContext field as Kubernetes applies it: the container's, else the pod's."""
    value = get(container, "securityContext", field)
    if value is None:
        value = get(spec, "securityContext", field)
    return value


# --- rules ---------------------------------------------------------------------------------------------------------

def no_privilege_escalation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        value = as_bool(get(container, "securityContext", "allowPrivilegeEscalation"))
        if value is UNKNOWN:
            report(f"{describe(args)}: {kind} {name!r} allowPrivilegeEscalation is unknown during preview; failing "
                   "closed.", args.urn)
        elif value is not False:
            state = "not set (Kubernetes defaults to true)" if value is None else "true"
            report(f"{describe(args)}: {kind} {name!r} must set securityContext.allowPrivilegeEscalation: false "
                   f"(is {state}).", args.urn)


def capabilities_drop_all(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        caps = get(container, "securityContext", "capabilities")
        drop, add = as_list(get(caps, "drop")), as_list(get(caps, "add"))
        if caps is UNKNOWN or drop is UNKNOWN or add is UNKNOWN or UNKNOWN in drop or UNKNOWN in add:
            report(f"{describe(args)}: {kind} {name!r} capabilities are unknown during preview; failing closed.",
                   args.urn)
            continue
        if "ALL" not in drop:
            report(f"{describe(args)}: {kind} {name!r} must drop ALL capabilities (drops "
                   f"{', '.join(map(str, drop)) or 'none'}).", args.urn)
        extra = [str(c) for c in add if str(c).upper().removeprefix("CAP_") not in ALLOWED_ADDED_CAPABILITIES]
        if extra:
            dangerous = [c for c in extra if c.upper().removeprefix("CAP_") in DANGEROUS_CAPABILITIES]
            note = f" (dangerous: {', '.join(dangerous)})" if dangerous else ""
            report(f"{describe(args)}: {kind} {name!r} adds capabilities {', '.join(extra)}{note}; only "
                   f"{', '.join(ALLOWED_ADDED_CAPABILITIES)} may be added back.", args.urn)


def run_as_non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report, exempt_ok=True)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        if kind == "ephemeral container":
            continue  # debug containers take the pod's identity; the pod-level settings are checked via the others
        non_root, user = as_bool(_effective(container, spec, "runAsNonRoot")), _effective(container, spec,
                                                                                           "runAsUser")
        if non_root is UNKNOWN or user is UNKNOWN:
            report(f"{describe(args)}: {kind} {name!r} runAsNonRoot/runAsUser is unknown during preview; failing "
                   "closed.", args.urn)
        elif non_root is not True:
            report(f"{describe(args)}: {kind} {name!r} must run with runAsNonRoot: true (container or pod "
                   "securityContext).", args.urn)
        elif isinstance(user, (int, float)) and not isinstance(user, bool) and int(user) == 0:
            report(f"{describe(args)}: {kind} {name!r} sets runAsUser: 0 (root).", args.urn)


def seccomp_profile(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        profile = _effective(container, spec, "seccompProfile")
        kind_of = get(profile, "type")
        if profile is UNKNOWN or kind_of is UNKNOWN:
            report(f"{describe(args)}: {kind} {name!r} seccompProfile is unknown during preview; failing closed.",
                   args.urn)
        elif kind_of not in SECCOMP_TYPES:
            state = "not set" if kind_of is None else repr(kind_of)
            report(f"{describe(args)}: {kind} {name!r} must use a RuntimeDefault or Localhost seccomp profile "
                   f"(is {state}).", args.urn)
        elif kind_of == "Localhost" and not get(profile, "localhostProfile"):
            report(f"{describe(args)}: {kind} {name!r} uses a Localhost seccomp profile without localhostProfile.",
                   args.urn)


def no_host_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report, exempt_ok=True)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        ports = as_list(get(container, "ports"))
        if ports is UNKNOWN:
            report(f"{describe(args)}: {kind} {name!r} ports are unknown during preview; failing closed.", args.urn)
            continue
        for port in ports:
            host_port = get(port, "hostPort")
            if host_port is UNKNOWN or (host_port not in (None, 0, 0.0)):
                shown = "unknown during preview" if host_port is UNKNOWN else str(host_port)
                report(f"{describe(args)}: {kind} {name!r} binds host port {shown}.", args.urn)


def resource_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report)
    if spec is None:
        return
    for kind, name, container in _containers(args, report, spec):
        if kind == "ephemeral container":
            continue  # the API forbids resources on ephemeral containers
        limits = get(container, "resources", "limits", default={})
        if limits is UNKNOWN:
            report(f"{describe(args)}: {kind} {name!r} limits are unknown during preview; failing closed.", args.urn)
            continue
        missing = [r for r in ("cpu", "memory") if get(limits, r) is None]
        unknown = [r for r in ("cpu", "memory") if get(limits, r) is UNKNOWN]
        if missing:
            report(f"{describe(args)}: {kind} {name!r} has no {' and no '.join(missing)} limit.", args.urn)
        if unknown:
            report(f"{describe(args)}: {kind} {name!r} {' and '.join(unknown)} limit is unknown during preview; "
                   "failing closed.", args.urn)


def service_account_token(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = _spec(args, report)
    if spec is None:
        return
    automount = as_bool(get(spec, "automountServiceAccountToken"))
    annotations = pod_template_annotations(args.resource_type, props_of(args))
    reason = UNKNOWN if annotations is UNKNOWN else get(annotations, API_ACCESS_ANNOTATION)
    if automount is UNKNOWN or reason is UNKNOWN:
        report(f"{describe(args)}: automountServiceAccountToken (or its {API_ACCESS_ANNOTATION} annotation) is "
               "unknown during preview; failing closed.", args.urn)
    elif automount is not False and not (isinstance(reason, str) and reason.strip()):
        state = "not set (Kubernetes defaults to true)" if automount is None else "true"
        report(f"{describe(args)}: must set automountServiceAccountToken: false (is {state}) unless its pod "
               f"template says why it needs the API in annotation {API_ACCESS_ANNOTATION}.", args.urn)


def deprecated_api_kinds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    base = args.resource_type.removesuffix("Patch")
    if base not in DEPRECATED_WORKLOAD_TYPES:
        return
    kind = base.rsplit(":", 1)[1]
    replacement = "batch/v1" if kind == "CronJob" else "apps/v1"
    report(f"{describe(args)} uses a removed API version ({base.split(':')[1]}); declare it as {replacement} "
           f"{kind}.", args.urn)


_SCHEMA = exempt_schema()

POLICIES: list = [
    resource_policy("k8s-no-privilege-escalation",
                    "Ensure every container of every pod template sets allowPrivilegeEscalation: false.",
                    no_privilege_escalation, Severity.HIGH,
                    "Set securityContext.allowPrivilegeEscalation: false on every container.", _SCHEMA,
                    types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-capabilities-drop-all",
                    "Ensure every container drops ALL capabilities and adds back none but NET_BIND_SERVICE.",
                    capabilities_drop_all, Severity.HIGH,
                    "Set securityContext.capabilities {drop: [ALL]}; add back only NET_BIND_SERVICE if needed.",
                    _SCHEMA, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-run-as-non-root",
                    "Ensure every container runs as a non-root user (runAsNonRoot, no runAsUser 0) outside exempt "
                    "node-agent namespaces.",
                    run_as_non_root, Severity.HIGH,
                    "Set runAsNonRoot: true and a non-zero runAsUser in the pod or container securityContext.",
                    _SCHEMA, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-seccomp-profile",
                    "Ensure every container runs under a RuntimeDefault or Localhost seccomp profile.",
                    seccomp_profile, Severity.MEDIUM,
                    "Set securityContext.seccompProfile.type: RuntimeDefault on the pod (or each container).",
                    _SCHEMA, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-no-host-ports",
                    "Ensure no container binds a host port outside exempt node-agent namespaces.",
                    no_host_ports, Severity.HIGH, "Remove hostPort; expose the port through a Service.", _SCHEMA,
                    types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-resource-limits",
                    "Ensure every container sets CPU and memory limits.",
                    resource_limits, Severity.MEDIUM,
                    "Set resources.limits.cpu and resources.limits.memory (requests = limits for Guaranteed QoS).",
                    _SCHEMA, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-service-account-token",
                    "Ensure pods do not mount a service-account token unless their template says why they need the "
                    "Kubernetes API.",
                    service_account_token, Severity.MEDIUM,
                    f"Set automountServiceAccountToken: false, or annotate the pod template with "
                    f"{API_ACCESS_ANNOTATION}: <why it calls the API>.", _SCHEMA, types=K8S_WORKLOAD_TYPES),
    resource_policy("k8s-deprecated-api-kinds",
                    "Ensure no workload uses a removed API version (extensions/v1beta1, apps/v1beta1, apps/v1beta2, "
                    "batch/v1beta1).",
                    deprecated_api_kinds, Severity.HIGH,
                    "Declare Deployments, StatefulSets, DaemonSets and ReplicaSets as apps/v1 and CronJobs as batch/v1.",
                    types=tuple(DEPRECATED_WORKLOAD_TYPES) + tuple(t + "Patch" for t in DEPRECATED_WORKLOAD_TYPES)),
]
