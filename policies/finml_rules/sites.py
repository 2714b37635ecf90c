"""How sensitive and where: classification (AWS tag, Kubernetes label, ML component prop), sites (AWS: own
``region`` prop, else the explicit provider's) and the residency policy config."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from pulumi_policy import PolicyConfigSchema

from .resource_types import *  # noqa: F401,F403 - the shared vocabulary
from .resource_types import _TEMPLATE_PATHS
from . import engine
from .values import UNKNOWN, describe, failing_closed, get, plain, violation_message

# --- classification --------------------------------------------------------------------------------

def rank(classification: str) -> int:
    return CLASSIFICATIONS.index(classification)


def max_classification(values: Iterable[Optional[str]]) -> Optional[str]:
    known = [v for v in values if v in CLASSIFICATIONS]
    return max(known, key=rank) if known else None


@dataclass(frozen=True)
class Derived:
    """A derived fact (site or classification): ``value`` when known, else ``reason`` says why not."""

    value: Optional[str]
    reason: Optional[str] = None

    @property
    def known(self) -> bool:
        return self.value is not None


def parse_classification(raw: Any, where: str) -> Derived:
    if raw is None:
        return Derived(None, f"it has no classification ({where})")
    if raw is UNKNOWN:
        return Derived(None, f"its classification ({where}) is unknown during preview")
    if raw not in CLASSIFICATIONS:
        return Derived(None, f"its classification {raw!r} ({where}) is not one of {', '.join(CLASSIFICATIONS)}")
    return Derived(raw)


def k8s_labels(props: Mapping[str, Any]) -> Any:
    return get(props, "metadata", "labels", default={})


def pod_template_labels(resource_type: str, props: Mapping[str, Any]) -> Any:
    path = _TEMPLATE_PATHS.get(resource_type)
    if not path:
        return {}
    return get(props, *path, "metadata", "labels", default={})


def pod_template_annotations(resource_type: str, props: Mapping[str, Any]) -> Any:
    path = _TEMPLATE_PATHS.get(resource_type)
    if path is None:
        return {}
    return get(props, *path, "metadata", "annotations", default={})


def k8s_label_values(resource_type: str, props: Mapping[str, Any], key: str) -> Any:
    """Every value of label ``key`` on the object's metadata and on its pod template (in that order);
    ``UNKNOWN`` when either label map or a value is unknown during preview."""
    values = []
    for labels in (k8s_labels(props), pod_template_labels(resource_type, props)):
        if labels is UNKNOWN:
            return UNKNOWN
        value = get(labels, key)
        if value is UNKNOWN:
            return UNKNOWN
        if value is not None:
            values.append(value)
    return values


def k8s_label(resource_type: str, props: Mapping[str, Any], key: str) -> Any:
    """A label from the object's metadata, falling back to its pod template's labels (presence checks only:
    rules that act on the value use ``k8s_label_values`` so a differing template label is not ignored)."""
    values = k8s_label_values(resource_type, props, key)
    if values is UNKNOWN:
        return UNKNOWN
    return values[0] if values else None


def classification_of(resource_type: str, props: Mapping[str, Any]) -> Derived:
    """Classification as the resource declares it (tag, label or ML component prop)."""
    if resource_type.startswith("aws:"):
        tags = get(props, "tags", default={})
        if tags is UNKNOWN:
            return Derived(None, "its tags are unknown during preview")
        return parse_classification(get(tags, TAG_CLASSIFICATION), f"tag {TAG_CLASSIFICATION}")
    if resource_type.startswith("kubernetes:"):
        # The highest of the object's label and its pod template's label: the pods carry the data.
        where = f"label {LABEL_CLASSIFICATION}"
        values = k8s_label_values(resource_type, props, LABEL_CLASSIFICATION)
        if values is UNKNOWN:
            return parse_classification(UNKNOWN, where)
        if not values:
            return parse_classification(None, where)
        parsed = [parse_classification(v, where) for v in values]
        bad = next((p for p in parsed if not p.known), None)
        return bad or Derived(max_classification(p.value for p in parsed))
    return parse_classification(get(props, "classification"), "prop classification")


def is_data_bearing(resource_type: str) -> bool:
    return resource_type in AWS_DATA_TYPES or resource_type in K8S_DATA_TYPES or resource_type in ML_TYPES


# --- sites -------------------------------------------------------------------------------------------

_SITE_RE = re.compile(r"^(aws:[a-z]{2}(-[a-z]+)+-\d+|onprem:[a-z0-9][a-z0-9-]*)$")


def is_valid_site(site: Any) -> bool:
    return isinstance(site, str) and bool(_SITE_RE.match(site))


def aws_site(props: Mapping[str, Any], provider: Any) -> Derived:
    """``aws:<region>`` from the resource's own ``region`` prop, else its explicit AWS provider's region."""
    region = get(props, "region")
    if region is UNKNOWN:
        return Derived(None, "its `region` is unknown during preview")
    if isinstance(region, str) and region:
        return Derived(f"aws:{region}")
    if provider is None:
        return Derived(None, "it has no explicit AWS provider")
    if provider.resource_type != AWS_PROVIDER:
        return Derived(None, f"its provider '{provider.name}' is a {provider.resource_type}, not an AWS provider")
    provider_region = get(plain(provider.props), "region")
    if provider_region is UNKNOWN:
        return Derived(None, f"the region of its provider '{provider.name}' is unknown during preview")
    if not isinstance(provider_region, str) or not provider_region:
        return Derived(None, f"its provider '{provider.name}' has no region")
    return Derived(f"aws:{provider_region}")


_ARN_REGION_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:([a-z]{2}(?:-[a-z]+)+-\d+):")


def region_site_from_arn(arn: Any) -> Optional[str]:
    """``aws:<region>`` from an ARN that carries a region (KMS, backup vault); None otherwise (S3 ARNs)."""
    if not isinstance(arn, str) or arn is UNKNOWN:
        return None
    match = _ARN_REGION_RE.match(arn)
    return f"aws:{match.group(1)}" if match else None


# --- residency config --------------------------------------------------------------------------------

RESIDENCY_CONFIG_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "residency": {
        "type": "object",
        "description": "classification -> allowed site patterns (exact sites or globs such as aws:eu-* or onprem:*)",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    },
    "sites": {
        "type": "array",
        "description": "the sites this stack declares (aws:<region> or onprem:<site-id>)",
        "items": {"type": "string"},
    },
}
EXEMPT_NAMESPACES_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "exemptNamespaces": {
        "type": "array",
        "description": "namespaces whose system workloads are exempt (kube-system: the NVIDIA device plugin "
                       "needs hostPath)",
        "items": {"type": "string"},
        "default": list(DEFAULT_EXEMPT_NAMESPACES),
    },
}


def residency_schema(with_exempt_namespaces: bool = False) -> PolicyConfigSchema:
    properties = dict(RESIDENCY_CONFIG_SCHEMA_PROPERTIES)
    if with_exempt_namespaces:
        properties.update(EXEMPT_NAMESPACES_SCHEMA_PROPERTIES)
    return PolicyConfigSchema(properties=properties)


def exempt_schema() -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=dict(EXEMPT_NAMESPACES_SCHEMA_PROPERTIES))


@dataclass(frozen=True)
class Residency:
    residency: Mapping[str, tuple[str, ...]]
    sites: tuple[str, ...]

    def allowed(self, site: Optional[str], classification: Optional[str]) -> bool:
        if site is None or classification is None:
            return False
        return any(fnmatch.fnmatchcase(site, pattern) for pattern in self.residency.get(classification, ()))

    def patterns(self, classification: str) -> str:
        return ", ".join(self.residency.get(classification, ())) or "none"

    def declared(self, site: Optional[str]) -> bool:
        return site in self.sites


def residency_config(config: Mapping[str, Any]) -> tuple[Optional[Residency], Optional[str]]:
    """The residency config, or why it is unusable (the rule then fails every resource it applies to). Parsed once
    per request and config object (the SDK hands each rule a shallow copy of the same values)."""
    raw = config or {}
    residency, sites = raw.get("residency"), raw.get("sites")
    key = (id(residency), id(sites))
    hit = _PARSED.get(key)
    if hit is None or hit[0] is not residency or hit[1] is not sites:
        if len(_PARSED) > 512:  # configs are replaced on every Configure: keep the table small
            _PARSED.clear()
        hit = (residency, sites, _residency_config(raw))
        _PARSED[key] = hit
    return hit[2]


# (residency object, sites object) -> parsed; the entry holds both objects, so their ids cannot be reused while it
# lives. The values come from Configure and are never mutated.
_PARSED: dict[tuple[int, int], tuple[Any, Any, Any]] = {}


def _residency_config(config: Mapping[str, Any]) -> tuple[Optional[Residency], Optional[str]]:
    config = plain(config)
    residency, sites = config.get("residency"), config.get("sites")
    if not isinstance(residency, dict) or not residency or not isinstance(sites, list):
        return None, f"the policy config has no `residency`/`sites` for this rule; {CONFIG_HINT}"
    for classification, patterns in residency.items():
        if classification not in CLASSIFICATIONS:
            return None, (f"the policy config `residency` names unknown classification {classification!r}; "
                          f"{CONFIG_HINT}")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            return None, f"the policy config `residency.{classification}` must be a list of site patterns"
    if not all(isinstance(s, str) for s in sites):
        return None, "the policy config `sites` must be a list of sites"
    return Residency({k: tuple(v) for k, v in residency.items()}, tuple(sites)), None


def exempt_namespaces(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = plain(config or {}).get("exemptNamespaces")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return DEFAULT_EXEMPT_NAMESPACES


# --- the residency rules' shared frame: config required, each resource fail-closed, placement checked ----------

def require_residency(args: Any, report: Any, applicable: Iterable[Any]) -> Optional[Residency]:
    """The residency config; when missing or invalid, every applicable resource fails with the reason."""
    residency, problem = residency_config(args.get_config())
    if residency is None:
        for resource in applicable:
            report(f"{describe(resource)} cannot be checked: {problem}.", resource.urn)
    return residency


def each_resource(args: Any, report: Any, resources: Sequence[Any],
                  check: Callable[[Any, Residency], None]) -> None:
    """The frame the residency stack rules share: without a usable residency config every resource fails with the
    reason (``require_residency``); otherwise ``check(resource, residency)`` decides each resource inside its own
    fail-closed guard, so a resource that cannot be decided is a violation and never hides the others."""
    residency = require_residency(args, report, resources)
    if residency is None:
        return
    for resource in resources:
        with failing_closed(report, resource.urn, describe(resource)):
            check(resource, residency)


def underivable_site(what: str, site: Derived, cls: Optional[str] = None) -> str:
    """The fail-closed message for ``what`` whose site cannot be derived (``site.reason`` says why)."""
    return violation_message(f"{what} has no derivable site: {site.reason}; failing closed.", None, cls)


def not_allowed(what: str, site: str, cls: str, residency: Residency) -> str:
    return violation_message(
        f"{what} is at {site}, which is not allowed for {cls} data (allowed: {residency.patterns(cls)}).", site, cls)


def check_placement(report: Any, urn: str, what: str, site: Derived, cls: Optional[str],
                    residency: Residency) -> None:
    """``what`` (reported on ``urn``) must have a derivable site that ``residency`` allows for ``cls``."""
    if not site.known:
        report(underivable_site(what, site, cls), urn)
    elif not residency.allowed(site.value, cls):
        report(not_allowed(what, site.value, cls, residency), urn)
