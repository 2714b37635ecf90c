"""Feature-view residency rules: exact (rule, URN) sets for compliant, violating, not-applicable and unknown fixtures."""

from policy_harness import UNKNOWN, Stack, pairs, run
from policy_fixtures import tags

VIEW = "finml:ml:FeatureView"
STORE = "finml:workloads:FeatureStore"
RESIDENCY_RULE = "residency-feature-view"
SOURCE_RULE = "residency-feature-view-source"


def sites():
    s = Stack()
    h = {"eu": s.aws_provider("eu-aws", "eu-central-1"), "dr": s.aws_provider("dr-aws", "eu-west-1")}
    h["eks"], h["eks_k8s"] = s.eks_cluster("eu", provider=h["eu"])
    h["dc1"], h["dc1_k8s"] = s.onprem_cluster()
    return s, h


def store(s, name, provider, *, claim=True):
    component = s.add(STORE, name, {"site": "ignored", "classification": "restricted"})
    s.add("kubernetes:apps/v1:Deployment", f"{name}-server", {"metadata": {"name": "feature-server",
                                                                           "namespace": "finml-data"}},
          provider=provider, parent=component)
    if claim:
        s.add("kubernetes:core/v1:PersistentVolumeClaim", f"{name}-offline", {"metadata": {
            "name": "feature-offline", "namespace": "finml-data",
            "labels": {"finml.io/classification": "restricted"}}}, provider=provider, parent=component)
    return component


def view(s, name, parent, cls="restricted", uri="pvc://finml-data/feature-offline/x.parquet", source_cls=None):
    return s.add(VIEW, name, {"name": name, "classification": cls,
                              "source": {"name": "src", "classification": source_cls or cls, "uri": uri}},
                 parent=parent)


def test_views_on_allowed_sites_with_sources_inside_them_pass():
    s, h = sites()
    onprem = store(s, "fs-dc1", h["dc1_k8s"])
    aws = store(s, "fs-eu", h["eks_k8s"], claim=False)
    s.add("aws:s3/bucket:Bucket", "features", {"bucket": "features-eu", **tags("confidential")}, provider=h["eu"])
    view(s, "customer_profile", onprem)
    view(s, "card_profile", aws, cls="confidential", uri="s3://features-eu/feature-store/card_profile.parquet")
    assert pairs(run(RESIDENCY_RULE, s)) == set()
    assert pairs(run(SOURCE_RULE, s)) == set()


def test_a_view_above_its_sites_classification_is_refused():
    s, h = sites()
    aws = store(s, "fs-eu", h["eks_k8s"], claim=False)
    s.add("aws:s3/bucket:Bucket", "features", {"bucket": "features-eu", **tags("confidential")}, provider=h["eu"])
    restricted = view(s, "customer_profile", aws, uri="s3://features-eu/feature-store/p.parquet")
    invalid = view(s, "odd", aws, cls="secret", uri="s3://features-eu/feature-store/o.parquet")
    view(s, "card_profile", aws, cls="confidential", uri="s3://features-eu/feature-store/c.parquet")
    found = run(RESIDENCY_RULE, s)
    assert pairs(found) == {(RESIDENCY_RULE, restricted.urn), (RESIDENCY_RULE, invalid.urn)}
    assert "aws:eu-central-1" in next(v.message for v in found if v.urn == restricted.urn)


def test_a_source_outside_the_site_is_refused_each_way():
    s, h = sites()
    aws = store(s, "fs-eu", h["eks_k8s"], claim=False)
    s.add("aws:s3/bucket:Bucket", "dr-features", {"bucket": "features-dr", **tags("confidential")}, provider=h["dr"])
    other_region = view(s, "a", aws, cls="internal", uri="s3://features-dr/feature-store/a.parquet")
    foreign = view(s, "b", aws, cls="internal", uri="s3://not-in-this-stack/b.parquet")
    other_scheme = view(s, "c", aws, cls="internal", uri="https://example.invalid/c.parquet")
    no_claim = view(s, "d", aws, cls="internal", uri="pvc://finml-data/feature-offline/d.parquet")
    not_uri = view(s, "e", aws, cls="internal", uri="/data/e.parquet")
    found = pairs(run(SOURCE_RULE, s))
    assert found == {(SOURCE_RULE, v.urn) for v in (other_region, foreign, other_scheme, no_claim, not_uri)}


def test_a_claim_of_another_clusters_store_does_not_count():
    s, h = sites()
    store(s, "fs-dc1", h["dc1_k8s"])
    aws = store(s, "fs-eu", h["eks_k8s"], claim=False)
    borrowed = view(s, "v", aws, cls="internal")
    assert pairs(run(SOURCE_RULE, s)) == {(SOURCE_RULE, borrowed.urn)}


def test_not_applicable_without_feature_views():
    s, h = sites()
    store(s, "fs-dc1", h["dc1_k8s"])
    assert run(RESIDENCY_RULE, s) == [] and run(SOURCE_RULE, s) == []


def test_unknown_values_and_underivable_sites_fail_closed():
    s, h = sites()
    onprem = store(s, "fs-dc1", h["dc1_k8s"])
    unknown_cls = view(s, "u1", onprem, cls=UNKNOWN)
    unknown_uri = view(s, "u2", onprem, uri=UNKNOWN)
    orphan = view(s, "orphan", None)
    empty_store = s.add(STORE, "empty", {})
    homeless = view(s, "homeless", empty_store)
    assert pairs(run(RESIDENCY_RULE, s)) == {(RESIDENCY_RULE, v.urn) for v in (unknown_cls, orphan, homeless)}
    assert pairs(run(SOURCE_RULE, s)) == {(SOURCE_RULE, v.urn) for v in (unknown_uri, orphan, homeless)}


def test_missing_residency_config_fails_every_view():
    s, h = sites()
    v = view(s, "v", store(s, "fs-dc1", h["dc1_k8s"]))
    assert pairs(run(RESIDENCY_RULE, s, config=None)) == {(RESIDENCY_RULE, v.urn)}
