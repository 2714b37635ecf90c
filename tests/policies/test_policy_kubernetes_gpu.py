"""Kubernetes isolation and GPU rules: exact (rule, URN) sets per fixture."""

import pytest

from policy_harness import CONFIG, UNKNOWN, Stack, pairs, run
from policy_fixtures import GPU_TOLERATION, container, default_deny, namespace, pod_spec, workload


@pytest.fixture
def s():
    return Stack()


@pytest.fixture
def k8s(s):
    return s.onprem_cluster()[1]


# --- k8s-namespace-default-deny ---------------------------------------------------------------------------------

def test_default_deny_per_namespace_and_cluster(s, k8s):
    rule = "k8s-namespace-default-deny"
    other = s.eks_cluster()[1]
    training = namespace(s, "training", k8s)
    default_deny(s, "deny-all", "training", k8s)
    workload(s, "Deployment", "ok", k8s)
    # split ingress/egress policies also count
    namespace(s, "serving", k8s)
    default_deny(s, "deny-in", "serving", k8s, types=("Ingress",))
    default_deny(s, "deny-out", "serving", k8s, types=("Egress",))
    workload(s, "Deployment", "serving", k8s, namespace="serving")
    # exempt namespace; a declared namespace without workloads is still held to the rule
    workload(s, "DaemonSet", "plugin", k8s, namespace="kube-system", cls=None)
    empty = namespace(s, "empty", k8s)
    # same namespace name on another cluster has no policy there -> workloads (no Namespace object) are flagged
    on_other = workload(s, "Deployment", "other", other)
    # ingress-only deny
    ingress_only_ns = namespace(s, "features", k8s)
    default_deny(s, "features-in", "features", k8s, types=("Ingress",))
    workload(s, "StatefulSet", "store", k8s, namespace="features")
    # a policy with rules or a selector is not a default deny; policyTypes absent means Ingress only
    allow_ns = namespace(s, "allow", k8s)
    default_deny(s, "allow-some", "allow", k8s, ingress=[{"from": [{"podSelector": {}}]}],
                 egress=[{"to": [{"podSelector": {}}]}])
    default_deny(s, "selected", "allow", k8s, selector={"matchLabels": {"app": "x"}})
    default_deny(s, "implicit-types", "allow", k8s, types=None)
    workload(s, "Job", "job", k8s, namespace="allow")
    # namespace as an unknown Output, resolved through lineage to the Namespace object
    lineage_ns = namespace(s, "lineage", k8s)
    workload(s, "Deployment", "via-lineage", k8s, namespace=UNKNOWN, deps={"metadata": [lineage_ns]})
    default_deny(s, "lineage-deny", "lineage", k8s)
    unresolved = workload(s, "Deployment", "unresolved", k8s, namespace=UNKNOWN)
    violations = run(rule, s)
    assert pairs(violations) == {(rule, on_other.urn), (rule, ingress_only_ns.urn), (rule, allow_ns.urn),
                                 (rule, unresolved.urn), (rule, empty.urn)}
    messages = {v.urn: v.message for v in violations}
    assert "no default-deny Egress NetworkPolicy" in messages[ingress_only_ns.urn]
    assert "no default-deny Egress NetworkPolicy" in messages[allow_ns.urn]  # implicit policyTypes: Ingress only
    assert training


def test_pod_security_restricted(s, k8s):
    rule = "k8s-namespace-pod-security-restricted"
    namespace(s, "ok", k8s)
    namespace(s, "kube-system", k8s, pss="privileged")
    baseline = namespace(s, "baseline", k8s, pss="baseline")
    unlabelled = namespace(s, "unlabelled", k8s, pss=None)
    unknown = namespace(s, "unknown", k8s, pss=UNKNOWN)
    assert pairs(run(rule, s)) == {(rule, baseline.urn), (rule, unlabelled.urn), (rule, unknown.urn)}


def test_exempt_namespaces_come_from_config(s, k8s):
    rule = "k8s-namespace-pod-security-restricted"
    system = namespace(s, "kube-system", k8s, pss="privileged")
    monitoring = namespace(s, "monitoring", k8s, pss="privileged")
    config = {rule: {"exemptNamespaces": ["monitoring"]}}
    assert pairs(run(rule, s, config=config)) == {(rule, system.urn)}
    assert pairs(run(rule, s, config=CONFIG)) == {(rule, monitoring.urn)}


# --- pod hardening ------------------------------------------------------------------------------------------------

def test_no_privileged_containers(s, k8s):
    rule = "k8s-no-privileged-containers"
    workload(s, "Deployment", "ok", k8s, spec=pod_spec([container(securityContext={"privileged": False})]))
    workload(s, "DaemonSet", "plugin", k8s, namespace="kube-system",
             spec=pod_spec([container(securityContext={"privileged": True})]))
    s.add("kubernetes:core/v1:PersistentVolumeClaim", "pvc", {"metadata": {"namespace": "training"}}, provider=k8s)
    main = workload(s, "Deployment", "main", k8s, spec=pod_spec([container(securityContext={"privileged": True})]))
    init = workload(s, "CronJob", "init", k8s, spec=pod_spec(
        [container()], initContainers=[container("init", securityContext={"privileged": "true"})]))
    unknown = workload(s, "Pod", "unknown", k8s, spec=pod_spec([container(securityContext={"privileged": UNKNOWN})]))
    unknown_ns = workload(s, "Job", "unknown-ns", k8s, namespace=UNKNOWN,
                          spec=pod_spec([container(securityContext={"privileged": True})]))
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (main, init, unknown, unknown_ns)}


