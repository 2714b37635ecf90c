"""Stack config → Ansible inventory for the on-prem GPU nodes (`finml inventory`, and `pulumi up` via OnPremCluster)."""

from __future__ import annotations

from pathlib import Path

from finml.config import ConfigError, StackConfig, resolve_gpu_profile
from finml.inventory import InventoryError, OnPremNode, OnPremSite, build_inventory, dump_inventory

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = ROOT / "ansible"
PLAYBOOK = ANSIBLE_DIR / "playbooks" / "site.yml"


def inventory_for_stack(stack: StackConfig, profiles: dict | None = None) -> str:
    """The YAML inventory of every on-prem site of `stack`; config problems raise ConfigError naming the key."""
    from gpu_profiles import load_profiles

    profiles = profiles if profiles is not None else load_profiles()
    sites = []
    sources: dict[str, dict] = {}
    for site_id, site in stack.onprem_sites.items():
        nodes = [
            OnPremNode(
                name=node.name,
                address=node.address,
                gpu_profile=resolve_gpu_profile(node.gpu_profile, profiles).name,
                gpu_count=node.gpu_count,
                mig_layout=dict(node.mig_layout) if node.mig_layout else None,
                data_disks=list(node.data_disks),
            )
            for node in site.nodes
        ]
        net = site.network
        sites.append(OnPremSite(
            site=site_id,
            network={"node_cidr": net.node_cidr, "pod_cidr": net.pod_cidr, "service_cidr": net.service_cidr,
                     "storage_cidr": net.storage_cidr, "management_cidr": net.management_cidr},
            api_endpoint=site.kubernetes.api_endpoint,
            kubernetes_version=site.kubernetes.version,
            nvidia_driver_branch=site.nvidia_driver_branch,
            nodes=nodes,
        ))
        for name, src in site.package_sources.items():
            sources[name] = src.model_dump()
    if not sites:
        raise ConfigError(stack.source, [("finml:platform.sites", "this stack has no on-prem site; an inventory "
                                                                   "needs at least one 'onprem:<site-id>' site")])
    try:
        return dump_inventory(build_inventory(stack.stack, sites, profiles, package_sources=sources or None))
    except InventoryError as exc:
        raise ConfigError(stack.source, [("finml:platform.sites", str(exc))]) from None
