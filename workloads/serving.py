"""InferenceService: MLServer with its MLflow runtime serving one registered model (by alias) on one site.

Per served model and site: a Deployment whose server process first runs the load-time gate (alias -> version ->
lineage classification -> the stack's residency rules; fail closed) and then MLServer over TLS on REST, gRPC and
metrics (workloads/model_server/serve.py); a Service; a HorizontalPodAutoscaler; a PodDisruptionBudget; a
ConfigMap with the stack's residency rules the gate reads; and NetworkPolicies: named client namespaces in (REST
and gRPC), the monitoring namespace in (metrics), and out only to the model registry and the feature server
(DNS is allowed by ClusterBase).

GPU sharing: a replica requests one MIG slice (`nvidia.com/mig-<profile>: 1`, MIG strategy mixed), one
time-sliced share of a GPU (`nvidia.com/gpu: 1` on nodes whose device plugin advertises each GPU N times), one
whole GPU, or no GPU. Requests equal limits. Replicas spread over nodes and run at the serving PriorityClass,
above training, so a burst of training jobs cannot evict the serving path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.naming import child_name
from finml.config import GpuShare
from workloads import images
from workloads.cluster_base import (
    DATA_NAMESPACE, NAMESPACE_NAME_LABEL, SERVING_NAMESPACE, SERVING_PRIORITY_CLASS,
)
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
#: The finml model server image (workloads/model_server/Dockerfile): key of workloads.images.IMAGES.
IMAGE = "model-server"
DEFAULT_IMAGE = images.unqualified(IMAGE)
SERVER_UID = 1000
HTTPS_PORT, GRPC_PORT, METRICS_PORT = 8443, 8444, 9443
READINESS_PATH = "/v2/health/ready"
LIVENESS_PATH = "/v2/health/live"
MODELS_DIR = "/models"
TLS_DIR = "/etc/finml/tls"
RESIDENCY_DIR = "/etc/finml/residency"
AUDIT_KEY_DIR = "/etc/finml/audit"
#: Where scrapers live; NetworkPolicy admits them to the metrics port only.
MONITORING_NAMESPACE = "finml-monitoring"
#: The site's MLflow registry (workloads/model_registry.py) and Feast feature server, in the data namespace. The
#: registry gives the serving namespace its read-only user as MLflow's standard variables (Secret) and its CA.
REGISTRY_LABELS = {"app.kubernetes.io/name": "model-registry"}
REGISTRY_PORT = 5000
REGISTRY_CREDENTIALS_SECRET = "model-registry-credentials"
REGISTRY_CA_CONFIG_MAP = "model-registry-ca"
REGISTRY_CA_DIR = "/etc/finml/registry-ca"
FEATURE_SERVER_LABELS = {"app.kubernetes.io/name": "feature-server"}
FEATURE_SERVER_PORT = 6566
HPA_CPU_TARGET = 70


@dataclass(frozen=True)
class InferenceServiceArgs:
    service_name: str
    """Kubernetes name of the Deployment and Service (the config's serving workload name)."""
    site: str
    model: str
    classification: str
    """The model's classification from the stack's lineage (labels; the gate recomputes it from the registry)."""
    gpu_profile: Any | None
    """The GpuProfile of the nodes it runs on; None for share cpu."""
    share: GpuShare = field(default_factory=lambda: GpuShare("gpu"))
    registry_name: str | None = None
    """Registry name (models:/NAME@ALIAS); default: `model`."""
    alias: str = "champion"
    residency: Mapping[str, list[str]] = field(default_factory=dict)
    """The stack file's residency rules, handed to the load gate."""
    replicas: int = 2
    max_replicas: int | None = None
    max_batch_size: int = 32
    max_batch_time_ms: int = 10
    namespace: str = SERVING_NAMESPACE
    image: str = DEFAULT_IMAGE
    cpu: str = "2"
    memory_gib: int = 8
    restricted_features: tuple[str, ...] = ()
    """Features written to the audit log only as keyed hashes."""
    client_namespaces: tuple[str, ...] = ()
    """Namespaces allowed to call the service; none by default (default deny stays)."""

    def __post_init__(self) -> None:
        if self.share.kind == "cpu":
            return
        if self.gpu_profile is None:
            raise ValueError(f"serving {self.service_name!r}: share {self.share} needs a GPU profile")
        if self.share.kind == "mig":
            mig = self.gpu_profile.mig
            allowed = [p.name for p in mig.profiles] if mig.supported else []
            if self.share.mig_profile not in allowed:
                raise ValueError(
                    f"serving {self.service_name!r}: MIG slice {self.share.mig_profile!r} is not a MIG profile of "
                    f"{self.gpu_profile.name}; allowed: {', '.join(allowed) or 'none (MIG not supported)'}")

    @property
    def mig_slice(self) -> str | None:
        return self.share.mig_profile if self.share.kind == "mig" else None

    @property
    def gpu_resource(self) -> str | None:
        if self.share.kind == "mig":
            return mig_resource(self.share.mig_profile or "")
        if self.share.kind in ("gpu", "time-sliced"):
            return GPU_RESOURCE
        return None


class InferenceService(pulumi.ComponentResource):
    """Deployment + Service + HPA + PDB + residency ConfigMap + NetworkPolicies for one model on one site."""

    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    autoscaler: k8s.autoscaling.v2.HorizontalPodAutoscaler
    disruption_budget: k8s.policy.v1.PodDisruptionBudget
    residency_config: k8s.core.v1.ConfigMap
    network_policies: list[k8s.networking.v1.NetworkPolicy]
    gpu_resource: str | None
    """The extended resource each replica requests: nvidia.com/gpu, nvidia.com/mig-<slice>, or None (CPU)."""

    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:InferenceService", name, {
            "site": args.site, "model": args.model, "classification": args.classification,
            "gpuProfile": args.gpu_profile.name if args.gpu_profile is not None else None,
            "migSlice": args.mig_slice, "share": str(args.share),
            "registryModel": args.registry_name or args.model, "alias": args.alias,
        }, opts)
        self._name = name
        self._opts = opts
        self._args = args
        self._selector = selector_labels(COMPONENT, args.service_name)
        self._labels = workload_labels(COMPONENT, args.service_name, args.site, args.classification, args.model)
        self._plain_labels = workload_labels(COMPONENT, args.service_name, args.site, model=args.model)
        residency = self._create_residency_config()
        deployment = self._create_deployment(residency)
        service = self._create_service()
        autoscaler = self._create_autoscaler(deployment)
        disruption_budget = self._create_disruption_budget()
        policies = self._create_network_policies()

        self.residency_config = residency
        self.deployment = deployment
        self.service = service
        self.autoscaler = autoscaler
        self.disruption_budget = disruption_budget
        self.network_policies = policies
        self.network_policy = policies[0] if policies else None
        self.gpu_resource = args.gpu_resource
        self.register_outputs({"gpuResource": self.gpu_resource})

    # -- children ------------------------------------------------------------------------------------------------

    def _meta(self, name: str, labels: dict[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self._args.namespace,
                                          labels=labels or self._plain_labels)

    def _create_residency_config(self) -> k8s.core.v1.ConfigMap:
        a = self._args
        body = {"format": "finml-residency/1", "residency": {k: list(v) for k, v in sorted(a.residency.items())}}
        return k8s.core.v1.ConfigMap(
            child_name(self._name, "residency"),
            metadata=self._meta(f"{a.service_name}-residency"),
            data={"residency.json": json.dumps(body, indent=2, sort_keys=True) + "\n"},
            immutable=False,
            opts=child_opts(self, self._opts),
        )

    def _env(self) -> list[k8s.core.v1.EnvVarArgs]:
        a = self._args
        plain = {
            "FINML_MODEL_NAME": a.registry_name or a.model,
            "FINML_MODEL_ALIAS": a.alias,
            "FINML_SERVICE_NAME": a.service_name,
            "FINML_SITE": a.site,
            "FINML_RESIDENCY_FILE": f"{RESIDENCY_DIR}/residency.json",
            "FINML_MODELS_DIR": MODELS_DIR,
            "FINML_HTTP_PORT": str(HTTPS_PORT),
            "FINML_GRPC_PORT": str(GRPC_PORT),
            "FINML_METRICS_PORT": str(METRICS_PORT),
            "FINML_TLS_CERT": f"{TLS_DIR}/tls.crt",
            "FINML_TLS_KEY": f"{TLS_DIR}/tls.key",
            "FINML_MAX_BATCH_SIZE": str(a.max_batch_size),
            "FINML_MAX_BATCH_TIME_MS": str(a.max_batch_time_ms),
            "FINML_AUDIT_KEY_FILE": f"{AUDIT_KEY_DIR}/key",
            "FINML_RESTRICTED_FEATURES": ",".join(a.restricted_features),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HOME": "/tmp",
        }
        return [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(plain.items())]

    def _create_deployment(self, residency: k8s.core.v1.ConfigMap) -> k8s.apps.v1.Deployment:
        a = self._args
        extended = {a.gpu_resource: 1} if a.gpu_resource else None
        https_probe = k8s.core.v1.HTTPGetActionArgs(path=READINESS_PATH, port="https", scheme="HTTPS")
        container = k8s.core.v1.ContainerArgs(
            name="server",
            image=a.image,
            image_pull_policy="IfNotPresent",
            command=["python", "-m", "workloads.model_server.serve"],
            ports=[k8s.core.v1.ContainerPortArgs(name="https", container_port=HTTPS_PORT, protocol="TCP"),
                   k8s.core.v1.ContainerPortArgs(name="grpc", container_port=GRPC_PORT, protocol="TCP"),
                   k8s.core.v1.ContainerPortArgs(name="metrics", container_port=METRICS_PORT, protocol="TCP")],
            env=self._env(),
            # MLFLOW_TRACKING_URI / _USERNAME / _PASSWORD / _SERVER_CERT_PATH of the registry's read-only user.
            env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(
                name=REGISTRY_CREDENTIALS_SECRET))],
            resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi", extended),
            security_context=restricted_container_security_context(SERVER_UID),
            # Model download and load can take minutes: the startup probe holds liveness off until then.
            startup_probe=k8s.core.v1.ProbeArgs(http_get=https_probe, period_seconds=10, failure_threshold=60),
            readiness_probe=k8s.core.v1.ProbeArgs(http_get=https_probe, period_seconds=5, failure_threshold=3),
            liveness_probe=k8s.core.v1.ProbeArgs(
                http_get=k8s.core.v1.HTTPGetActionArgs(path=LIVENESS_PATH, port="https", scheme="HTTPS"),
                period_seconds=20, failure_threshold=3),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                k8s.core.v1.VolumeMountArgs(name="models", mount_path=MODELS_DIR),
                k8s.core.v1.VolumeMountArgs(name="tls", mount_path=TLS_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="registry-ca", mount_path=REGISTRY_CA_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="residency", mount_path=RESIDENCY_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="audit-key", mount_path=AUDIT_KEY_DIR, read_only=True),
            ],
        )
        node_selector = site_node_selector(a.site, a.gpu_profile.k8s_label_value if a.gpu_profile else None)
        spread = [k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway",
            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector))
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")]
        return k8s.apps.v1.Deployment(
            child_name(self._name, "deployment"),
            metadata=self._meta(a.service_name, self._labels),
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
                        priority_class_name=SERVING_PRIORITY_CLASS,
                        node_selector=node_selector,
                        tolerations=gpu_tolerations(a.gpu_profile) if a.gpu_profile else None,
                        topology_spread_constraints=spread,
                        security_context=restricted_pod_security_context(SERVER_UID),
                        automount_service_account_token=False,
                        enable_service_links=False,
                        termination_grace_period_seconds=30,
                        containers=[container],
                        volumes=[
                            scratch_volume("tmp", "1Gi"),
                            scratch_volume("models", "256Mi"),
                            k8s.core.v1.VolumeArgs(name="tls", secret=k8s.core.v1.SecretVolumeSourceArgs(
                                secret_name=f"{a.service_name}-tls", default_mode=0o440)),
                            k8s.core.v1.VolumeArgs(name="registry-ca",
                                                   config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                                       name=REGISTRY_CA_CONFIG_MAP)),
                            k8s.core.v1.VolumeArgs(name="residency", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                name=residency.metadata.name)),
                            k8s.core.v1.VolumeArgs(name="audit-key", secret=k8s.core.v1.SecretVolumeSourceArgs(
                                secret_name=f"{a.service_name}-audit-key", default_mode=0o440)),
                        ],
                    ),
                ),
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_service(self) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            child_name(self._name, "service"),
            metadata=self._meta(self._args.service_name),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=self._selector,
                ports=[k8s.core.v1.ServicePortArgs(name="https", port=443, target_port="https", protocol="TCP"),
                       k8s.core.v1.ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc", protocol="TCP"),
                       k8s.core.v1.ServicePortArgs(name="metrics", port=METRICS_PORT, target_port="metrics",
                                                   protocol="TCP")],
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_autoscaler(self, deployment: k8s.apps.v1.Deployment) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
        del deployment  # referenced by name (scaleTargetRef); the HPA tolerates a target that is not there yet
        a = self._args
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            child_name(self._name, "hpa"),
            metadata=self._meta(a.service_name),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=a.service_name),
                min_replicas=a.replicas,
                max_replicas=a.max_replicas or 2 * a.replicas,
                metrics=[k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource",
                    resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu", target=k8s.autoscaling.v2.MetricTargetArgs(
                            type="Utilization", average_utilization=HPA_CPU_TARGET)))],
                # Scale-down slowly: a replica holds a GPU slice that another service may take meanwhile.
                behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=600,
                        policies=[k8s.autoscaling.v2.HPAScalingPolicyArgs(type="Pods", value=1, period_seconds=300)])),
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_disruption_budget(self) -> k8s.policy.v1.PodDisruptionBudget:
        # maxUnavailable rather than minAvailable: with one replica a minAvailable of 1 would block node drains.
        return k8s.policy.v1.PodDisruptionBudget(
            child_name(self._name, "pdb"),
            metadata=self._meta(self._args.service_name),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_network_policies(self) -> list[k8s.networking.v1.NetworkPolicy]:
        a = self._args
        np = k8s.networking.v1
        pods = k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector)

        def namespaces(names: list[str]) -> k8s.meta.v1.LabelSelectorArgs:
            return k8s.meta.v1.LabelSelectorArgs(match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
                key=NAMESPACE_NAME_LABEL, operator="In", values=names)])

        def port(number: int) -> np.NetworkPolicyPortArgs:
            return np.NetworkPolicyPortArgs(protocol="TCP", port=number)

        ingress = [np.NetworkPolicyIngressRuleArgs(
            from_=[np.NetworkPolicyPeerArgs(namespace_selector=namespaces([MONITORING_NAMESPACE]))],
            ports=[port(METRICS_PORT)])]
        if a.client_namespaces:
            ingress.insert(0, np.NetworkPolicyIngressRuleArgs(
                from_=[np.NetworkPolicyPeerArgs(namespace_selector=namespaces(list(a.client_namespaces)))],
                ports=[port(HTTPS_PORT), port(GRPC_PORT)]))
        data_ns = namespaces([DATA_NAMESPACE])
        egress = [
            np.NetworkPolicyEgressRuleArgs(
                to=[np.NetworkPolicyPeerArgs(namespace_selector=data_ns, pod_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels=dict(REGISTRY_LABELS)))], ports=[port(REGISTRY_PORT)]),
            np.NetworkPolicyEgressRuleArgs(
                to=[np.NetworkPolicyPeerArgs(namespace_selector=data_ns, pod_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels=dict(FEATURE_SERVER_LABELS)))], ports=[port(FEATURE_SERVER_PORT)]),
        ]
        return [
            np.NetworkPolicy(
                child_name(self._name, "allow-clients"),
                metadata=self._meta(f"{a.service_name}-allow-clients"),
                spec=np.NetworkPolicySpecArgs(pod_selector=pods, policy_types=["Ingress"], ingress=ingress),
                opts=child_opts(self, self._opts)),
            np.NetworkPolicy(
                child_name(self._name, "allow-registry-features"),
                metadata=self._meta(f"{a.service_name}-allow-registry-features"),
                spec=np.NetworkPolicySpecArgs(pod_selector=pods, policy_types=["Egress"], egress=egress),
                opts=child_opts(self, self._opts)),
        ]
