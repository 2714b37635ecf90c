"""site.yml against real SSH test hosts: converge → idempotence → check → verify over SSH.

Hosts run with finml_hardware_actions=false: runtime actions are skipped, every configuration file is written and
checked here with the node's own tools (sshd -t, nft -c, containerd config dump, dpkg -s, the GPU probe fact).
"""

from __future__ import annotations

import json

import pytest
import yaml
from ansible_harness import FAKE_MIRROR, JOIN_TOKEN, LUKS_TEST_KEY, TEST_NETWORK

pytestmark = [pytest.mark.slow, pytest.mark.sshhosts]


def _ssh(converged, node: str, command: str, check: bool = True):
    result = converged.hosts[node].ssh(command, check=False)
    if check:
        assert result.returncode == 0, f"{node}: `{command}` failed rc={result.returncode}: {result.stderr}{result.stdout}"
    return result


def test_converge_succeeds(converged):
    run = converged.runs["converge"]
    assert run.result.returncode == 0, run.explain()
    assert set(run.recap) == {"gpu-node-1", "gpu-node-2"}, run.explain()
    for host, counts in run.recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, f"{host}: {counts}"
        assert counts["changed"] > 0, f"{host}: a first converge must change the fresh host: {counts}"


def test_second_run_changes_nothing(converged):
    run = converged.runs.get("idempotence")
    assert run is not None, "converge failed; see test_converge_succeeds"
    assert run.result.returncode == 0, run.explain()
    from ansible_harness import changed_tasks

    for host, counts in run.recap.items():
        assert counts["changed"] == 0, f"{host}: not idempotent: {counts}\n" + "\n".join(changed_tasks(run.result.stdout))
        assert counts["failed"] == 0, f"{host}: {counts}"


def test_check_mode_is_clean(converged):
    run = converged.runs.get("check")
    assert run is not None, "converge failed; see test_converge_succeeds"
    assert run.result.returncode == 0, run.explain()
    for host, counts in run.recap.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, f"{host}: --check after converge: {counts}"


# ------------------------------------------------------------------------------------------------------ verify


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_packages_installed(converged, node):
    for package in ("openssh-server", "chrony", "auditd", "nftables", "kmod", "containerd"):
        status = _ssh(converged, node, f"dpkg -s {package}").stdout
        assert "Status: install ok installed" in status, f"{node}: {package} not installed:\n{status}"


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_sshd_hardened(converged, node):
    _ssh(converged, node, "/usr/sbin/sshd -t")  # whole config incl. the drop-in
    effective = _ssh(converged, node, "/usr/sbin/sshd -T -C user=root,host=x,addr=127.0.0.1").stdout.lower()
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["passwordauthentication"] == "no", settings
    assert settings["kbdinteractiveauthentication"] == "no", settings
    assert settings["permitrootlogin"] in ("without-password", "prohibit-password"), settings
    assert settings["ciphers"].split(",") == [
        "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr"
    ], settings["ciphers"]  # fmt: skip
    assert all(mac.endswith("-etm@openssh.com") for mac in settings["macs"].split(",")), settings["macs"]
    assert "diffie-hellman-group14-sha1" not in settings["kexalgorithms"], settings["kexalgorithms"]
    assert settings["maxauthtries"] == "3"


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_firewall_default_drop_and_valid(converged, node):
    _ssh(converged, node, "nft -c -f /etc/nftables.conf")
    rules = _ssh(converged, node, "cat /etc/nftables.conf").stdout
    assert "type filter hook input priority filter; policy drop;" in rules
    assert 'iifname "lo" accept' in rules and "ct state established,related accept" in rules
    for key in ("node_cidr", "pod_cidr", "storage_cidr", "management_cidr"):
        assert TEST_NETWORK[key] in rules, f"{node}: {key} {TEST_NETWORK[key]} not allowed in nftables.conf"
    assert TEST_NETWORK["service_cidr"] not in rules, "service CIDR is virtual and must not be an inbound source"


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_kernel_time_and_audit_files(converged, node):
    modules = _ssh(converged, node, "cat /etc/modules-load.d/finml.conf").stdout.split()
    assert {"overlay", "br_netfilter"} <= set(modules), modules
    gpu_modules = _ssh(converged, node, "cat /etc/modules-load.d/finml-gpu.conf").stdout.split()
    assert "nvidia" in gpu_modules and "nvidia_uvm" in gpu_modules, gpu_modules
    sysctl = _ssh(converged, node, "cat /etc/sysctl.d/90-finml.conf").stdout
    for line in ("net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1", "kernel.kptr_restrict = 2"):
        assert line in sysctl, f"{node}: {line!r} missing from 90-finml.conf"
    chrony = _ssh(converged, node, "cat /etc/chrony/sources.d/finml.sources").stdout
    assert "server 127.0.12.1 iburst" in chrony and "server 127.0.12.2 iburst" in chrony, chrony
    assert _ssh(converged, node, "grep -c '^pool ' /etc/chrony/chrony.conf", check=False).stdout.strip() == "0"
    audit = _ssh(converged, node, "cat /etc/audit/rules.d/50-finml.rules").stdout
    assert "-w /etc/ssh/sshd_config.d -p wa -k finml-config" in audit, audit
    # chroot validation of the audit rules file syntax: auditctl would need the kernel; check rule shape instead
    assert all(line.startswith(("-w ", "-a ", "##")) for line in audit.splitlines() if line.strip()), audit


