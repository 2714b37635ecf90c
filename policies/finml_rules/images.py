"""Container images are pinned: by digest, or by a fixed tag from the image registry of the site the pod runs on,
whose tags cannot be overwritten.

Every container (init, regular, ephemeral) of every pod template the pack knows (pods.py's workload types: Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod, PodTemplate, ReplicationController, their patches and the
deprecated API versions) must name its image either as

- ``<name>@sha256:<64 hex>`` (with or without a tag): the digest fixes the content, from any registry; or
- ``<site registry host>/<repository>:<tag>``, where the site is the object's cluster's site (derived from lineage as
  every residency rule does, never from labels), the host is that site's registry from the policy config
  (``imageRegistries``, generated from the stack's ``sites.<id>.imageRegistry``), the tag is not ``latest``, and the
  tag is immutable there:
    - on-prem (kind ``declared``): the stack declares ``immutableTags: true`` for the registry's ``prefix`` (e.g. a
      Harbor tag immutability rule) and the repository lies under that prefix; the pack trusts the declaration;
    - AWS (kind ``ecr``): the registry is the ECR of the site's region (of a stack account, where ``accountIds`` is
      configured), and the stack itself creates the repository there with ``imageTagMutability: IMMUTABLE``; a
      repository the pack cannot see cannot be shown immutable, so it fails.

No tag (which pulls ``latest``), ``latest``, no registry (a public default registry), another site's registry or any
other registry with a tag is a violation naming the container and the image. A tag-pinned image whose site cannot be
derived, or whose site has no registry in the policy config, fails closed; a digest-pinned one needs no site.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from pulumi_policy import PolicyConfigSchema, ReportViolation, Severity, StackValidationArgs

from .common import (
    CONFIG_HINT, K8S_WORKLOAD_TYPES, RESIDENCY_CONFIG_SCHEMA_PROPERTIES, UNKNOWN, StackIndex, as_list,
    describe, failing_closed, get, is_valid_site, plain, pod_spec, residency_config, stack_policy,
)

ECR_REPOSITORY = "aws:ecr/repository:Repository"
IMMUTABLE = "IMMUTABLE"
REGISTRY_KINDS = ("ecr", "declared")
_CONTAINER_KINDS = (("initContainers", "init container"), ("containers", "container"),
                    ("ephemeralContainers", "ephemeral container"))
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# OCI distribution names: lower-case path components; a tag of up to 128 word characters, dots and dashes.
_PATH_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ECR_HOST_RE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com$")

IMAGE_REGISTRIES_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "imageRegistries": {
        "type": "object",
        "description": "site -> its image registry {host, prefix, kind: ecr|declared, immutableTags} (from the "
                       "stack's sites.<id>.imageRegistry; `finml policy config` writes it)",
        "additionalProperties": {"type": "object"},
    },
    "accountIds": {
        "type": "array", "items": {"type": "string"},
        "description": "the stack's AWS account ids: an AWS site's ECR registry must belong to one of them",
    },
}


@dataclass(frozen=True)
class Registry:
    host: str
    prefix: str
    kind: str
    immutable_tags: bool


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``host`` None when the name carries no registry (a default public registry)."""

    host: Optional[str]
    repository: str
    tag: Optional[str]
    digest: Optional[str]


def parse_reference(image: str) -> tuple[Optional[Reference], Optional[str]]:
    """(reference, None) or (None, why it is not a valid image reference)."""
    name, digest = image, None
    if "@" in image:
        name, digest = image.split("@", 1)
        if not _DIGEST_RE.match(digest):
            return None, f"has a malformed digest {digest!r} (allowed: sha256:<64 lower-case hex>)"
    host: Optional[str] = None
    rest = name
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, rest = first.lower(), remainder
    tag: Optional[str] = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            return None, f"has a malformed tag {tag!r}"
    if not rest or not _PATH_RE.match(rest):
        return None, f"has a malformed repository name {rest!r}"
    return Reference(host, rest, tag, digest), None


