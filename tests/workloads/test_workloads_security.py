"""Security baseline of every rendered Kubernetes object, for every real stack file.

Namespaces enforce PSS restricted, start from default deny both ways, every pod template is restricted, site-pinned
and host-isolated, every object goes to its site's cluster through an explicit provider, and every manifest is valid
against the Kubernetes 1.35 OpenAPI schema (strict: unknown fields are errors).
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from workloads_harness import (
    K8S_VERSION,
    POD_TEMPLATE_KINDS,
    RecordingMonitor,
    manifest,
    pod_security_problems,
    pod_template,
    provider_name,
)

from components.naming import SITE_LABEL, site_label_value
from workloads.cluster_base import NAMESPACES

PSS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
PSS |= {f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")}


def _site_of_provider(monitor: RecordingMonitor, record) -> str:
    name = monitor.provider_of(record)
    sites = {provider_name(s): s for s in _sites(monitor)}
    assert name in sites, f"{record}: provider {name!r} is not one of the cluster providers {sorted(sites)}"
    return sites[name]


def _sites(monitor: RecordingMonitor) -> list[str]:
    return [r.inputs["site"] for r in monitor.of_type("finml:workloads:ClusterBase")]


def test_every_cluster_gets_the_three_namespaces_with_pss_restricted(any_stack):
    name, monitor = any_stack
    sites = _sites(monitor)
    assert sites, f"{name}: no cluster deployed"
    namespaces = monitor.k8s("Namespace")
    assert len(namespaces) == 3 * len(sites)
    for site in sites:
        names = sorted(ns.inputs["metadata"]["name"] for ns in namespaces if _site_of_provider(monitor, ns) == site)
        assert names == sorted(NAMESPACES), f"{name} {site}: namespaces {names}"
    for ns in namespaces:
        labels = ns.inputs["metadata"]["labels"]
        for key, value in PSS.items():
            assert labels.get(key) == value, f"{ns}: label {key}={labels.get(key)!r}, expected {value!r}"
        assert labels[SITE_LABEL] == site_label_value(_site_of_provider(monitor, ns)), f"{ns}: wrong site label"


def test_every_namespace_has_a_default_deny_for_both_directions(any_stack):
    _, monitor = any_stack
    policies = monitor.k8s("NetworkPolicy")
    for ns in monitor.k8s("Namespace"):
        ns_name = ns.inputs["metadata"]["name"]
        site = _site_of_provider(monitor, ns)
        deny = [p for p in policies
                if p.inputs["metadata"]["namespace"] == ns_name and _site_of_provider(monitor, p) == site
                and p.inputs["spec"].get("podSelector") == {}
                and sorted(p.inputs["spec"].get("policyTypes", [])) == ["Egress", "Ingress"]
                and not p.inputs["spec"].get("ingress") and not p.inputs["spec"].get("egress")]
        assert len(deny) == 1, f"{ns}: expected one default-deny policy (Ingress+Egress, no rules), found {deny}"


def test_dns_is_the_only_namespace_wide_egress_allowed_by_cluster_base(any_stack):
    _, monitor = any_stack
    dns = [p for p in monitor.k8s("NetworkPolicy") if p.inputs["metadata"]["name"] == "allow-dns-egress"]
    assert len(dns) == len(monitor.k8s("Namespace"))
    for policy in dns:
        spec = policy.inputs["spec"]
        assert spec["policyTypes"] == ["Egress"], f"{policy}: {spec['policyTypes']}"
        assert "ingress" not in spec, f"{policy}: allows ingress"
        (rule,) = spec["egress"]
        (peer,) = rule["to"]
        assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, policy
        assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}, policy
        assert sorted((p["protocol"], int(p["port"])) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)], policy


def test_data_namespace_may_not_request_gpus(any_stack):
    _, monitor = any_stack
    quotas = [q for q in monitor.k8s("ResourceQuota") if q.inputs["metadata"]["namespace"] == "finml-data"]
    assert len(quotas) == len(_sites(monitor))
    for quota in quotas:
        assert quota.inputs["spec"]["hard"] == {"requests.nvidia.com/gpu": "0"}, quota


def test_every_pod_template_is_restricted_pinned_and_host_isolated(any_stack):
    name, monitor = any_stack
    controllers = [r for r in monitor.k8s() if r.kind in POD_TEMPLATE_KINDS]
    assert controllers, f"{name}: no workloads rendered"
    problems = []
    for record in controllers:
        site = _site_of_provider(monitor, record)
        problems += pod_security_problems(str(record), pod_template(record), site_label_value(site))
    assert problems == []


def test_no_privileged_host_path_or_host_network_anywhere(any_stack):
    """finml's own objects never need host access: the node agents that do (device plugin, MIG manager, DCGM
    exporter) come from the GPU Operator's chart in kube-system, one Helm release per GPU cluster."""
    _, monitor = any_stack
    for record in monitor.k8s():
        text = repr(record.inputs)
        for forbidden in ("'privileged': True", "hostPath", "'hostNetwork': True", "'hostPID': True",
                          "'hostIPC': True", "hostPort"):
            assert forbidden not in text, f"{record}: contains {forbidden}"
    assert not monitor.k8s("DaemonSet"), "the hand-made device plugin is replaced by the GPU Operator"


