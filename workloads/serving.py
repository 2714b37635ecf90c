"""InferenceService: a model server Deployment for one model on one site, with a Service and a PodDisruptionBudget.

Micro-batch inference rarely needs a whole GPU, so a service may ask for one MIG slice instead
(`nvidia.com/mig-<slice>: 1`, the NVIDIA device plugin's `mixed` MIG strategy); otherwise it asks for one GPU.
The serving namespace denies ingress by default: callers are named explicitly with `client_namespaces`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.naming import child_name
from workloads.cluster_base import NAMESPACE_NAME_LABEL, SERVING_NAMESPACE
from workloads.options import child_opts
from workloads.pod import (
    GPU_RESOURCE,
    gpu_tolerations,
    guaranteed_resources,
    mig_resource,
    restricted_container_security_context,
    restricted_pod_security_context,
    scratch_volume,
    selector_labels,
    site_node_selector,
    workload_labels,
)

COMPONENT = "inference"
#: MLServer speaks the Open Inference Protocol (v2) and batches requests adaptively.
DEFAULT_IMAGE = "seldonio/mlserver:1.6.1"
SERVER_UID = 1000
HTTP_PORT = 8080
READINESS_PATH = "/v2/health/ready"
LIVENESS_PATH = "/v2/health/live"
#: MLServer shares metrics between its workers in a directory (default: `.metrics` under its working directory);
#: the root file system is read-only, so point it at a scratch volume.
METRICS_DIR = "/metrics"
DEFAULT_SERVER_ENV = {"MLSERVER_METRICS_DIR": METRICS_DIR}


@dataclass(frozen=True)
class InferenceServiceArgs:
    service_name: str
    """Kubernetes name of the Deployment and Service (the config's serving workload name)."""
    site: str
    model: str
    classification: str
    """The model's classification (highest classification of its training data)."""
    gpu_profile: Any
    """The GpuProfile of the nodes it runs on."""
    mig_slice: str | None = None
    """A MIG profile of `gpu_profile` (e.g. 1g.10gb) to request instead of a whole GPU."""
    replicas: int = 2
    namespace: str = SERVING_NAMESPACE
    image: str = DEFAULT_IMAGE
    cpu: str = "2"
    memory_gib: int = 8
    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVER_ENV))
    client_namespaces: tuple[str, ...] = ()
    """Namespaces allowed to call the service on its HTTP port; none by default (default deny stays)."""

    def __post_init__(self) -> None:
        if self.mig_slice is None:
            return
        mig = self.gpu_profile.mig
        allowed = [p.name for p in mig.profiles] if mig.supported else []
        if self.mig_slice not in allowed:
            raise ValueError(
                f"serving {self.service_name!r}: migSlice {self.mig_slice!r} is not a MIG profile of "
                f"{self.gpu_profile.name}; allowed: {', '.join(allowed) or 'none (MIG not supported)'}")


class InferenceService(pulumi.ComponentResource):
    """Deployment + ClusterIP Service + PodDisruptionBudget (+ optional ingress allow) for one model."""

    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    disruption_budget: k8s.policy.v1.PodDisruptionBudget
    network_policy: k8s.networking.v1.NetworkPolicy | None
    gpu_resource: str
    """The extended resource each replica requests: nvidia.com/gpu or nvidia.com/mig-<slice>."""

    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:InferenceService", name, {
            "site": args.site, "model": args.model, "classification": args.classification,
            "gpuProfile": args.gpu_profile.name, "migSlice": args.mig_slice,
        }, opts)
        self._name = name
        self._opts = opts
        self._args = args
        self._gpu_resource = mig_resource(args.mig_slice) if args.mig_slice else GPU_RESOURCE
        self._selector = selector_labels(COMPONENT, args.service_name)
        self._labels = workload_labels(COMPONENT, args.service_name, args.site, args.classification, args.model)
        self._plain_labels = workload_labels(COMPONENT, args.service_name, args.site, model=args.model)
        deployment = self._create_deployment()
        service = self._create_service()
        disruption_budget = self._create_disruption_budget()
        network_policy = self._create_ingress_policy()

        self.deployment = deployment
        self.service = service
        self.disruption_budget = disruption_budget
        self.network_policy = network_policy
        self.gpu_resource = self._gpu_resource
        self.register_outputs({"gpuResource": self.gpu_resource})

    def _create_deployment(self) -> k8s.apps.v1.Deployment:
        a = self._args
        container = k8s.core.v1.ContainerArgs(
            name="server",
            image=a.image,
            image_pull_policy="IfNotPresent",
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=HTTP_PORT, protocol="TCP")],
            env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(a.env.items())] or None,
            resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi", {self._gpu_resource: 1}),
            security_context=restricted_container_security_context(SERVER_UID),
            readiness_probe=k8s.core.v1.ProbeArgs(
                http_get=k8s.core.v1.HTTPGetActionArgs(path=READINESS_PATH, port="http"),
                period_seconds=5, failure_threshold=3),
            liveness_probe=k8s.core.v1.ProbeArgs(
                http_get=k8s.core.v1.HTTPGetActionArgs(path=LIVENESS_PATH, port="http"),
                initial_delay_seconds=60, period_seconds=20, failure_threshold=3),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                           k8s.core.v1.VolumeMountArgs(name="metrics", mount_path=METRICS_DIR)],
        )
        return k8s.apps.v1.Deployment(
            child_name(self._name, "deployment"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=a.service_name, namespace=a.namespace, labels=self._labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=a.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector),
                # GPUs are scarce: replace one pod at a time rather than surging a replica onto a new GPU.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=0, max_unavailable=1)),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=site_node_selector(a.site, a.gpu_profile.k8s_label_value),
                        tolerations=gpu_tolerations(a.gpu_profile),
                        security_context=restricted_pod_security_context(SERVER_UID),
                        automount_service_account_token=False,
                        enable_service_links=False,
                        containers=[container],
                        volumes=[scratch_volume("tmp", "1Gi"), scratch_volume("metrics", "256Mi")],
                    ),
                ),
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_service(self) -> k8s.core.v1.Service:
        a = self._args
        return k8s.core.v1.Service(
            child_name(self._name, "service"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=a.service_name, namespace=a.namespace,
                                                labels=self._plain_labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=self._selector,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=80, target_port="http", protocol="TCP")],
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_disruption_budget(self) -> k8s.policy.v1.PodDisruptionBudget:
        a = self._args
        # maxUnavailable rather than minAvailable: with one replica a minAvailable of 1 would block node drains.
        return k8s.policy.v1.PodDisruptionBudget(
            child_name(self._name, "pdb"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=a.service_name, namespace=a.namespace,
                                                labels=self._plain_labels),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_ingress_policy(self) -> k8s.networking.v1.NetworkPolicy | None:
        a = self._args
        if not a.client_namespaces:
            return None
        return k8s.networking.v1.NetworkPolicy(
            child_name(self._name, "allow-clients"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{a.service_name}-allow-clients", namespace=a.namespace,
                                                labels=self._plain_labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector),
                policy_types=["Ingress"],
                ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[k8s.networking.v1.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[
                            k8s.meta.v1.LabelSelectorRequirementArgs(
                                key=NAMESPACE_NAME_LABEL, operator="In", values=list(a.client_namespaces))]),
                    )],
                    ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=HTTP_PORT)],
                )],
            ),
            opts=child_opts(self, self._opts),
        )
