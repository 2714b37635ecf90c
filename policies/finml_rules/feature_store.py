"""Feature-store residency down to the feature view.

The program registers every feature view a site's feature store holds as a ``finml:ml:FeatureView`` under its
``finml:workloads:FeatureStore``, with its classification and its data source (``source.uri``). A view's site is
never read from the view: it is the site of the cluster its store's Kubernetes objects are deployed to (their
provider lineage), which must be one site.

- residency-feature-view: the view's classification is allowed on that site.
- residency-feature-view-source: the view's data source lies inside that site — ``s3://<bucket>/…`` must name a bucket
  of this stack whose own site is the view's site (and allowed for the source's classification);
  ``pvc://<namespace>/<claim>/…`` must name a PersistentVolumeClaim of the same store, i.e. on the same cluster.
  Any other location, or one unknown during preview, fails closed.
"""

from __future__ import annotations

from typing import Any, Optional

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    K8S_PVC, S3_BUCKET_TYPES, UNKNOWN, Derived, StackIndex, describe, failing_closed, get, namespace_name,
    parse_classification, require_residency, residency_schema, stack_policy, violation_message,
)

FEATURE_VIEW = "finml:ml:FeatureView"
FEATURE_STORE = "finml:workloads:FeatureStore"
SCHEMA = residency_schema()


def _store_of(index: StackIndex, view: Any) -> Optional[Any]:
    ancestor = view.parent
    while ancestor is not None and ancestor.resource_type != FEATURE_STORE:
        ancestor = ancestor.parent
    return index.by_urn.get(ancestor.urn) if ancestor is not None else None


def view_site(index: StackIndex, view: Any, residency: Any) -> Derived:
    """The one site of the cluster the view's feature store deploys its Kubernetes objects to."""
    store = _store_of(index, view)
    if store is None:
        return Derived(None, f"it is not part of a {FEATURE_STORE}")
    objects = [r for r in index.descendants(store) if r.resource_type.startswith("kubernetes:")
               and not r.resource_type.startswith("pulumi:providers:")]
    if not objects:
        return Derived(None, f"its feature store '{store.name}' deploys no Kubernetes objects, so its cluster is "
                             "unknown")
    sites = {}
    for obj in objects:
        derived = index.k8s_site(obj, residency)
        if not derived.known:
            return Derived(None, f"{describe(obj)} of its feature store has no derivable site: {derived.reason}")
        sites[derived.value] = obj
    if len(sites) > 1:
        return Derived(None, f"its feature store '{store.name}' deploys to several sites ({', '.join(sorted(sites))})")
    return Derived(next(iter(sites)))


def _views(index: StackIndex) -> list[Any]:
    return index.of_type(FEATURE_VIEW)


def feature_view_residency(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    views = _views(index)
    residency = require_residency(args, report, views)
    if residency is None:
        return
    for view in views:
        with failing_closed(report, view.urn, describe(view)):
            props = index.props(view)
            cls = parse_classification(get(props, "classification"), "classification")
            site = view_site(index, view, residency)
            name = get(props, "name")
            what = f"{describe(view)} (feature view {name!r})"
            if not cls.known:
                report(violation_message(f"{what}: {cls.reason}; failing closed.", site.value), view.urn)
            elif not site.known:
                report(violation_message(f"{what} has no derivable site: {site.reason}; failing closed.", None,
                                         cls.value), view.urn)
            elif not residency.allowed(site.value, cls.value):
                report(violation_message(
                    f"{what} is deployed to {site.value}, which is not allowed for {cls.value} data (allowed: "
                    f"{residency.patterns(cls.value)}).", site.value, cls.value), view.urn)


def _source_problem(index: StackIndex, view: Any, site: str, residency: Any) -> Optional[str]:
    props = index.props(view)
    uri = get(props, "source", "uri")
    source_cls = parse_classification(get(props, "source", "classification"), "source.classification")
    if uri is UNKNOWN:
        return "its data source location is unknown during preview (failing closed)"
    if not isinstance(uri, str) or "://" not in uri:
        return f"its data source location {uri!r} is not a URI this pack can place (s3:// or pvc://)"
    scheme, rest = uri.split("://", 1)
    if scheme == "s3":
        bucket = rest.split("/", 1)[0]
        buckets = [b for b in index.of_type(*S3_BUCKET_TYPES) if get(index.props(b), "bucket") == bucket]
        if not buckets:
            return f"its data source bucket {bucket!r} is not a bucket of this stack, so its site is unknown"
        for b in buckets:
            derived = index.aws_site(b)
            if not derived.known:
                return f"its data source bucket {bucket!r} has no derivable site: {derived.reason}"
            if derived.value != site:
                return f"its data source bucket {bucket!r} is at {derived.value}, outside the view's site {site}"
            if source_cls.known and not residency.allowed(derived.value, source_cls.value):
                return (f"its data source bucket {bucket!r} is at {derived.value}, which is not allowed for "
                        f"{source_cls.value} data")
        return None
    if scheme == "pvc":
        parts = rest.split("/")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            return f"its data source location {uri!r} does not name pvc://<namespace>/<claim>/…"
        namespace, claim = parts[0], parts[1]
        store = _store_of(index, view)
        claims = [c for c in index.descendants(store) if c.resource_type == K8S_PVC
                  and get(index.props(c), "metadata", "name") == claim
                  and namespace_name(index.props(c)) == namespace]
        if not claims:
            return (f"its data source claim {namespace}/{claim} is not a PersistentVolumeClaim of its feature "
                    "store, so its site is unknown")
        for c in claims:
            derived = index.k8s_site(c, residency)
            if not derived.known or derived.value != site:
                return f"its data source claim {namespace}/{claim} is not on the view's site {site}"
        return None
    return f"its data source location {uri!r} uses scheme {scheme!r}, whose site this pack cannot derive"


def feature_view_source_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    views = _views(index)
    residency = require_residency(args, report, views)
    if residency is None:
        return
    for view in views:
        with failing_closed(report, view.urn, describe(view)):
            site = view_site(index, view, residency)
            cls = get(index.props(view), "classification")
            cls = cls if isinstance(cls, str) else None
            if not site.known:
                report(violation_message(f"{describe(view)}: the site its data source must be in cannot be derived: "
                                         f"{site.reason}; failing closed.", None, cls), view.urn)
                continue
            problem = _source_problem(index, view, site.value, residency)
            if problem:
                report(violation_message(f"{describe(view)}: {problem}.", site.value, cls), view.urn)


POLICIES: list = [
    stack_policy("residency-feature-view",
                 "Ensure every feature view is deployed only to a site allowed for its classification.",
                 feature_view_residency, Severity.CRITICAL,
                 "Deploy the feature store's views only on sites the residency rules allow for their "
                 "classification (lower the store's classification or move it).", SCHEMA),
    stack_policy("residency-feature-view-source",
                 "Ensure every feature view's data source lies inside the site the view is deployed to.",
                 feature_view_source_site, Severity.CRITICAL,
                 "Keep offline-store sources in a bucket or volume of the view's own site.", SCHEMA),
]
