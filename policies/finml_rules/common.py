"""Shared derivations for the finml guardrails pack.

Everything a rule needs to decide *where* a resource lives and *how sensitive* it is comes from here (re-exported
from resource_types.py, values.py and sites.py, plus the Kubernetes helpers, the stack index and policy construction
below), so that every rule derives site and classification the same way:

- property access that never lets an unknown preview value escape (``plain``/``get``/``UNKNOWN``),
- site derivation (AWS: own ``region`` prop, else the explicit provider's; Kubernetes: the cluster
  component in the provider's lineage, never the object's own labels),
- classification order and lookup (AWS tag, Kubernetes label, ML component prop),
- residency policy config access and the violation message format the report parser relies on.

The pack is self-contained: nothing here imports from the repository outside ``policies/``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from pulumi_policy import PolicyConfigSchema, PolicyResource, ReportViolation

from . import engine
# The modules by subject; common re-exports them so a rule imports its helpers from one place.
from .resource_types import *  # noqa: F401,F403
from .resource_types import _TEMPLATE_PATHS
from .sites import *  # noqa: F401,F403
from .values import *  # noqa: F401,F403
from .values import _UNKNOWN_SENTINELS, _Unknown, _proxy  # noqa: F401 - tests and guards use them

# --- Kubernetes helpers ----------------------------------------------------------------------------

def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Any:
    """The pod spec of a workload (None when the type has none, UNKNOWN when it is unknown)."""
    path = _TEMPLATE_PATHS.get(resource_type)
    if path is None:
        return None
    return get(props, *path, "spec")


def containers(spec: Any) -> Any:
    """All containers (init, regular, ephemeral) of a pod spec; UNKNOWN if any list is unknown."""
    if spec is UNKNOWN:
        return UNKNOWN
    found: list[Any] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        items = as_list(get(spec, key))
        if items is UNKNOWN:
            return UNKNOWN
        found.extend(items)
    return found


def namespace_name(props: Mapping[str, Any]) -> Any:
    value = get(props, "metadata", "namespace")
    return "default" if value is None else value


# --- stack index -----------------------------------------------------------------------------------

class StackIndex:
    """Lookups over ``StackValidationArgs.resources``: plain props, lineage, references and derived sites."""

    def __init__(self, resources: Sequence[PolicyResource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in self.resources}
        self.children: dict[str, list[PolicyResource]] = defaultdict(list)
        self._by_type: dict[str, list[PolicyResource]] = defaultdict(list)
        for resource in self.resources:
            self._by_type[resource.resource_type].append(resource)
            if resource.parent is not None:
                self.children[resource.parent.urn].append(resource)
        self._props: dict[str, Any] = {}
        self._memo: dict[Any, Any] = {}

    @classmethod
    def of(cls, args: Any) -> "StackIndex":
        """The index of this stack request: built once per request and shared by every stack rule (see
        engine.py); built afresh when no request is running (direct calls in tests)."""
        return engine.cached(("stack-index",), lambda: cls(args.resources))

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Per-index memo for derived facts several rules need (e.g. which buckets a resource applies to)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def props(self, resource: Any) -> Any:
        if resource.urn not in self._props:
            self._props[resource.urn] = plain(resource.props)
        return self._props[resource.urn]

    def of_type(self, *types: str) -> list[PolicyResource]:
        if len(types) == 1:
            return list(self._by_type.get(types[0], ()))
        if len(set(types)) == len(types):  # distinct types: concatenate the per-type lists, in stack order
            wanted = {t for t in types if t in self._by_type}
            if len(wanted) <= 1:
                return [r for t in wanted for r in self._by_type[t]]
            order = self._order()
            return sorted((r for t in wanted for r in self._by_type[t]), key=lambda r: order[r.urn])
        wanted = set(types)
        return [r for r in self.resources if r.resource_type in wanted]

    def _order(self) -> dict[str, int]:
        return self.memo(("order",), lambda: {r.urn: i for i, r in enumerate(self.resources)})

    def attached(self, types: Sequence[str], bucket: Any) -> list[PolicyResource]:
        """Resources of ``types`` (SSE configs, policies, public access blocks) that apply to ``bucket``, from one
        pass over them per index instead of one per bucket."""
        def build() -> dict[str, list[PolicyResource]]:
            table: dict[str, list[PolicyResource]] = defaultdict(list)
            for resource in self.of_type(*types):
                for target in linked_buckets(self, resource):
                    table[target.urn].append(resource)
            return table
        return list(self.memo(("attached", tuple(types)), build).get(bucket.urn, ()))

    def descendants(self, resource: PolicyResource) -> list[PolicyResource]:
        found, pending = [], list(self.children.get(resource.urn, []))
        while pending:
            child = pending.pop(0)
            found.append(child)
            pending.extend(self.children.get(child.urn, []))
        return found

    @staticmethod
    def refs(resource: PolicyResource, prop: str, types: Sequence[str]) -> list[PolicyResource]:
        """Resources of ``types`` that ``prop`` was computed from (property dependencies; when the engine or
        plan gave none at all, the resource's plain dependencies)."""
        if resource.property_dependencies:
            candidates = resource.property_dependencies.get(prop) or []
        else:
            candidates = resource.dependencies or []
        seen, out = set(), []
        for candidate in candidates:
            if candidate.resource_type in types and candidate.urn not in seen:
                seen.add(candidate.urn)
                out.append(candidate)
        return out

    def classification(self, resource: PolicyResource) -> Derived:
        return classification_of(resource.resource_type, self.props(resource))

    def aws_site(self, resource: Any) -> Derived:
        return aws_site(self.props(resource), resource.provider)

    # Kubernetes lineage: object -> its k8s provider -> the cluster component above that provider.
    def cluster_ancestor(self, resource: Any) -> Optional[PolicyResource]:
        ancestor = resource.parent
        while ancestor is not None and ancestor.resource_type not in CLUSTER_TYPES:
            ancestor = ancestor.parent
        return ancestor

    def kubeconfig_clusters(self, provider: PolicyResource) -> list[PolicyResource]:
        """EKS clusters the provider's ``kubeconfig`` was computed from (property dependency; plain dependencies
        when the plan records none), plus any EKS cluster among its plain dependencies."""
        found = self.refs(provider, "kubeconfig", (EKS_CLUSTER,))
        for dependency in provider.dependencies or []:
            if dependency.resource_type == EKS_CLUSTER and dependency not in found:
                found.append(dependency)
        return found

    def provider_cluster(self, provider: PolicyResource) -> tuple[Optional[PolicyResource], Optional[str]]:
        """The cluster component a Kubernetes provider deploys to: its ancestor cluster component, which must agree
        with the EKS cluster(s) its kubeconfig lineage reaches (a GpuCluster: exactly its own EKS descendant; an
        OnPremCluster: none); without an ancestor, the GpuCluster of the single EKS cluster its kubeconfig comes
        from. Anything else is unknown (fail closed)."""
        ancestor = self.cluster_ancestor(provider)
        reached = self.kubeconfig_clusters(provider)
        shown = ", ".join(f"'{c.name}'" for c in reached)
        if ancestor is None:
            if len(reached) == 1:
                owner = self.cluster_ancestor(reached[0])
                if owner is not None and owner.resource_type == GPU_CLUSTER:
                    return owner, None
                return None, (f"the kubeconfig of its Kubernetes provider '{provider.name}' comes from EKS cluster "
                              f"{shown}, which is not under a {GPU_CLUSTER}")
            if reached:
                return None, (f"the kubeconfig of its Kubernetes provider '{provider.name}' comes from several EKS "
                              f"clusters ({shown})")
            return None, (f"its Kubernetes provider '{provider.name}' has no {GPU_CLUSTER} or {ONPREM_CLUSTER} "
                          "in its lineage")
        if ancestor.resource_type == ONPREM_CLUSTER:
            if reached:
                return None, (f"its Kubernetes provider '{provider.name}' sits under on-prem cluster "
                              f"'{ancestor.name}' but its kubeconfig comes from EKS cluster {shown}")
            return ancestor, None
        own = [d for d in self.descendants(ancestor) if d.resource_type == EKS_CLUSTER]
        if not reached:
            return None, (f"its Kubernetes provider '{provider.name}' sits under GPU cluster '{ancestor.name}' but its "
                          "kubeconfig has no lineage to an EKS cluster, so which cluster it deploys to is unknown")
        if len(own) != 1 or any(c.urn != own[0].urn for c in reached):
            owned = ", ".join(f"'{c.name}'" for c in own) or "none"
            return None, (f"its Kubernetes provider '{provider.name}' sits under GPU cluster '{ancestor.name}' "
                          f"(EKS cluster {owned}) but its kubeconfig comes from EKS cluster {shown}")
        return ancestor, None

    def cluster_of(self, resource: Any) -> tuple[Optional[PolicyResource], Optional[str]]:
        provider = resource.provider
        if provider is None:
            return None, "it has no explicit Kubernetes provider"
        if provider.resource_type != K8S_PROVIDER:
            return None, f"its provider '{provider.name}' is not a Kubernetes provider"
        provider_resource = self.by_urn.get(provider.urn)
        if provider_resource is None:
            return None, f"its Kubernetes provider '{provider.name}' is not in the stack"
        return self.provider_cluster(provider_resource)

    def cluster_site(self, cluster: PolicyResource, residency: Optional[Residency]) -> Derived:
        if cluster.resource_type == ONPREM_CLUSTER:
            site = get(self.props(cluster), "site")
            if site is UNKNOWN:
                return Derived(None, f"the site of on-prem cluster '{cluster.name}' is unknown during preview")
            if not isinstance(site, str) or not site.startswith("onprem:") or not is_valid_site(site):
                return Derived(None, f"on-prem cluster '{cluster.name}' declares site {site!r}, not an onprem: site")
        else:
            clusters = [d for d in self.descendants(cluster) if d.resource_type == EKS_CLUSTER]
            if len(clusters) != 1:
                return Derived(None, f"GPU cluster '{cluster.name}' has {len(clusters)} {EKS_CLUSTER} children, "
                                     "expected exactly one")
            derived = self.aws_site(clusters[0])
            if not derived.known:
                return Derived(None, f"the EKS cluster of '{cluster.name}' has no derivable site: {derived.reason}")
            site = derived.value
        if residency is None:
            return Derived(None, "the policy config declares no `sites`")
        if not residency.declared(site):
            return Derived(None, f"cluster '{cluster.name}' is at {site}, which is not declared in config `sites`")
        return Derived(site)

    def k8s_site(self, resource: Any, residency: Optional[Residency]) -> Derived:
        cluster, reason = self.cluster_of(resource)
        if cluster is None:
            return Derived(None, reason)
        return self.cluster_site(cluster, residency)

    def site(self, resource: Any, residency: Optional[Residency]) -> Derived:
        if resource.resource_type.startswith("kubernetes:"):
            return self.k8s_site(resource, residency)
        if resource.resource_type == DATASET:
            site = get(self.props(resource), "site")
            if site is UNKNOWN:
                return Derived(None, "its site is unknown during preview")
            return Derived(site) if is_valid_site(site) else Derived(None, f"its site {site!r} is not a site")
        return self.aws_site(resource)

    # Kubernetes namespaces, resolved through lineage when the name is an unknown Output.
    def namespace_key(self, resource: PolicyResource) -> Any:
        """(provider urn, namespace identity) for grouping; UNKNOWN if neither name nor lineage decides."""
        provider = resource.provider.urn if resource.provider is not None else None
        props = self.props(resource)
        if resource.resource_type == K8S_NAMESPACE:
            name = get(props, "metadata", "name")
            return (provider, name if isinstance(name, str) and name is not UNKNOWN else f"urn:{resource.urn}")
        name = namespace_name(props)
        if name is not UNKNOWN:
            return (provider, name)
        owners = self.refs(resource, "metadata", (K8S_NAMESPACE,))
        if len(owners) == 1:
            return self.namespace_key(owners[0])
        return UNKNOWN


# --- S3: which bucket a bucket-scoped resource applies to ---------------------------------------------------------

def _bucket_name_from_arn(arn: Any) -> Optional[str]:
    if isinstance(arn, str) and arn is not UNKNOWN and arn.startswith("arn:aws") and ":s3:::" in arn:
        return arn.split(":::", 1)[1].split("/", 1)[0]
    return None


def _buckets_named(index: StackIndex, name: str) -> list[Any]:
    return [b for b in index.of_type(*S3_BUCKET_TYPES) if get(index.props(b), "bucket") == name]


def linked_buckets(index: StackIndex, resource: Any) -> list[Any]:
    """The bucket(s) a bucket-scoped resource (SSE config, policy, PAB, replication) applies to.

    Property dependencies of ``bucket`` decide; without any (a plan that records only plain dependencies),
    a known bucket name decides, and only then the Bucket resources among the plain dependencies."""
    name = get(index.props(resource), "bucket")
    if resource.property_dependencies:
        found = index.refs(resource, "bucket", S3_BUCKET_TYPES)
        if found or not isinstance(name, str) or name is UNKNOWN:
            return found
        return _buckets_named(index, name)
    if isinstance(name, str) and name is not UNKNOWN:
        return _buckets_named(index, name)
    return index.refs(resource, "bucket", S3_BUCKET_TYPES)


# --- policy construction -----------------------------------------------------------------------------

WAIVER_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "waivers": {
        "type": "array",
        "description": "waivers of this rule from the stack config (rule, resources, reason, ticket, approver, "
                       "expires); see finml_rules/waivers.py",
        "items": {},
        "default": [],
    },
    "waiverDate": {
        "type": "string",
        "description": "the day waiver expiry is judged on (YYYY-MM-DD; default: today, UTC) - for reproducible "
                       "checks and tests",
    },
}

