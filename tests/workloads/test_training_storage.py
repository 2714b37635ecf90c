"""Training's shared storage: one ReadWriteMany checkpoint claim per classification a training site holds, on the
site's shared file system (EFS access points on AWS, the on-prem site's sharedStorageClass), labelled for the pack;
a site without a shared file system is refused by config check and by `finml train render`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import kubernetes_validate
import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from workloads_harness import K8S_VERSION, STACK_FILES, load_stack, manifest, run_program

from components.naming import CLASSIFICATION_LABEL, SITE_LABEL, site_label_value
from finml.config import ConfigError, DEFAULT_SHARED_STORAGE_CLASS, parse_platform
from gpu_profiles import load_profiles
from workloads.training import Training, TrainingArgs
from workloads.training_job import (CHECKPOINT_CLAIM_PREFIX, EFS_STORAGE_CLASS, RenderError, TrainingRun,
                                    render_training_run)

from workloads_harness import deployed_stack

ROOT = STACK_FILES[0].parents[1]
PROFILES = load_profiles()


def _claims(monitor):
    return [r for r in monitor.k8s("PersistentVolumeClaim") if r.inputs["metadata"]["namespace"] == "finml-training"]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.stem.removeprefix("Pulumi."))
def test_each_training_site_has_an_rwx_claim_per_classification_on_its_shared_storage(path):
    stack = load_stack(path)
    monitor = deployed_stack(path.stem.removeprefix("Pulumi."))
    training_sites = {job.site for job in stack.platform.workloads.training}
    claims = _claims(monitor)
    expected = set()
    for site in training_sites:
        cfg = stack.platform.sites[site]
        storage_class = EFS_STORAGE_CLASS if cfg.kind == "aws" else cfg.shared_storage_class
        size = max(j.storage_gib for j in stack.platform.workloads.training if j.site == site)
        for classification in cfg.classifications:
            expected.add((site, classification))
            (claim,) = [c for c in claims if c.inputs["metadata"]["labels"][SITE_LABEL] == site_label_value(site)
                        and c.inputs["metadata"]["labels"][CLASSIFICATION_LABEL] == classification]
            assert claim.inputs["metadata"]["name"] == f"{CHECKPOINT_CLAIM_PREFIX}{classification}"
            spec = claim.inputs["spec"]
            assert spec["accessModes"] == ["ReadWriteMany"]
            assert spec["storageClassName"] == storage_class
            assert spec["resources"] == {"requests": {"storage": f"{size}Gi"}}
            kubernetes_validate.validate(manifest(claim), K8S_VERSION, strict=True)
    assert len(claims) == len(expected)


def test_the_claim_a_rendered_run_mounts_is_one_the_program_creates():
    stack = load_stack(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml")
    names = {(c.inputs["metadata"]["labels"][SITE_LABEL], c.inputs["metadata"]["name"])
             for c in _claims(deployed_stack("hybrid-prod"))}
    for job in stack.platform.workloads.training:
        *_, job_manifest = render_training_run(TrainingRun(stack, job.site, job.name, "t1"), PROFILES)
        (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in job_manifest["spec"]["template"]["spec"]["volumes"]
                    if "persistentVolumeClaim" in v]
        assert (site_label_value(job.site), claim) in names


def test_onprem_default_shared_storage_class_is_nfs_client():
    assert DEFAULT_SHARED_STORAGE_CLASS == "nfs-client"


def test_aws_claims_live_on_the_sites_efs_through_an_encrypted_in_transit_access_point_class():
    def program():
        Training("training-aws-eu-central-1",
                 TrainingArgs(site="aws:eu-central-1", classifications=("internal", "confidential"),
                              storage_class=EFS_STORAGE_CLASS, storage_gib=300, efs_file_system_id="fs-0123456789abcdef0"),
                 opts=pulumi.ResourceOptions(provider=k8s.Provider("k8s", kubeconfig="{}")))

    monitor, _ = run_program(program)
    (sc,) = monitor.k8s("StorageClass")
    body = manifest(sc)
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    assert body["metadata"]["name"] == EFS_STORAGE_CLASS
    assert body["provisioner"] == "efs.csi.aws.com"
    assert body["parameters"]["provisioningMode"] == "efs-ap"
    assert body["parameters"]["fileSystemId"] == "fs-0123456789abcdef0"
    assert body["mountOptions"] == ["tls"]
    assert body["reclaimPolicy"] == "Retain"
    claims = _claims(monitor)
    assert sorted(c.inputs["metadata"]["name"] for c in claims) == ["finml-checkpoints-confidential",
                                                                   "finml-checkpoints-internal"]
    for claim in claims:
        assert claim.inputs["spec"]["storageClassName"] == EFS_STORAGE_CLASS
        assert claim.inputs["spec"]["resources"]["requests"]["storage"] == "300Gi"
        assert sc.urn in claim.dependencies


def _without_efs(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["sites"]["aws:eu-central-1"]["storage"]["trainingFilesystem"] = "none"
    return raw


def test_config_check_flags_a_training_workload_on_an_aws_site_without_shared_file_system():
    stack = load_stack(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml")
    with pytest.raises(ConfigError) as err:
        parse_platform(_without_efs(stack.raw_config["finml:platform"]), "hybrid (edited)", PROFILES)
    assert "trainingFilesystem" in str(err.value) and "workloads.training[" in str(err.value)


def test_render_and_the_program_refuse_a_site_without_shared_file_system():
    stack = load_stack(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml")
    site = stack.platform.sites["aws:eu-central-1"]
    stack.platform.sites["aws:eu-central-1"] = site.model_copy(
        update={"storage": site.storage.model_copy(update={"training_filesystem": "none"})})
    with pytest.raises(RenderError, match=r"sites\.aws:eu-central-1\.storage\.trainingFilesystem: efs"):
        render_training_run(TrainingRun(stack, "aws:eu-central-1", "fraud-scorer-burst", "t1"), PROFILES)

    from workloads.platform import deploy_platform

    def program():
        deploy_platform(stack, "aws:eu-central-1", k8s.Provider("k8s", kubeconfig="{}"), PROFILES)

    with pytest.raises(Exception, match="trainingFilesystem"):
        run_program(program)


def _check_manifests(path, site: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", "check-manifests", "--stack", "hybrid-prod", "--site",
                           site, "--format", "json", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_pack_refuses_a_restricted_checkpoint_claim_on_an_aws_site(tmp_path):
    (claim,) = [c for c in _claims(deployed_stack("hybrid-prod"))
                if c.inputs["metadata"]["labels"][CLASSIFICATION_LABEL] == "confidential"
                and c.inputs["metadata"]["labels"][SITE_LABEL] == site_label_value("aws:eu-central-1")]
    allowed = manifest(claim)
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(allowed))
    passed = _check_manifests(tmp_path / "ok.yaml", "aws:eu-central-1")
    assert passed.returncode == 0, passed.stdout + passed.stderr

    restricted = copy.deepcopy(allowed)
    restricted["metadata"]["name"] = f"{CHECKPOINT_CLAIM_PREFIX}restricted"
    restricted["metadata"]["labels"][CLASSIFICATION_LABEL] = "restricted"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(restricted))
    refused = _check_manifests(tmp_path / "bad.yaml", "aws:eu-central-1")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (report,) = json.loads(refused.stdout)["stacks"]
    violations = {(v["policy"], v["resource_type"], v["classification"]) for v in report["violations"]
                  if v["enforcement"] == "mandatory"}
    assert ("residency-k8s-data-site", "kubernetes:core/v1:PersistentVolumeClaim", "restricted") in violations


@pytest.fixture(scope="module")
def aws_eu_prod_plan(tmp_path_factory):
    """The real program's preview plan of aws-eu-prod (`__main__.py` under the mock runtime, as `finml preview`)."""
    from finml.plan import load_plan

    out = tmp_path_factory.mktemp("plan") / "aws-eu-prod.json"
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml"),
                           str(ROOT / "__main__.py"), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_plan(out)


