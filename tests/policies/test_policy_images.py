"""k8s-image-pinned: every container's image is pinned by digest, or by a fixed tag from its own site's registry whose
tags cannot change (on-prem: declared immutable; AWS: the site's ECR with IMMUTABLE repositories of this stack).

Each case asserts the exact set of violations; the last tests drive the pack process over real Analyzer gRPC."""

from __future__ import annotations

import pytest

from policy_fixtures import KINDS, container, pod_spec, workload
from policy_harness import CONFIG, RESIDENCY, SITES, UNKNOWN, Stack, pairs, run

from finml_rules.config import pack_config
from finml_rules.images import parse_reference

RULE = "k8s-image-pinned"
ACCOUNT = "111122223333"
DC1 = "registry.fra-dc1.example.internal"
ECR = f"{ACCOUNT}.dkr.ecr.eu-central-1.amazonaws.com"
ECR_WEST = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
REGISTRIES = {
    "onprem:fra-dc1": {"host": DC1, "prefix": "finml", "kind": "declared", "immutableTags": True},
    "aws:eu-central-1": {"host": ECR, "prefix": "finml", "kind": "ecr", "immutableTags": True},
    "aws:eu-west-1": {"host": ECR_WEST, "prefix": "finml", "kind": "ecr", "immutableTags": True},
}


def config(registries=REGISTRIES, accounts=(ACCOUNT,)) -> dict:
    return pack_config(RESIDENCY, SITES, account_ids=list(accounts), image_registries=registries)


def sites() -> tuple[Stack, dict]:
    """An on-prem cluster and an EKS cluster in eu-central-1 with three ECR repositories: finml/app IMMUTABLE there,
    finml/mutable MUTABLE there, and finml/west IMMUTABLE but in eu-west-1."""
    s, h = Stack(), {}
    h["dc1"], h["dc1_k8s"] = s.onprem_cluster()
    h["eu"], h["eu_k8s"] = s.eks_cluster()
    eu_aws = next(r for r in s.resources if r.name == "eu-aws")
    west = s.aws_provider("west-aws", "eu-west-1")
    for name, mutability, provider in (("finml/app", "IMMUTABLE", eu_aws), ("finml/mutable", "MUTABLE", eu_aws),
                                       ("finml/west", "IMMUTABLE", west)):
        h[name] = s.add("aws:ecr/repository:Repository", name.replace("/", "-"),
                        {"name": name, "imageTagMutability": mutability,
                         "encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": UNKNOWN}]},
                        provider=provider)
    return s, h


def on(s: Stack, h: dict, site: str, name: str, image, kind: str = "Deployment", **spec) -> object:
    provider = h["dc1_k8s"] if site == "onprem" else h["eu_k8s"]
    pod_site = "onprem:fra-dc1" if site == "onprem" else "aws:eu-central-1"
    return workload(s, kind, name, provider, cls="internal",
                    spec=pod_spec([container("main", image=image)], site=pod_site, **spec))


def messages(stack: Stack, cfg=None) -> dict[str, str]:
    found = run(RULE, stack, config() if cfg is None else cfg)
    out: dict[str, str] = {}
    for v in found:
        assert v.urn not in out, f"two violations for {v.urn}: {out[v.urn]} / {v.message}"
        out[v.urn] = v.message
    return out


COMPLIANT = [
    ("onprem", f"{DC1}/finml/feature-store:0.67.0"),
    ("onprem", f"{DC1}/finml/team/app:2026.1"),
    ("onprem", f"images.vendor.example/app@{DIGEST}"),             # a digest pins from any registry
    ("onprem", f"app@{DIGEST}"),
    ("onprem", f"{DC1}/finml/app:latest@{DIGEST}"),                # the digest wins over a moving tag
    ("aws", f"{ECR}/finml/app:1.2.3"),
    ("aws", f"{ECR_WEST}/anything@{DIGEST}"),
]

