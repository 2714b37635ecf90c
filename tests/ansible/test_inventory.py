"""finml.inventory: the Ansible inventory generated from on-prem sites and GPU profiles (pure functions, fast)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from ansible_harness import make_package_sources, make_site

from finml.inventory import (
    InventoryError,
    OnPremNode,
    OnPremSite,
    build_inventory,
    dump_inventory,
    site_label_value,
)
from gpu_profiles import load_profiles


@pytest.fixture(scope="module")
def profiles():
    return load_profiles()


def _site(**changes) -> OnPremSite:
    return dataclasses.replace(make_site(), **changes)


def _node(index: int = 0, **changes) -> OnPremNode:
    return dataclasses.replace(make_site().nodes[index], **changes)


def _root(inventory: dict) -> dict:
    return inventory["all"]["children"]["finml_gpu_nodes"]


def test_groups_hosts_and_vars(profiles):
    inventory = build_inventory("onprem-test", [make_site()], profiles, package_sources=make_package_sources())
    root = _root(inventory)
    assert list(root["children"]) == ["site_test_dc1", "gpu_h100_80gb", "gpu_t4"]
    site = root["children"]["site_test_dc1"]
    assert sorted(site["hosts"]) == ["gpu-node-1", "gpu-node-2"]
    assert root["children"]["gpu_h100_80gb"]["hosts"] == {"gpu-node-1": {}}
    assert root["children"]["gpu_t4"]["hosts"] == {"gpu-node-2": {}}
    node = site["hosts"]["gpu-node-1"]
    assert node["ansible_host"] == "127.0.10.1"
    assert node["finml_gpu_profile"] == "H100-80GB" and node["finml_gpu_count"] == 8
    assert node["finml_mig_layout"] == {"3g.40gb": 2}
    assert node["finml_node_labels"] == {
        "finml.io/gpu-profile": "h100-80gb",
        "finml.io/site": "onprem-test-dc1",
        "finml.io/team": "risk-models",
    }
    assert node["finml_node_taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    t4_taints = site["hosts"]["gpu-node-2"]["finml_node_taints"]
    assert {"key": "finml.io/dedicated", "value": "inference", "effect": "NoSchedule"} in t4_taints
    site_vars = site["vars"]
    assert site_vars["finml_site"] == "onprem:test-dc1"
    assert site_vars["finml_kubernetes_api_endpoint"] == "127.0.10.250:6443"
    assert site_vars["finml_network"]["node_cidr"] == "127.0.10.0/24"
    assert site_vars["finml_kubernetes_version"] == "1.31.4"
    stack_vars = root["vars"]
    assert stack_vars["finml_stack"] == "onprem-test"
    assert set(stack_vars["finml_gpu_profiles"]) == {"H100-80GB", "T4"}
    h100 = stack_vars["finml_gpu_profiles"]["H100-80GB"]
    assert h100["fabric_manager"] is True and h100["driver_branch"] == "570"
    assert h100["mig_profiles"]["3g.40gb"] == {"count_per_gpu": 2, "memory_gib": 40, "compute_slices": 3}
    assert set(stack_vars["finml_package_sources"]) == {"kubernetes", "nvidia_container_toolkit", "nvidia_cuda"}


def test_dump_is_deterministic_yaml(profiles):
    first = dump_inventory(build_inventory("s", [make_site()], profiles))
    reordered = _site(nodes=list(reversed(make_site().nodes)))
    second = dump_inventory(build_inventory("s", [reordered], profiles))
    assert first == second
    assert first.startswith("---\n") and "&id" not in first and "*id" not in first
    assert yaml.safe_load(first) == build_inventory("s", [make_site()], profiles)


@pytest.mark.parametrize(
    ("site", "expected"),
    [("onprem:fra-dc1", "onprem-fra-dc1"), ("aws:eu-central-1", "aws-eu-central-1"), ("onprem:test-dc1", "onprem-test-dc1")],
)
def test_site_label_value(site, expected):
    assert site_label_value(site) == expected


def test_site_label_value_rejects_unencodable():
    with pytest.raises(InventoryError, match="cannot be encoded as a Kubernetes label value"):
        site_label_value("onprem:" + "x" * 70)


def _error(profiles, site: OnPremSite) -> str:
    with pytest.raises(InventoryError) as excinfo:
        build_inventory("s", [site], profiles)
    return str(excinfo.value)


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        (
            lambda: [_node(0), _node(1, name="gpu-node-1", address="127.0.10.3")],
            "node 'gpu-node-1': name duplicates a node of site 'onprem:test-dc1'",
        ),
        (
            lambda: [_node(0), _node(1, address="127.0.10.1")],
            "node 'gpu-node-2': address 127.0.10.1 is already used by node 'gpu-node-1'",
        ),
        (
            lambda: [_node(0, address="10.1.2.3")],
            "node 'gpu-node-1': address 10.1.2.3 is outside network.node_cidr; allowed: 127.0.10.0/24",
        ),
        (lambda: [_node(0, address="not-an-ip")], "node 'gpu-node-1': address='not-an-ip' is not an IP address"),
        (lambda: [_node(1, gpu_profile="B200")], "node 'gpu-node-2': gpu_profile='B200' is unknown; allowed: A100-40GB"),
        (lambda: [_node(0, gpu_count=9)], "node 'gpu-node-1': gpu_count=9; allowed: 1..8 (H100-80GB)"),
        (lambda: [_node(0, gpu_count=0)], "node 'gpu-node-1': gpu_count=0; allowed: 1..8"),
        (
            lambda: [_node(1, mig_layout={"1g.10gb": 1})],
            "node 'gpu-node-2': mig_layout is set but GPU profile 'T4' does not support MIG",
        ),
        (
            lambda: [_node(0, mig_layout={"9g.90gb": 1})],
            "node 'gpu-node-1': mig_layout.9g.90gb is not a MIG profile of 'H100-80GB'; allowed: 1g.10gb",
        ),
        (
            lambda: [_node(0, mig_layout={"3g.40gb": 3})],
            "node 'gpu-node-1': mig_layout.3g.40gb=3; allowed: an integer 1..2 per GPU",
        ),
        (
            lambda: [_node(0, mig_layout={"4g.40gb": 1, "3g.40gb": 2})],
            "node 'gpu-node-1': mig_layout {'4g.40gb': 1, '3g.40gb': 2} uses 10 compute slices per GPU; allowed: at most 7",
        ),
        (lambda: [_node(0, data_disks=["sdb"])], "node 'gpu-node-1': data_disks entry 'sdb'; allowed: absolute /dev/"),
        (
            lambda: [_node(0, labels={"team": "a:b"})],
            "node 'gpu-node-1': label team='a:b' is invalid",
        ),
        (
            lambda: [_node(0, labels={"finml.io/site": "elsewhere"})],
            "node 'gpu-node-1': labels.finml.io/site is set by finml",
        ),
        (
            lambda: [_node(0, taints=[{"key": "x", "effect": "Sometimes"}])],
            "node 'gpu-node-1': taint 'x' effect='Sometimes'; allowed: NoSchedule, PreferNoSchedule, NoExecute",
        ),
    ],
    ids=["dup-name", "dup-address", "outside-cidr", "bad-address", "unknown-profile", "too-many-gpus", "zero-gpus",
         "mig-unsupported", "mig-unknown", "mig-count", "mig-slices", "disk-path", "label-colon", "label-reserved",
         "taint-effect"],  # fmt: skip
)
def test_invalid_nodes_name_node_key_and_allowed(profiles, nodes, expected):
    message = _error(profiles, _site(nodes=nodes()))
    assert expected in message, message
    assert isinstance(InventoryError(message), ValueError)


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ({"node_cidr": "127.0.10.0/24"}, "network is missing pod_cidr"),
        ({**make_site().network, "storage_cidr": "10.0.0.0/33"}, "network.storage_cidr='10.0.0.0/33' is not a CIDR"),
        ({**make_site().network, "pod_cidr": "127.0.10.0/25"}, "network.pod_cidr=127.0.10.0/25 overlaps network.node_cidr"),
        ({**make_site().network, "extra": "10.0.0.0/8"}, "unknown network keys ['extra']"),
    ],
)
def test_invalid_site_network(profiles, network, expected):
    assert expected in _error(profiles, _site(network=network))


def test_invalid_site_fields(profiles):
    assert "not an on-prem site; allowed: 'onprem:<site-id>'" in _error(profiles, _site(site="aws:eu-central-1"))
    assert "api_endpoint='nowhere'; allowed: 'host:port'" in _error(profiles, _site(api_endpoint="nowhere"))
    assert "kubernetes_version='latest'" in _error(profiles, _site(kubernetes_version="latest"))
    with pytest.raises(InventoryError, match="package_sources: unknown \\['pypi'\\]"):
        build_inventory("s", [make_site()], profiles, package_sources={"pypi": {}})


def test_duplicate_across_sites(profiles):
    other = _site(site="onprem:test-dc2", nodes=[_node(0, address="127.0.10.9")])
    with pytest.raises(InventoryError, match="name duplicates a node of site 'onprem:test-dc1'"):
        build_inventory("s", [make_site(), other], profiles)


def test_driver_branch_override(profiles):
    inventory = build_inventory("s", [_site(nvidia_driver_branch="575")], profiles)
    assert _root(inventory)["children"]["site_test_dc1"]["vars"]["finml_nvidia_driver_branch"] == "575"
