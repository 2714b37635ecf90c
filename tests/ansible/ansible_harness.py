"""Helpers for the on-prem Ansible tests: the test site and inventory, playbook runs and PLAY RECAP parsing.

Fixtures live in conftest.py; this module has a unique name so test modules can import it (several conftest.py files
exist in the tree, so ``from conftest import ...`` would be ambiguous).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import hosts as testhosts  # noqa: E402

from finml.inventory import OnPremNode, OnPremSite, build_inventory, dump_inventory  # noqa: E402

ANSIBLE_DIR = REPO_ROOT / "ansible"
SITE_PLAYBOOK = ANSIBLE_DIR / "playbooks" / "site.yml"
VENV_BIN = Path(sys.executable).parent
TEST_SITE = "onprem:test-dc1"
TEST_NETWORK = {
    "node_cidr": "127.0.10.0/24",
    "pod_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/12",
    "storage_cidr": "127.0.11.0/24",
    "management_cidr": "127.0.12.0/24",
}
# A stand-in for the bank's mirrors: a loopback address nothing listens on (test hosts never run apt update).
FAKE_MIRROR = "http://127.0.10.254/mirror"
FAKE_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nfinml-test-key-not-a-real-key\n-----END PGP PUBLIC KEY BLOCK-----\n"
LUKS_TEST_KEY = "finml-test-luks-key-0123456789abcdef0123456789abcdef"
JOIN_TOKEN = "abcdef.0123456789abcdef"
SCENARIOS = HERE / "scenarios"
NODE_SCENARIOS = {"gpu-node-1": "h100x8.json", "gpu-node-2": "t4x1.json"}

TIMINGS: dict[str, float] = {}  # harness step → seconds, printed in the terminal summary


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(testhosts.TESTHOSTS_DIR / "ansible-tmp"),
            # Keep Ansible's and ansible-lint's own state and caches inside the clone, not in the user's home.
            "ANSIBLE_HOME": str(testhosts.TESTHOSTS_DIR / "ansible-home"),
            "XDG_CACHE_HOME": str(testhosts.TESTHOSTS_DIR / "xdg-cache"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(testhosts.TESTHOSTS_DIR / "cp"),
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def run_playbook(
    inventories: list[Path], playbook: Path, *extra: str, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    cmd = [str(VENV_BIN / "ansible-playbook")]
    for inventory in inventories:
        cmd += ["-i", str(inventory)]
    cmd += [str(playbook), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or ansible_env(), timeout=timeout, cwd=REPO_ROOT)


RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP → {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
    recap: dict[str, dict[str, int]] = {}
    lines = stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    except ValueError:
        return recap
    for line in lines[start + 1 :]:
        match = RECAP_LINE.match(line.strip())
        if match:
            recap[match["host"]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match["counts"])}
    return recap


def changed_tasks(stdout: str) -> list[str]:
    """Task headers followed by a 'changed:' line, to name what broke idempotence."""
    found, task = [], ""
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:") or line.startswith("RUNNING HANDLER"):
            found.append(f"{task} -> {line}")
    return found


def make_site() -> OnPremSite:
    return OnPremSite(
        site=TEST_SITE,
        network=dict(TEST_NETWORK),
        api_endpoint="127.0.10.250:6443",
        kubernetes_version="1.31.4",
        nvidia_driver_branch=None,
        nodes=[
            OnPremNode(
                name="gpu-node-1",
                address="127.0.10.1",
                gpu_profile="H100-80GB",
                gpu_count=8,
                mig_layout={"3g.40gb": 2},
                data_disks=["/dev/disk/by-id/finml-test-data0", "/dev/disk/by-id/finml-test-data1"],
                labels={"finml.io/team": "risk-models"},
                taints=[],
            ),
            OnPremNode(
                name="gpu-node-2",
                address="127.0.10.2",
                gpu_profile="T4",
                gpu_count=1,
                mig_layout=None,
                data_disks=[],
                labels={},
                taints=[{"key": "finml.io/dedicated", "value": "inference", "effect": "NoSchedule"}],
            ),
        ],
    )


def make_package_sources() -> dict:
    """One source per key kind the roles accept: inline key text, a URL on the mirror, a keyring path on the node."""
    return {
        "kubernetes": {"url": f"{FAKE_MIRROR}/kubernetes", "suites": ["/"], "components": [], "key": FAKE_KEY},
        "nvidia_container_toolkit": {
            "url": f"{FAKE_MIRROR}/nvidia_container_toolkit",
            "suites": ["/"],
            "components": [],
            "key": "/usr/share/keyrings/finml-test-keyring.gpg",
        },
        "nvidia_cuda": {
            "url": f"{FAKE_MIRROR}/nvidia_cuda",
            "suites": ["/"],
            "components": [],
            "key": f"{FAKE_MIRROR}/nvidia_cuda/key.asc",
        },
    }


def write_inventory(directory: Path, hosts: list[testhosts.TestHost]) -> list[Path]:
    """The generated inventory plus a connection/secrets overlay only tests need."""
    from gpu_profiles import load_profiles

    directory.mkdir(parents=True, exist_ok=True)
    inventory = build_inventory("onprem-test", [make_site()], load_profiles(), package_sources=make_package_sources())
    generated = directory / "inventory.yml"
    generated.write_text(dump_inventory(inventory))
    key = hosts[0].client_key
    overlay = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes",
                "finml_hardware_actions": False,
                "node_baseline_chrony_servers": ["127.0.12.1", "127.0.12.2"],
                "disk_encryption_key": LUKS_TEST_KEY,
                "kubernetes_node_join_token": JOIN_TOKEN,
                "kubernetes_node_ca_cert_hashes": ["sha256:" + "0" * 64],
            },
            "hosts": {
                host.name: {
                    "ansible_port": host.port,
                    "gpu_probe_fake_nvml_scenario": str(SCENARIOS / NODE_SCENARIOS[host.name]),
                }
                for host in hosts
            },
        }
    }
    overlay_path = directory / "test-overlay.yml"
    overlay_path.write_text("---\n" + yaml.safe_dump(overlay, sort_keys=True))
    return [generated, overlay_path]


@dataclass
class PlaybookRun:
    result: subprocess.CompletedProcess
    recap: dict[str, dict[str, int]]
    seconds: float

    def explain(self) -> str:
        return f"rc={self.result.returncode}\n{self.result.stdout[-6000:]}\n{self.result.stderr[-3000:]}"


@dataclass
class Converged:
    hosts: dict[str, testhosts.TestHost]
    inventories: list[Path]
    runs: dict[str, PlaybookRun] = field(default_factory=dict)


def _timed_run(name: str, inventories: list[Path], *extra: str) -> PlaybookRun:
    started = time.monotonic()
    result = run_playbook(inventories, SITE_PLAYBOOK, *extra)
    seconds = time.monotonic() - started
    TIMINGS[f"site.yml {name}"] = seconds
    return PlaybookRun(result, parse_recap(result.stdout), seconds)