_SUFFIX_RE = re.compile(r"\s*\[site=(?P<site>[^;\]]*); classification=(?P<cls>[^\]]*)\]\s*$")


def with_waiver_schema(schema: Optional[PolicyConfigSchema]) -> PolicyConfigSchema:
    properties = dict(schema.properties) if schema is not None else {}
    properties.update(WAIVER_SCHEMA_PROPERTIES)
    return PolicyConfigSchema(properties=properties, required=schema.required if schema is not None else None)


def _waiving(name: str, validate: Callable[[Any, ReportViolation], None]) -> Callable[[Any, ReportViolation], None]:
    """Apply the stack's waivers of rule ``name`` to its findings: a waived finding is handed to
    ``policy-waived-findings`` (advisory) instead of being reported here; a refused waiver stays a violation and
    says why."""
    from . import waivers as waiver_rules  # pylint: disable=import-outside-toplevel

    @functools.wraps(validate)
    def wrapper(args: Any, report: ReportViolation) -> None:
        config = args.get_config() or {}
        raw = config.get("waivers") if hasattr(config, "get") else None
        if not raw:
            validate(args, report)
            return
        waivers, _ = waiver_rules.parse_waivers(plain(raw))  # malformed ones are policy-waivers-valid's business
        waivers = [w for w in waivers if w.rule == name]
        if not waivers:
            validate(args, report)
            return
        today = waiver_rules.parse_date(config.get("waiverDate")) or waiver_rules.today_utc()
        default_urn = getattr(args, "urn", None)

        def waiving_report(message: str, urn: Optional[str] = None) -> None:
            target = urn or default_urn
            match = _SUFFIX_RE.search(message or "")
            cls = match.group("cls").strip() if match else None
            decision = waiver_rules.evaluate(name, target, cls, waivers, today)
            if decision.waived:
                engine.record_waived({"rule": name, "urn": target or "", "message": message,
                                      "waiver": decision.waiver.as_dict()})
                return
            if decision.refused:
                text, suffix = (message[:match.start()], message[match.start():]) if match else (message, "")
                message = f"{text} ({decision.refused}){suffix}"
            report(message, urn)

        validate(args, waiving_report)

    return wrapper


