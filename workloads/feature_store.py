"""FeatureStore: a minimal online feature store (a Valkey server, Redis-protocol compatible) on the data namespace.

One replica in a StatefulSet with a persistent volume labelled with the store's classification, pinned to its site,
reachable only from the training and serving namespaces on the store port. Placement is whatever the caller asks
for: the policy pack, not this component, decides whether the classification may live on this cluster's site.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.naming import CLASSIFICATION_LABEL, SITE_LABEL, child_name, site_label_value
from workloads.cluster_base import DATA_NAMESPACE, NAMESPACE_NAME_LABEL, SERVING_NAMESPACE, TRAINING_NAMESPACE
from workloads.options import child_opts
from workloads.pod import (
    guaranteed_resources,
    restricted_container_security_context,
    restricted_pod_security_context,
    scratch_volume,
    selector_labels,
    site_node_selector,
    workload_labels,
)

COMPONENT = "feature-store"
DEFAULT_IMAGE = "valkey/valkey:8.0"
#: uid/gid of the `valkey` user in the official image.
VALKEY_UID = 999
STORE_PORT = 6379
DATA_VOLUME = "data"
DEFAULT_CLIENT_NAMESPACES: tuple[str, ...] = (TRAINING_NAMESPACE, SERVING_NAMESPACE)


@dataclass(frozen=True)
class FeatureStoreArgs:
    site: str
    """Site of the cluster this store runs on (from config; the pack checks it against residency)."""
    classification: str
    """Highest classification of the features it holds; labels the pod and its volume."""
    namespace: str = DATA_NAMESPACE
    image: str = DEFAULT_IMAGE
    storage_gib: int = 50
    storage_class: str | None = None
    """None: the cluster's default class (the cluster components make that an encrypted one)."""
    cpu: str = "1"
    memory_gib: int = 4
    client_namespaces: tuple[str, ...] = DEFAULT_CLIENT_NAMESPACES
    """Namespaces whose pods may connect; each also gets an egress allow to the store."""


