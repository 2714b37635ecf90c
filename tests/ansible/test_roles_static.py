"""Static and controller-only checks of the Ansible content: lint, syntax, validate_inventory negatives, and the
nvidia_driver reboot decision (both ways, in --check on a real SSH test host)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_harness import (
    ANSIBLE_DIR,
    HERE,
    REPO_ROOT,
    SITE_PLAYBOOK,
    VENV_BIN,
    ansible_env,
    make_package_sources,
    make_site,
    parse_recap,
    run_playbook,
)

from finml.inventory import build_inventory, dump_inventory
from gpu_profiles import load_profiles

VALIDATE_PLAYBOOK = HERE / "playbooks" / "validate_only.yml"
REBOOT_PLAYBOOK = HERE / "playbooks" / "reboot_decision.yml"
ROLES = ("apt_source", "container_runtime", "disk_encryption", "gpu_probe", "kubernetes_node", "node_baseline",
         "nvidia_driver", "validate_inventory")  # fmt: skip


def _good_inventory() -> dict:
    return build_inventory("onprem-test", [make_site()], load_profiles(), package_sources=make_package_sources())


def _host(inventory: dict, name: str) -> dict:
    return inventory["all"]["children"]["finml_gpu_nodes"]["children"]["site_test_dc1"]["hosts"][name]


def _write(tmp_path: Path, inventory: dict, unreachable: bool = True) -> Path:
    inventory = copy.deepcopy(inventory)
    if unreachable:  # if validation wrongly passed, nothing could be configured: port 1 on a loopback address
        inventory["all"]["vars"] = {"ansible_port": 1, "ansible_connection": "ssh", "ansible_ssh_common_args": "-o ConnectTimeout=2"}
    path = tmp_path / "inventory.yml"
    path.write_text(dump_inventory(inventory))
    return path


# ------------------------------------------------------------------------------------------------ structure


@pytest.mark.parametrize("role", ROLES)
def test_role_layout(role):
    root = ANSIBLE_DIR / "roles" / role
    for required in ("meta/argument_specs.yml", "meta/main.yml", "defaults/main.yml", "tasks/main.yml", "README.md"):
        assert (root / required).is_file(), f"{role}: {required} missing"
    specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((root / "defaults/main.yml").read_text()) or {}
    for name in defaults:
        assert name.startswith(f"{role}_"), f"{role}: public variable {name} lacks the role prefix"
        assert name in specs, f"{role}: {name} is not documented in meta/argument_specs.yml"
    readme = (root / "README.md").read_text()
    for name in defaults:
        assert name in readme, f"{role}: README.md does not mention {name}"


@pytest.mark.slow
def test_ansible_lint_production_profile_has_no_findings():
    result = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        capture_output=True, text=True, cwd=ANSIBLE_DIR, env=ansible_env(), timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert re.search(r"Passed: 0 failure\(s\), 0 warning\(s\)", output), output[-3000:]


def test_no_global_lint_skips():
    for config in (ANSIBLE_DIR / ".ansible-lint", REPO_ROOT / ".ansible-lint", ANSIBLE_DIR / ".config" / "ansible-lint.yml"):
        if config.exists():
            data = yaml.safe_load(config.read_text()) or {}
            assert not data.get("skip_list") and not data.get("warn_list"), f"{config}: global skips are not allowed"
    for path in ANSIBLE_DIR.rglob("*.yml"):
        for line in path.read_text().splitlines():
            if "# noqa" in line:
                assert re.search(r"# noqa: [a-z\-\[\]]+", line), f"{path}: bare noqa: {line}"


def test_site_playbook_syntax(tmp_path):
    inventory = _write(tmp_path, _good_inventory())
    result = run_playbook([inventory], SITE_PLAYBOOK, "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- validate_inventory


def test_validate_inventory_accepts_generated_inventory(tmp_path):
    inventory = _write(tmp_path, _good_inventory())
    result = run_playbook([inventory], VALIDATE_PLAYBOOK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_recap(result.stdout)["gpu-node-1"]["failed"] == 0


def _mutations():
    def bad_address(inv):
        _host(inv, "gpu-node-1")["ansible_host"] = "127.0.10.300"

    def outside_cidr(inv):
        _host(inv, "gpu-node-1")["ansible_host"] = "192.0.2.10"

    def unknown_profile(inv):
        _host(inv, "gpu-node-2")["finml_gpu_profile"] = "B200"

    def bad_cidr(inv):
        inv["all"]["children"]["finml_gpu_nodes"]["children"]["site_test_dc1"]["vars"]["finml_network"]["storage_cidr"] = "10.0.0.0/33"

    def bad_mig(inv):
        _host(inv, "gpu-node-1")["finml_mig_layout"] = {"3g.40gb": 3}

    def mig_on_t4(inv):
        _host(inv, "gpu-node-2")["finml_mig_layout"] = {"1g.10gb": 1}

    def too_many_gpus(inv):
        _host(inv, "gpu-node-1")["finml_gpu_count"] = 9

    def colon_in_label(inv):
        _host(inv, "gpu-node-1")["finml_node_labels"]["finml.io/site"] = "onprem:test-dc1"

    def missing_site(inv):
        del inv["all"]["children"]["finml_gpu_nodes"]["children"]["site_test_dc1"]["vars"]["finml_site"]

    def no_package_sources(inv):
        inv["all"]["children"]["finml_gpu_nodes"]["vars"]["finml_package_sources"] = {}

    return [
        ("bad_address", bad_address, "ansible_host='127.0.10.300' is not an IP address"),
        ("outside_cidr", outside_cidr, "ansible_host 192.0.2.10 is outside finml_network.node_cidr; allowed: 127.0.10.0/24"),
        ("unknown_profile", unknown_profile, "finml_gpu_profile='B200' is unknown; allowed: H100-80GB, T4"),
        ("bad_cidr", bad_cidr, "finml_network.storage_cidr='10.0.0.0/33' is not a CIDR"),
        ("bad_mig", bad_mig, "finml_mig_layout.3g.40gb=3; allowed: 1..2 per GPU"),
        ("mig_on_t4", mig_on_t4, "finml_mig_layout is set but T4 does not support MIG"),
        ("too_many_gpus", too_many_gpus, "finml_gpu_count=9; allowed: 1..8 (H100-80GB)"),
        ("colon_in_label", colon_in_label, "is not a Kubernetes label value"),
        ("missing_site", missing_site, "finml_site is not set"),
        ("no_package_sources", no_package_sources, "finml_package_sources.nvidia_cuda.url is not set"),
    ]


@pytest.mark.parametrize(("case", "mutate", "message"), _mutations(), ids=[m[0] for m in _mutations()])
def test_validate_inventory_rejects(tmp_path, case, mutate, message):
    inventory = _good_inventory()
    mutate(inventory)
    path = _write(tmp_path, inventory)
    result = run_playbook([path], VALIDATE_PLAYBOOK)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case}: validate_inventory accepted a bad inventory:\n{output[-3000:]}"
    assert message in output, f"{case}: expected {message!r} in:\n{output[-3000:]}"


def test_site_playbook_stops_at_validation(tmp_path):
    """site.yml's first play fails fast: the configuration play never starts on a bad inventory."""
    inventory = _good_inventory()
    _host(inventory, "gpu-node-2")["finml_gpu_profile"] = "B200"
    result = run_playbook([_write(tmp_path, inventory)], SITE_PLAYBOOK)
    assert result.returncode != 0
    assert "finml_gpu_profile='B200' is unknown" in result.stdout
    assert "PLAY [Configure on-prem GPU nodes]" not in result.stdout, result.stdout[-3000:]


