"""Ansible inventory for on-prem GPU sites, generated from stack config and GPU profiles.

Pure functions, no Pulumi: ``build_inventory`` validates every node against its GPU profile and the site network and
returns a standard Ansible YAML inventory as a dict; ``dump_inventory`` renders it deterministically.

Layout::

    all:
      children:
        finml_gpu_nodes:                 # every on-prem GPU node of the stack
          vars: {finml_stack, finml_gpu_profiles (catalogue of the profiles in use), finml_package_sources}
          children:
            site_fra_dc1:                # one group per site: hosts + site vars (join endpoint, CIDRs, versions)
            gpu_h100_80gb:               # one group per GPU profile: hosts only

Site label encoding: Kubernetes label values may not contain ``:``, so a node of site ``onprem:fra-dc1`` carries
``finml.io/site=onprem-fra-dc1`` (``:`` replaced by ``-``; see :func:`site_label_value`). The policy pack compares
labels through the same helper.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_GPUS_PER_NODE = 8
MIG_COMPUTE_SLICES_PER_GPU = 7
SITE_LABEL_KEY = "finml.io/site"
GPU_PROFILE_LABEL_KEY = "finml.io/gpu-profile"
ROOT_GROUP = "finml_gpu_nodes"
NETWORK_KEYS = ("node_cidr", "pod_cidr", "service_cidr", "storage_cidr", "management_cidr")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
PACKAGE_SOURCE_KEYS = ("nvidia_cuda", "nvidia_container_toolkit", "kubernetes")

_LABEL_VALUE = re.compile(r"^(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MIG_SLICES = re.compile(r"^(\d+)g\.")


class InventoryError(ValueError):
    """A node or site entry that cannot become a valid inventory; the message names the entry, key and what is allowed."""


@dataclass(frozen=True)
class OnPremNode:
    name: str
    address: str
    gpu_profile: str
    gpu_count: int
    mig_layout: dict[str, int] | None = None
    data_disks: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OnPremSite:
    site: str  # "onprem:fra-dc1"
    network: dict[str, str]  # node_cidr, pod_cidr, service_cidr, storage_cidr, management_cidr
    api_endpoint: str  # "host:port" the nodes join
    kubernetes_version: str
    nvidia_driver_branch: str | None
    nodes: list[OnPremNode]


def site_label_value(site: str) -> str:
    """``onprem:fra-dc1`` → ``onprem-fra-dc1``, ``aws:eu-central-1`` → ``aws-eu-central-1`` (valid label value)."""
    value = site.replace(":", "-")
    if not value or not _LABEL_VALUE.match(value):
        raise InventoryError(
            f"site {site!r}: cannot be encoded as a Kubernetes label value ({value!r}); allowed: "
            "up to 63 characters [A-Za-z0-9-_.], starting and ending alphanumeric, after ':' → '-'"
        )
    return value


def site_group_name(site: str) -> str:
    """``onprem:fra-dc1`` → ``site_fra_dc1`` (Ansible group names allow only [A-Za-z0-9_])."""
    return "site_" + re.sub(r"[^A-Za-z0-9]", "_", site.split(":", 1)[-1]).lower()


def profile_group_name(profile: str) -> str:
    """``h100-80gb`` → ``gpu_h100_80gb``."""
    return "gpu_" + re.sub(r"[^A-Za-z0-9]", "_", profile).lower()


def _get(obj: Any, dotted: str, default: Any = None) -> Any:
    """Read ``a.b.c`` from a pydantic model or a plain mapping (tests and the CLI may pass either)."""
    for part in dotted.split("."):
        if obj is None:
            return default
        obj = obj.get(part, default) if isinstance(obj, Mapping) else getattr(obj, part, default)
    return obj


def _profile_catalogue_entry(name: str, profile: Any) -> dict[str, Any]:
    mig_profiles = {}
    for mig in _get(profile, "mig.profiles", None) or []:
        mig_name = _get(mig, "name")
        slices = _MIG_SLICES.match(mig_name)
        mig_profiles[mig_name] = {
            "count_per_gpu": int(_get(mig, "count_per_gpu")),
            "memory_gib": _get(mig, "memory_gib"),
            "compute_slices": int(slices.group(1)) if slices else 1,
        }
    return {
        "memory_gib": _get(profile, "memory_gib"),
        "max_gpus_per_node": int(_get(profile, "max_gpus_per_node", None) or MAX_GPUS_PER_NODE),
        "mig_supported": bool(_get(profile, "mig.supported", False)),
        "mig_profiles": dict(sorted(mig_profiles.items())),
        "driver_branch": str(_get(profile, "driver.branch")),
        "fabric_manager": bool(_get(profile, "driver.fabric_manager", False)),
        "nvml_product_names": list(_get(profile, "nvml_product_names", None) or []),
        "labels": dict(sorted((_get(profile, "kubernetes.labels", None) or {}).items())),
        "taints": [
            {"key": _get(t, "key"), "value": _get(t, "value"), "effect": _get(t, "effect")}
            for t in _get(profile, "kubernetes.taints", None) or []
        ],
    }


def _parse_networks(site: OnPremSite) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    where = f"site {site.site!r}"
    missing = [k for k in NETWORK_KEYS if not site.network.get(k)]
    if missing:
        raise InventoryError(f"{where}: network is missing {', '.join(missing)}; required: {', '.join(NETWORK_KEYS)}")
    unknown = sorted(set(site.network) - set(NETWORK_KEYS))
    if unknown:
        raise InventoryError(f"{where}: unknown network keys {unknown}; allowed: {', '.join(NETWORK_KEYS)}")
    parsed = {}
    for key in NETWORK_KEYS:
        try:
            parsed[key] = ipaddress.ip_network(site.network[key], strict=True)
        except ValueError as exc:
            raise InventoryError(f"{where}: network.{key}={site.network[key]!r} is not a CIDR: {exc}") from None
    # Pod and service ranges are overlay ranges: they must not overlap anything routed on the wire.
    for overlay in ("pod_cidr", "service_cidr"):
        for other in NETWORK_KEYS:
            if other != overlay and parsed[overlay].overlaps(parsed[other]):
                raise InventoryError(
                    f"{where}: network.{overlay}={parsed[overlay]} overlaps network.{other}={parsed[other]}; "
                    "pod and service CIDRs must be disjoint from every other range"
                )
    return parsed


def _check_labels(where: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or not _LABEL_NAME.match(name):
            raise InventoryError(f"{where}: label key {key!r} is invalid; allowed: [dns-prefix/]name, name ≤63 chars")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise InventoryError(
                f"{where}: label {key}={value!r} is invalid; allowed: ≤63 chars [A-Za-z0-9-_.], "
                "starting and ending alphanumeric (no ':')"
            )


def _check_taints(where: str, taints: list[dict[str, str]]) -> None:
    for taint in taints:
        if set(taint) - {"key", "value", "effect"} or not taint.get("key"):
            raise InventoryError(f"{where}: taint {taint!r} is invalid; allowed keys: key (required), value, effect")
        if taint.get("effect") not in TAINT_EFFECTS:
            raise InventoryError(
                f"{where}: taint {taint.get('key')!r} effect={taint.get('effect')!r}; allowed: {', '.join(TAINT_EFFECTS)}"
            )


def _check_mig_layout(where: str, node: OnPremNode, profile: dict[str, Any]) -> None:
    if not node.mig_layout:
        return
    if not profile["mig_supported"]:
        raise InventoryError(
            f"{where}: mig_layout is set but GPU profile {node.gpu_profile!r} does not support MIG; allowed: omit it"
        )
    allowed = profile["mig_profiles"]
    used_slices = 0
    used_memory = 0.0
    for mig_name, count in sorted(node.mig_layout.items()):
        if mig_name not in allowed:
            raise InventoryError(
                f"{where}: mig_layout.{mig_name} is not a MIG profile of {node.gpu_profile!r}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        limit = allowed[mig_name]["count_per_gpu"]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= limit:
            raise InventoryError(f"{where}: mig_layout.{mig_name}={count!r}; allowed: an integer 1..{limit} per GPU")
        used_slices += allowed[mig_name]["compute_slices"] * count
        used_memory += float(allowed[mig_name]["memory_gib"] or 0) * count
    if used_slices > MIG_COMPUTE_SLICES_PER_GPU:
        raise InventoryError(
            f"{where}: mig_layout {node.mig_layout} uses {used_slices} compute slices per GPU; "
            f"allowed: at most {MIG_COMPUTE_SLICES_PER_GPU}"
        )
    if profile["memory_gib"] and used_memory > float(profile["memory_gib"]):
        raise InventoryError(
            f"{where}: mig_layout {node.mig_layout} needs {used_memory:g} GiB per GPU; "
            f"allowed: at most {profile['memory_gib']} GiB ({node.gpu_profile})"
        )


def build_inventory(
    stack: str,
    sites: list[OnPremSite],
    profiles: Mapping[str, Any],
    package_sources: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Validate the on-prem sites of ``stack`` and return the Ansible inventory (``all`` → ``finml_gpu_nodes``).

    ``profiles`` maps profile name → ``gpu_profiles.GpuProfile`` (or an equivalent mapping). ``package_sources``
    optionally points nodes at the bank's mirrors: ``{nvidia_cuda|nvidia_container_toolkit|kubernetes: {url, suites,
    components, key}}`` where ``key`` is inline ASCII-armored text, an http(s) URL on the mirror, or a keyring path on
    the node; validate_inventory refuses hardware runs without them.
    """
    sources = {k: dict(v) for k, v in sorted((package_sources or {}).items())}
    unknown_sources = sorted(set(sources) - set(PACKAGE_SOURCE_KEYS))
    if unknown_sources:
        raise InventoryError(f"package_sources: unknown {unknown_sources}; allowed: {', '.join(PACKAGE_SOURCE_KEYS)}")

    catalogue: dict[str, dict[str, Any]] = {}
    site_groups: dict[str, dict[str, Any]] = {}
    profile_groups: dict[str, dict[str, Any]] = {}
    seen_names: dict[str, str] = {}
    seen_addresses: dict[str, str] = {}

    for site in sorted(sites, key=lambda s: s.site):
        if not site.site.startswith("onprem:") or len(site.site) == len("onprem:"):
            raise InventoryError(f"site {site.site!r}: not an on-prem site; allowed: 'onprem:<site-id>'")
        group = site_group_name(site.site)
        if group in site_groups:
            raise InventoryError(f"site {site.site!r}: declared twice (group {group})")
        networks = _parse_networks(site)
        if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", site.api_endpoint or ""):
            raise InventoryError(f"site {site.site!r}: api_endpoint={site.api_endpoint!r}; allowed: 'host:port'")
        if not re.match(r"^v?\d+\.\d+\.\d+$", site.kubernetes_version or ""):
            raise InventoryError(
                f"site {site.site!r}: kubernetes_version={site.kubernetes_version!r}; allowed: 'MAJOR.MINOR.PATCH'"
            )
        label_value = site_label_value(site.site)
        hosts: dict[str, dict[str, Any]] = {}
        for node in site.nodes:
            where = f"site {site.site!r} node {node.name!r}"
            if not _NODE_NAME.match(node.name or ""):
                raise InventoryError(f"{where}: name is invalid; allowed: lowercase RFC 1123 label (a-z0-9-, ≤63)")
            if node.name in seen_names:
                raise InventoryError(f"{where}: name duplicates a node of site {seen_names[node.name]!r}")
            seen_names[node.name] = site.site
            try:
                address = ipaddress.ip_address(node.address)
            except ValueError:
                raise InventoryError(f"{where}: address={node.address!r} is not an IP address") from None
            if str(address) in seen_addresses:
                raise InventoryError(f"{where}: address {address} is already used by node {seen_addresses[str(address)]!r}")
            seen_addresses[str(address)] = node.name
            if address not in networks["node_cidr"]:
                raise InventoryError(
                    f"{where}: address {address} is outside network.node_cidr; allowed: {networks['node_cidr']}"
                )
            if node.gpu_profile not in profiles:
                raise InventoryError(
                    f"{where}: gpu_profile={node.gpu_profile!r} is unknown; allowed: {', '.join(sorted(profiles))}"
                )
            profile = catalogue.setdefault(
                node.gpu_profile, _profile_catalogue_entry(node.gpu_profile, profiles[node.gpu_profile])
            )
            limit = profile["max_gpus_per_node"]
            if not isinstance(node.gpu_count, int) or isinstance(node.gpu_count, bool) or not 1 <= node.gpu_count <= limit:
                raise InventoryError(f"{where}: gpu_count={node.gpu_count!r}; allowed: 1..{limit} ({node.gpu_profile})")
            _check_mig_layout(where, node, profile)
            for disk in node.data_disks:
                if not re.match(r"^/dev/[A-Za-z0-9/_.\-]+$", disk):
                    raise InventoryError(f"{where}: data_disks entry {disk!r}; allowed: absolute /dev/... paths")
            if len(set(node.data_disks)) != len(node.data_disks):
                raise InventoryError(f"{where}: data_disks lists a device twice: {node.data_disks}")
            for reserved in (SITE_LABEL_KEY, GPU_PROFILE_LABEL_KEY):
                if reserved in node.labels:
                    raise InventoryError(f"{where}: labels.{reserved} is set by finml; allowed: remove it")
            labels = {
                **profile["labels"],
                **node.labels,
                SITE_LABEL_KEY: label_value,
                GPU_PROFILE_LABEL_KEY: node.gpu_profile.lower(),
            }
            _check_labels(where, labels)
            taints = [dict(t) for t in profile["taints"]] + [dict(t) for t in node.taints]
            _check_taints(where, taints)
            hosts[node.name] = {
                "ansible_host": str(address),
                "finml_gpu_profile": node.gpu_profile,
                "finml_gpu_count": node.gpu_count,
                "finml_mig_layout": dict(sorted((node.mig_layout or {}).items())),
                "finml_data_disks": list(node.data_disks),
                "finml_node_labels": dict(sorted(labels.items())),
                "finml_node_taints": sorted(taints, key=lambda t: (t["key"], t.get("value") or "", t["effect"])),
            }
            profile_groups.setdefault(profile_group_name(node.gpu_profile), {"hosts": {}})["hosts"][node.name] = {}
        site_groups[group] = {
            "hosts": dict(sorted(hosts.items())),
            "vars": {
                "finml_site": site.site,
                "finml_site_label": label_value,
                "finml_network": {k: str(networks[k]) for k in NETWORK_KEYS},
                "finml_kubernetes_api_endpoint": site.api_endpoint,
                "finml_kubernetes_version": site.kubernetes_version.lstrip("v"),
                "finml_nvidia_driver_branch": site.nvidia_driver_branch,
            },
        }

    children = {**dict(sorted(site_groups.items())), **dict(sorted(profile_groups.items()))}
    for group in profile_groups.values():
        group["hosts"] = dict(sorted(group["hosts"].items()))
    return {
        "all": {
            "children": {
                ROOT_GROUP: {
                    "vars": {
                        "finml_stack": stack,
                        "finml_gpu_profiles": dict(sorted(catalogue.items())),
                        "finml_package_sources": sources,
                    },
                    "children": children,
                }
            }
        }
    }


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors/aliases (shared dicts must not become &id001 references)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_inventory(inventory: Mapping[str, Any]) -> str:
    """Deterministic YAML (insertion order is already sorted by ``build_inventory``)."""
    return "---\n" + yaml.dump(
        inventory, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120
    )