class FeatureStore(pulumi.ComponentResource):
    """StatefulSet + PVC template + ClusterIP Service + NetworkPolicies for the online feature store."""

    stateful_set: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    network_policies: list[k8s.networking.v1.NetworkPolicy]
    endpoint: pulumi.Output[str]
    """host:port clients connect to, e.g. feature-store.finml-data.svc.cluster.local:6379."""

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:FeatureStore", name,
                         {"site": args.site, "classification": args.classification}, opts)
        self._name = name
        self._opts = opts
        self._args = args
        self._labels = workload_labels(COMPONENT, COMPONENT, args.site, args.classification)
        # Services and policies hold no data; only the data-bearing objects carry the classification label.
        self._plain_labels = workload_labels(COMPONENT, COMPONENT, args.site)
        service = self._create_service()
        stateful_set = self._create_stateful_set(service)
        policies = self._create_network_policies()

        self.stateful_set = stateful_set
        self.service = service
        self.network_policies = policies
        self.endpoint = pulumi.Output.concat(
            service.metadata.name, ".", service.metadata.namespace, ".svc.cluster.local:", str(STORE_PORT))
        self.register_outputs({"endpoint": self.endpoint})

    def _create_service(self) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            child_name(self._name, "service"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=COMPONENT, namespace=self._args.namespace,
                                                labels=self._plain_labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=selector_labels(COMPONENT, COMPONENT),
                ports=[k8s.core.v1.ServicePortArgs(name="redis", port=STORE_PORT, target_port="redis",
                                                   protocol="TCP")],
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_stateful_set(self, service: k8s.core.v1.Service) -> k8s.apps.v1.StatefulSet:
        a = self._args
        # Leave a quarter of the memory limit for replication buffers and forks, and refuse writes rather than
        # evict features silently when full.
        maxmemory_mib = a.memory_gib * 1024 * 3 // 4
        container = k8s.core.v1.ContainerArgs(
            name="valkey",
            image=a.image,
            image_pull_policy="IfNotPresent",
            command=["valkey-server"],
            # No auth yet: access is limited by NetworkPolicy to the client namespaces. Protected mode would
            # refuse every non-loopback client when no password is set.
            args=["--port", str(STORE_PORT), "--dir", f"/{DATA_VOLUME}", "--appendonly", "yes",
                  "--protected-mode", "no", "--maxmemory", f"{maxmemory_mib}mb", "--maxmemory-policy", "noeviction"],
            ports=[k8s.core.v1.ContainerPortArgs(name="redis", container_port=STORE_PORT, protocol="TCP")],
            resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi"),
            security_context=restricted_container_security_context(VALKEY_UID),
            readiness_probe=k8s.core.v1.ProbeArgs(
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis"), period_seconds=10),
            liveness_probe=k8s.core.v1.ProbeArgs(
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis"), initial_delay_seconds=30,
                period_seconds=20, failure_threshold=3),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name=DATA_VOLUME, mount_path=f"/{DATA_VOLUME}"),
                           k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        )
        pvc_labels = {CLASSIFICATION_LABEL: a.classification, SITE_LABEL: site_label_value(a.site),
                      "app.kubernetes.io/part-of": "finml"}
        return k8s.apps.v1.StatefulSet(
            child_name(self._name, "statefulset"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=COMPONENT, namespace=a.namespace, labels=self._labels),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1,
                service_name=service.metadata.name,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(COMPONENT, COMPONENT)),
                # Deleting the store must never delete its data volume with it.
                persistent_volume_claim_retention_policy=(
                    k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                        when_deleted="Retain", when_scaled="Retain")),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=site_node_selector(a.site),
                        security_context=restricted_pod_security_context(VALKEY_UID),
                        automount_service_account_token=False,
                        enable_service_links=False,
                        containers=[container],
                        volumes=[scratch_volume("tmp", "64Mi")],
                    ),
                ),
                volume_claim_templates=[k8s.core.v1.PersistentVolumeClaimArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=DATA_VOLUME, labels=dict(sorted(pvc_labels.items()))),
                    spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"],
                        storage_class_name=a.storage_class,
                        resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                            requests={"storage": f"{a.storage_gib}Gi"}),
                    ),
                )],
            ),
            opts=child_opts(self, self._opts),
        )

    def _create_network_policies(self) -> list[k8s.networking.v1.NetworkPolicy]:
        a = self._args
        store_port = [k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=STORE_PORT)]
        policies = [k8s.networking.v1.NetworkPolicy(
            child_name(self._name, "allow-clients"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{COMPONENT}-allow-clients", namespace=a.namespace,
                                                labels=self._plain_labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(COMPONENT, COMPONENT)),
                policy_types=["Ingress"],
                ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[k8s.networking.v1.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[
                            k8s.meta.v1.LabelSelectorRequirementArgs(
                                key=NAMESPACE_NAME_LABEL, operator="In", values=list(a.client_namespaces))]),
                    )],
                    ports=store_port,
                )],
            ),
            opts=child_opts(self, self._opts),
        )]
        # The client namespaces deny all egress by default; let their pods reach the store, and only the store.
        for ns in a.client_namespaces:
            policies.append(k8s.networking.v1.NetworkPolicy(
                child_name(self._name, ns, "egress"),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"allow-{COMPONENT}-egress", namespace=ns,
                                                    labels=self._plain_labels),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                    policy_types=["Egress"],
                    egress=[k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[k8s.networking.v1.NetworkPolicyPeerArgs(
                            namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                                match_labels={NAMESPACE_NAME_LABEL: a.namespace}),
                            pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                match_labels=selector_labels(COMPONENT, COMPONENT)),
                        )],
                        ports=store_port,
                    )],
                ),
                opts=child_opts(self, self._opts),
            ))
        return policies