VIOLATING = [
    ("onprem", f"{DC1}/finml/app:latest", "uses the :latest tag"),
    ("onprem", f"{DC1}/finml/app", "has no tag, so it pulls :latest"),
    ("onprem", "app:1.2.3", "names no registry, so it resolves to a public default registry"),
    ("onprem", "team/app:1.2.3", "names no registry"),
    ("onprem", "images.vendor.example/app:1.2.3", "not from its own site's registry registry.fra-dc1"),
    ("onprem", f"{ECR}/finml/app:1.2.3", "comes from the registry of aws:eu-central-1"),
    ("aws", f"{DC1}/finml/app:1.2.3", "comes from the registry of onprem:fra-dc1"),
    ("onprem", f"{DC1}/other/app:1.2.3", "outside the prefix finml/"),
    ("aws", f"{ECR}/finml/mutable:1", "imageTagMutability is 'MUTABLE'"),
    ("aws", f"{ECR}/finml/absent:1", "which this stack does not create at aws:eu-central-1"),
    ("aws", f"{ECR}/finml/west:1", "which this stack does not create at aws:eu-central-1"),
    ("aws", f"{ECR}/finml/app:latest", "uses the :latest tag"),
    ("onprem", "app@sha256:1234", "malformed digest"),
    ("onprem", f"{DC1}/finml/App:1", "malformed repository name"),
    ("onprem", "", "is missing"),
]


def test_compliant_forms_pass_and_every_violating_form_names_container_and_image():
    s, h = sites()
    for i, (site, image) in enumerate(COMPLIANT):
        on(s, h, site, f"ok-{i}", image)
    bad = {on(s, h, site, f"bad-{i}", image).urn: (image, fragment) for i, (site, image, fragment) in
           enumerate(VIOLATING)}
    found = messages(s)
    assert set(found) == set(bad), sorted(set(found) ^ set(bad))
    for urn, (image, fragment) in bad.items():
        assert fragment in found[urn], f"{urn}: expected {fragment!r} in {found[urn]!r}"
        assert "container 'main'" in found[urn] and (not image or repr(image) in found[urn]), found[urn]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_pod_template_kind_is_checked(kind):
    s, h = sites()
    ok = on(s, h, "onprem", "ok", f"{DC1}/finml/app:1", kind=kind)
    bad = on(s, h, "onprem", "bad", f"{DC1}/finml/app:latest", kind=kind)
    assert pairs(run(RULE, s, config())) == {(RULE, bad.urn)}
    assert ok.urn != bad.urn


def test_init_and_ephemeral_containers_are_checked():
    s, h = sites()
    good = container("main", image=f"{DC1}/finml/app:1")
    init = workload(s, "Deployment", "init", h["dc1_k8s"], spec=pod_spec(
        [good], initContainers=[container("setup", image="setup:1")]))
    debug = {"name": "debug", "image": "busybox"}
    ephemeral = workload(s, "Pod", "debug", h["dc1_k8s"], spec=pod_spec([good], ephemeralContainers=[debug]))
    found = messages(s)
    assert set(found) == {init.urn, ephemeral.urn}
    assert "init container 'setup' image 'setup:1' names no registry" in found[init.urn]
    assert "ephemeral container 'debug' image 'busybox' has no tag" in found[ephemeral.urn]


