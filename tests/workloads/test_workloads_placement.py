"""Lineage, classification labels, site and GPU placement, MIG sharing and the feature store's network reach."""

from __future__ import annotations

import copy

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from workloads_harness import (
    STACKS_DIR,
    RecordingMonitor,
    cluster_sites,
    deploy_stack,
    load_stack,
    pod_template,
    provider_name,
    run_program,
    stack_from_raw,
)

from components.naming import CLASSIFICATION_LABEL, MODEL_LABEL
from finml import config as cfg
from finml.config import GpuShare
from gpu_profiles import load_profiles
from workloads.feature_store import FeatureStore, FeatureStoreArgs
from workloads.lineage import model_classification
from workloads.platform import deploy_platform, register_lineage
from workloads.serving import InferenceService, InferenceServiceArgs

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def hybrid_raw() -> dict:
    doc = yaml.safe_load((STACKS_DIR / "Pulumi.hybrid-prod.yaml").read_text(encoding="utf-8"))
    return copy.deepcopy(doc["config"]["finml:platform"])


def container(record) -> dict:
    (only,) = pod_template(record)["spec"]["containers"]
    return only


def models_by_name(monitor: RecordingMonitor) -> dict[str, dict]:
    return {m.inputs["name"]: m.inputs for m in monitor.of_type("finml:ml:Model")}


# -- lineage -------------------------------------------------------------------------------------------------------


def _ds(name: str, classification: str) -> cfg.Dataset:
    return cfg.Dataset(name=name, classification=classification, site="onprem:fra-dc1")


@pytest.mark.parametrize(("trained_on", "expected"), [
    (["a"], "public"),
    (["a", "b"], "internal"),
    (["b", "d", "a"], "restricted"),
    (["c", "b"], "confidential"),
])
def test_model_classification_is_the_highest_of_its_training_data(trained_on, expected):
    datasets = [_ds("a", "public"), _ds("b", "internal"), _ds("c", "confidential"), _ds("d", "restricted")]
    model = cfg.Model(name="m", trained_on=trained_on)
    assert model_classification(model, datasets) == expected


def test_model_classification_names_an_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset.*'nope'|unknown dataset\\(s\\) nope"):
        model_classification(cfg.Model(name="m", trained_on=["nope"]), [_ds("a", "public")])


def test_lineage_is_registered_once_per_stack_with_its_props(any_stack):
    name, monitor = any_stack
    stack = load_stack(STACKS_DIR / f"Pulumi.{name}.yaml")
    datasets = monitor.of_type("finml:ml:Dataset")
    assert sorted(d.inputs["name"] for d in datasets) == sorted(d.name for d in stack.platform.datasets)
    for record in datasets:
        ds = next(d for d in stack.platform.datasets if d.name == record.inputs["name"])
        assert record.inputs == {"name": ds.name, "classification": ds.classification, "site": ds.site}, record
        assert record.provider is None and not record.custom, f"{record}: lineage must not be a cloud object"
    models = models_by_name(monitor)
    assert sorted(models) == sorted(m.name for m in stack.platform.models)
    for model in stack.platform.models:
        assert models[model.name] == {"name": model.name, "trainedOn": list(model.trained_on),
                                      "classification": model_classification(model, stack.platform.datasets)}


def test_hybrid_models_take_the_classification_of_their_data(hybrid):
    models = models_by_name(hybrid)
    assert models["aml-detector"]["classification"] == "restricted"
    assert models["fraud-scorer"]["classification"] == "confidential"


def test_workloads_are_labelled_with_their_models_classification(any_stack):
    _, monitor = any_stack
    models = models_by_name(monitor)
    workloads = model_workloads(monitor)
    for record in workloads:
        for where, labels in (("metadata", record.inputs["metadata"]["labels"]),
                              ("pod template", pod_template(record)["metadata"]["labels"])):
            model = labels.get(MODEL_LABEL)
            assert model in models, f"{record}: {where} {MODEL_LABEL}={model!r} is not a registered model"
            assert labels.get(CLASSIFICATION_LABEL) == models[model]["classification"], \
                f"{record}: {where} classification {labels.get(CLASSIFICATION_LABEL)!r} != model's"


