"""Image pinning end to end: the real program's plan of hybrid-prod (both site kinds) through the real pack process
over Analyzer gRPC, with the pack config `finml policy config` writes; and rendered training runs through
`finml check-manifests`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finml.cli import pack_config_for
from finml.config import load_stack_file
from finml.plan import Plan, load_plan
from finml.policy_check import PolicyPackProcess, check_plan

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
RULE = "k8s-image-pinned"
DC1 = "registry.fra-dc1.example.internal"
ECR = "777788889999.dkr.ecr.eu-central-1.amazonaws.com"


@pytest.fixture(scope="module")
def hybrid_plan(tmp_path_factory) -> Plan:
    out = tmp_path_factory.mktemp("images") / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml"),
                           str(ROOT / "__main__.py"), str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_plan(out)


def _containers(res) -> list[dict]:
    spec = res.props.get("spec") or {}
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    spec = (spec.get("template") or {}).get("spec") or spec
    return [c for key in ("initContainers", "containers") for c in spec.get(key) or []]


def _workload(plan: Plan, image_part: str):
    return next(r for r in plan.resources if r.type.startswith("kubernetes:")
                and any(image_part in c.get("image", "") for c in _containers(r)))


def test_the_program_pins_every_image_and_an_edited_plan_is_caught_over_grpc(hybrid_plan):
    config = pack_config_for(load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").platform, PACK)
    assert config[RULE]["imageRegistries"]["onprem:fra-dc1"] == {
        "host": DC1, "prefix": "finml", "kind": "declared", "immutableTags": True}
    assert config[RULE]["imageRegistries"]["aws:eu-central-1"]["host"] == ECR

    plan = copy.deepcopy(hybrid_plan)
    onprem = _workload(plan, f"{DC1}/finml/feature-store:")
    aws = _workload(plan, f"{ECR}/finml/model-server:")
    repo = next(r for r in plan.resources if r.type == "aws:ecr/repository:Repository"
                and r.props.get("name") == "finml/mlflow")
    mlflow = [r for r in plan.resources if r.type.startswith("kubernetes:")
              and any(c.get("image", "").startswith(f"{ECR}/finml/mlflow:") for c in _containers(r))]
    assert mlflow, "no AWS workload runs the mlflow image"
    _containers(onprem)[0]["image"] = f"{DC1}/finml/feature-store:latest"
    _containers(aws)[0]["image"] = f"{DC1}/finml/model-server:0.1.0"  # the other site's registry
    repo.props["imageTagMutability"] = "MUTABLE"

    with PolicyPackProcess(PACK) as pack:
        baseline = check_plan(hybrid_plan, PACK, config, pack=pack)
        assert baseline.mandatory == [], [v.message for v in baseline.mandatory]
        result = check_plan(plan, PACK, config, pack=pack)
        found = {v.urn: v.message for v in result.mandatory if v.policy == RULE}
        assert set(found) == {onprem.urn, aws.urn, *(r.urn for r in mlflow)}, found
        assert "uses the :latest tag" in found[onprem.urn]
        assert "comes from the registry of onprem:fra-dc1" in found[aws.urn]
        assert all("imageTagMutability is 'MUTABLE'" in found[r.urn] for r in mlflow)
        assert {v.policy for v in result.mandatory} == {RULE}
        assert all("cis-eks:5.1.4" in v.controls for v in result.mandatory)

        # Without the registries in the pack config every tag-pinned workload fails closed.
        bare = {name: {k: v for k, v in entry.items() if k != "imageRegistries"} for name, entry in config.items()}
        closed = check_plan(hybrid_plan, PACK, bare, pack=pack)
        workloads = {r.urn for r in hybrid_plan.resources if r.type.startswith("kubernetes:") and _containers(r)}
        failed = {v.urn for v in closed.mandatory if v.policy == RULE}
        assert workloads and failed == workloads
        assert all("no `imageRegistries`" in v.message for v in closed.mandatory if v.policy == RULE)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=600)


def test_rendered_training_runs_pull_from_their_site_registry_and_pass_check_manifests():
    for site, job, registry in (("onprem:fra-dc1", "aml-detector-train", DC1),
                                ("aws:eu-central-1", "fraud-scorer-burst", ECR)):
        rendered = _cli("train", "render", "--stack", "hybrid-prod", "--site", site, "--job", job, "--run-id", "img")
        assert rendered.returncode == 0, rendered.stderr
        (job_doc,) = [d for d in yaml.safe_load_all(rendered.stdout) if d["kind"] == "Job"]
        images = {c["image"] for c in job_doc["spec"]["template"]["spec"]["containers"]}
        assert images == {f"{registry}/finml/reference-training:0.1.0"}, images
        checked = _cli("check-manifests", "--stack", "hybrid-prod", "--site", site, "-", stdin=rendered.stdout)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_training_run_with_an_unpinned_image_is_refused():
    rendered = _cli("train", "render", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1", "--job",
                    "aml-detector-train", "--run-id", "img", "--image", "trainer:latest")
    assert rendered.returncode == 0, rendered.stderr
    refused = _cli("check-manifests", "--stack", "hybrid-prod", "--site", "onprem:fra-dc1", "--format", "json", "-",
                   stdin=rendered.stdout)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (report,) = json.loads(refused.stdout)["stacks"]
    found = {(v["policy"], v["resource_type"]) for v in report["violations"] if v["enforcement"] == "mandatory"}
    assert found == {(RULE, "kubernetes:batch/v1:Job")}, found
