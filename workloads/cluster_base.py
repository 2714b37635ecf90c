"""ClusterBase: the namespaces every ML workload lives in, locked down before any workload arrives.

Each namespace enforces the Pod Security Standard `restricted` (enforce, audit and warn) and starts from a
default-deny NetworkPolicy for both directions; the only traffic allowed here is DNS to the cluster DNS pods.
Workload components add their own narrow allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.naming import SITE_LABEL, child_name, site_label_value
from workloads.pod import GPU_RESOURCE, PART_OF

DATA_NAMESPACE = "finml-data"
TRAINING_NAMESPACE = "finml-training"
SERVING_NAMESPACE = "finml-serving"
NAMESPACES: tuple[str, ...] = (DATA_NAMESPACE, TRAINING_NAMESPACE, SERVING_NAMESPACE)

#: Label the API server sets on every namespace (Kubernetes >= 1.21); NetworkPolicies select namespaces by it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PSS_LEVEL = "restricted"
PSS_VERSION = "latest"
DEFAULT_DENY_POLICY = "default-deny-all"
DNS_EGRESS_POLICY = "allow-dns-egress"
GPU_QUOTA = "gpu-quota"
#: The NVIDIA device plugin (and MIG manager, DCGM exporter) now come from the GPU Operator: workloads/gpu_operator.
GPU_NODE_LABEL = "finml.io/gpu-profile"
#: Serving outranks training (`finml-training`, the training workload's class, must stay below this value).
SERVING_PRIORITY_CLASS = "finml-serving"
SERVING_PRIORITY = 1_000_000
#: CoreDNS pods carry this label on EKS and kubeadm clusters.
DNS_POD_LABELS = {"k8s-app": "kube-dns"}


def pss_labels() -> dict[str, str]:
    labels = {}
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = PSS_LEVEL
        labels[f"pod-security.kubernetes.io/{mode}-version"] = PSS_VERSION
    return labels


@dataclass(frozen=True)
class ClusterBaseArgs:
    site: str
    """Site of the cluster (`onprem:fra-dc1`); labels the namespaces. Placement is the provider's, not this label's."""
    gpu_quota: int | None = None
    """Most whole GPUs pods of the training and serving namespaces may request each; None: no quota there.
    The data namespace always gets a quota of 0 GPUs: nothing that holds data should land on a GPU node."""


class ClusterBase(pulumi.ComponentResource):
    """Namespaces with PSS restricted, default-deny NetworkPolicies, DNS egress and GPU quotas."""

    namespaces: dict[str, k8s.core.v1.Namespace]
    network_policies: list[k8s.networking.v1.NetworkPolicy]
    quotas: list[k8s.core.v1.ResourceQuota]
    namespace_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ClusterBaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:ClusterBase", name, {"site": args.site}, opts)
        self._name = name
        self._args = args
        namespaces = self._create_namespaces()
        policies = self._create_network_policies(namespaces)
        quotas = self._create_gpu_quotas(namespaces)
        self.priority_classes = self._create_priority_classes()

        self.namespaces = namespaces
        self.network_policies = policies
        self.quotas = quotas
        self.namespace_names = pulumi.Output.all(*[ns.metadata.name for ns in namespaces.values()])
        self.register_outputs({"site": args.site, "namespaceNames": self.namespace_names})

    def _create_priority_classes(self) -> list[k8s.scheduling.v1.PriorityClass]:
        """Serving above training: a burst of training jobs queues behind, and may be preempted by, the serving
        path; never above the system classes node agents (the GPU Operator's daemon sets) use."""
        return [k8s.scheduling.v1.PriorityClass(
            child_name(self._name, SERVING_PRIORITY_CLASS),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVING_PRIORITY_CLASS,
                                                labels={"app.kubernetes.io/part-of": PART_OF}),
            value=SERVING_PRIORITY,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="finml model serving: above training, below system-cluster-critical",
            opts=pulumi.ResourceOptions(parent=self),
        )]

    def _create_namespaces(self) -> dict[str, k8s.core.v1.Namespace]:
        labels = {
            **pss_labels(),
            SITE_LABEL: site_label_value(self._args.site),
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": "pulumi",
        }
        return {
            ns: k8s.core.v1.Namespace(
                child_name(self._name, ns),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=ns, labels=dict(sorted(labels.items()))),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for ns in NAMESPACES
        }

    def _create_network_policies(self, namespaces: dict[str, k8s.core.v1.Namespace]
                                 ) -> list[k8s.networking.v1.NetworkPolicy]:
        policies = []
        for ns, namespace in namespaces.items():
            opts = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
            # No rules: selects every pod and allows nothing, in both directions.
            policies.append(k8s.networking.v1.NetworkPolicy(
                child_name(self._name, ns, DEFAULT_DENY_POLICY),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=DEFAULT_DENY_POLICY, namespace=ns),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                    policy_types=["Ingress", "Egress"],
                ),
                opts=opts,
            ))
            policies.append(k8s.networking.v1.NetworkPolicy(
                child_name(self._name, ns, DNS_EGRESS_POLICY),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=DNS_EGRESS_POLICY, namespace=ns),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                    policy_types=["Egress"],
                    egress=[k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[k8s.networking.v1.NetworkPolicyPeerArgs(
                            namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                                match_labels={NAMESPACE_NAME_LABEL: "kube-system"}),
                            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(DNS_POD_LABELS)),
                        )],
                        ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol=proto, port=53)
                               for proto in ("UDP", "TCP")],
                    )],
                ),
                opts=opts,
            ))
        return policies

    def _create_gpu_quotas(self, namespaces: dict[str, k8s.core.v1.Namespace]) -> list[k8s.core.v1.ResourceQuota]:
        limits = {DATA_NAMESPACE: 0}
        if self._args.gpu_quota is not None:
            limits |= {TRAINING_NAMESPACE: self._args.gpu_quota, SERVING_NAMESPACE: self._args.gpu_quota}
        return [
            k8s.core.v1.ResourceQuota(
                child_name(self._name, ns, GPU_QUOTA),
                metadata=k8s.meta.v1.ObjectMetaArgs(name=GPU_QUOTA, namespace=ns),
                spec=k8s.core.v1.ResourceQuotaSpecArgs(hard={f"requests.{GPU_RESOURCE}": str(count)}),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[namespaces[ns]]),
            )
            for ns, count in limits.items()
        ]
