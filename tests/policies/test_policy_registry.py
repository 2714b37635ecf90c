"""Registry rules: exact (rule, URN) sets for compliant, violating, not-applicable and unknown fixtures."""

from policy_harness import UNKNOWN, Stack, pairs, run
from policy_fixtures import tags, workload

REGISTRY = "finml:workloads:ModelRegistry"


def sites():
    s = Stack()
    h = {"eu": s.aws_provider("eu-aws", "eu-central-1"), "dr": s.aws_provider("dr-aws", "eu-west-1")}
    h["eks"], h["eks_k8s"] = s.eks_cluster("eu", provider=h["eu"])
    h["dc1"], h["dc1_k8s"] = s.onprem_cluster()
    return s, h


def registry(s, name, site, cls, provider, *, aws=None, k8s_cls=None, db_cls=None):
    reg = s.add(REGISTRY, name, {"site": site, "classification": cls})
    s.add("kubernetes:apps/v1:Deployment", f"{name}-deployment", {
        "metadata": {"name": "model-registry", "namespace": "finml-data",
                     "labels": {"finml.io/classification": k8s_cls or cls}},
        "spec": {"template": {"metadata": {"labels": {"finml.io/classification": k8s_cls or cls}}, "spec": {}}}},
        provider=provider, parent=reg)
    s.add("tls:index/privateKey:PrivateKey", f"{name}-ca-key", {"algorithm": "ECDSA"}, parent=reg)
    if aws is not None:
        s.add("aws:rds/instance:Instance", f"{name}-db", {"storageEncrypted": True, **tags(db_cls or cls)},
              provider=aws, parent=reg)
    return reg


def test_registry_site_allowed_compliant_and_violating():
    rule = "residency-model-registry-site"
    s, h = sites()
    registry(s, "ok-dc1", "onprem:fra-dc1", "restricted", h["dc1_k8s"])
    registry(s, "ok-eu", "aws:eu-central-1", "confidential", h["eks_k8s"], aws=h["eu"])
    restricted_on_aws = registry(s, "bad-eu", "aws:eu-central-1", "restricted", h["eks_k8s"], aws=h["eu"])
    # declares fra-dc1, but its objects are on the EKS cluster: the derived site wins (and is not allowed)
    lying = registry(s, "lying", "onprem:fra-dc1", "restricted", h["eks_k8s"])
    assert pairs(run(rule, s)) == {(rule, restricted_on_aws.urn), (rule, lying.urn)}
    messages = [v.message for v in run(rule, s) if v.urn == restricted_on_aws.urn]
    assert any("restricted models at aws:eu-central-1" in m for m in messages)


def test_registry_site_split_across_sites_or_unknown_fails_closed():
    rule = "residency-model-registry-site"
    s, h = sites()
    split = registry(s, "split", "aws:eu-central-1", "confidential", h["eks_k8s"], aws=h["dr"])
    unknown_cls = s.add(REGISTRY, "unknown-cls", {"site": "onprem:fra-dc1", "classification": UNKNOWN})
    no_children = s.add(REGISTRY, "empty", {"site": "onprem:fra-dc1", "classification": "internal"})
    assert pairs(run(rule, s)) == {(rule, split.urn), (rule, unknown_cls.urn), (rule, no_children.urn)}


def test_registry_rules_not_applicable_without_registries():
    s, h = sites()
    workload(s, "Deployment", "app", h["dc1_k8s"])
    assert run("residency-model-registry-site", s) == [] and run("residency-model-registry-classified", s) == []


def test_registry_without_config_fails_closed():
    s, h = sites()
    reg = registry(s, "ok-dc1", "onprem:fra-dc1", "restricted", h["dc1_k8s"])
    assert pairs(run("residency-model-registry-site", s, config=None)) == {("residency-model-registry-site", reg.urn)}


def test_registry_data_classified():
    rule = "residency-model-registry-classified"
    s, h = sites()
    registry(s, "ok", "aws:eu-central-1", "confidential", h["eks_k8s"], aws=h["eu"])
    low = registry(s, "low", "aws:eu-central-1", "confidential", h["eks_k8s"], aws=h["eu"], db_cls="internal")
    unlabelled = s.add(REGISTRY, "unlabelled", {"site": "onprem:fra-dc1", "classification": "restricted"})
    pvc = s.add("kubernetes:core/v1:PersistentVolumeClaim", "unlabelled-artifacts",
                {"metadata": {"namespace": "finml-data", "labels": {}}}, provider=h["dc1_k8s"], parent=unlabelled)
    low_db = next(r for r in s.resources if r.name == "low-db")
    assert pairs(run(rule, s)) == {(rule, low_db.urn), (rule, pvc.urn)}
    assert low  # the registry itself is fine; its under-labelled database is what is reported
