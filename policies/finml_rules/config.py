"""Policy-pack config for ``pulumi preview --policy-pack policies --policy-pack-config <file>``.

The CLI (``finml policy config --stack NAME``) calls :func:`pack_config` with the stack's residency map
and declared sites and writes the result as JSON.

Every policy gets an explicit ``enforcementLevel``: the Analyzer's ``Configure`` maps a policy config
without one to the protobuf default, which is ADVISORY, so a config carrying only properties would
silently downgrade the mandatory rules.
"""

from __future__ import annotations

from typing import Any, Optional

from .common import CLASSIFICATIONS, DEFAULT_EXEMPT_NAMESPACES, DEFAULT_PROVIDER_PACKAGES, is_valid_site

ENFORCEMENT_LEVELS = ("advisory", "mandatory", "disabled")


def all_policies() -> list:
    from . import (  # pylint: disable=import-outside-toplevel
        copies, encryption, feature_store, governance, gpu, images, kubernetes, lineage, logs, network, pods,
        registry, residency, stores,
    )
    # governance last: policy-waived-findings must run after every other stack rule (see governance.py)
    return (residency.POLICIES + copies.POLICIES + lineage.POLICIES + logs.POLICIES + encryption.POLICIES
            + stores.POLICIES + network.POLICIES + kubernetes.POLICIES + pods.POLICIES + images.POLICIES + gpu.POLICIES
            + feature_store.POLICIES + registry.POLICIES + governance.POLICIES)


def all_policy_names() -> list[str]:
    """Rule ids in pack order."""
    return [policy.name for policy in all_policies()]


