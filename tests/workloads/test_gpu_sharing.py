"""GPU sharing under the mock runtime: serving requests equal the MIG planner's layout, the GPU Operator's values
per site kind, its ConfigMaps validated against the schemas kept in the repo, node labels, refusals."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import yaml
from workloads_harness import STACKS_DIR, deploy_stack, load_stack, run_program, stack_from_raw

from finml import mig_planner
from gpu_profiles import load_profiles
from workloads.gpu_operator import operator_values, validate_mig_parted, validate_values

RELEASE = "kubernetes:helm.sh/v3:Release"


def shared_raw() -> dict:
    """hybrid-prod plus GPU sharing on both sites: MIG slices of two sizes on the on-prem H200s next to the
    H100's fixed 1g.10gb layout, and time-slicing on the AWS L4 nodes."""
    doc = yaml.safe_load((STACKS_DIR / "Pulumi.hybrid-prod.yaml").read_text(encoding="utf-8"))
    raw = copy.deepcopy(doc["config"]["finml:platform"])
    raw["workloads"]["serving"] = [
        {"name": "aml-detector", "model": "aml-detector", "sites": ["onprem:fra-dc1"], "gpuProfile": "H100-80GB",
         "migSlice": "1g.10gb", "replicas": 3},
        {"name": "aml-detector-large", "model": "aml-detector", "sites": ["onprem:fra-dc1"],
         "gpuProfile": "H200-141GB", "share": "mig:3g.71gb", "replicas": 3},
        {"name": "aml-detector-small", "model": "aml-detector", "sites": ["onprem:fra-dc1"],
         "gpuProfile": "H200-141GB", "share": "mig", "gpuMemoryGib": 30, "replicas": 5},
        {"name": "fraud-scorer", "model": "fraud-scorer", "sites": ["aws:eu-central-1"], "gpuProfile": "L4:24GB",
         "share": "time-sliced:4", "replicas": 6, "maxBatchSize": 64, "maxBatchTimeMs": 5},
        {"name": "fraud-scorer-cpu", "model": "fraud-scorer", "sites": ["aws:eu-central-1"], "share": "cpu",
         "replicas": 2},
    ]
    return raw


@pytest.fixture(scope="module")
def shared():
    stack = stack_from_raw(shared_raw())
    monitor, _ = run_program(deploy_stack(stack))
    return stack, monitor


def _site_of(record) -> str:
    return "aws:eu-central-1" if "aws-eu-central-1" in record.urn else "onprem:fra-dc1"


def _requests(monitor, site: str) -> Counter:
    got: Counter = Counter()
    for deployment in monitor.k8s("Deployment"):
        if _site_of(deployment) != site:
            continue
        (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], f"{deployment}: requests must equal limits"
        for key, value in resources["requests"].items():
            if key.startswith("nvidia.com/"):
                got[key] += int(value) * deployment.inputs["spec"]["replicas"]
    return got


def _config_map(monitor, site: str, name: str) -> dict:
    (cm,) = [r for r in monitor.k8s("ConfigMap") if r.inputs["metadata"]["name"] == name and _site_of(r) == site]
    return cm.inputs["data"]


def _advertised(mig_parted: dict, gpus_per_config: dict[str, int]) -> Counter:
    total: Counter = Counter()
    for name, entries in mig_parted["mig-configs"].items():
        for entry in entries:
            if not entry["mig-enabled"]:
                continue
            devices = gpus_per_config[name] if entry["devices"] == "all" else len(entry["devices"])
            for profile, count in entry["mig-devices"].items():
                total[f"nvidia.com/mig-{profile}"] += count * devices
    return total