def resource_policy(name: str, description: str, validate: Callable[..., None], severity: Any, remediation: str,
                    config_schema: Optional[PolicyConfigSchema] = None,
                    types: Optional[Iterable[str]] = None, prefix: Optional[str] = None) -> Any:
    """A resource rule. ``types``/``prefix``: the resource types it looks at (it must return for any other type);
    the pack's Analyze skips it for other types (engine.py) - a speed-up only, the rule still checks itself."""
    from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
    policy = ResourceValidationPolicy(name=name, description=description,
                                      validate=_waiving(name, fail_closed(validate)),
                                      enforcement_level=EnforcementLevel.MANDATORY, severity=severity,
                                      remediation_steps=remediation, config_schema=with_waiver_schema(config_schema))
    if types is not None or prefix is not None:
        wanted = frozenset(types or ())
        policy.finml_applies = (lambda t: t in wanted or (prefix is not None and t.startswith(prefix)))
    return policy


def stack_policy(name: str, description: str, validate: Callable[..., None], severity: Any, remediation: str,
                 config_schema: Optional[PolicyConfigSchema] = None, waivable: bool = True,
                 enforcement: Optional[Any] = None) -> Any:
    from pulumi_policy import EnforcementLevel, StackValidationPolicy
    checked = fail_closed(validate)
    return StackValidationPolicy(name=name, description=description,
                                 validate=_waiving(name, checked) if waivable else checked,
                                 enforcement_level=enforcement or EnforcementLevel.MANDATORY, severity=severity,
                                 remediation_steps=remediation,
                                 config_schema=with_waiver_schema(config_schema) if waivable else config_schema)
