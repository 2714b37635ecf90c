"""The feature store in the real program's plans: each site's feature views with their classifications, and the
pack (over its real gRPC protocol) kills residency mutants down to the feature view."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from finml.cli import pack_config_for
from finml.config import load_stack_file
from finml.plan import load_plan
from finml.policy_check import PolicyPackProcess, check_plan

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
VIEW = "finml:ml:FeatureView"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("plans")
    found = {}
    for name in ("aws-eu-prod", "hybrid-prod"):
        path = out / f"{name}.json"
        proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / f"Pulumi.{name}.yaml"),
                               str(ROOT / "__main__.py"), str(path)], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[name] = path
    return found


@pytest.fixture(scope="module")
def pack():
    with PolicyPackProcess(PACK) as started:
        yield started


def _config(name):
    return pack_config_for(load_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml").platform, PACK)


def _views(plan):
    return {r.props["name"]: r for r in plan.resources if r.type == VIEW}


def _edit(view, fn):
    """Components reach stack policies as their registered outputs (which mirror the props): edit both."""
    fn(view.props)
    if view.outputs is not None:
        fn(view.outputs)


def test_plans_carry_each_sites_feature_views_with_classifications(plans):
    aws = _views(load_plan(plans["aws-eu-prod"]))
    assert {n: v.props["classification"] for n, v in aws.items()} == {
        "card_transactions_1h": "confidential", "card_transactions_24h": "confidential",
        "card_transactions_7d": "confidential", "card_profile": "confidential", "merchant_risk": "internal"}
    assert all(v.props["source"]["uri"].startswith("s3://") for v in aws.values())
    onprem = _views(load_plan(plans["hybrid-prod"]))
    assert onprem["customer_profile"].props["classification"] == "restricted"
    assert onprem["customer_profile"].props["source"]["uri"] == \
        "pvc://finml-data/feature-offline/customer_profile.parquet"


def test_real_plans_pass(plans, pack):
    for name, path in plans.items():
        result = check_plan(load_plan(path), PACK, _config(name), pack=pack)
        assert not result.mandatory, [(v.policy, v.urn) for v in result.mandatory]


def test_restricted_view_on_an_aws_site_is_killed(plans, pack):
    plan = load_plan(plans["aws-eu-prod"])
    view = _views(plan)["card_profile"]
    _edit(view, lambda p: p.update(classification="restricted"))
    result = check_plan(plan, PACK, _config("aws-eu-prod"), pack=pack)
    assert ("residency-feature-view", view.urn) in {(v.policy, v.urn) for v in result.mandatory}
    (violation,) = [v for v in result.mandatory if v.policy == "residency-feature-view"]
    assert violation.site == "aws:eu-central-1" and violation.classification == "restricted"


def test_restricted_on_prem_view_moved_to_aws_is_killed(plans, pack):
    """Graft hybrid-prod's restricted customer_profile view under aws-eu-prod's feature store."""
    restricted = copy.deepcopy(_views(load_plan(plans["hybrid-prod"]))["customer_profile"])
    plan = load_plan(plans["aws-eu-prod"])
    store = next(r for r in plan.resources if r.type == "finml:workloads:FeatureStore")
    restricted.urn = restricted.urn.replace("hybrid-prod", "aws-eu-prod") + "-moved"
    restricted.parent = store.urn
    uri = _views(plan)["card_profile"].props["source"]["uri"]
    _edit(restricted, lambda p: p["source"].update(uri=uri))
    plan.resources.append(restricted)
    result = check_plan(plan, PACK, _config("aws-eu-prod"), pack=pack)
    assert ("residency-feature-view", restricted.urn) in {(v.policy, v.urn) for v in result.mandatory}


@pytest.mark.parametrize("uri, why", [
    ("s3://not-a-bucket-of-this-stack/feature-store/x.parquet", "not a bucket of this stack"),
    ("gs://elsewhere/x.parquet", "scheme 'gs'"),
    ("pvc://finml-data/someone-elses-claim/x.parquet", "not a PersistentVolumeClaim of its feature store"),
])
def test_a_source_outside_the_site_is_killed(plans, pack, uri, why):
    plan = load_plan(plans["aws-eu-prod"])
    view = _views(plan)["merchant_risk"]
    _edit(view, lambda p: p["source"].update(uri=uri))
    result = check_plan(plan, PACK, _config("aws-eu-prod"), pack=pack)
    hits = [v for v in result.mandatory if v.policy == "residency-feature-view-source" and v.urn == view.urn]
    assert hits and why in hits[0].message, [(v.policy, v.message) for v in result.mandatory]


def test_a_source_in_another_regions_bucket_is_killed(plans, pack):
    plan = load_plan(plans["aws-eu-prod"])
    view = _views(plan)["merchant_risk"]
    bucket = view.props["source"]["uri"].split("/")[2]
    (b,) = [r for r in plan.resources if r.type == "aws:s3/bucket:Bucket" and r.props.get("bucket") == bucket]
    b.props["region"] = "eu-west-1"
    result = check_plan(plan, PACK, _config("aws-eu-prod"), pack=pack)
    hits = [v for v in result.mandatory if v.policy == "residency-feature-view-source" and v.urn == view.urn]
    assert hits and "outside the view's site" in hits[0].message