def test_data_disks_encrypted_config(converged):
    crypttab = _ssh(converged, "gpu-node-1", "cat /etc/crypttab").stdout
    assert (
        "finml_data0 /dev/disk/by-id/finml-test-data0 /etc/cryptsetup-keys.d/finml-data.key luks,discard,nofail"
        in crypttab
    ), crypttab
    assert "finml_data1 /dev/disk/by-id/finml-test-data1" in crypttab, crypttab
    fstab = _ssh(converged, "gpu-node-1", "cat /etc/fstab").stdout
    assert "/dev/mapper/finml_data0 /var/lib/containerd ext4" in fstab, fstab
    assert "/dev/mapper/finml_data1 /srv/finml/datasets/1 ext4" in fstab, fstab
    assert "x-systemd.requires=systemd-cryptsetup@finml_data0.service" in fstab
    key_stat = _ssh(converged, "gpu-node-1", "stat -c '%a %U' /etc/cryptsetup-keys.d /etc/cryptsetup-keys.d/finml-data.key")
    assert key_stat.stdout.split("\n")[:2] == ["700 root", "400 root"], key_stat.stdout
    assert _ssh(converged, "gpu-node-1", "cat /etc/cryptsetup-keys.d/finml-data.key").stdout == LUKS_TEST_KEY
    _ssh(converged, "gpu-node-1", "test -d /srv/finml/datasets/1")
    # node 2 has no data disks: nothing written
    assert _ssh(converged, "gpu-node-2", "test -e /etc/cryptsetup-keys.d", check=False).returncode == 1


def test_luks_key_never_logged(converged):
    for name, run in converged.runs.items():
        assert LUKS_TEST_KEY not in run.result.stdout + run.result.stderr, f"LUKS key printed in the {name} run"
        assert JOIN_TOKEN not in run.result.stdout + run.result.stderr, f"join token printed in the {name} run"


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_containerd_has_nvidia_runtime(converged, node):
    dump = _ssh(converged, node, "containerd --config /etc/containerd/config.toml config dump").stdout
    assert 'default_runtime_name = "nvidia"' in dump, dump[:2000]
    assert "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]" in dump
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in dump
    assert "SystemdCgroup = true" in dump