PLATFORM_SERVICES = ("finml:workloads:FeatureStore", "finml:workloads:ModelRegistry")


def model_workloads(monitor, *kinds):
    """Training jobs and inference services: the Jobs/Deployments that are not part of the feature store or the
    model registry."""
    kinds = kinds or ("Job", "Deployment")
    return [r for kind in kinds for r in monitor.k8s(kind) if r.parent_type not in PLATFORM_SERVICES]


# -- placement -----------------------------------------------------------------------------------------------------


def test_workloads_go_only_to_the_sites_config_names(hybrid):
    placed = {(r.kind, r.inputs["metadata"]["name"], hybrid.provider_of(r))
              for r in hybrid.k8s() if r.kind in ("Job", "Deployment", "StatefulSet")}
    fra, aws = provider_name("onprem:fra-dc1"), provider_name("aws:eu-central-1")
    # Without the AWS site's components (this harness) the AWS registry keeps its database in-cluster too.
    registry = {(kind, name, site) for site in (fra, aws) for kind, name in (
        ("Deployment", "model-registry"), ("StatefulSet", "model-registry-db"),
        ("Job", "model-registry-bootstrap-users"))}
    assert placed == registry | {
        ("StatefulSet", "feature-store", fra),
        ("Deployment", "feature-server", fra),
        # The Feast registry's role and database, on the registry's database server of the feature store's site.
        ("Job", "model-registry-db-bootstrap-feast", fra),
        ("Deployment", "aml-detector", fra),
        ("Deployment", "fraud-scorer", aws),
    }


def test_gpu_workloads_request_whole_gpus_equal_to_limits_and_tolerate_the_taint(any_stack):
    name, monitor = any_stack
    stack = load_stack(STACKS_DIR / f"Pulumi.{name}.yaml")
    profiles = load_profiles()
    for record in model_workloads(monitor):
        spec = pod_template(record)["spec"]
        resources = container(record)["resources"]
        assert resources["requests"] == resources["limits"], f"{record}: requests != limits"
        gpu_keys = [k for k in resources["limits"] if k.startswith("nvidia.com/")]
        assert len(gpu_keys) == 1, f"{record}: GPU resources {gpu_keys}"
        assert GPU_TOLERATION in spec["tolerations"], f"{record}: no toleration for the GPU taint"
        if record.kind == "Job":
            job = next(j for j in stack.platform.workloads.training if j.name == record.inputs["metadata"]["name"])
            assert resources["limits"] == {**resources["limits"], "nvidia.com/gpu": str(job.gpus)}, record
            profile = cfg.resolve_gpu_profile(job.gpu_profile, profiles)
        else:
            svc = next(s for s in stack.platform.workloads.serving if s.name == record.inputs["metadata"]["name"])
            profile = cfg.resolve_gpu_profile(svc.gpu_profile, profiles)
        assert spec["nodeSelector"]["finml.io/gpu-profile"] == profile.k8s_label_value, record


def test_serving_uses_a_mig_slice_when_configured(hybrid):
    deployments = {d.inputs["metadata"]["name"]: d for d in hybrid.k8s("Deployment")}
    mig = container(deployments["aml-detector"])["resources"]["limits"]
    assert mig.get("nvidia.com/mig-1g.10gb") == "1" and "nvidia.com/gpu" not in mig, mig
    whole = container(deployments["fraud-scorer"])["resources"]["limits"]
    assert whole.get("nvidia.com/gpu") == "1" and not any(k.startswith("nvidia.com/mig-") for k in whole), whole


