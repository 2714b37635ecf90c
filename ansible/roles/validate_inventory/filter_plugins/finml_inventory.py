"""Inventory checks for the validate_inventory role: one filter returning every problem with a node's variables.

Kept on the controller (Python's ipaddress) so a bad inventory fails before any node is touched, with a message that
names the host, the variable and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

NETWORK_KEYS = ("node_cidr", "pod_cidr", "service_cidr", "storage_cidr", "management_cidr")
MIG_SLICES_PER_GPU = 7
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
LABEL_VALUE = re.compile(r"^(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
REQUIRED = (
    "ansible_host",
    "finml_site",
    "finml_network",
    "finml_gpu_profile",
    "finml_gpu_count",
    "finml_gpu_profiles",
    "finml_kubernetes_api_endpoint",
    "finml_kubernetes_version",
    "finml_node_labels",
    "finml_node_taints",
)


def finml_inventory_problems(hostvars: dict[str, Any], host: str, hardware_actions: bool = True) -> list[str]:
    """Every problem with ``host``'s finml variables, as messages naming host, variable and what is allowed."""
    where = f"host {host}"
    problems = [f"{where}: {key} is not set; the finml inventory generator sets it" for key in REQUIRED if key not in hostvars]
    if problems:
        return problems

    networks: dict[str, Any] = {}
    network = hostvars["finml_network"]
    if not isinstance(network, dict):
        return [f"{where}: finml_network must be a mapping with {', '.join(NETWORK_KEYS)}"]
    for key in NETWORK_KEYS:
        try:
            networks[key] = ipaddress.ip_network(str(network.get(key, "")), strict=True)
        except ValueError as exc:
            problems.append(f"{where}: finml_network.{key}={network.get(key)!r} is not a CIDR ({exc})")
    try:
        address = ipaddress.ip_address(str(hostvars["ansible_host"]))
    except ValueError:
        problems.append(f"{where}: ansible_host={hostvars['ansible_host']!r} is not an IP address")
        address = None
    if address is not None and "node_cidr" in networks and address not in networks["node_cidr"]:
        problems.append(f"{where}: ansible_host {address} is outside finml_network.node_cidr; allowed: {networks['node_cidr']}")

    catalogue = hostvars["finml_gpu_profiles"] or {}
    profile_name = hostvars["finml_gpu_profile"]
    profile = catalogue.get(profile_name)
    if profile is None:
        problems.append(f"{where}: finml_gpu_profile={profile_name!r} is unknown; allowed: {', '.join(sorted(catalogue)) or 'none'}")
        return problems

    count = hostvars["finml_gpu_count"]
    limit = int(profile.get("max_gpus_per_node", 8))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
        problems.append(f"{where}: finml_gpu_count={count!r}; allowed: 1..{limit} ({profile_name})")

    layout = hostvars.get("finml_mig_layout") or {}
    if layout and not profile.get("mig_supported"):
        problems.append(f"{where}: finml_mig_layout is set but {profile_name} does not support MIG; allowed: {{}}")
    elif layout:
        allowed = profile.get("mig_profiles") or {}
        slices = 0
        for name, instances in layout.items():
            if name not in allowed:
                problems.append(f"{where}: finml_mig_layout.{name} is not a MIG profile of {profile_name}; allowed: {', '.join(allowed)}")
                continue
            most = int(allowed[name]["count_per_gpu"])
            if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= most:
                problems.append(f"{where}: finml_mig_layout.{name}={instances!r}; allowed: 1..{most} per GPU")
                continue
            slices += int(allowed[name].get("compute_slices", 1)) * instances
        if slices > MIG_SLICES_PER_GPU:
            problems.append(f"{where}: finml_mig_layout uses {slices} compute slices per GPU; allowed: at most {MIG_SLICES_PER_GPU}")

    labels = hostvars["finml_node_labels"] or {}
    for key, value in labels.items():
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            problems.append(f"{where}: finml_node_labels.{key}={value!r} is not a Kubernetes label value (no ':'; ≤63 [A-Za-z0-9-_.])")
    site_label = str(hostvars["finml_site"]).replace(":", "-")
    if labels.get("finml.io/site") != site_label:
        problems.append(f"{where}: finml_node_labels['finml.io/site'] is {labels.get('finml.io/site')!r}; allowed: {site_label!r}")
    for taint in hostvars["finml_node_taints"] or []:
        if not isinstance(taint, dict) or not taint.get("key") or taint.get("effect") not in TAINT_EFFECTS:
            problems.append(f"{where}: finml_node_taints entry {taint!r}; allowed: {{key, value, effect: {'|'.join(TAINT_EFFECTS)}}}")

    endpoint = str(hostvars["finml_kubernetes_api_endpoint"])
    if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", endpoint):
        problems.append(f"{where}: finml_kubernetes_api_endpoint={endpoint!r}; allowed: 'host:port'")
    if not re.match(r"^\d+\.\d+\.\d+$", str(hostvars["finml_kubernetes_version"])):
        problems.append(f"{where}: finml_kubernetes_version={hostvars['finml_kubernetes_version']!r}; allowed: 'MAJOR.MINOR.PATCH'")

    for disk in hostvars.get("finml_data_disks") or []:
        if not re.match(r"^/dev/[A-Za-z0-9/_.\-]+$", str(disk)):
            problems.append(f"{where}: finml_data_disks entry {disk!r}; allowed: absolute /dev/... paths")

    if hardware_actions:
        sources = hostvars.get("finml_package_sources") or {}
        for source in ("nvidia_cuda", "nvidia_container_toolkit", "kubernetes"):
            if not (sources.get(source) or {}).get("url"):
                problems.append(
                    f"{where}: finml_package_sources.{source}.url is not set; hardware runs install from it "
                    "(point it at your mirror; or set finml_hardware_actions=false on test hosts)"
                )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"finml_inventory_problems": finml_inventory_problems}