@pytest.mark.parametrize(
    ("node", "profile_label", "extra_taint"),
    [("gpu-node-1", "h100-80gb", None), ("gpu-node-2", "t4", "finml.io/dedicated")],
)
def test_kubeadm_join_configuration(converged, node, profile_label, extra_taint):
    text = _ssh(converged, node, "cat /etc/kubernetes/kubeadm-join.yaml").stdout
    config = yaml.safe_load(text)
    assert config["apiVersion"] == "kubeadm.k8s.io/v1beta4" and config["kind"] == "JoinConfiguration", config
    assert config["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "127.0.10.250:6443"
    registration = config["nodeRegistration"]
    assert registration["name"] == node
    assert registration["criSocket"] == "unix:///run/containerd/containerd.sock"
    args = {arg["name"]: arg["value"] for arg in registration["kubeletExtraArgs"]}
    labels = dict(item.split("=", 1) for item in args["node-labels"].split(","))
    assert labels["finml.io/site"] == "onprem-test-dc1", labels
    assert labels["finml.io/gpu-profile"] == profile_label, labels
    taints = {(t["key"], t.get("value"), t["effect"]) for t in registration["taints"]}
    assert ("nvidia.com/gpu", "present", "NoSchedule") in taints, taints
    if extra_taint:
        assert any(key == extra_taint for key, _, _ in taints), taints
    mode = _ssh(converged, node, "stat -c %a /etc/kubernetes/kubeadm-join.yaml").stdout.strip()
    assert mode == "600", "the join config holds the bootstrap token"
    # container_runtime's config survived kubernetes_node (no template fight): still the nvidia default runtime
    assert 'default_runtime_name = "nvidia"' in _ssh(converged, node, "cat /etc/containerd/config.toml").stdout


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_package_sources_written_from_variables(converged, node):
    keyrings = {
        "finml-kubernetes": "/etc/apt/keyrings/finml-kubernetes.asc",  # inline key text → written to the node
        "finml-nvidia-container-toolkit": "/usr/share/keyrings/finml-test-keyring.gpg",  # node-local path → as is
        "finml-nvidia-cuda": "/etc/apt/keyrings/finml-nvidia-cuda.asc",  # URL → downloaded on hardware runs only
    }
    for name, keyring in keyrings.items():
        source = _ssh(converged, node, f"cat /etc/apt/sources.list.d/{name}.sources").stdout
        assert f"URIs: {FAKE_MIRROR}/" in source, source
        assert "Suites: /\n" in source, source
        assert f"Signed-By: {keyring}\n" in source, source
    assert "BEGIN PGP PUBLIC KEY BLOCK" in _ssh(converged, node, "cat /etc/apt/keyrings/finml-kubernetes.asc").stdout
    # the URL key is not fetched on a test host (no mirror reachable, finml_hardware_actions=false)
    assert _ssh(converged, node, "test -e /etc/apt/keyrings/finml-nvidia-cuda.asc", check=False).returncode == 1
    pin = _ssh(converged, node, "cat /etc/apt/preferences.d/finml-nvidia-driver.pref").stdout
    assert "Pin: version 570.*" in pin, pin


@pytest.mark.parametrize(("node", "profile", "count"), [("gpu-node-1", "H100-80GB", 8), ("gpu-node-2", "T4", 1)])
def test_gpu_probe_local_fact(converged, node, profile, count):
    fact = _ssh(converged, node, "/etc/ansible/facts.d/finml_gpu.fact")
    probe = json.loads(fact.stdout)
    assert probe["nvml_available"] is True, probe
    assert probe["profile"] == profile and probe["gpu_count"] == count, probe
    assert probe["mismatch"] == [], probe
    profiles = json.loads(_ssh(converged, node, "cat /usr/local/libexec/finml/gpu_profiles.json").stdout)
    assert profile in {entry["name"] for entry in profiles}
    # Without the test hook the probe has no NVML on this host: it says so in JSON and exits 3.
    bare = _ssh(converged, node, "python3 /usr/local/libexec/finml/gpu_probe.py --json", check=False)
    assert bare.returncode == 3, bare.stderr
    assert json.loads(bare.stdout)["nvml_available"] is False


@pytest.mark.parametrize("node", ["gpu-node-1", "gpu-node-2"])
def test_hardware_actions_were_skipped(converged, node):
    """finml_hardware_actions=false: no join, no reboot flag, no driver packages from NVIDIA's repository."""
    assert _ssh(converged, node, "test -e /etc/kubernetes/kubelet.conf", check=False).returncode == 1
    assert _ssh(converged, node, "test -e /var/run/reboot-required", check=False).returncode == 1
    assert _ssh(converged, node, "dpkg -s nvidia-container-toolkit", check=False).returncode != 0