def test_mig_requests_equal_the_planners_layout(shared):
    stack, monitor = shared
    profiles = load_profiles()
    site = "onprem:fra-dc1"
    plan = mig_planner.plan_stack_site(stack, site, profiles)
    requested = _requests(monitor, site)
    demanded = Counter()
    for demand in mig_planner.demands_for(stack, site, profiles):
        demanded[f"nvidia.com/mig-{demand.mig_profile}"] += demand.replicas
    assert requested == demanded == Counter({"nvidia.com/mig-1g.10gb": 3, "nvidia.com/mig-3g.71gb": 3,
                                             "nvidia.com/mig-1g.35gb": 5})
    config = yaml.safe_load(_config_map(monitor, site, "finml-mig-parted-config")["config.yaml"])
    assert config == plan.mig_parted_config()
    validate_mig_parted(config)
    gpus = {f"finml-{n.name}": n.gpu_count for n in stack.platform.sites[site].nodes}
    advertised = _advertised(config, gpus)
    assert all(advertised[k] >= v for k, v in requested.items()), (advertised, requested)
    # The fewest H200 GPUs: 3 x 3g.71gb + 5 x 1g.35gb take 22 of 8 memory slices per GPU, so 3 GPUs.
    assert plan.gpus_used["H200-141GB"] == 3 == plan.lower_bound["H200-141GB"] == len(mig_planner.min_gpus(
        profiles["H200-141GB"], {"3g.71gb": 3, "1g.35gb": 5}))
    for gpu, geometries in plan.layouts.items():
        assert all(mig_planner.is_valid_geometry(profiles[gpu], dict(g)) for g in geometries)