def test_serving_has_a_readiness_probe_service_and_disruption_budget(hybrid):
    for deployment in model_workloads(hybrid, "Deployment"):
        name = deployment.inputs["metadata"]["name"]
        probe = container(deployment)["readinessProbe"]["httpGet"]
        assert (probe["port"], probe["scheme"]) == ("https", "HTTPS"), deployment
        selector = deployment.inputs["spec"]["selector"]["matchLabels"]
        same_cluster = [r for r in hybrid.k8s() if hybrid.provider_of(r) == hybrid.provider_of(deployment)
                        and r.inputs.get("metadata", {}).get("name") == name]
        (service,) = [r for r in same_cluster if r.kind == "Service"]
        (pdb,) = [r for r in same_cluster if r.kind == "PodDisruptionBudget"]
        assert service.inputs["spec"]["selector"] == selector and service.inputs["spec"]["type"] == "ClusterIP"
        assert pdb.inputs["spec"]["selector"]["matchLabels"] == selector
        assert pdb.inputs["spec"]["maxUnavailable"] == 1


def test_training_deploys_only_lasting_parts_never_a_job(any_stack):
    name, monitor = any_stack
    # The registry's one-shot set-up Jobs (users, client databases) are its own; no Job is training's.
    jobs = [r for r in monitor.k8s("Job") if r.parent_type != "finml:workloads:ModelRegistry"]
    assert jobs == [], "a Job starts on creation: training runs are rendered and submitted per run"
    stack = load_stack(STACKS_DIR / f"Pulumi.{name}.yaml")
    training_sites = {job.site for job in stack.platform.workloads.training}
    components = monitor.of_type("finml:workloads:Training")
    assert sorted(c.inputs["site"] for c in components) == sorted(training_sites)
    for kind, object_name in (("ServiceAccount", "finml-training"), ("PriorityClass", "finml-training")):
        found = [r for r in monitor.k8s(kind) if r.inputs["metadata"]["name"] == object_name]
        assert len(found) == len(training_sites), f"{kind} {object_name}: {[str(r) for r in found]}"
    for account in monitor.k8s("ServiceAccount"):
        assert account.inputs["automountServiceAccountToken"] is False, account


def test_training_quota_covers_gpu_and_mig_requests_of_the_sites_workloads():
    raw = hybrid_raw()
    raw["workloads"]["training"].append({"name": "aml-mig-train", "site": "onprem:fra-dc1", "model": "aml-detector",
                                         "gpuProfile": "H200-141GB", "migSlice": "3g.71gb", "workers": 3})
    stack = stack_from_raw(raw)
    monitor, _ = run_program(deploy_stack(stack))
    quotas = {monitor.provider_of(q): q.inputs["spec"]["hard"] for q in monitor.k8s("ResourceQuota")
              if q.inputs["metadata"]["name"] == "training-accelerators"}
    assert quotas == {provider_name("onprem:fra-dc1"): {"requests.nvidia.com/gpu": "8",
                                                          "requests.nvidia.com/mig-3g.71gb": "3"},
                      provider_name("aws:eu-central-1"): {"requests.nvidia.com/gpu": "8"}}


# -- feature store -------------------------------------------------------------------------------------------------


def _store_sts(monitor, name="feature-store"):
    (sts,) = [r for r in monitor.k8s("StatefulSet") if r.inputs["metadata"]["name"] == name]
    return sts


