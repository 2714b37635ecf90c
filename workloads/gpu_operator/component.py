"""GpuOperator: NVIDIA's GPU Operator as a Helm release, with the MIG and time-slicing configuration it consumes.

The operator replaces the hand-made device-plugin DaemonSet: it runs the device plugin (MIG strategy `mixed`, so
MIG slices appear as `nvidia.com/mig-<profile>` next to whole GPUs), the MIG manager (which applies the
mig-parted configuration the layout planner wrote, chosen per node by the `nvidia.com/mig.config` label), GPU
feature discovery, and the DCGM exporter (GPU metrics per GPU and per MIG instance for Prometheus).

Who installs the driver and the container toolkit decides `driver.enabled` / `toolkit.enabled`: on-prem nodes get
both from Ansible (roles nvidia_driver, container_runtime), EKS nodes from the NVIDIA AMI of the GPU profile;
the operator must not fight either, so both are off everywhere and the reason is recorded per site kind. Clusters
have no internet egress: every operator image is pulled from the site's registry (`sites.<id>.imageRegistry`,
upstream paths mirrored under its prefix).

It lives in kube-system, the namespace the policy pack exempts for node agents (the operator's daemon sets need
host access to drive GPUs); everything else finml runs stays under Pod Security `restricted`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.naming import child_name
from workloads.pod import GPU_RESOURCE, PART_OF

HERE = Path(__file__).resolve().parent
CHART = "gpu-operator"
#: Pinned chart version; bump deliberately (values.schema.json describes this version's values finml sets).
CHART_VERSION = "v25.10.1"
CHART_REPOSITORY = "https://helm.ngc.nvidia.com/nvidia"
NAMESPACE = "kube-system"
RELEASE_NAME = "gpu-operator"
MIG_CONFIG_MAP = "finml-mig-parted-config"
DEVICE_PLUGIN_CONFIG_MAP = "finml-device-plugin-config"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
DEFAULT_DEVICE_PLUGIN_CONFIG = "default"
MIG_STRATEGY = "mixed"
#: Upstream repositories of the operator's images (mirrored under the same path in every site's registry).
IMAGE_REPOSITORIES = {
    "operator": "nvcr.io/nvidia",
    "validator": "nvcr.io/nvidia/cloud-native",
    "devicePlugin": "nvcr.io/nvidia",
    "gfd": "nvcr.io/nvidia",
    "migManager": "nvcr.io/nvidia/cloud-native",
    "dcgmExporter": "nvcr.io/nvidia/k8s",
}
#: Why the operator leaves the driver and toolkit alone, per site kind.
DRIVER_OWNER = {"onprem": "Ansible roles nvidia_driver and container_runtime",
                "aws": "the EKS NVIDIA AMI (AL2023_x86_64_NVIDIA / BOTTLEROCKET_x86_64_NVIDIA)"}


def device_plugin_config(time_slicing: Mapping[str, int], profiles: Mapping[str, Any]) -> dict[str, str]:
    """The device plugin's named configurations (ConfigMap data): `default` (no sharing) and one
    `<gpu-profile>-ts<N>` per time-sliced GPU profile, which nodes select with nvidia.com/device-plugin.config."""
    base = {"version": "v1", "flags": {"migStrategy": MIG_STRATEGY, "failOnInitError": True}}
    data = {DEFAULT_DEVICE_PLUGIN_CONFIG: yaml.safe_dump(base, sort_keys=True)}
    for gpu, replicas in sorted(time_slicing.items()):
        doc = {**base, "sharing": {"timeSlicing": {
            "renameByDefault": False,
            "failRequestsGreaterThanOne": True,
            "resources": [{"name": GPU_RESOURCE, "replicas": replicas}],
        }}}
        data[time_slicing_config_name(profiles[gpu].k8s_label_value, replicas)] = yaml.safe_dump(doc, sort_keys=True)
    return data


def time_slicing_config_name(gpu_label: str, replicas: int) -> str:
    return f"{gpu_label}-ts{replicas}"


def operator_values(site_kind: str, image_registry: str | None, *, default_device_plugin_config: str
                    ) -> dict[str, Any]:
    """Helm values for one site; validated against values.schema.json (the chart keys finml relies on)."""
    if site_kind not in DRIVER_OWNER:
        raise ValueError(f"site kind {site_kind!r}; allowed: {', '.join(DRIVER_OWNER)}")
    gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    values: dict[str, Any] = {
        "operator": {"defaultRuntime": "containerd"},
        "driver": {"enabled": False},
        "toolkit": {"enabled": False},
        "mig": {"strategy": MIG_STRATEGY},
        "migManager": {
            "enabled": True,
            "config": {"name": MIG_CONFIG_MAP, "default": "all-disabled"},
            # Bare metal and EKS both apply MIG changes without a node reboot on Hopper/Ampere.
            "env": [{"name": "WITH_REBOOT", "value": "false"}],
        },
        "devicePlugin": {
            "enabled": True,
            "config": {"name": DEVICE_PLUGIN_CONFIG_MAP, "default": default_device_plugin_config},
        },
        "gfd": {"enabled": True},
        "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": False}},
        "nfd": {"enabled": True},
        "daemonsets": {"priorityClassName": "system-node-critical", "tolerations": [gpu_toleration]},
    }
    if image_registry:
        for component, upstream in IMAGE_REPOSITORIES.items():
            values.setdefault(component, {})["repository"] = f"{image_registry}/{upstream}"
    validate_values(values)
    return values


def validate_values(values: Mapping[str, Any]) -> None:
    """Strict check against the schema kept in the repo; raises ValueError naming the offending key."""
    import jsonschema

    schema = json.loads((HERE / "values.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(values), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        raise ValueError(f"gpu-operator values: {'.'.join(map(str, first.path)) or '<root>'}: {first.message}")


def validate_mig_parted(config: Mapping[str, Any]) -> None:
    import jsonschema

    schema = json.loads((HERE / "mig-parted.schema.json").read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if errors:
        raise ValueError(f"mig-parted config: {'.'.join(map(str, errors[0].path)) or '<root>'}: {errors[0].message}")


@dataclass(frozen=True)
class GpuOperatorArgs:
    site: str
    site_kind: str
    """onprem | aws"""
    mig_parted_config: dict[str, Any]
    """The layout planner's mig-parted configuration for this site."""
    time_slicing: dict[str, int] = field(default_factory=dict)
    """GPU profile -> time-slicing replicas per GPU, where time-sliced services run."""
    profiles: Mapping[str, Any] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """On-prem node name -> labels selecting its MIG and device-plugin configuration."""
    image_registry: str | None = None
    chart_version: str = CHART_VERSION
    chart_repository: str = CHART_REPOSITORY