def _registries(config: Any) -> tuple[Optional[dict[str, Registry]], Optional[str]]:
    raw = config.get("imageRegistries")
    if raw is None:
        return None, f"the policy config has no `imageRegistries`; {CONFIG_HINT}"
    if not isinstance(raw, dict):
        return None, "the policy config `imageRegistries` must map sites to registries"
    out: dict[str, Registry] = {}
    for site, entry in raw.items():
        host, prefix, kind = get(entry, "host"), get(entry, "prefix"), get(entry, "kind")
        immutable = get(entry, "immutableTags")
        if not is_valid_site(site) or not isinstance(host, str) or not host or not isinstance(prefix, str) \
                or kind not in REGISTRY_KINDS or not isinstance(immutable, bool):
            return None, (f"the policy config `imageRegistries.{site}` is malformed (needs host, prefix, kind "
                          f"{'|'.join(REGISTRY_KINDS)}, immutableTags); {CONFIG_HINT}")
        out[site] = Registry(host.lower(), prefix, kind, immutable)
    return out, None


def _ecr_repositories(index: StackIndex) -> dict[tuple[str, str], list[Any]]:
    """(site, repository name) -> the stack's ECR repositories of that name there."""
    def build() -> dict[tuple[str, str], list[Any]]:
        table: dict[tuple[str, str], list[Any]] = {}
        for repository in index.of_type(ECR_REPOSITORY):
            name = get(index.props(repository), "name")
            site = index.aws_site(repository)
            if isinstance(name, str) and name is not UNKNOWN and site.known:
                table.setdefault((site.value, name), []).append(repository)
        return table
    return index.memo(("image-pinned", "ecr-repositories"), build)


class _Judge:
    """Decides one stack's images; derives each object's site at most once, and only for tag-pinned images."""

    def __init__(self, index: StackIndex, config: Any) -> None:
        self.index = index
        self.residency, self.residency_problem = residency_config(config)
        self.registries, self.registries_problem = _registries(config)
        self.accounts = tuple(a for a in as_list(config.get("accountIds")) if isinstance(a, str)) \
            if as_list(config.get("accountIds")) is not UNKNOWN else ()

    def problem(self, image: Any, site_of: Any) -> Optional[str]:
        if image is UNKNOWN:
            return "is unknown during preview; failing closed"
        if not isinstance(image, str) or not image.strip():
            return "is missing (every container must name a pinned image)"
        ref, malformed = parse_reference(image)
        if ref is None:
            return malformed
        if ref.digest is not None:
            return None
        if ref.tag is None:
            return "has no tag, so it pulls :latest, which can change under the same name; pin a digest or a tag"
        if ref.tag == "latest":
            return "uses the :latest tag, which can change under the same name; pin a digest or a release tag"
        site, why = site_of()
        if site is None:
            return f"cannot be checked: the object's site cannot be derived ({why}); failing closed"
        if self.registries is None:
            return f"cannot be checked: {self.registries_problem}"
        registry = self.registries.get(site)
        if registry is None:
            return (f"cannot be checked: site {site} has no image registry in the policy config "
                    f"`imageRegistries`; {CONFIG_HINT}")
        if ref.host is None:
            return (f"names no registry, so it resolves to a public default registry; pull it from the site's "
                    f"registry {registry.host} or pin a digest")
        if ref.host != registry.host:
            others = sorted(s for s, r in self.registries.items() if r.host == ref.host and s != site)
            whose = f"the registry of {', '.join(others)}" if others else "a registry that is not the site's"
            return (f"comes from {whose} ({ref.host}), not from its own site's registry {registry.host} ({site}); "
                    f"a tag elsewhere is not pinned: use the site's registry or pin a digest")
        if site.startswith("aws:"):
            return self._ecr_problem(site, registry, ref)
        if registry.kind != "declared" or not registry.immutable_tags:
            return (f"comes from {registry.host}, which the stack does not declare tag-immutable "
                    f"(imageRegistry.immutableTags); pin a digest")
        if not (ref.repository + "/").startswith(registry.prefix.rstrip("/") + "/"):
            return (f"lies outside the prefix {registry.prefix}/ whose tags {registry.host} declares immutable; "
                    f"push it under {registry.prefix}/ or pin a digest")
        return None

    def _ecr_problem(self, site: str, registry: Registry, ref: Reference) -> Optional[str]:
        region = site.split(":", 1)[1]
        match = _ECR_HOST_RE.match(registry.host)
        if registry.kind != "ecr" or match is None or match.group(2) != region:
            return (f"comes from {registry.host}, but the registry of AWS site {site} must be its ECR "
                    f"(<account>.dkr.ecr.{region}.amazonaws.com)")
        if self.accounts and match.group(1) not in self.accounts:
            return (f"comes from the ECR of account {match.group(1)}, which is not one of this stack's accounts "
                    f"({', '.join(self.accounts)})")
        found = _ecr_repositories(self.index).get((site, ref.repository), [])
        if not found:
            return (f"is in ECR repository {ref.repository!r}, which this stack does not create at {site}, so its "
                    f"tag immutability cannot be shown; create it with imageTagMutability: {IMMUTABLE} or pin a "
                    f"digest")
        for repository in found:
            mutability = get(self.index.props(repository), "imageTagMutability")
            if mutability is UNKNOWN:
                return (f"is in ECR repository {ref.repository!r} whose imageTagMutability is unknown during "
                        f"preview; failing closed")
            if mutability != IMMUTABLE:
                shown = "not set (ECR defaults to MUTABLE)" if mutability is None else repr(mutability)
                return (f"is in ECR repository {ref.repository!r} whose imageTagMutability is {shown}; a tag there "
                        f"can be overwritten: set {IMMUTABLE} or pin a digest")
        return None