def test_on_prem_nodes_are_labelled_with_their_mig_and_device_plugin_config(shared):
    _, monitor = shared
    patches = {r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"] for r in monitor.k8s("NodePatch")}
    assert patches["fra-h100-01"] == {"nvidia.com/mig.config": "finml-fra-h100-01"}
    assert patches["fra-h200-01"] == {"nvidia.com/mig.config": "finml-fra-h200-01"}
    assert "fra-h200-02" not in patches  # MIG off: the operator's default config (all-disabled) applies


def test_time_sliced_service_requests_whole_gpu_shares_and_the_plugin_config_shares_them(shared):
    _, monitor = shared
    assert _requests(monitor, "aws:eu-central-1") == Counter({"nvidia.com/gpu": 6})
    data = _config_map(monitor, "aws:eu-central-1", "finml-device-plugin-config")
    shared_cfg = yaml.safe_load(data["l4-ts4"])
    assert shared_cfg["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert shared_cfg["flags"]["migStrategy"] == "mixed"
    (release,) = [r for r in monitor.registered if r.typ == RELEASE and _site_of(r) == "aws:eu-central-1"]
    # EKS node groups carry no per-node label: the one time-sliced profile is the default config there.
    assert release.inputs["values"]["devicePlugin"]["config"] == {"name": "finml-device-plugin-config",
                                                                  "default": "l4-ts4"}


def test_cpu_service_requests_no_gpu_and_tolerates_no_gpu_taint(shared):
    _, monitor = shared
    (cpu,) = [d for d in monitor.k8s("Deployment") if d.inputs["metadata"]["name"] == "fraud-scorer-cpu"]
    spec = cpu.inputs["spec"]["template"]["spec"]
    assert not any(k.startswith("nvidia.com/") for k in spec["containers"][0]["resources"]["requests"])
    assert "tolerations" not in spec
    assert "finml.io/gpu-profile" not in spec["nodeSelector"]


def test_batching_settings_reach_the_server(shared):
    _, monitor = shared
    (fraud,) = [d for d in monitor.k8s("Deployment") if d.inputs["metadata"]["name"] == "fraud-scorer"]
    env = {e["name"]: e.get("value") for e in fraud.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["FINML_MAX_BATCH_SIZE"], env["FINML_MAX_BATCH_TIME_MS"]) == ("64", "5")
    assert env["FINML_MODEL_ALIAS"] == "champion" and env["FINML_SITE"] == "aws:eu-central-1"


def test_serving_outranks_training_and_spreads_over_nodes(shared):
    _, monitor = shared
    classes = {r.inputs["metadata"]["name"]: r.inputs["value"] for r in monitor.k8s("PriorityClass")}
    assert classes["finml-serving"] > classes.get("finml-training", 0)
    for deployment in monitor.k8s("Deployment"):
        spec = deployment.inputs["spec"]["template"]["spec"]
        if spec.get("priorityClassName") != "finml-serving":
            continue
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, deployment


def test_each_service_has_an_hpa_from_its_replicas(shared):
    _, monitor = shared
    hpas = {h.inputs["metadata"]["name"]: h.inputs["spec"] for h in monitor.k8s("HorizontalPodAutoscaler")}
    assert hpas["aml-detector-small"]["minReplicas"] == 5 and hpas["aml-detector-small"]["maxReplicas"] == 10
    assert hpas["fraud-scorer"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                      "name": "fraud-scorer"}


def test_serving_egress_is_registry_and_feature_server_only(shared):
    _, monitor = shared
    for policy in monitor.k8s("NetworkPolicy"):
        if not policy.inputs["metadata"]["name"].endswith("-allow-registry-features"):
            continue
        rules = policy.inputs["spec"]["egress"]
        peers = [(r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], int(r["ports"][0]["port"]))
                 for r in rules]
        assert peers == [("model-registry", 5000), ("feature-server", 6566)], policy


# -- GPU Operator values per site kind ---------------------------------------------------------------------------


def test_operator_values_on_prem_leave_driver_and_toolkit_to_ansible():
    values = operator_values("onprem", None, default_device_plugin_config="default")
    assert values["driver"] == {"enabled": False} and values["toolkit"] == {"enabled": False}
    assert values["mig"] == {"strategy": "mixed"}
    assert values["migManager"]["config"] == {"name": "finml-mig-parted-config", "default": "all-disabled"}
    assert values["dcgmExporter"]["enabled"] is True
    assert not any("repository" in v for v in values.values() if isinstance(v, dict))


def test_operator_values_on_aws_pull_every_image_from_the_site_mirror():
    mirror = "777788889999.dkr.ecr.eu-central-1.amazonaws.com/finml"
    values = operator_values("aws", mirror, default_device_plugin_config="default")
    assert values["driver"] == {"enabled": False} and values["toolkit"] == {"enabled": False}  # the EKS NVIDIA AMI
    repos = {k: v["repository"] for k, v in values.items() if isinstance(v, dict) and "repository" in v}
    assert set(repos) == {"operator", "validator", "devicePlugin", "gfd", "migManager", "dcgmExporter"}
    assert all(r.startswith(mirror + "/nvcr.io/") for r in repos.values())


def test_release_values_in_the_plan_match_the_site_kind():
    stack = load_stack(STACKS_DIR / "Pulumi.hybrid-prod.yaml")
    monitor, _ = run_program(deploy_stack(stack))
    releases = {_site_of(r): r.inputs for r in monitor.registered if r.typ == RELEASE}
    assert set(releases) == {"onprem:fra-dc1", "aws:eu-central-1"}
    for inputs in releases.values():
        validate_values(inputs["values"])
        assert inputs["repositoryOpts"]["repo"].startswith("https://")
    # Both sites pull the operator's images from their own registry (sites.<id>.imageRegistry, prefix finml).
    assert releases["onprem:fra-dc1"]["values"]["operator"]["repository"].startswith(
        "registry.fra-dc1.example.internal/finml/"), releases["onprem:fra-dc1"]["values"]["operator"]
    assert releases["aws:eu-central-1"]["values"]["operator"]["repository"].startswith(
        "777788889999.dkr.ecr.eu-central-1.amazonaws.com/finml/")
    assert releases["aws:eu-central-1"]["values"]["operator"]["repository"].endswith("/nvcr.io/nvidia")


@pytest.mark.parametrize("bad,where", [
    ({"driver": {"enabled": False, "typo": True}}, "driver"),
    ({"mig": {"strategy": "mixd"}}, "mig.strategy"),
    ({"devicePlugin": {"config": {"default": "x"}}}, "devicePlugin.config"),
    ({"unknownComponent": {}}, "<root>"),
])
def test_values_schema_is_strict(bad, where):
    with pytest.raises(ValueError, match=rf"values: {where}"):
        validate_values(bad)


@pytest.mark.parametrize("bad", [
    {"version": "v2", "mig-configs": {"x": [{"devices": "all", "mig-enabled": False}]}},
    {"version": "v1", "mig-configs": {"x": [{"devices": [0], "mig-enabled": True}]}},
    {"version": "v1", "mig-configs": {"x": [{"devices": [0], "mig-enabled": True, "mig-devices": {"9g.1gb": 1}}]}},
    {"version": "v1", "mig-configs": {"x": [{"devices": "all", "mig-enabled": False, "mig-devices": {"1g.10gb": 1}}]}},
])
def test_mig_parted_schema_is_strict(bad):
    with pytest.raises(ValueError, match="mig-parted"):
        validate_mig_parted(bad)


def test_a_demand_that_does_not_fit_stops_the_program_naming_it():
    raw = shared_raw()
    raw["workloads"]["serving"][1]["replicas"] = 40  # 40 x 3g.71gb: 20 GPUs, the site has 16 H200s
    stack = stack_from_raw(raw)
    with pytest.raises(Exception, match=r"aml-detector-large: 40 x H200-141GB mig 3g.71gb"):
        run_program(deploy_stack(stack))
