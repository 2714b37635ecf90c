"""`finml train render` manifests: strict Kubernetes schema, site and GPU pinning, GPU/MIG requests from the profile,
rendezvous wiring, and the policy pack's verdict through `finml check-manifests` (restricted data on AWS refused)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from components.naming import CLASSIFICATION_LABEL, SITE_LABEL, site_label_value
from finml.config import load_stack_file, parse_platform, resolve_gpu_profile, StackConfig
from gpu_profiles import load_profiles
from workloads.training_job import RENDEZVOUS_PORT, RenderError, TrainingRun, render_training_run

from training_harness import ROOT

K8S_VERSION = "1.35"
STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
PROFILES = load_profiles()


def stack(name: str) -> StackConfig:
    return load_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml")


def with_training(name: str, **changes) -> StackConfig:
    """The stack with its first training workload changed (parsed and cross-checked like a stack file)."""
    base = stack(name)
    raw = copy.deepcopy(base.raw_config["finml:platform"])
    raw["workloads"]["training"][0].update(changes)
    platform = parse_platform(raw, f"{name} (edited)", PROFILES)
    return StackConfig(stack=base.stack, source=base.source, platform=platform, secret_keys=base.secret_keys,
                       raw_config={**base.raw_config, "finml:platform": raw})


def render(st: StackConfig, job: str | None = None, **kw) -> tuple[dict, dict]:
    job_cfg = next(j for j in st.platform.workloads.training if job in (None, j.name))
    service, _, job_manifest = render_training_run(
        TrainingRun(st, kw.pop("site", job_cfg.site), job_cfg.name, "t1", **kw), PROFILES)
    return service, job_manifest


def all_runs():
    for name in STACKS:
        for job in stack(name).platform.workloads.training:
            yield pytest.param(name, job.name, id=f"{name}:{job.name}")


@pytest.mark.parametrize(("stack_name", "job_name"), list(all_runs()))
def test_every_configured_run_renders_valid_strict_kubernetes(stack_name, job_name):
    st = stack(stack_name)
    job = next(j for j in st.platform.workloads.training if j.name == job_name)
    for manifest in render_training_run(TrainingRun(st, job.site, job.name, "t1"), PROFILES):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("stack_name", "job_name"), list(all_runs()))
def test_pods_are_pinned_to_the_sites_gpu_nodes_and_tolerate_exactly_the_profiles_taints(stack_name, job_name):
    st = stack(stack_name)
    job = next(j for j in st.platform.workloads.training if j.name == job_name)
    profile = resolve_gpu_profile(job.gpu_profile, PROFILES)
    _, manifest = render(st, job_name)
    spec = manifest["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {(e["key"], e["operator"], tuple(e["values"])) for e in term["matchExpressions"]} == {
        (SITE_LABEL, "In", (site_label_value(job.site),)),
        ("finml.io/gpu-profile", "In", (profile.k8s_label_value,))}
    expected = [{"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} if t.value else
                {"key": t.key, "operator": "Exists", "effect": t.effect} for t in profile.kubernetes.taints]
    assert spec["tolerations"] == expected
    assert spec["priorityClassName"] == "finml-training" and spec["serviceAccountName"] == "finml-training"
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    (shm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels[CLASSIFICATION_LABEL] == manifest["metadata"]["labels"][CLASSIFICATION_LABEL]


def test_whole_gpus_come_from_the_profile_and_config():
    st = with_training("hybrid-prod", gpus=4, workers=2)
    _, manifest = render(st)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert not any(k.startswith("nvidia.com/mig-") for k in container["resources"]["limits"])
    assert "--nproc-per-node=4" in container["command"]
    assert {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"} in container["env"]


def test_a_mig_slice_is_requested_once_per_worker_with_one_process():
    st = with_training("hybrid-prod", gpus=1, workers=3, migSlice="3g.71gb")
    _, manifest = render(st)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/mig-3g.71gb"] == "1" and "nvidia.com/gpu" not in limits
    assert "--nproc-per-node=1" in container["command"] and "--nnodes=3" in container["command"]
    assert {"name": "NCCL_P2P_DISABLE", "value": "1"} in container["env"]


def test_mig_training_config_errors_name_the_key_and_what_is_allowed():
    from finml.config import ConfigError

    with pytest.raises(ConfigError, match=r"workloads\.training\[0\]\.gpus: 2 with migSlice '3g\.71gb'; allowed: 1"):
        with_training("hybrid-prod", gpus=2, migSlice="3g.71gb")
    with pytest.raises(ConfigError, match=r"workloads\.training\[0\]\.migSlice: '9g\.1gb' is not a MIG slice of "
                                          r"H200-141GB; allowed: 1g\.18gb"):
        with_training("hybrid-prod", migSlice="9g.1gb")


def test_rendezvous_wiring_points_every_worker_at_index_zero_of_the_headless_service():
    st = with_training("hybrid-prod", workers=4, mode="fsdp2", epochs=7)
    service, job = render(st)
    name = job["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "c10d", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT,
                                         "protocol": "TCP"}]
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "torchrun"
    assert f"--rdzv-endpoint={name}-0.{service['metadata']['name']}:{RENDEZVOUS_PORT}" in command
    assert "--rdzv-backend=c10d" in command and "--nnodes=4" in command and "--max-restarts=3" in command
    assert "--mode=fsdp2" in command and "--epochs=7" in command
    assert command[command.index("-m") + 1] == "workloads.reference.train"


def test_the_runs_workers_are_open_to_each_other_and_to_no_other_pod():
    st = stack("hybrid-prod")
    _, policy, job = render_training_run(TrainingRun(st, "onprem:fra-dc1", "aml-detector-train", "t1"), PROFILES)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector["finml.io/run"] == "t1" and selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": selector}}]}]
    assert policy["spec"]["egress"] == [{"to": [{"podSelector": {"matchLabels": selector}}]}]


def test_the_label_takes_the_higher_of_model_and_training_set_classification():
    st = stack("hybrid-prod")
    service, job = render(st, "fraud-scorer-burst", classification="restricted")
    assert job["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    assert service["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    _, lower = render(st, "aml-detector-train", classification="public")
    assert lower["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"  # never lowered


def test_bad_render_arguments_name_what_is_allowed():
    st = stack("hybrid-prod")
    with pytest.raises(RenderError, match="--job 'nope' is not a training workload; allowed: aml-detector-train"):
        render_training_run(TrainingRun(st, "onprem:fra-dc1", "nope", "t1"), PROFILES)
    with pytest.raises(RenderError, match="--run-id 'Bad_Id'"):
        render_training_run(TrainingRun(st, "onprem:fra-dc1", "aml-detector-train", "Bad_Id"), PROFILES)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=300)


def test_cli_render_prints_manifests_for_kubectl_and_bad_input_is_one_line():
    proc = _cli("train", "render", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1", "--job",
                "aml-detector-train", "--run-id", "r1")
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout)]
    assert kinds == ["Service", "NetworkPolicy", "Job"]
    bad = _cli("train", "render", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1", "--job", "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_check_manifests_passes_a_restricted_run_on_prem_and_refuses_it_on_aws(tmp_path):
    onprem = _cli("train", "render", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1", "--job",
                  "aml-detector-train", "--run-id", "ok")
    assert onprem.returncode == 0, onprem.stderr
    (tmp_path / "onprem.yaml").write_text(onprem.stdout)
    passed = _cli("check-manifests", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1",
                  str(tmp_path / "onprem.yaml"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "policy result: PASS" in passed.stdout

    aws = _cli("train", "render", "--stack", "hybrid-prod", "--site", "aws:eu-central-1", "--job",
               "fraud-scorer-burst", "--run-id", "bad", "--classification", "restricted")
    assert aws.returncode == 0, aws.stderr
    refused = _cli("check-manifests", "--stack", "hybrid-prod", "--site", "aws:eu-central-1", "--format", "json", "-",
                   stdin=aws.stdout)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (report,) = json.loads(refused.stdout)["stacks"]
    violations = {(v["policy"], v["resource_type"], v["classification"]) for v in report["violations"]
                  if v["enforcement"] == "mandatory"}
    assert ("residency-k8s-data-site", "kubernetes:batch/v1:Job", "restricted") in violations, violations
    assert all(v["urn"].split("::")[-1].startswith("manifest:") for v in report["violations"])