def image_pinned(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    workloads = index.of_type(*K8S_WORKLOAD_TYPES)
    if not workloads:
        return
    judge = _Judge(index, plain(args.get_config() or {}))
    for resource in workloads:
        with failing_closed(report, resource.urn, describe(resource)):
            spec = pod_spec(resource.resource_type, index.props(resource))
            if spec is UNKNOWN:
                report(f"{describe(resource)}: its pod spec is unknown during preview; failing closed.", resource.urn)
                continue
            if spec is None:
                continue
            derived: list[tuple[Optional[str], Optional[str]]] = []

            def site_of(resource: Any = resource, derived: list = derived) -> tuple[Optional[str], Optional[str]]:
                if not derived:
                    if judge.residency is None:
                        derived.append((None, judge.residency_problem))
                    else:
                        site = index.k8s_site(resource, judge.residency)
                        derived.append((site.value, site.reason))
                return derived[0]

            patch = resource.resource_type.endswith("Patch")
            for key, kind in _CONTAINER_KINDS:
                items = as_list(get(spec, key))
                if items is UNKNOWN:
                    report(f"{describe(resource)}: its {key} are unknown during preview; failing closed.",
                           resource.urn)
                    continue
                for container in items:
                    if container is UNKNOWN:
                        report(f"{describe(resource)}: a {kind} is unknown during preview; failing closed.",
                               resource.urn)
                        continue
                    name = str(get(container, "name", default="?"))
                    image = get(container, "image")
                    if patch and image is None:
                        continue  # a patch that does not set the image leaves it as it is
                    problem = judge.problem(image, site_of)
                    if problem:
                        shown = "" if image is UNKNOWN or not isinstance(image, str) else f" {image!r}"
                        report(f"{describe(resource)}: {kind} {name!r} image{shown} {problem}.", resource.urn)


_SCHEMA = PolicyConfigSchema(properties={**RESIDENCY_CONFIG_SCHEMA_PROPERTIES, **IMAGE_REGISTRIES_SCHEMA_PROPERTIES})

POLICIES: list = [
    stack_policy("k8s-image-pinned",
                 "Ensure every container image is pinned: by sha256 digest, or by a fixed tag from its own site's "
                 "registry whose tags are immutable (the site's IMMUTABLE ECR repositories, or an on-prem registry "
                 "declared tag-immutable).",
                 image_pinned, Severity.HIGH,
                 "Pull from the site's registry with a release tag (<site registry>/<prefix>/<image>:<tag>, see "
                 "sites.<id>.imageRegistry and workloads/images.py) or pin the image as name@sha256:<digest>.",
                 _SCHEMA),
]
