"""Canaries: prove the harness and checks can fail, so a green run means something."""

from __future__ import annotations

import kubernetes_validate
import pulumi
import pytest
from workloads_harness import K8S_VERSION, RecordingMonitor, pod_security_problems

INSECURE_POD = {
    "metadata": {"labels": {}},
    "spec": {
        "hostNetwork": True,
        "nodeSelector": {"finml.io/site": "aws-eu-west-1"},
        "securityContext": {"runAsUser": 0},
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{
            "name": "c", "image": "busybox:1.36",
            "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
            "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}},
        }],
    },
}


def test_pod_checks_flag_every_weakness_of_an_insecure_pod():
    problems = pod_security_problems("canary", INSECURE_POD, "onprem-fra-dc1")
    text = "\n".join(problems)
    for expected in ("nodeSelector finml.io/site", "hostNetwork", "automountServiceAccountToken", "hostPath",
                     "non-root", "seccompProfile", "privileged", "allowPrivilegeEscalation", "drop ALL",
                     "root file system", "requests"):
        assert expected in text, f"canary not flagged for {expected!r}:\n{text}"


def test_strict_schema_validation_rejects_an_unknown_field():
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizer": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_a_failing_check_inside_the_runtime_fails_the_test():
    monitor = RecordingMonitor()
    pulumi.runtime.set_mocks(monitor.mocks, project="finml", stack="test", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def failing():
        def check(value):
            assert value == "expected", "canary"

        return pulumi.Output.from_input("actual").apply(check)

    with pytest.raises(AssertionError, match="canary"):
        failing()
