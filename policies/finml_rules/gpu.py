"""GPU scheduling hygiene: GPU requests are bounded, tolerate the GPU taint, and name real MIG profiles."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity

from .common import (
    K8S_WORKLOAD_TYPES, UNKNOWN, as_list, containers, describe, get, plain, pod_spec, resource_policy,
props_of, )

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"  # GPU nodes are tainted nvidia.com/gpu=present:NoSchedule
MIG_PREFIX = "nvidia.com/mig-"
MIG_RESOURCE_RE = re.compile(r"^nvidia\.com/mig-[1-7]g\.[1-9][0-9]*gb$")


def is_gpu_resource(name: Any) -> bool:
    return isinstance(name, str) and (name == GPU_RESOURCE or name.startswith(MIG_PREFIX))


_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([+-]?\d+))?([a-zA-Z]*)$")
_SUFFIXES = {"": Decimal(1), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
             "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "m": Decimal(10) ** -3,
             "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
             "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def parse_quantity(value: Any) -> Optional[Decimal]:
    """A Kubernetes resource quantity (1, 1.0, "1", "1000m", "2Ki", "1e3") as a Decimal; None if it is not one.
    The engine turns every number into a float on the wire, so 1 and "1" must compare equal."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY_RE.match(value.strip())
    if not match or match.group(3) not in _SUFFIXES or (match.group(2) and match.group(3)):
        return None
    number = Decimal(match.group(1)) * (Decimal(10) ** int(match.group(2) or 0))
    return number * _SUFFIXES[match.group(3)]


def _gpu_usage(args: ResourceValidationArgs) -> tuple[Any, Any]:
    """(pod spec, [(container name, requests, limits)]) for workloads; (None, None) if not applicable."""
    if args.resource_type not in K8S_WORKLOAD_TYPES:
        return None, None
    spec = pod_spec(args.resource_type, props_of(args))
    items = containers(spec)
    if items is UNKNOWN:
        return spec, UNKNOWN
    usage = []
    for container in items:
        resources = get(container, "resources", default={})
        requests = UNKNOWN if resources is UNKNOWN else get(resources, "requests", default={})
        limits = UNKNOWN if resources is UNKNOWN else get(resources, "limits", default={})
        usage.append((get(container, "name", default="?"), requests, limits))
    return spec, usage


def _requests_gpu(usage: Any) -> Any:
    if usage is UNKNOWN:
        return UNKNOWN
    for _, requests, limits in usage:
        if requests is UNKNOWN or limits is UNKNOWN:
            return UNKNOWN
        if any(is_gpu_resource(k) for k in list(requests) + list(limits)):
            return True
    return False


def gpu_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, usage = _gpu_usage(args)
    if usage is None:
        return
    if usage is UNKNOWN:
        report(f"{describe(args)}: its containers are unknown during preview; failing closed.", args.urn)
        return
    for name, requests, limits in usage:
        if requests is UNKNOWN or limits is UNKNOWN:
            report(f"{describe(args)}: container {name!r} resources are unknown during preview; failing closed.",
                   args.urn)
            continue
        for resource in sorted({k for k in list(requests) + list(limits) if is_gpu_resource(k)}):
            limit, request = get(limits, resource), get(requests, resource)
            if limit is None:
                report(f"{describe(args)}: container {name!r} requests {resource} without a limit.", args.urn)
            elif limit is UNKNOWN or request is UNKNOWN:
                report(f"{describe(args)}: container {name!r} {resource} amount is unknown during preview; "
                       "failing closed.", args.urn)
            elif request is not None and (parse_quantity(request) is None or parse_quantity(limit) is None
                                          or parse_quantity(request) != parse_quantity(limit)):
                report(f"{describe(args)}: container {name!r} {resource} request {request} differs from limit "
                       f"{limit} (extended resources cannot be overcommitted).", args.urn)


def _tolerates_gpu_taint(toleration: Any) -> bool:
    if toleration is UNKNOWN:
        return False
    key, operator, effect = get(toleration, "key"), get(toleration, "operator", default="Equal"), get(toleration,
                                                                                                      "effect")
    if effect not in (None, "", "NoSchedule"):
        return False
    if key in (None, "") and operator == "Exists":
        return True
    if key != GPU_TAINT_KEY:
        return False
    return operator == "Exists" or (operator == "Equal" and get(toleration, "value", default="") == GPU_TAINT_VALUE)


def gpu_taint_toleration(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec, usage = _gpu_usage(args)
    if usage is None:
        return
    uses_gpu = _requests_gpu(usage)
    if uses_gpu is UNKNOWN:
        report(f"{describe(args)}: whether it requests GPUs is unknown during preview; failing closed.", args.urn)
        return
    if not uses_gpu:
        return
    tolerations = as_list(get(spec, "tolerations"))
    if tolerations is UNKNOWN:
        report(f"{describe(args)}: its tolerations are unknown during preview; failing closed.", args.urn)
    elif not any(_tolerates_gpu_taint(t) for t in tolerations):
        report(f"{describe(args)} requests GPUs but does not tolerate the {GPU_TAINT_KEY}={GPU_TAINT_VALUE}:NoSchedule "
               "taint.", args.urn)


def mig_resource_names(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, usage = _gpu_usage(args)
    if usage is None or usage is UNKNOWN:
        return  # an unknown spec is reported by gpu-resource-limits
    for name, requests, limits in usage:
        keys = set()
        for mapping in (requests, limits):
            if mapping is not UNKNOWN:
                keys.update(mapping)
        for resource in sorted(k for k in keys if isinstance(k, str) and k.startswith(MIG_PREFIX)):
            if not MIG_RESOURCE_RE.match(resource):
                report(f"{describe(args)}: container {name!r} uses malformed MIG resource {resource!r} "
                       "(expected nvidia.com/mig-<n>g.<m>gb).", args.urn)


POLICIES: list = [
    resource_policy("gpu-resource-limits",
                    "Ensure containers that request nvidia.com/gpu or MIG slices set equal GPU limits.",
                    gpu_limits, Severity.MEDIUM,
                    "Set resources.limits for every GPU/MIG resource (requests = limits).", types=K8S_WORKLOAD_TYPES),
    resource_policy("gpu-taint-toleration",
                    "Ensure GPU workloads tolerate the nvidia.com/gpu=present:NoSchedule taint of GPU nodes.",
                    gpu_taint_toleration, Severity.MEDIUM,
                    "Add a toleration {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}.", types=K8S_WORKLOAD_TYPES),
    resource_policy("gpu-mig-resource-name",
                    "Ensure MIG resource names are well-formed (nvidia.com/mig-<n>g.<m>gb).",
                    mig_resource_names, Severity.MEDIUM,
                    "Use a MIG profile name from the GPU profile, e.g. nvidia.com/mig-1g.18gb.", types=K8S_WORKLOAD_TYPES),
]