def test_validate_inventory_allows_missing_sources_on_test_hosts(tmp_path):
    inventory = _good_inventory()
    inventory["all"]["children"]["finml_gpu_nodes"]["vars"]["finml_package_sources"] = {}
    inventory["all"]["children"]["finml_gpu_nodes"]["vars"]["finml_hardware_actions"] = False
    result = run_playbook([_write(tmp_path, inventory)], VALIDATE_PLAYBOOK)
    assert result.returncode == 0, result.stdout[-3000:]


# ------------------------------------------------------------------------------------------- reboot logic


def _task_output(stdout: str, task: str) -> str:
    """The lines a task printed ('' when it was skipped: ansible.cfg hides skipped hosts and their banners)."""
    marker = f"TASK [{task}]"
    if marker not in stdout:
        return ""
    return stdout.split(marker, 1)[1].split("TASK [", 1)[0].split("PLAY RECAP", 1)[0]


@pytest.mark.slow
@pytest.mark.sshhosts
@pytest.mark.parametrize(
    ("driver_changed", "allow_reboot", "hardware", "flagged", "reboots", "pending"),
    [
        (True, True, True, False, True, False),  # changed + allowed on hardware: reboot
        (True, False, True, False, False, True),  # changed, not allowed: flag for the operator
        (False, True, True, False, False, False),  # nothing changed: no reboot
        (False, False, True, False, False, False),
        (True, True, False, False, False, True),  # no hardware actions: never reboot
        (False, True, True, True, True, False),  # an earlier run's pending reboot, now allowed: reboot
        (False, False, True, True, False, True),  # still pending, still not allowed: stays flagged
    ],
    ids=["changed-allowed", "changed-not-allowed", "unchanged-allowed", "unchanged", "no-hardware",
         "earlier-pending-allowed", "earlier-pending-not-allowed"],  # fmt: skip
)
def test_nvidia_driver_reboot_decision(
    test_hosts, test_inventories, driver_changed, allow_reboot, hardware, flagged, reboots, pending
):
    host = test_hosts["gpu-node-1"]
    flag = "/run/finml-nvidia-driver-reboot-required"
    host.ssh(f"touch {flag}" if flagged else f"rm -f {flag}")
    try:
        result = run_playbook(
            test_inventories,
            REBOOT_PLAYBOOK,
            "--check",
            "-e", f"_nvidia_driver_changed={str(driver_changed).lower()}",
            "-e", f"nvidia_driver_allow_reboot={str(allow_reboot).lower()}",
            "-e", f"nvidia_driver_hardware_actions={str(hardware).lower()}",
        )  # fmt: skip
    finally:
        host.ssh(f"rm -f {flag}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert f"FINML_REBOOT_DECISION reboot={reboots} pending={pending}" in result.stdout, result.stdout[-4000:]
    reboot_task = _task_output(result.stdout, "nvidia_driver : Reboot into the new driver")
    assert ("changed: [gpu-node-1]" in reboot_task) == reboots, reboot_task  # --check: the module reports, no reboot
    flag_task = _task_output(result.stdout, "nvidia_driver : Flag the node for an operator reboot")
    assert ("changed: [gpu-node-1]" in flag_task) == pending, flag_task
    # and the host really did not reboot or get flagged (check mode)
    assert host.ssh("test -e /var/run/reboot-required", check=False).returncode == 1


@pytest.mark.slow
@pytest.mark.sshhosts
def test_canary_recap_detects_changes(test_hosts, test_inventories, tmp_path):
    """The harness can fail: a play that changes a file shows changed=1 in the recap parsed for idempotence."""
    playbook = tmp_path / "canary.yml"
    playbook.write_text(
        "---\n- name: Canary\n  hosts: gpu-node-2\n  gather_facts: false\n  tasks:\n"
        "    - name: Change something\n      ansible.builtin.copy:\n        content: \"{{ 1000000 | random }}\"\n"
        "        dest: /tmp/finml-canary\n        mode: \"0644\"\n"
    )
    result = run_playbook(test_inventories, playbook)
    assert result.returncode == 0, result.stdout[-3000:]
    assert parse_recap(result.stdout)["gpu-node-2"]["changed"] == 1, result.stdout[-2000:]


# ---------------------------------------------------------------------------------------------- MIG decision

MIG_PLAYBOOK = HERE / "playbooks" / "mig_decision.yml"


def _probe_gpus(scenario: str) -> list:
    """The probe's "gpus" output for a fake-NVML scenario, as the finml_gpu fact would report it."""
    import json
    import os
    import sys

    env = dict(os.environ, FINML_FAKE_NVML=str(HERE / "scenarios" / scenario))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "finml" / "gpu_probe.py"), "--json", "--profiles-dir", str(REPO_ROOT / "gpu_profiles")],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)["gpus"]


