"""Pod-level building blocks every workload shares: labels, site pinning, GPU scheduling, restricted security.

Not a component: plain functions returning pulumi_kubernetes input types, so FeatureStore, training runs and
InferenceService cannot drift apart on the settings the policy pack and Pod Security Admission check.
"""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from components.naming import CLASSIFICATION_LABEL, MODEL_LABEL, SITE_LABEL, site_label_value
from gpu_profiles.schema import PROFILE_LABEL_KEY

#: The extended resource the NVIDIA device plugin advertises for a whole GPU.
GPU_RESOURCE = "nvidia.com/gpu"
#: Prefix of MIG slice resources under the device plugin's `mixed` strategy, e.g. `nvidia.com/mig-1g.10gb`.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
#: Value of app.kubernetes.io/part-of on everything this package creates.
PART_OF = "finml"


def mig_resource(mig_slice: str) -> str:
    return f"{MIG_RESOURCE_PREFIX}{mig_slice}"


def selector_labels(component: str, instance: str) -> dict[str, str]:
    """Labels a controller selects its pods by; kept minimal because a Deployment's selector is immutable."""
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": instance}


def workload_labels(component: str, instance: str, site: str, classification: str | None = None,
                    model: str | None = None) -> dict[str, str]:
    """Labels on every object of a workload: selector labels, site, and the data labels the policy pack reads."""
    labels = {
        **selector_labels(component, instance),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
        SITE_LABEL: site_label_value(site),
    }
    if classification is not None:
        labels[CLASSIFICATION_LABEL] = classification
    if model is not None:
        labels[MODEL_LABEL] = model
    return dict(sorted(labels.items()))


def site_node_selector(site: str, gpu_profile_label: str | None = None) -> dict[str, str]:
    """Pins a pod to the nodes of its site (and GPU model); the cluster components label nodes with these keys."""
    selector = {SITE_LABEL: site_label_value(site)}
    if gpu_profile_label is not None:
        selector[PROFILE_LABEL_KEY] = gpu_profile_label
    return selector


def gpu_tolerations(profile: Any) -> list[k8s.core.v1.TolerationArgs]:
    """Tolerate exactly the GPU profile's node taints (e.g. nvidia.com/gpu=present:NoSchedule), nothing broader."""
    return [
        k8s.core.v1.TolerationArgs(key=t.key, operator="Equal", value=t.value, effect=t.effect)
        if t.value else k8s.core.v1.TolerationArgs(key=t.key, operator="Exists", effect=t.effect)
        for t in profile.kubernetes.taints
    ]


def restricted_pod_security_context(uid: int, gid: int | None = None) -> k8s.core.v1.PodSecurityContextArgs:
    """Pod Security Standard `restricted`: non-root with a fixed uid, RuntimeDefault seccomp."""
    gid = uid if gid is None else gid
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        fs_group=gid,
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def restricted_container_security_context(uid: int, read_only_root: bool = True) -> k8s.core.v1.SecurityContextArgs:
    """Container half of `restricted`, repeated per container so it holds even if the pod context changes."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        privileged=False,
        allow_privilege_escalation=False,
        read_only_root_filesystem=read_only_root,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def guaranteed_resources(cpu: str, memory: str, extended: dict[str, int] | None = None
                         ) -> k8s.core.v1.ResourceRequirementsArgs:
    """Requests equal limits (Guaranteed QoS); device plugins require it for GPUs and it avoids noisy neighbours."""
    amounts: dict[str, str] = {"cpu": cpu, "memory": memory}
    for name, count in (extended or {}).items():
        amounts[name] = str(count)
    return k8s.core.v1.ResourceRequirementsArgs(requests=dict(amounts), limits=dict(amounts))


def scratch_volume(name: str, size: str, memory_backed: bool = False) -> k8s.core.v1.VolumeArgs:
    """A size-limited emptyDir: writable scratch space, since root file systems are read-only."""
    return k8s.core.v1.VolumeArgs(
        name=name,
        empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory" if memory_backed else None, size_limit=size),
    )
