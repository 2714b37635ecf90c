"""Stack configuration: every real stack loads; every cross-field check rejects bad config with file + key named."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finml.config import ConfigError, list_stacks, load_stack_file, parse_platform
from gpu_profiles import load_profiles
from tests.tree_edits import apply_tree

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
PROFILES = load_profiles()


def stack_doc(name: str) -> dict:
    return yaml.safe_load((STACKS / f"Pulumi.{name}.yaml").read_text())


def write_stack(tmp_path: Path, doc: dict, name: str = "bad") -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def expect_error(tmp_path: Path, doc: dict, key: str, fragment: str) -> ConfigError:
    path = write_stack(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_stack_file(path, PROFILES)
    text = str(info.value)
    assert str(path) in text, text
    assert key in text, f"expected key {key!r} in:\n{text}"
    assert fragment in text, f"expected {fragment!r} in:\n{text}"
    return info.value


def test_the_four_real_stacks_exist_and_load():
    assert list_stacks(STACKS) == ["aws-eu-prod", "dev", "hybrid-prod", "onprem-dc1"]
    for name in list_stacks(STACKS):
        stack = load_stack_file(STACKS / f"Pulumi.{name}.yaml", PROFILES)
        assert stack.stack == name
        assert stack.raw_config["pulumi:disable-default-providers"] == ["*"]


def test_stack_facts_match_their_purpose():
    dev = load_stack_file(STACKS / "Pulumi.dev.yaml", PROFILES).platform
    assert dev.max_classification == "internal" and dev.synthetic_data_only
    assert all(d.synthetic for d in dev.datasets)
    prod = load_stack_file(STACKS / "Pulumi.aws-eu-prod.yaml", PROFILES).platform
    assert prod.sites["aws:eu-central-1"].storage.replicate_to == "aws:eu-west-1"
    assert prod.max_classification == "confidential"
    onprem = load_stack_file(STACKS / "Pulumi.onprem-dc1.yaml", PROFILES)
    assert onprem.platform.residency["restricted"] == ["onprem:fra-dc1"]
    assert onprem.secret_keys == ("finml:fraDc1RndKubeconfig", "finml:fraDc1RndNodeSecrets")
    hybrid = load_stack_file(STACKS / "Pulumi.hybrid-prod.yaml", PROFILES).platform
    assert hybrid.workloads.feature_store.site == "onprem:fra-dc1"
    assert hybrid.vpn[0].aws_site == "aws:eu-central-1"


def test_secrets_are_secure_values_never_plaintext():
    for name in list_stacks(STACKS):
        doc = stack_doc(name)
        for key, value in doc["config"].items():
            if key != "finml:platform" and key != "pulumi:disable-default-providers":
                assert isinstance(value, dict) and set(value) == {"secure"}, f"{name}: {key} must be secure:"
                assert value["secure"].startswith("v1:")


def test_overlapping_cidrs_are_rejected(tmp_path):
    doc = stack_doc("hybrid-prod")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["network"]["vpcCidr"] = "10.20.0.0/16"
    expect_error(tmp_path, doc, "finml:platform.sites.", "overlaps")


def test_unknown_gpu_profile_is_rejected_with_allowed_list(tmp_path):
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["eks"]["gpuNodeGroups"][0]["gpu"] = "H100:90GB:8"
    err = expect_error(tmp_path, doc, "finml:platform.sites.aws:eu-central-1.eks.gpuNodeGroups[0].gpu",
                       "unknown GPU profile 'H100:90GB:8'")
    assert "H200-141GB" in str(err)


def test_instance_type_must_carry_the_profile(tmp_path):
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["eks"]["gpuNodeGroups"][0]["instanceType"] = "p5.48xlarge"
    expect_error(tmp_path, doc, "gpuNodeGroups[0].instanceType", "allowed: g6.")


@pytest.mark.parametrize("patterns", [["onprem:ber-*"], ["aws:eu-*"]], ids=["glob-matching-nothing", "other-kind"])
def test_classification_without_an_allowed_site_is_rejected(tmp_path, patterns):
    doc = stack_doc("onprem-dc1")
    doc["config"]["finml:platform"]["residency"]["restricted"] = patterns
    expect_error(tmp_path, doc, "finml:platform.workloads.featureStore.classification",
                 "'restricted' has no allowed site in this stack")


def test_residency_rule_naming_an_unknown_site_is_rejected(tmp_path):
    doc = stack_doc("aws-eu-prod")
    doc["config"]["finml:platform"]["residency"]["confidential"].append("aws:us-east-1")
    expect_error(tmp_path, doc, "finml:platform.residency.confidential[2]", "names unknown site 'aws:us-east-1'")


def test_unknown_keys_and_wrong_types_name_the_key(tmp_path):
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["network"]["vpcCidrs"] = "10.0.0.0/8"
    expect_error(tmp_path, doc, "finml:platform.sites.aws:eu-central-1.network.vpcCidrs", "unknown key")
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["eks"]["gpuNodeGroups"][0]["maxSize"] = "two"
    expect_error(tmp_path, doc, "gpuNodeGroups[0].maxSize", "got str 'two'")


def test_plaintext_kubeconfig_is_rejected(tmp_path):
    doc = stack_doc("onprem-dc1")
    doc["config"]["finml:fraDc1RndKubeconfig"] = "apiVersion: v1"
    expect_error(tmp_path, doc, "finml:fraDc1RndKubeconfig", "must be a `secure:` value")


def test_default_providers_must_be_disabled(tmp_path):
    doc = stack_doc("dev")
    del doc["config"]["pulumi:disable-default-providers"]
    expect_error(tmp_path, doc, "pulumi:disable-default-providers", "must be [\"*\"]")


def test_on_prem_node_outside_its_network_is_rejected(tmp_path):
    doc = stack_doc("onprem-dc1")
    doc["config"]["finml:platform"]["sites"]["onprem:fra-dc1"]["nodes"][0]["address"] = "10.99.0.1"
    expect_error(tmp_path, doc, "nodes[0].address", "outside nodeCidr 10.24.0.0/22")


def test_mig_layout_must_fit_the_profile(tmp_path):
    doc = stack_doc("onprem-dc1")
    doc["config"]["finml:platform"]["sites"]["onprem:fra-dc1"]["nodes"][1]["migLayout"] = {"1g.10gb": 9}
    expect_error(tmp_path, doc, "nodes[1].migLayout.1g.10gb", "count 9 not in 1..7")


def test_serving_mig_slice_must_exist_on_the_profile(tmp_path):
    doc = stack_doc("onprem-dc1")
    doc["config"]["finml:platform"]["workloads"]["serving"][0]["migSlice"] = "1g.18gb"
    expect_error(tmp_path, doc, "finml:platform.workloads.serving[0].migSlice",
                 "'1g.18gb' is not a MIG slice of H100-80GB; allowed: 1g.10gb")


def test_node_group_bounds_and_unique_names(tmp_path):
    doc = stack_doc("aws-eu-prod")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["eks"]["systemNodeGroup"]["minSize"] = 9
    expect_error(tmp_path, doc, "eks.systemNodeGroup", "minSize 9 is greater than maxSize 6")
    doc = stack_doc("hybrid-prod")
    platform = doc["config"]["finml:platform"]
    platform["models"].append(dict(platform["models"][0]))
    platform["workloads"]["serving"].append(dict(platform["workloads"]["serving"][0]))
    platform["workloads"]["serving"][0]["sites"] = ["onprem:fra-dc1", "onprem:fra-dc1"]
    err = expect_error(tmp_path, doc, "finml:platform.models", "model names must be unique")
    assert "finml:platform.workloads.serving: names must be unique; repeated: aml-detector" in str(err)
    assert "finml:platform.workloads.serving[0].sites: each site may appear once" in str(err)


def test_two_stacks_may_not_manage_the_same_on_prem_cluster(tmp_path):
    from finml.config import cross_stack_problems

    stacks = [load_stack_file(STACKS / f"Pulumi.{n}.yaml", PROFILES) for n in list_stacks(STACKS)]
    assert cross_stack_problems(stacks) == []
    doc = stack_doc("onprem-dc1")
    site = doc["config"]["finml:platform"]["sites"]["onprem:fra-dc1"]
    site["kubernetes"]["apiEndpoint"] = "k8s-api.fra-dc1.finml.internal:6443"  # hybrid-prod's cluster
    clash = load_stack_file(write_stack(tmp_path, doc, "clash"), PROFILES)
    problems = cross_stack_problems([*(s for s in stacks if s.stack != "onprem-dc1"), clash])
    assert [(src.endswith("Pulumi.clash.yaml"), "already managed by stack 'hybrid-prod'" in msg)
            for src, msg in problems] == [(True, True)]
    write_stack(tmp_path, doc, "onprem-dc1")
    (tmp_path / "Pulumi.hybrid-prod.yaml").write_text((STACKS / "Pulumi.hybrid-prod.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(tmp_path), "config", "check",
                           "--all"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Kubernetes API endpoint k8s-api.fra-dc1.finml.internal:6443" in proc.stderr


def test_dev_accepts_synthetic_data_only(tmp_path):
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["datasets"][0]["synthetic"] = False
    expect_error(tmp_path, doc, "finml:platform.datasets[0].synthetic", "synthetic data only")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config:\n  finml:platform: [unclosed\n")
    with pytest.raises(ConfigError, match=r"Pulumi\.broken\.yaml:3: not valid YAML"):
        load_stack_file(path, PROFILES)


def _mutations():
    """Random edits of a valid config: drop keys, swap values for wrong types, inject unknown keys."""
    junk = st.one_of(st.none(), st.integers(), st.text(max_size=12), st.booleans(),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
    return st.lists(st.tuples(st.sampled_from(["drop", "replace", "add"]), st.integers(0, 10_000), junk),
                    min_size=1, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=st.sampled_from(["dev", "aws-eu-prod", "onprem-dc1", "hybrid-prod"]), edits=_mutations())
def test_generated_bad_configs_give_config_errors_never_tracebacks(stack, edits):
    platform = copy.deepcopy(stack_doc(stack)["config"]["finml:platform"])
    apply_tree(platform, edits)
    try:
        parse_platform(platform, f"stacks/Pulumi.{stack}.yaml", PROFILES)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"stacks/Pulumi.{stack}.yaml: "), text
        assert all(line.startswith(f"stacks/Pulumi.{stack}.yaml: ") for line in text.splitlines()), text
    # A mutation can leave the config valid (e.g. replacing a description with text); that is fine.


def test_cli_reports_bad_config_without_traceback(tmp_path):
    doc = stack_doc("dev")
    doc["config"]["finml:platform"]["sites"]["aws:eu-central-1"]["network"]["vpcCidr"] = "8.8.8.0/24"
    write_stack(tmp_path, doc, "dev")
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(tmp_path), "config", "check",
                           "--stack", "dev"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(r"Pulumi\.dev\.yaml:\d+: finml:platform\.sites\.aws:eu-central-1\.network\.vpcCidr", proc.stderr)
    assert "not a private range" in proc.stderr


def test_a_feature_store_site_without_a_model_registry_is_rejected(tmp_path):
    doc = stack_doc("aws-eu-prod")
    del doc["config"]["finml:platform"]["registry"]
    doc["config"]["finml:platform"]["workloads"]["training"] = []
    doc["config"]["finml:platform"]["workloads"]["serving"] = []
    expect_error(tmp_path, doc, "finml:platform.workloads.featureStore.site",
                 "aws:eu-central-1 has no model registry, whose database server holds the feature store's Feast "
                 "registry; add aws:eu-central-1 to finml:platform.registry.sites")

