"""The `registry` section of a stack: which sites host a model registry, for which classification, and the
promotion thresholds; bad values are one line naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from finml.config import ConfigError, load_stack_file

ROOT = Path(__file__).resolve().parents[2]


def with_registry(tmp_path, registry) -> Path:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").read_text())
    doc = copy.deepcopy(doc)
    if registry is None:
        doc["config"]["finml:platform"].pop("registry")
    else:
        doc["config"]["finml:platform"]["registry"] = registry
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_stack_registries_parse():
    stack = load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml")
    reg = stack.platform.registry
    assert {s: e.classification for s, e in reg.sites.items()} == {"onprem:fra-dc1": "restricted",
                                                                    "aws:eu-central-1": "confidential"}
    assert reg.tracking_uri("onprem:fra-dc1") == "https://mlflow.finml-registry.svc.cluster.local"
    assert [(t.metric, t.min) for t in reg.promotion.metrics] == [("final_holdout_pr_auc", 0.8)]


@pytest.mark.parametrize("registry, key, text", [
    ({"sites": {"aws:eu-central-1": {"classification": "restricted"}, "onprem:fra-dc1": {"classification":
      "restricted"}}}, "registry.sites.aws:eu-central-1.classification", "may not live on aws:eu-central-1"),
    ({"sites": {"onprem:fra-dc1": {"classification": "restricted"}}}, "registry.sites",
     "aws:eu-central-1 trains or serves models but has no registry"),
    ({"sites": {"onprem:fra-dc1": {"classification": "restricted"}, "aws:eu-central-1": {
      "classification": "confidential"}, "aws:us-east-1": {"classification": "internal"}}},
     "registry.sites.aws:us-east-1", "unknown site"),
    ({"sites": {"onprem:fra-dc1": {"classification": "restricted"}, "aws:eu-central-1": {
      "classification": "confidential"}}, "promotion": {"metrics": [{"metric": "auc"}]}},
     "registry.promotion.metrics[0]", "needs min, max or both"),
    ({"sites": {"onprem:fra-dc1": {"classification": "restricted"}, "aws:eu-central-1": {
      "classification": "confidential", "trackingUri": "http://plain"}}},
     "registry.sites.aws:eu-central-1.trackingUri", ""),
    ({"sites": {"onprem:fra-dc1": {"classification": "restricted", "colour": "red"}, "aws:eu-central-1": {
      "classification": "confidential"}}}, "registry.sites.onprem:fra-dc1.colour", "unknown key"),
])
def test_bad_registry_config_names_the_key(tmp_path, registry, key, text):
    with pytest.raises(ConfigError) as err:
        load_stack_file(with_registry(tmp_path, registry))
    message = str(err.value)
    assert f"finml:platform.{key}" in message and text in message, message
    assert len(message.splitlines()) == 1


def test_integer_thresholds_and_no_registry_section(tmp_path):
    stack = load_stack_file(with_registry(tmp_path, {
        "sites": {"onprem:fra-dc1": {"classification": "restricted"},
                  "aws:eu-central-1": {"classification": "confidential"}},
        "promotion": {"metrics": [{"metric": "val_loss", "max": 1}]}}))
    assert stack.platform.registry.promotion.metrics[0].max == 1.0
    no_registry = with_registry(tmp_path, None)
    with pytest.raises(ConfigError, match="featureStore.site: onprem:fra-dc1 has no model registry"):
        load_stack_file(no_registry)  # the Feast registry lives on the model registry's database server
    doc = yaml.safe_load(no_registry.read_text())
    doc["config"]["finml:platform"]["workloads"].pop("featureStore")
    no_registry.write_text(yaml.safe_dump(doc))
    assert load_stack_file(no_registry).platform.registry is None
