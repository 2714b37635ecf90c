"""`sites.<id>.imageRegistry`: every site's registry resolves to one table the program and the pack share; bad values
name the file, the key and what is allowed, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finml.config import ConfigError, load_stack_file, site_image_registries
from gpu_profiles import load_profiles
from workloads import images

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
PROFILES = load_profiles()


def _doc(name: str) -> dict:
    return yaml.safe_load((STACKS / f"Pulumi.{name}.yaml").read_text())


def _site(doc: dict, site: str) -> dict:
    return doc["config"]["finml:platform"]["sites"][site]


def _error(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_stack_file(path, PROFILES)
    text = str(info.value)
    assert str(path) in text, text
    return text


def test_every_real_stack_resolves_a_registry_per_site():
    hybrid = load_stack_file(STACKS / "Pulumi.hybrid-prod.yaml", PROFILES)
    table = {s: r.to_pack() for s, r in site_image_registries(hybrid.platform).items()}
    assert table == {
        "onprem:fra-dc1": {"host": "registry.fra-dc1.example.internal", "prefix": "finml", "kind": "declared",
                           "immutableTags": True},
        "aws:eu-central-1": {"host": "777788889999.dkr.ecr.eu-central-1.amazonaws.com", "prefix": "finml",
                             "kind": "ecr", "immutableTags": True},
    }
    prod = load_stack_file(STACKS / "Pulumi.aws-eu-prod.yaml", PROFILES)
    # the replica-only site declares nothing and gets its own region's ECR by default
    assert prod.image_registry("aws:eu-west-1").host == "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
    assert images.site_image(hybrid, "onprem:fra-dc1", "feature-store") == \
        "registry.fra-dc1.example.internal/finml/feature-store:0.67.0"
    assert images.repositories(hybrid.image_registry("aws:eu-central-1")) == sorted(
        f"finml/{i.repository}" for i in {i.repository: i for i in images.IMAGES.values()}.values())


def test_image_table_refuses_moving_tags_and_bad_digests():
    with pytest.raises(ValueError, match="tag 'latest' is not a fixed tag"):
        images.Image("x", "latest")
    with pytest.raises(ValueError, match="is not sha256:<64 hex>"):
        images.Image("x", "1", digest="sha256:12")
    with pytest.raises(KeyError, match="unknown platform image 'nope'"):
        images.image_ref(None, "nope")


def test_on_prem_site_must_declare_its_registry(tmp_path):
    doc = _doc("onprem-dc1")
    del _site(doc, "onprem:fra-dc1")["imageRegistry"]
    text = _error(tmp_path, doc)
    assert "finml:platform.sites.onprem:fra-dc1.imageRegistry: required key is missing" in text, text


@pytest.mark.parametrize("registry,key,fragment", [
    ({"host": "registry.fra-dc1.example.internal", "immutableTags": False}, "imageRegistry.immutableTags",
     "allowed: true"),
    ({"host": "https://registry.fra-dc1.example.internal", "immutableTags": True}, "imageRegistry.host",
     "allowed: a DNS name with at least one dot"),
    ({"host": "registry", "immutableTags": True}, "imageRegistry.host", "is not a registry host"),
    ({"host": "registry.fra-dc1.example.internal", "immutableTags": True, "prefix": "Finml/"},
     "imageRegistry.prefix", "is not a repository path prefix; allowed:"),
    ({"host": "registry.fra-dc1.example.internal"}, "imageRegistry.immutableTags", "required key is missing"),
    ({"host": "registry.fra-dc1.example.internal", "immutableTags": True, "mirror": "x"}, "imageRegistry.mirror",
     "unknown key"),
], ids=["mutable", "scheme", "no-dot", "prefix", "undeclared", "unknown-key"])
def test_bad_on_prem_registry_names_key_and_allowed(tmp_path, registry, key, fragment):
    doc = _doc("onprem-dc1")
    _site(doc, "onprem:fra-dc1")["imageRegistry"] = registry
    text = _error(tmp_path, doc)
    assert f"finml:platform.sites.onprem:fra-dc1.{key}" in text and fragment in text, text


def test_aws_registry_must_be_the_sites_own_ecr(tmp_path):
    doc = _doc("dev")
    _site(doc, "aws:eu-central-1")["imageRegistry"] = {"host": "111122223333.dkr.ecr.eu-west-1.amazonaws.com"}
    text = _error(tmp_path, doc)
    assert "finml:platform.sites.aws:eu-central-1.imageRegistry.host" in text, text
    assert "allowed: 111122223333.dkr.ecr.eu-central-1.amazonaws.com" in text, text
    doc = _doc("dev")
    _site(doc, "aws:eu-central-1")["imageRegistry"] = {"host": "registry.fra-dc1.example.internal",
                                                       "immutableTags": True}
    text = _error(tmp_path, doc)
    assert "finml:platform.sites.aws:eu-central-1.imageRegistry.immutableTags: unknown key" in text, text
    doc = _doc("dev")
    _site(doc, "aws:eu-central-1")["imageRegistry"] = "111122223333.dkr.ecr.eu-central-1.amazonaws.com/x"
    text = _error(tmp_path, doc)
    assert "finml:platform.sites.aws:eu-central-1.imageRegistry" in text, text


def test_config_check_reports_a_bad_registry_in_one_line(tmp_path):
    doc = _doc("onprem-dc1")
    _site(doc, "onprem:fra-dc1")["imageRegistry"]["immutableTags"] = False
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.bad.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "--stacks-dir", str(stacks), "config", "check",
                           "--stack", "bad"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sites.onprem:fra-dc1.imageRegistry.immutableTags" in proc.stderr and "allowed: true" in proc.stderr
