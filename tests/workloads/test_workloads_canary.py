"""Canaries: prove the harness and checks can fail, so a green run means something."""

from __future__ import annotations

import kubernetes_validate
import pytest
from workloads_harness import K8S_VERSION, pod_security_problems

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


def test_a_failing_check_inside_the_runtime_fails_a_pytest_run(tmp_path):
    """Not `pytest.raises` around our own raise: a separate pytest run of an Output check written like this suite's
    must come out red, naming the failed check."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    (tmp_path / "test_output_check.py").write_text(
        "import pulumi\n"
        "from workloads_harness import RecordingMonitor\n"
        "monitor = RecordingMonitor()\n"
        "pulumi.runtime.set_mocks(monitor.mocks, project='finml', stack='test', preview=True, monitor=monitor)\n"
        "@pulumi.runtime.test\n"
        "def test_value():\n"
        "    def check(value): assert value == 'expected', 'canary: got ' + value\n"
        "    return pulumi.Output.from_input('actual').apply(check)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": f"{here}:{here.parents[1]}"})
    assert proc.returncode == 1 and "canary: got actual" in proc.stdout, proc.stdout


def test_preview_registers_what_update_registers(hybrid):
    """The dry run the policy gate sees (ids and computed outputs unknown) registers the same objects as an update."""
    from workloads_harness import STACK_FILES, deploy_stack, load_stack, run_program

    path = next(p for p in STACK_FILES if p.name == "Pulumi.hybrid-prod.yaml")
    preview, _ = run_program(deploy_stack(load_stack(path)), preview=True)
    assert sorted(r.urn for r in preview.registered) == sorted(r.urn for r in hybrid.registered)
    namespaces = {r.name: r.inputs for r in preview.k8s("Namespace")}
    assert namespaces == {r.name: r.inputs for r in hybrid.k8s("Namespace")}