def test_feature_store_volume_and_pod_carry_its_classification(hybrid):
    sts = _store_sts(hybrid, "feature-store")
    assert pod_template(sts)["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    (claim,) = sts.inputs["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted", sts
    assert sts.inputs["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                                           "whenScaled": "Retain"}
    (offline,) = [c for c in hybrid.k8s("PersistentVolumeClaim") if c.inputs["metadata"]["name"] == "feature-offline"]
    assert offline.inputs["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    assert offline.inputs["metadata"]["namespace"] == "finml-data"


def test_the_feature_store_has_no_database_server_of_its_own(any_stack):
    """Its Feast registry is database feast_registry on the registry's server: no PostgreSQL of the store's own."""
    _, monitor = any_stack
    stores = {r.urn for r in monitor.of_type("finml:workloads:FeatureStore")}
    own = [r for r in monitor.registered if r.parent in stores and (
        r.typ.startswith("aws:rds") or (r.kind == "StatefulSet" and r.inputs["metadata"]["name"] != "feature-store"))]
    assert own == [], [str(r) for r in own]
    for store in stores:
        deployment = next(r for r in monitor.k8s("Deployment") if r.parent == store)
        cron = next(r for r in monitor.k8s("CronJob") if r.parent == store)
        for workload in (deployment, cron):
            (job,) = [d for d in workload.dependencies if ":batch/v1:Job::" in d]
            assert job.endswith("-db-feast-bootstrap") and "ModelRegistry" in job, workload


def _ingress(monitor, target):
    return [p for p in monitor.k8s("NetworkPolicy") if p.inputs["metadata"]["namespace"] == "finml-data"
            and p.inputs["spec"].get("ingress")
            and p.inputs["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == target]


def test_feature_server_accepts_only_training_and_serving_on_its_port(hybrid):
    (policy,) = _ingress(hybrid, "feature-server")
    (rule,) = policy.inputs["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector"}, peer
    (expr,) = peer["namespaceSelector"]["matchExpressions"]
    assert (expr["key"], expr["operator"], sorted(expr["values"])) == (
        "kubernetes.io/metadata.name", "In", ["finml-serving", "finml-training"])
    assert [(p["protocol"], int(p["port"])) for p in rule["ports"]] == [("TCP", 6566)]
    egress = [p for p in hybrid.k8s("NetworkPolicy") if p.inputs["metadata"]["name"] == "allow-feature-server-egress"]
    assert sorted(p.inputs["metadata"]["namespace"] for p in egress) == ["finml-serving", "finml-training"]
    for policy in egress:
        (rule,) = policy.inputs["spec"]["egress"]
        assert [(p["protocol"], int(p["port"])) for p in rule["ports"]] == [("TCP", 6566)], policy


def test_only_the_feature_server_and_materialization_reach_the_online_store(hybrid):
    (policy,) = _ingress(hybrid, "feature-store")
    (rule,) = policy.inputs["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, peer  # same namespace only, selected pods only
    (expr,) = peer["podSelector"]["matchExpressions"]
    assert (expr["key"], expr["operator"], sorted(expr["values"])) == (
        "app.kubernetes.io/name", "In", ["feature-materializer", "feature-server"])
    assert [(p["protocol"], int(p["port"])) for p in rule["ports"]] == [("TCP", 6379)]


def _on(monitor, site, records):
    return [r for r in records if monitor.provider_of(r) == provider_name(site)]


def test_the_registry_database_admits_its_server_the_bootstrap_job_and_the_feast_pods_only(hybrid):
    (policy,) = _on(hybrid, "onprem:fra-dc1", _ingress(hybrid, "model-registry-db"))
    (rule,) = policy.inputs["spec"]["ingress"]
    assert [(p["protocol"], int(p["port"])) for p in rule["ports"]] == [("TCP", 5432)]
    mlflow, bootstrap, feast = rule["from"]
    assert mlflow == {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "model-registry",
                                                      "app.kubernetes.io/name": "model-registry"}}}
    assert bootstrap == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-registry-db-bootstrap"}}}
    assert feast["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "finml-data"}}
    (expr,) = feast["podSelector"]["matchExpressions"]
    assert (expr["key"], expr["operator"], expr["values"]) == (
        "app.kubernetes.io/name", "In", ["feature-materializer", "feature-server"])
    # The AWS registry of the same stack has no feature store: its database admits only its own server.
    (aws,) = _on(hybrid, "aws:eu-central-1", _ingress(hybrid, "model-registry-db"))
    assert len(aws.inputs["spec"]["ingress"][0]["from"]) == 1


def test_feast_pods_and_the_bootstrap_job_may_leave_only_for_the_registry_database(hybrid):
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"]
                for p in _on(hybrid, "onprem:fra-dc1", hybrid.k8s("NetworkPolicy"))}
    db = {"matchLabels": {"app.kubernetes.io/instance": "model-registry-db",
                          "app.kubernetes.io/name": "model-registry-db"}}
    online, registry = policies["feast-egress"]["egress"]
    assert registry == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "finml-data"}},
                                "podSelector": db}], "ports": [{"protocol": "TCP", "port": 5432}]}
    assert [int(p["port"]) for p in online["ports"]] == [6379]
    bootstrap = policies["model-registry-db-bootstrap-egress"]
    assert bootstrap["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "model-registry-db-bootstrap"}}
    assert bootstrap["egress"] == [{"to": [{"podSelector": db}], "ports": [{"protocol": "TCP", "port": 5432}]}]


def test_a_misplaced_restricted_feature_store_is_still_registered_for_the_pack_to_judge():
    raw = hybrid_raw()
    raw["workloads"]["featureStore"] = {"site": "aws:eu-central-1", "classification": "restricted"}
    stack = stack_from_raw(raw)
    monitor, _ = run_program(deploy_stack(stack))
    sts = _store_sts(monitor)
    assert monitor.provider_of(sts) == provider_name("aws:eu-central-1")
    assert sts.inputs["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    assert sts.inputs["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"][CLASSIFICATION_LABEL] == "restricted"
    (component,) = monitor.of_type("finml:workloads:FeatureStore")
    assert component.inputs == {"site": "aws:eu-central-1", "classification": "restricted"}
    views = {v.inputs["name"]: v.inputs["classification"] for v in monitor.of_type("finml:ml:FeatureView")}
    assert views["customer_profile"] == "restricted"


# -- arguments -------------------------------------------------------------------------------------------------------


def test_an_unknown_mig_slice_is_a_config_error_before_any_resource_is_registered():
    from finml.config import ConfigError

    raw = hybrid_raw()
    raw["workloads"]["serving"][0]["migSlice"] = "9g.99gb"
    with pytest.raises(ConfigError) as info:
        stack_from_raw(raw)
    assert "workloads.serving[0].migSlice: '9g.99gb' is not a MIG slice of H100-80GB" in str(info.value)
    assert "1g.10gb" in str(info.value)


def test_gpu_quota_caps_training_and_serving_namespaces():
    stack = load_stack(STACKS_DIR / "Pulumi.hybrid-prod.yaml")

    def program():
        register_lineage(stack)
        deploy_platform(stack, "onprem:fra-dc1", k8s.Provider("k8s-fra", kubeconfig="{}"), load_profiles(),
                        gpu_quota=16)

    monitor, _ = run_program(program)
    quotas = {q.inputs["metadata"]["namespace"]: q.inputs["spec"]["hard"] for q in monitor.k8s("ResourceQuota")
              if q.inputs["metadata"]["name"] == "gpu-quota"}
    assert quotas == {"finml-data": {"requests.nvidia.com/gpu": "0"},
                      "finml-training": {"requests.nvidia.com/gpu": "16"},
                      "finml-serving": {"requests.nvidia.com/gpu": "16"}}


def test_serving_ingress_is_opened_only_to_named_client_namespaces():
    profile = load_profiles()["L4"]

    def program():
        InferenceService("closed", InferenceServiceArgs(service_name="closed", site="aws:eu-central-1",
                                                        model="m", classification="internal", gpu_profile=profile))
        InferenceService("open", InferenceServiceArgs(service_name="open", site="aws:eu-central-1", model="m",
                                                      classification="internal", gpu_profile=profile,
                                                      client_namespaces=("payments",)))

    monitor, _ = run_program(program)
    ingress = {p.inputs["metadata"]["name"]: p.inputs["spec"]["ingress"] for p in monitor.k8s("NetworkPolicy")
               if "Ingress" in p.inputs["spec"]["policyTypes"]}
    # Without named clients only the monitoring namespace reaches the metrics port.
    (closed_rule,) = ingress["closed-allow-clients"]
    assert closed_rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["finml-monitoring"]
    assert [int(p["port"]) for p in closed_rule["ports"]] == [9443]
    client_rule, metrics_rule = ingress["open-allow-clients"]
    assert client_rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["payments"]
    assert sorted(int(p["port"]) for p in client_rule["ports"]) == [8443, 8444]
    assert metrics_rule == closed_rule


def test_every_stack_with_a_cluster_deploys_a_cluster_base_per_cluster_site(any_stack):
    name, monitor = any_stack
    stack = load_stack(STACKS_DIR / f"Pulumi.{name}.yaml")
    assert sorted(r.inputs["site"] for r in monitor.of_type("finml:workloads:ClusterBase")) == \
        sorted(cluster_sites(stack))


# -- outputs (checked inside the runtime, so a failing check fails the test) -----------------------------------------


@pytest.fixture
def mocks() -> RecordingMonitor:
    monitor = RecordingMonitor()
    pulumi.runtime.set_mocks(monitor.mocks, project="finml", stack="test", preview=False, monitor=monitor)
    return monitor


def _registry_db(verify="site-ca"):
    from workloads.model_registry import SiteDatabase

    return SiteDatabase(host="model-registry-db.finml-data.svc.cluster.local", port=5432, database="feast_registry",
                        user="feast", password=pulumi.Output.secret("pw"), verify=verify, namespace="finml-data",
                        server_pod_labels={"app.kubernetes.io/name": "model-registry-db"} if verify == "site-ca"
                        else None, ca_certificate="site-ca-pem" if verify == "site-ca" else None)


def test_a_feature_store_without_the_registry_database_is_refused_by_name():
    with pytest.raises(ValueError, match=r"feature store on onprem:fra-dc1: its Feast registry lives in the site's "
                                         r"model-registry database server; pass registry_database"):
        FeatureStore("store", FeatureStoreArgs(site="onprem:fra-dc1", classification="restricted"))


@pulumi.runtime.test
def test_component_outputs(mocks):
    store = FeatureStore("store", FeatureStoreArgs(site="onprem:fra-dc1", classification="restricted",
                                                   registry_database=_registry_db()))
    service = InferenceService("svc", InferenceServiceArgs(
        service_name="svc", site="onprem:fra-dc1", model="m", classification="restricted",
        gpu_profile=load_profiles()["H100-80GB"], share=GpuShare("mig", mig_profile="2g.20gb")))
    assert service.gpu_resource == "nvidia.com/mig-2g.20gb"

    def check(values):
        endpoint, online, deployment_name = values
        assert endpoint == "https://feature-server.finml-data.svc.cluster.local:6566", f"FeatureStore store: {endpoint}"
        assert online == "feature-store.finml-data.svc.cluster.local:6379", f"FeatureStore store: online {online}"
        assert deployment_name == "svc"

    return pulumi.Output.all(store.endpoint, store.online_endpoint, service.deployment.metadata.name).apply(check)


def test_every_cluster_pulls_from_its_own_site_registry_with_a_fixed_tag():
    stack = load_stack(STACKS_DIR / "Pulumi.hybrid-prod.yaml")
    monitor, _ = run_program(deploy_stack(stack))
    images = {}
    for record in monitor.k8s():
        template = pod_template(record) if record.kind in ("Deployment", "StatefulSet", "Job") else None
        if template is not None:
            site = "aws" if "aws-eu-central-1" in record.urn else "onprem"
            images.setdefault(site, set()).update(
                c["image"] for key in ("initContainers", "containers") for c in template["spec"].get(key) or [])
    assert images["aws"] and all(i.startswith("777788889999.dkr.ecr.eu-central-1.amazonaws.com/finml/")
                                 for i in images["aws"]), images["aws"]
    assert images["onprem"] and all(i.startswith("registry.fra-dc1.example.internal/finml/")
                                    for i in images["onprem"]), images["onprem"]
    for image in images["aws"] | images["onprem"]:
        name, _, tag = image.rpartition(":")
        assert "/" not in tag and tag and tag != "latest", image
