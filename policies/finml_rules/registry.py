"""Model registry rules: a registry (its database, artifact store and audit bucket) is data at the registry's
classification, and may only exist on a site that classification may use.

The registry component (`finml:workloads:ModelRegistry`) declares `site` and `classification`. The site is never
taken from that prop alone: it is derived from the registry's own resources (AWS children by their provider or
region, Kubernetes children by their cluster) and must agree with it.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    UNKNOWN,
    Derived,
    Residency,
    StackIndex,
    classification_of,
    describe,
    get,
    is_data_bearing,
    parse_classification,
    residency_schema,
    stack_policy,
    violation_message,
    each_resource,
    underivable_site,
)

MODEL_REGISTRY = "finml:workloads:ModelRegistry"
_SITED_PREFIXES = ("aws:", "kubernetes:")


def _registry_site(index: StackIndex, registry: Any, residency: Any) -> Derived:
    """The one site all of the registry's resources are at; unknown if none is derivable or they disagree."""
    sites: dict[str, str] = {}
    for child in index.descendants(registry):
        if not child.resource_type.startswith(_SITED_PREFIXES) or child.resource_type.startswith("pulumi:"):
            continue
        site = index.site(child, residency)
        if site.known:
            sites.setdefault(site.value, describe(child))
    if not sites:
        return Derived(None, "none of its resources has a derivable site")
    if len(sites) > 1:
        shown = "; ".join(f"{s} ({what})" for s, what in sorted(sites.items()))
        return Derived(None, f"its resources are on different sites: {shown}")
    return Derived(next(iter(sites)))


def registry_site_allowed(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)

    def check(registry: Any, residency: Residency) -> None:
        props = index.props(registry)
        cls = parse_classification(get(props, "classification"), "prop classification")
        declared = get(props, "site")
        if not cls.known:
            report(violation_message(f"{describe(registry)}: {cls.reason}; failing closed."), registry.urn)
            return
        site = _registry_site(index, registry, residency)
        if not site.known:
            report(underivable_site(describe(registry), site, cls.value), registry.urn)
            return
        if declared is not UNKNOWN and declared != site.value:
            report(violation_message(f"{describe(registry)} declares site {declared!r} but its resources are "
                                     f"at {site.value}.", site.value, cls.value), registry.urn)
        if not residency.allowed(site.value, cls.value):
            report(violation_message(
                f"{describe(registry)} holds {cls.value} models at {site.value}, which is not allowed for "
                f"{cls.value} data (allowed: {residency.patterns(cls.value)}).", site.value, cls.value),
                registry.urn)

    each_resource(args, report, index.of_type(MODEL_REGISTRY), check)


def registry_data_classified(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every data-bearing resource of a registry (database, artifact bucket/volume, audit bucket) carries a
    classification at least the registry's, so the residency and encryption rules judge it as registry data."""
    from .common import rank

    index = StackIndex.of(args)

    def check(registry: Any, _residency: Residency) -> None:
        cls = parse_classification(get(index.props(registry), "classification"), "prop classification")
        if not cls.known:
            return  # residency-model-registry-site reports it
        for child in index.descendants(registry):
            if not is_data_bearing(child.resource_type):
                continue
            child_cls = classification_of(child.resource_type, index.props(child))
            if not child_cls.known:
                report(violation_message(f"{describe(child)} of {describe(registry)}: {child_cls.reason}; "
                                         "failing closed.", None, cls.value), child.urn)
            elif rank(child_cls.value) < rank(cls.value):
                report(violation_message(f"{describe(child)} is labelled {child_cls.value} but holds "
                                         f"{cls.value} registry data of {describe(registry)}.", None,
                                         cls.value), child.urn)

    # Like every residency rule, no pack config means no verdict: fail closed (the map is not needed here).
    each_resource(args, report, index.of_type(MODEL_REGISTRY), check)


POLICIES: list = [
    stack_policy("residency-model-registry-site",
                 "Ensure a model registry is only placed on a site its classification may use, with the site "
                 "derived from the registry's own resources.",
                 registry_site_allowed, Severity.CRITICAL,
                 "Host the registry on a site the policy config `residency` allows for its classification "
                 "(finml:platform.registry.sites), or lower the classification it is meant to hold.",
                 residency_schema()),
    stack_policy("residency-model-registry-classified",
                 "Ensure the registry's database, artifact storage and audit bucket carry the registry's "
                 "classification.",
                 registry_data_classified, Severity.HIGH,
                 "Tag (AWS) or label (Kubernetes) every data-bearing registry resource with the registry's "
                 "classification.",
                 residency_schema()),
]