def test_every_gpu_cluster_runs_one_gpu_operator_release_with_mig_mixed(any_stack):
    name, monitor = any_stack
    releases = [r for r in monitor.registered if r.typ == "kubernetes:helm.sh/v3:Release"]
    assert len(releases) == len({r.provider for r in monitor.k8s()}), "one GPU Operator per cluster"
    for release in releases:
        inputs = release.inputs
        assert (inputs["chart"], inputs["version"], inputs["namespace"]) == ("gpu-operator", "v25.10.1", "kube-system")
        assert inputs["values"]["mig"] == {"strategy": "mixed"}
        assert inputs["values"]["dcgmExporter"]["enabled"] is True


def test_every_kubernetes_object_uses_its_cluster_provider_and_a_finml_parent(any_stack):
    _, monitor = any_stack
    for record in monitor.k8s():
        assert record.provider is not None, f"{record}: no explicit provider (default providers are disabled)"
        _site_of_provider(monitor, record)
        assert (record.parent_type or "").startswith("finml:workloads:"), f"{record}: parent {record.parent}"


def test_urns_are_unique(any_stack):
    _, monitor = any_stack
    urns = [r.urn for r in monitor.registered]
    assert len(urns) == len(set(urns)), sorted(u for u in urns if urns.count(u) > 1)


def test_every_manifest_is_valid_kubernetes_1_31_strict(any_stack):
    _, monitor = any_stack
    records = monitor.k8s()
    assert records
    errors = []
    for record in records:
        if record.typ == "kubernetes:helm.sh/v3:Release":
            continue  # not an API object: its values are checked against the chart schema kept in the repo
        body = manifest(record)
        if body["kind"].endswith("Patch"):
            body["kind"] = body["kind"].removesuffix("Patch")  # a server-side patch of that kind
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{record}: {exc.message} at {list(exc.path)}")
    assert errors == []


@pytest.mark.parametrize("kind", ["Namespace", "NetworkPolicy", "ResourceQuota", "StatefulSet", "Service",
                                  "ServiceAccount", "PriorityClass", "Deployment", "PodDisruptionBudget"])
def test_every_expected_kind_is_rendered_by_hybrid_prod(hybrid, kind):
    assert hybrid.k8s(kind), f"no {kind} rendered for hybrid-prod"


def test_workload_objects_wait_for_their_namespace_and_its_default_deny(any_stack):
    _, monitor = any_stack
    base_children = [r for r in monitor.k8s() if r.parent_type == "finml:workloads:ClusterBase"]
    assert base_children
    for record in monitor.k8s():
        if record in base_children or record.parent_type == "finml:workloads:GpuOperator":
            continue  # the operator and its configuration live in kube-system, there before any workload
        namespace = record.inputs.get("metadata", {}).get("namespace")
        if namespace is None:  # cluster-scoped (the feature server's auth-delegator binding, PriorityClass, node patches)
            continue
        same_cluster = [b for b in base_children if monitor.provider_of(b) == monitor.provider_of(record)]
        (ns,) = [b for b in same_cluster if b.kind == "Namespace" and b.inputs["metadata"]["name"] == namespace]
        (deny,) = [b for b in same_cluster if b.kind == "NetworkPolicy" and b.inputs["metadata"]["namespace"] ==
                   namespace and b.inputs["metadata"]["name"] == "default-deny-all"]
        missing = {ns.urn, deny.urn} - set(record.dependencies)
        assert not missing, f"{record}: does not wait for {sorted(missing)}"
