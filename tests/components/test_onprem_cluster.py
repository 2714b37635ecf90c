"""OnPremCluster under Pulumi's mock runtime: the Ansible command, its content trigger, the secret kubeconfig, the
registered `site` prop, and child naming."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc

from components.naming import child_name
from components.onprem_cluster import (
    SECRET_VARS_ENV,
    TYPE_TOKEN,
    OnPremCluster,
    OnPremClusterArgs,
    ansible_command,
    ansible_content_hash,
)

ROOT = Path(__file__).resolve().parents[2]
SITE = "onprem:fra-dc1"
INVENTORY = "---\nall:\n  children:\n    finml_gpu_nodes:\n      hosts: {}\n"
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n"


@dataclass
class Registration:
    typ: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    provider: str


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registrations: list[Registration] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registrations.append(Registration(args.typ, args.name, args.custom, dict(args.inputs), args.provider))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def one(self, typ: str) -> Registration:
        found = [r for r in self.registrations if r.typ == typ]
        assert len(found) == 1, f"expected one {typ}, got {[(r.typ, r.name) for r in self.registrations]}"
        return found[0]


@pytest.fixture
def recorder() -> Recorder:
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="finml", stack="onprem-dc1", preview=False)
    return mocks


def _registered(*clusters: OnPremCluster) -> pulumi.Output:
    """Resolves once every cluster and its children are registered (checks must wait for all of them)."""
    urns = []
    for cluster in clusters:
        urns += [cluster.urn, cluster.k8s_provider.urn]
        if cluster.ansible_run is not None:
            urns.append(cluster.ansible_run.urn)
    return pulumi.Output.all(*urns)


def _args(**overrides) -> OnPremClusterArgs:
    values = dict(
        site=SITE,
        inventory_yaml=INVENTORY,
        playbook="ansible/playbooks/site.yml",
        ansible_dir=str(ROOT / "ansible"),
        kubeconfig=pulumi.Output.secret(KUBECONFIG),
    )
    values.update(overrides)
    return OnPremClusterArgs(**values)


@pulumi.runtime.test
def test_component_registers_site_prop(recorder):
    cluster = OnPremCluster("onprem-fra-dc1", _args())

    def check(_):
        component = recorder.one(TYPE_TOKEN)
        assert component.custom is False
        assert component.inputs == {"site": SITE}, f"{TYPE_TOKEN}::{component.name}: props {component.inputs}"

    return _registered(cluster).apply(check)


@pulumi.runtime.test
def test_command_runs_ansible_playbook_with_inventory_and_playbook(recorder):
    cluster = OnPremCluster("onprem-fra-dc1", _args())

    def check(_):
        run = recorder.one("command:local:Command")
        urn = f"command:local:Command::{run.name}"
        assert run.name == child_name("onprem-fra-dc1", "ansible"), urn
        create = run.inputs["create"]
        assert 'ansible-playbook -i "$inventory" "$@" ansible/playbooks/site.yml' in create, f"{urn}: {create}"
        assert "cat > \"$inventory\"" in create and "umask 077" in create, f"{urn}: inventory from stdin, private"
        assert f"ANSIBLE_CONFIG={ROOT / 'ansible' / 'ansible.cfg'}" in create, f"{urn}: {create}"
        assert run.inputs["stdin"] == INVENTORY, f"{urn}: inventory not passed on stdin"
        assert not run.inputs.get("environment"), f"{urn}: no secret vars given, no environment expected"
        assert run.inputs["update"] == create, f"{urn}: an update must re-run the playbook"
        assert run.inputs["triggers"] == [cluster.content_hash], f"{urn}: triggers {run.inputs['triggers']}"
        # default providers are disabled in every stack: the command needs its explicit provider
        provider = recorder.one("pulumi:providers:command")
        assert provider.name == child_name("onprem-fra-dc1", "command")
        assert run.provider.startswith("urn:") and run.provider.split("::")[-2] == provider.name, run.provider

    return _registered(cluster).apply(check)


def test_ansible_command_quotes_paths():
    shell = ansible_command("ans ible/site.yml", "/opt/my ansible")
    assert "ANSIBLE_CONFIG='/opt/my ansible/ansible.cfg'" in shell
    assert "ansible-playbook -i \"$inventory\" \"$@\" 'ans ible/site.yml'" in shell
    assert "trap 'rm -f \"$inventory\" \"$secrets\"' EXIT" in shell


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "ansible", project / "ansible", symlinks=True)
    (project / "finml").mkdir()
    for name in ("gpu_probe.py", "fake_nvml.py"):
        shutil.copy(ROOT / "finml" / name, project / "finml" / name)
    shutil.copytree(ROOT / "gpu_profiles", project / "gpu_profiles", ignore=shutil.ignore_patterns("__pycache__"))
    return project / "ansible"


def test_trigger_hash_changes_with_roles_inventory_and_shipped_files(tmp_path):
    ansible_dir = _copy_project(tmp_path)
    base = ansible_content_hash(INVENTORY, ansible_dir)
    assert base == ansible_content_hash(INVENTORY, ansible_dir), "hash must be deterministic"
    assert ansible_content_hash(INVENTORY + "# new node\n", ansible_dir) != base, "inventory change must re-run"

    defaults = ansible_dir / "roles" / "node_baseline" / "defaults" / "main.yml"
    original = defaults.read_text()
    defaults.write_text(original.replace("node_baseline_ssh_max_auth_tries: 3", "node_baseline_ssh_max_auth_tries: 4"))
    changed = ansible_content_hash(INVENTORY, ansible_dir)
    assert changed != base, "a role file edit must re-run Ansible"
    defaults.write_text(original)
    assert ansible_content_hash(INVENTORY, ansible_dir) == base

    template = ansible_dir / "roles" / "container_runtime" / "templates" / "config.toml.j2"
    template.rename(template.with_name("renamed.toml.j2"))
    assert ansible_content_hash(INVENTORY, ansible_dir) != base, "a rename must re-run Ansible"
    template.with_name("renamed.toml.j2").rename(template)

    (ansible_dir / "playbooks" / "extra.yml").write_text("---\n")
    assert ansible_content_hash(INVENTORY, ansible_dir) != base, "a new playbook must re-run Ansible"
    (ansible_dir / "playbooks" / "extra.yml").unlink()

    probe = ansible_dir.parent / "finml" / "gpu_probe.py"
    probe.write_text(probe.read_text() + "\n# changed\n")
    assert ansible_content_hash(INVENTORY, ansible_dir) != base, "the probe the gpu_probe role ships must count"

    (ansible_dir / "roles" / "gpu_probe" / "__pycache__").mkdir(exist_ok=True)
    (ansible_dir / "roles" / "gpu_probe" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    probe.write_text(probe.read_text().replace("\n# changed\n", ""))
    assert ansible_content_hash(INVENTORY, ansible_dir) == base, "bytecode caches must not count"


@pulumi.runtime.test
def test_command_trigger_follows_role_change(recorder, tmp_path):
    ansible_dir = _copy_project(tmp_path)
    first = OnPremCluster("a", _args(ansible_dir=str(ansible_dir)))
    (ansible_dir / "roles" / "gpu_probe" / "tasks" / "main.yml").write_text("---\n# edited\n")
    second = OnPremCluster("b", _args(ansible_dir=str(ansible_dir)))

    def check(_):
        runs = {r.name: r for r in recorder.registrations if r.typ == "command:local:Command"}
        a, b = runs[child_name("a", "ansible")], runs[child_name("b", "ansible")]
        assert a.inputs["triggers"] != b.inputs["triggers"], "command:local:Command::b-ansible kept the old trigger"

    return _registered(first, second).apply(check)


@pulumi.runtime.test
def test_provider_kubeconfig_stays_secret(recorder):
    cluster = OnPremCluster("onprem-fra-dc1", _args(kubeconfig=pulumi.Output.secret(KUBECONFIG)))

    def check(_):
        provider = recorder.one("pulumi:providers:kubernetes")
        urn = f"pulumi:providers:kubernetes::{provider.name}"
        assert provider.name == child_name("onprem-fra-dc1", "k8s"), urn
        kubeconfig = provider.inputs["kubeconfig"]
        assert rpc.is_rpc_secret(kubeconfig), f"{urn}: kubeconfig is not secret: {kubeconfig!r}"
        assert rpc.unwrap_rpc_secret(kubeconfig) == KUBECONFIG, urn

    return _registered(cluster).apply(check)


@pulumi.runtime.test
def test_plain_kubeconfig_is_made_secret(recorder):
    cluster = OnPremCluster("c", _args(kubeconfig=KUBECONFIG))

    def check(_):
        provider = recorder.one("pulumi:providers:kubernetes")
        assert rpc.is_rpc_secret(provider.inputs["kubeconfig"]), "plain kubeconfig input must become secret"

    return _registered(cluster).apply(check)


@pulumi.runtime.test
def test_provider_is_child_exposed_and_waits_for_ansible(recorder):
    cluster = OnPremCluster("onprem-fra-dc1", _args())
    assert isinstance(cluster.k8s_provider, pulumi.ProviderResource)
    assert cluster.ansible_run is not None

    def check(args):
        provider_urn, run_urn = args
        assert provider_urn.split("::")[-2].endswith(f"{TYPE_TOKEN}$pulumi:providers:kubernetes"), provider_urn
        assert run_urn.split("::")[-2].endswith(f"{TYPE_TOKEN}$command:local:Command"), run_urn

    return pulumi.Output.all(cluster.k8s_provider.urn, cluster.ansible_run.urn).apply(check)


@pulumi.runtime.test
def test_run_ansible_false_creates_no_command(recorder):
    cluster = OnPremCluster("onprem-fra-dc1", _args(run_ansible=False))
    assert cluster.ansible_run is None

    def check(_):
        assert not [r for r in recorder.registrations if r.typ == "command:local:Command"]
        recorder.one("pulumi:providers:kubernetes")

    return _registered(cluster).apply(check)


@pulumi.runtime.test
def test_secret_vars_reach_ansible_only_as_secret_environment(recorder):
    secret_vars = '{"disk_encryption_key": "k" , "kubernetes_node_join_token": "abcdef.0123456789abcdef"}'
    cluster = OnPremCluster("onprem-fra-dc1", _args(secret_vars=secret_vars))

    def check(_):
        run = recorder.one("command:local:Command")
        urn = f"command:local:Command::{run.name}"
        environment = run.inputs["environment"]
        # The SDK marks the whole environment map secret when a value in it is secret; either way it is encrypted.
        if rpc.is_rpc_secret(environment):
            environment = rpc.unwrap_rpc_secret(environment)
            value = environment[SECRET_VARS_ENV]
        else:
            value = environment[SECRET_VARS_ENV]
            assert rpc.is_rpc_secret(value), f"{urn}: secret vars are not secret: {value!r}"
            value = rpc.unwrap_rpc_secret(value)
        assert value == secret_vars, urn
        assert "abcdef.0123456789abcdef" not in run.inputs["create"] + str(run.inputs["triggers"]), urn

    return _registered(cluster).apply(check)


def test_command_shell_passes_secret_vars_file(tmp_path):
    """Run the real shell with a stand-in ansible-playbook: inventory from stdin, -e @file only with secrets."""
    import os
    import subprocess

    fake = tmp_path / "bin" / "ansible-playbook"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/args"; cat "$2" > "$OUT/inventory"\n'
                    'for a in "$@"; do case "$a" in @*) cat "${a#@}" > "$OUT/secrets";; esac; done\n')
    fake.chmod(0o755)
    shell = ansible_command("ansible/playbooks/site.yml", "ansible")
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", OUT=str(tmp_path), TMPDIR=str(tmp_path))
    subprocess.run(["sh", "-c", shell], input=INVENTORY, text=True, env=env, check=True)
    assert (tmp_path / "args").read_text().split() == ["-i", (tmp_path / "args").read_text().split()[1],
                                                       "ansible/playbooks/site.yml"]
    assert (tmp_path / "inventory").read_text() == INVENTORY
    env[SECRET_VARS_ENV] = '{"disk_encryption_key": "s3cret"}'
    subprocess.run(["sh", "-c", shell], input=INVENTORY, text=True, env=env, check=True)
    args = (tmp_path / "args").read_text().split()
    assert args[2] == "-e" and args[3].startswith("@") and args[4] == "ansible/playbooks/site.yml", args
    assert (tmp_path / "secrets").read_text() == '{"disk_encryption_key": "s3cret"}'
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp.")]
    assert leftovers == [], f"temp files not removed: {leftovers}"