@pytest.mark.slow
@pytest.mark.sshhosts
@pytest.mark.parametrize(
    ("scenario", "layout", "apply", "create"),
    [
        ("h100x2_mig.json", {"3g.40gb": 2}, False, "3g.40gb,3g.40gb,"),  # already as asked: nothing to do
        ("h100x2_mig.json", {"1g.10gb": 7}, True, "1g.10gb," * 7),  # re-partition
        ("h100x2_mig.json", {}, True, ""),  # MIG on, inventory wants it off
        ("h100x8.json", {"3g.40gb": 2}, True, "3g.40gb,3g.40gb,"),  # MIG off, inventory wants slices
        ("h100x8.json", {}, False, ""),  # MIG off and not wanted
    ],
    ids=["unchanged", "repartition", "disable", "enable", "off-stays-off"],
)
def test_gpu_probe_mig_decision(test_hosts, test_inventories, tmp_path, scenario, layout, apply, create):
    import json

    extra = tmp_path / "mig.json"
    extra.write_text(json.dumps({"_gpu_probe_gpus": _probe_gpus(scenario), "gpu_probe_mig_layout": layout}))
    env = ansible_env()
    env["ANSIBLE_DISPLAY_SKIPPED_HOSTS"] = "true"  # check mode reports the nvidia-smi commands as skipped
    result = run_playbook(test_inventories, MIG_PLAYBOOK, "--check", "-v", "-e", f"@{extra}", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    expected = f"FINML_MIG apply={apply} create={create.strip()}"
    assert expected in result.stdout, f"expected {expected!r}:\n{result.stdout[-3000:]}"
    set_mode = _task_output(result.stdout, "gpu_probe : Set MIG mode")
    would_run = "Command would have run if not in check mode"
    assert (would_run in set_mode) == apply, set_mode
    if apply:
        assert f"- -mig\n    - '{1 if layout else 0}'" in set_mode, set_mode
    create_task = _task_output(result.stdout, "gpu_probe : Create the GPU and compute instances")
    if apply and layout:
        assert would_run in create_task and f"- {create.rstrip(',')}\n" in create_task, create_task
    else:
        assert would_run not in create_task, create_task