def test_deprecated_kinds_and_patches_are_checked_and_a_patch_without_image_is_not():
    s, h = sites()
    old = s.add("kubernetes:apps/v1beta2:Deployment", "old", {"metadata": {"name": "old", "namespace": "training"},
                "spec": {"template": {"spec": pod_spec([container(image="old:1")])}}}, provider=h["dc1_k8s"])
    patch = s.add("kubernetes:apps/v1:DeploymentPatch", "patch", {"metadata": {"name": "x", "namespace": "training"},
                  "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "new:latest"}]}}}},
                  provider=h["dc1_k8s"])
    s.add("kubernetes:apps/v1:DeploymentPatch", "replicas-only", {"metadata": {"name": "x", "namespace": "training"},
          "spec": {"template": {"spec": {"containers": [{"name": "main", "resources": {}}]}}}}, provider=h["dc1_k8s"])
    assert pairs(run(RULE, s, config())) == {(RULE, old.urn), (RULE, patch.urn)}


def test_site_comes_from_lineage_not_from_labels():
    """A pod on the on-prem cluster that says it is on AWS (node selector, label) still pulls from on-prem."""
    s, h = sites()
    liar = workload(s, "Deployment", "liar", h["dc1_k8s"], labels={"finml.io/site": "aws-eu-central-1"},
                    spec=pod_spec([container(image=f"{ECR}/finml/app:1")], site="aws:eu-central-1"))
    found = messages(s)
    assert set(found) == {liar.urn} and "not from its own site's registry registry.fra-dc1" in found[liar.urn]


def test_fails_closed_without_site_or_registries_but_a_digest_needs_neither():
    s, h = sites()
    orphan_k8s = s.k8s_provider("orphan-k8s", None)
    orphan = workload(s, "Deployment", "orphan", orphan_k8s, spec=pod_spec([container(image=f"{DC1}/finml/app:1")]))
    pinned = workload(s, "Deployment", "pinned", orphan_k8s, spec=pod_spec([container(image=f"app@{DIGEST}")]))
    found = messages(s)
    assert set(found) == {orphan.urn}
    assert "site cannot be derived" in found[orphan.urn] and "failing closed" in found[orphan.urn]
    assert pinned.urn not in found

    s, h = sites()
    tagged = on(s, h, "onprem", "tagged", f"{DC1}/finml/app:1")
    digest = on(s, h, "onprem", "digest", f"app@{DIGEST}")
    found = messages(s, CONFIG)  # the harness default config: no imageRegistries
    assert set(found) == {tagged.urn} and "no `imageRegistries`" in found[tagged.urn]
    assert digest.urn not in found
    found = messages(s, {})  # no policy config at all
    assert set(found) == {tagged.urn} and "finml policy config --stack NAME" in found[tagged.urn]
    # a registry table without this site fails closed too
    found = messages(s, config({k: v for k, v in REGISTRIES.items() if k != "onprem:fra-dc1"}))
    assert set(found) == {tagged.urn} and "site onprem:fra-dc1 has no image registry" in found[tagged.urn]


def test_registry_not_declared_immutable_or_not_the_sites_ecr():
    s, h = sites()
    dc1 = on(s, h, "onprem", "dc1", f"{DC1}/finml/app:1")
    eu = on(s, h, "aws", "eu", f"{ECR}/finml/app:1")
    mutable_dc1 = dict(REGISTRIES, **{"onprem:fra-dc1": dict(REGISTRIES["onprem:fra-dc1"], immutableTags=False)})
    found = messages(s, config(mutable_dc1))
    assert set(found) == {dc1.urn} and "does not declare tag-immutable" in found[dc1.urn]
    not_ecr = dict(REGISTRIES, **{"aws:eu-central-1": dict(REGISTRIES["onprem:fra-dc1"], kind="declared")})
    other = on(s, h, "aws", "other", f"{DC1}/finml/app:1")
    found = messages(s, config(not_ecr))
    assert set(found) == {eu.urn, other.urn}
    assert "must be its ECR" in found[other.urn], found  # the site's declared host is not an ECR registry
    assert "not from its own site's registry registry.fra-dc1" in found[eu.urn], found
    found = messages(s, config(accounts=("999999999999",)))
    assert set(found) == {eu.urn, other.urn} and "not one of this stack's accounts" in found[eu.urn]
    assert "comes from the registry of onprem:fra-dc1" in found[other.urn]


def test_unknown_values_fail_closed():
    s, h = sites()
    unknown_image = on(s, h, "onprem", "unknown-image", UNKNOWN)
    unknown_list = workload(s, "Deployment", "unknown-list", h["dc1_k8s"], spec=pod_spec(UNKNOWN))
    repo = s.add("aws:ecr/repository:Repository", "later", {"name": "finml/later", "imageTagMutability": UNKNOWN},
                 provider=next(r for r in s.resources if r.name == "eu-aws"))
    unknown_mutability = on(s, h, "aws", "unknown-mutability", f"{ECR}/finml/later:1")
    found = messages(s)
    assert set(found) == {unknown_image.urn, unknown_list.urn, unknown_mutability.urn}
    assert all("failing closed" in m for m in found.values()), found
    assert repo.urn not in found


def test_not_applicable_without_workloads():
    s, _ = sites()
    assert run(RULE, s, config()) == []


@pytest.mark.parametrize("image,host,repository,tag,digest", [
    ("app", None, "app", None, None),
    ("team/app:1", None, "team/app", "1", None),
    ("registry.example.internal:5000/a/b:1.0", "registry.example.internal:5000", "a/b", "1.0", None),
    ("localhost/a:1", "localhost", "a", "1", None),
    (f"h.example/a:1@{DIGEST}", "h.example", "a", "1", DIGEST),
])
def test_reference_parsing(image, host, repository, tag, digest):
    ref, problem = parse_reference(image)
    assert problem is None and (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)


def test_pack_config_rejects_bad_registries():
    with pytest.raises(ValueError, match=r"image_registries.aws:us-east-1: 'aws:us-east-1' is not a declared site"):
        config({"aws:us-east-1": REGISTRIES["aws:eu-central-1"]})
    with pytest.raises(ValueError, match=r"image_registries.onprem:fra-dc1.kind: 'harbor'; allowed: ecr, declared"):
        config({"onprem:fra-dc1": dict(REGISTRIES["onprem:fra-dc1"], kind="harbor")})
    with pytest.raises(ValueError, match=r"needs exactly host, prefix, kind and immutableTags"):
        config({"onprem:fra-dc1": {"host": DC1}})
