"""EKS MIG layouts end to end through the real program (`__main__.py` under the mock runtime, as `finml preview`
runs it): each MIG-capable GPU node group's `nvidia.com/mig.config` label is the planner's config for the group,
that config is an entry of the GPU Operator's mig-parted ConfigMap on the same cluster, and a group without MIG
demand is pinned to `all-disabled`; groups of GPUs without MIG carry no such label."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finml import mig_planner
from finml.config import load_stack_file
from gpu_profiles import load_profiles

ROOT = Path(__file__).resolve().parents[2]
SITE = "aws:eu-central-1"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LABEL = "nvidia.com/mig.config"


def _preview(stack_file: Path, out: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(stack_file), str(ROOT / "__main__.py"),
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())["resources"]


def _props(resource: dict) -> dict:
    return resource.get("props") or resource.get("inputs") or {}


def _group_labels(resources: list[dict]) -> dict[str, dict]:
    prefix = "aws-eu-central-1-gpu-"
    return {r["urn"].split("::")[-1][len(prefix):]: _props(r).get("labels", {})
            for r in resources if r["type"] == NODE_GROUP and r["urn"].split("::")[-1].startswith(prefix)}


def _mig_parted(resources: list[dict]) -> dict:
    (cm,) = [r for r in resources if r["type"] == "kubernetes:core/v1:ConfigMap"
             and _props(r)["metadata"]["name"] == "finml-mig-parted-config"]
    return yaml.safe_load(_props(cm)["data"]["config.yaml"])


@pytest.fixture(scope="module")
def mig_on_eks(tmp_path_factory):
    """aws-eu-prod serving 3 x mig:1g.10gb on its H100 node group next to the whole-GPU L40S service."""
    tmp = tmp_path_factory.mktemp("eks-mig")
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml").read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    doc["config"]["finml:platform"]["workloads"]["serving"].append(
        {"name": "fraud-scorer-mig", "model": "fraud-scorer", "sites": [SITE], "gpuProfile": "H100-80GB",
         "share": "mig:1g.10gb", "replicas": 3})
    stack_file = tmp / "Pulumi.aws-eu-mig.yaml"
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return load_stack_file(stack_file), _preview(stack_file, tmp / "plan.json")


def test_mig_node_group_label_is_the_planners_config_and_in_the_operators_config_map(mig_on_eks):
    stack, resources = mig_on_eks
    profiles = load_profiles()
    plan = mig_planner.plan_stack_site(stack, SITE, profiles)
    (node,) = plan.nodes
    assert node.pool == "h100-train" and node.config_name == "finml-h100-train"
    labels = _group_labels(resources)
    assert labels["h100-train"][LABEL] == node.config_name
    config = _mig_parted(resources)
    assert config == plan.mig_parted_config()
    entries = config["mig-configs"][labels["h100-train"][LABEL]]
    # 3 x 1g.10gb on one node: one GPU with a valid H100 geometry holding them, the other seven whole.
    first, rest = entries
    assert first["devices"] == [0] and first["mig-enabled"] is True and first["mig-devices"]["1g.10gb"] >= 3
    assert mig_planner.is_valid_geometry(profiles["H100-80GB"], first["mig-devices"])
    assert rest == {"devices": [1, 2, 3, 4, 5, 6, 7], "mig-enabled": False}
    # The service asks for exactly what the labelled layout advertises, and runs on that group's GPU profile.
    (deployment,) = [r for r in resources if r["type"] == "kubernetes:apps/v1:Deployment"
                     and _props(r)["metadata"]["name"] == "fraud-scorer-mig"]
    spec = _props(deployment)["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] in (1, "1")
    assert spec["nodeSelector"]["finml.io/gpu-profile"] == labels["h100-train"]["finml.io/gpu-profile"]


def test_groups_without_mig_demand_are_pinned_to_all_disabled_or_unlabelled(mig_on_eks, tmp_path):
    _, resources = mig_on_eks
    assert LABEL not in _group_labels(resources)["l40s-serve"]  # L40S has no MIG: the operator runs no MIG manager
    plain = _group_labels(_preview(ROOT / "stacks" / "Pulumi.aws-eu-prod.yaml", tmp_path / "plan.json"))
    assert plain["h100-train"][LABEL] == mig_planner.ALL_DISABLED  # MIG-capable, nothing planned: MIG off
    assert LABEL not in plain["l40s-serve"]


def test_node_group_configs_name_only_entries_of_the_config():
    stack = load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml")
    profiles = load_profiles()
    plan = mig_planner.plan_stack_site(stack, SITE, profiles)
    pools = mig_planner.pools_for(stack, SITE, profiles)
    assert mig_planner.node_group_mig_configs(plan, pools, profiles) == {"h100-burst": "all-disabled"}
    plan.nodes.append(mig_planner.NodePlan("h100-burst", "H100-80GB", "finml-h100-burst", []))
    plan.mig_parted_config = lambda: {"version": "v1", "mig-configs": {"all-disabled": []}}  # a broken plan
    with pytest.raises(mig_planner.PlanError, match="h100-burst=finml-h100-burst"):
        mig_planner.node_group_mig_configs(plan, pools, profiles)


PLAN_ONCE = """
import collections, sys
from pathlib import Path
from finml import mig_planner, mockrun
from finml.config import load_stack_file
calls = collections.Counter()
real = mig_planner.plan_stack_site
def counting(stack, site, profiles):
    calls[site] += 1
    return real(stack, site, profiles)
mig_planner.plan_stack_site = counting
mockrun.run_program(load_stack_file(Path(sys.argv[1])), Path(sys.argv[2]))
print(dict(calls))
"""


def test_the_program_plans_each_site_once():
    """Node-group labels and the operator's ConfigMap come from one plan object, not two plannings."""
    proc = subprocess.run([sys.executable, "-c", PLAN_ONCE, str(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml"),
                           str(ROOT / "__main__.py")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str({"aws:eu-central-1": 1, "onprem:fra-dc1": 1})