def _check_pattern(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: {pattern!r} is not a site pattern")
    if is_valid_site(pattern):
        return
    if any(ch in pattern for ch in "*?[") and pattern.split(":", 1)[0] in ("aws", "onprem") and ":" in pattern:
        return
    raise ValueError(f"{where}: {pattern!r} is neither a site (aws:<region>, onprem:<site-id>) nor a glob over "
                     "sites such as aws:eu-* or onprem:*")


def _check_image_registries(registries: Optional[dict[str, Any]], sites: list[str]) -> Optional[dict[str, Any]]:
    if registries is None:
        return None
    if not isinstance(registries, dict):
        raise ValueError("image_registries must map sites to {host, prefix, kind, immutableTags}")
    out: dict[str, Any] = {}
    for site, entry in registries.items():
        where = f"image_registries.{site}"
        if site not in sites:
            raise ValueError(f"{where}: {site!r} is not a declared site ({', '.join(sites)})")
        if not isinstance(entry, dict) or set(entry) != {"host", "prefix", "kind", "immutableTags"}:
            raise ValueError(f"{where}: needs exactly host, prefix, kind and immutableTags")
        if not isinstance(entry["host"], str) or not entry["host"] or "/" in entry["host"]:
            raise ValueError(f"{where}.host: {entry['host']!r} is not a registry host[:port]")
        if not isinstance(entry["prefix"], str) or not entry["prefix"]:
            raise ValueError(f"{where}.prefix: {entry['prefix']!r} is not a repository prefix")
        if entry["kind"] not in ("ecr", "declared"):
            raise ValueError(f"{where}.kind: {entry['kind']!r}; allowed: ecr, declared")
        if not isinstance(entry["immutableTags"], bool):
            raise ValueError(f"{where}.immutableTags: {entry['immutableTags']!r}; allowed: true, false")
        out[site] = dict(entry)
    return out


def pack_config(residency: dict[str, list[str]], sites: list[str],
                enforcement: Optional[dict[str, str]] = None,
                exempt_namespaces: Optional[list[str]] = None,
                allowed_provider_packages: Optional[list[str]] = None,
                waivers: Optional[list[Any]] = None,
                account_ids: Optional[list[str]] = None,
                waiver_date: Optional[str] = None,
                image_registries: Optional[dict[str, Any]] = None) -> dict[str, dict[str, Any]]:
    """The JSON object for ``--policy-pack-config``: policy name -> {enforcementLevel, config props}.

    ``residency``: classification -> allowed site patterns; ``sites``: the stack's declared sites;
    ``enforcement``: optional per-policy level overrides (advisory/mandatory/disabled);
    ``exempt_namespaces``: Kubernetes namespaces exempt from pod-hardening rules (default kube-system);
    ``allowed_provider_packages``: provider packages residency-provider-allowlist accepts (default aws,
    kubernetes, command); ``waivers``: the stack's waivers (each rule gets its own, policy-waivers-valid all of
    them, malformed ones included so the pack reports them); ``waiver_date``: the day expiry is judged on
    (YYYY-MM-DD, default today in the pack); ``image_registries``: site -> {host, prefix, kind (ecr|declared),
    immutableTags} for k8s-image-pinned (omitted: that rule fails every tag-pinned image closed).
    Raises ValueError naming the offending key on bad input."""
    if not isinstance(residency, dict) or not residency:
        raise ValueError("residency must map classifications to lists of allowed site patterns")
    for classification, patterns in residency.items():
        if classification not in CLASSIFICATIONS:
            raise ValueError(f"residency: unknown classification {classification!r} "
                             f"(expected one of {', '.join(CLASSIFICATIONS)})")
        if not isinstance(patterns, list):
            raise ValueError(f"residency.{classification} must be a list of site patterns")
        for pattern in patterns:
            _check_pattern(pattern, f"residency.{classification}")
    if not isinstance(sites, list) or not sites:
        raise ValueError("sites must be a non-empty list of declared sites")
    for site in sites:
        if not is_valid_site(site):
            raise ValueError(f"sites: {site!r} is not a site (aws:<region> or onprem:<site-id>)")
    registries = _check_image_registries(image_registries, sites)
    policies = all_policies()
    names = {policy.name for policy in policies}
    enforcement = dict(enforcement or {})
    for name, level in enforcement.items():
        if name not in names:
            raise ValueError(f"enforcement: unknown policy {name!r}")
        if level not in ENFORCEMENT_LEVELS:
            raise ValueError(f"enforcement.{name}: {level!r} is not one of {', '.join(ENFORCEMENT_LEVELS)}")
    namespaces = list(DEFAULT_EXEMPT_NAMESPACES if exempt_namespaces is None else exempt_namespaces)
    packages = list(DEFAULT_PROVIDER_PACKAGES if allowed_provider_packages is None else allowed_provider_packages)
    if not all(isinstance(p, str) and p for p in packages):
        raise ValueError("allowed_provider_packages must be a list of package names")
    values = {"residency": {k: list(v) for k, v in residency.items()}, "sites": list(sites),
              "exemptNamespaces": namespaces, "allowedProviderPackages": packages,
              "accountIds": [a for a in (account_ids or []) if isinstance(a, str)]}
    if registries is not None:
        values["imageRegistries"] = registries
    all_waivers = list(waivers or [])
    config: dict[str, dict[str, Any]] = {}
    for policy in policies:
        default_level = policy.enforcement_level.value if policy.enforcement_level else "mandatory"
        entry: dict[str, Any] = {"enforcementLevel": enforcement.get(policy.name, default_level)}
        schema = policy.config_schema.properties if policy.config_schema else {}
        for prop in schema:
            if prop == "waivers":
                own = [w for w in all_waivers if isinstance(w, dict) and w.get("rule") == policy.name]
                chosen = all_waivers if policy.name in ("policy-waivers-valid",) else own
                if chosen:
                    entry[prop] = chosen
            elif prop == "waiverDate":
                if waiver_date is not None:
                    entry[prop] = waiver_date
            elif prop == "imageRegistries":
                if registries is not None:
                    entry[prop] = registries
            else:
                entry[prop] = values[prop]
        config[policy.name] = entry
    return config