def test_no_host_namespaces(s, k8s):
    rule = "k8s-no-host-namespaces"
    workload(s, "Deployment", "ok", k8s, spec=pod_spec(hostNetwork=False))
    workload(s, "DaemonSet", "system", k8s, namespace="kube-system", spec=pod_spec(hostNetwork=True))
    net = workload(s, "Deployment", "net", k8s, spec=pod_spec(hostNetwork=True))
    pid_ipc = workload(s, "Job", "pid-ipc", k8s, spec=pod_spec(hostPID=True, hostIPC=True))
    unknown = workload(s, "StatefulSet", "unknown", k8s, spec=UNKNOWN)
    violations = run(rule, s)
    assert pairs(violations) == {(rule, net.urn), (rule, pid_ipc.urn), (rule, unknown.urn)}
    assert sum(v.urn == pid_ipc.urn for v in violations) == 2


def test_no_hostpath_volumes(s, k8s):
    rule = "k8s-no-hostpath-volumes"
    workload(s, "Deployment", "ok", k8s, spec=pod_spec(volumes=[{"name": "data", "persistentVolumeClaim": {
        "claimName": "checkpoints"}}]))
    workload(s, "DaemonSet", "plugin", k8s, namespace="kube-system",
             spec=pod_spec(volumes=[{"name": "dp", "hostPath": {"path": "/var/lib/kubelet"}}]))
    host = workload(s, "Deployment", "host", k8s, spec=pod_spec(volumes=[{"name": "h", "hostPath": {"path": "/"}}]))
    unknown = workload(s, "Pod", "unknown", k8s, spec=pod_spec(volumes=UNKNOWN))
    assert pairs(run(rule, s)) == {(rule, host.urn), (rule, unknown.urn)}


# --- GPU ----------------------------------------------------------------------------------------------------------

def gpu_pod(limits=None, requests=None, tolerations=(GPU_TOLERATION,), name="trainer"):
    return pod_spec([container(name, limits=limits, requests=requests)], tolerations=list(tolerations))


def test_gpu_resource_limits(s, k8s):
    rule = "gpu-resource-limits"
    workload(s, "Job", "ok", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 2}, requests={"nvidia.com/gpu": 2}))
    workload(s, "Job", "mig-ok", k8s, spec=gpu_pod(limits={"nvidia.com/mig-3g.71gb": 1}))
    workload(s, "Deployment", "cpu-only", k8s, spec=gpu_pod(requests={"cpu": "1"}, tolerations=()))
    request_only = workload(s, "Job", "request-only", k8s, spec=gpu_pod(requests={"nvidia.com/gpu": 1}))
    mig_request_only = workload(s, "Job", "mig-request-only", k8s, spec=gpu_pod(
        requests={"nvidia.com/mig-1g.18gb": 1}, limits={"cpu": "2"}))
    mismatch = workload(s, "Job", "mismatch", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1},
                                                                requests={"nvidia.com/gpu": 2}))
    unknown = workload(s, "Job", "unknown", k8s, spec=pod_spec([container("c", limits=UNKNOWN)]))
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (request_only, mig_request_only, mismatch, unknown)}


def test_gpu_taint_toleration(s, k8s):
    rule = "gpu-taint-toleration"
    workload(s, "Job", "ok", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1}))
    workload(s, "Job", "equal", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1}, tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]))
    workload(s, "Job", "tolerate-all", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1},
                                                         tolerations=[{"operator": "Exists"}]))
    workload(s, "Deployment", "cpu", k8s, spec=gpu_pod(limits={"cpu": "1"}, tolerations=()))
    missing = workload(s, "Job", "missing", k8s, spec=gpu_pod(limits={"nvidia.com/mig-1g.18gb": 1}, tolerations=()))
    wrong_effect = workload(s, "Job", "wrong-effect", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1}, tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}]))
    unknown = workload(s, "Job", "unknown", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1}, tolerations=UNKNOWN))
    assert pairs(run(rule, s)) == {(rule, r.urn) for r in (missing, wrong_effect, unknown)}


@pytest.mark.parametrize("name,ok", [
    ("nvidia.com/mig-1g.18gb", True), ("nvidia.com/mig-7g.141gb", True), ("nvidia.com/mig-3g.40gb", True),
    ("nvidia.com/mig-8g.10gb", False), ("nvidia.com/mig-1g18gb", False), ("nvidia.com/mig-1g.gb", False),
    ("nvidia.com/mig-1g.10GB", False), ("nvidia.com/mig-", False), ("nvidia.com/mig-1g.5gb+me", False),
])
def test_mig_resource_names(s, k8s, name, ok):
    rule = "gpu-mig-resource-name"
    job = workload(s, "Job", "job", k8s, spec=gpu_pod(limits={name: 1}))
    workload(s, "Job", "plain-gpu", k8s, spec=gpu_pod(limits={"nvidia.com/gpu": 1}))
    assert pairs(run(rule, s)) == (set() if ok else {(rule, job.urn)})