class GpuOperator(pulumi.ComponentResource):
    """ConfigMaps (mig-parted, device-plugin sharing) + the GPU Operator Helm release + node labels (on-prem)."""

    release: k8s.helm.v3.Release
    mig_config_map: k8s.core.v1.ConfigMap
    device_plugin_config_map: k8s.core.v1.ConfigMap
    node_patches: list[k8s.core.v1.NodePatch]
    values: dict[str, Any]

    def __init__(self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:GpuOperator", name, {"site": args.site, "chartVersion": args.chart_version},
                         opts)
        self._name = name
        self._args = args
        validate_mig_parted(args.mig_parted_config)
        default_config = DEFAULT_DEVICE_PLUGIN_CONFIG
        if args.site_kind == "aws" and len(args.time_slicing) == 1:
            # EKS node groups carry no per-node config label: the one time-sliced profile becomes the default.
            [(gpu, replicas)] = args.time_slicing.items()
            default_config = time_slicing_config_name(args.profiles[gpu].k8s_label_value, replicas)
        self.values = operator_values(args.site_kind, args.image_registry,
                                      default_device_plugin_config=default_config)
        labels = {"app.kubernetes.io/name": "gpu-operator", "app.kubernetes.io/part-of": PART_OF,
                  "app.kubernetes.io/managed-by": "pulumi"}
        mig_cm = k8s.core.v1.ConfigMap(
            child_name(name, "mig-parted"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=MIG_CONFIG_MAP, namespace=NAMESPACE, labels=labels),
            data={"config.yaml": yaml.safe_dump(args.mig_parted_config, sort_keys=False)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        plugin_cm = k8s.core.v1.ConfigMap(
            child_name(name, "device-plugin-config"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=DEVICE_PLUGIN_CONFIG_MAP, namespace=NAMESPACE, labels=labels),
            data=device_plugin_config(args.time_slicing, args.profiles),
            opts=pulumi.ResourceOptions(parent=self),
        )
        release = k8s.helm.v3.Release(
            child_name(name, "release"),
            name=RELEASE_NAME,
            chart=CHART,
            version=args.chart_version,
            namespace=NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=args.chart_repository),
            values=self.values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[mig_cm, plugin_cm]),
        )
        patches = [
            k8s.core.v1.NodePatch(
                child_name(name, "node", node),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=node, labels=dict(sorted(node_labels.items()))),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
            )
            for node, node_labels in sorted(args.node_labels.items())
        ]
        self.release = release
        self.mig_config_map = mig_cm
        self.device_plugin_config_map = plugin_cm
        self.node_patches = patches
        self.register_outputs({"chartVersion": args.chart_version, "migConfigMap": MIG_CONFIG_MAP})