@pytest.mark.slow
def test_the_efs_class_and_claims_wait_for_the_efs_csi_driver(aws_eu_prod_plan):
    plan = aws_eu_prod_plan
    index = plan.by_urn()
    (addon,) = [r for r in plan.resources if r.type == "aws:eks/addon:Addon"
                and r.props.get("addonName") == "aws-efs-csi-driver"]
    (sc,) = [r for r in plan.resources if r.type == "kubernetes:storage.k8s.io/v1:StorageClass"
             and r.props["metadata"]["name"] == EFS_STORAGE_CLASS]
    assert addon.urn in sc.dependencies, f"{sc.urn} does not wait for {addon.urn}"
    claims = [r for r in plan.resources if r.type == "kubernetes:core/v1:PersistentVolumeClaim"
              and r.props["metadata"]["name"].startswith(CHECKPOINT_CLAIM_PREFIX)]
    assert claims and all(sc.urn in c.dependencies for c in claims), [c.urn for c in claims]
    role = index[addon.property_dependencies["serviceAccountRoleArn"][0]]
    assert role.type == "aws:iam/role:Role" and role.name.endswith("efs-csi-role")


@pytest.mark.slow
def test_the_training_service_account_is_annotated_from_its_irsa_role(aws_eu_prod_plan):
    plan = aws_eu_prod_plan
    index = plan.by_urn()
    (account,) = [r for r in plan.resources if r.type == "kubernetes:core/v1:ServiceAccount"
                  and r.props["metadata"]["name"] == "finml-training"]
    # At preview the ARN is unknown; the annotation's value comes from the training role (its only AWS input).
    assert list(account.props["metadata"]["annotations"]) == ["eks.amazonaws.com/role-arn"]
    sources = {index[u].name for u in account.property_dependencies["metadata"]
               if index[u].type == "aws:iam/role:Role"}
    assert sources == {"training-aws-eu-central-1-aws-role"}, account.property_dependencies
