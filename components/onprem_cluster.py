"""OnPremCluster: an on-prem data centre's GPU cluster — Ansible configures its nodes from `pulumi up`.

The Ansible run is a pulumi-command `local.Command` whose trigger is a hash of the inventory and every file under
ansible/ (roles, playbooks, config), so a change to either re-runs the playbook and nothing else does. The cluster's
Kubernetes provider comes from a `secure:` kubeconfig in stack config. The component registers its `site` as a
prop: the policy pack derives an on-prem Kubernetes object's site from this lineage, never from object labels.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components.naming import child_name

TYPE_TOKEN = "finml:compute:OnPremCluster"
# Files outside ansible/ that the roles copy to the nodes (gpu_probe role): a change to them must re-run Ansible too.
# Globs relative to the project directory (the parent of ansible_dir).
SHIPPED_GLOBS = ("finml/gpu_probe.py", "finml/fake_nvml.py", "gpu_profiles/*.yaml")


@dataclass
class OnPremClusterArgs:
    site: str
    """The site id, e.g. `onprem:fra-dc1`."""
    inventory_yaml: str
    """The Ansible inventory (from `finml inventory`)."""
    playbook: str
    """Playbook path, relative to the project directory (ansible/playbooks/site.yml)."""
    ansible_dir: str
    """The ansible/ directory (ansible.cfg, roles, playbooks), relative to the project directory."""
    kubeconfig: pulumi.Input[str]
    """The cluster's kubeconfig, a secret."""
    run_ansible: bool = True
    """Run ansible-playbook from `pulumi up` (false: nodes are configured out of band)."""
    secret_vars: pulumi.Input[str] | None = None
    """Secret extra vars for the roles, as JSON or YAML text (disk_encryption_key, kubernetes_node_join_token,
    kubernetes_node_ca_cert_hashes). Passed to the command as a secret environment variable, written to a private
    temp file for `-e @file`, and removed afterwards; it never appears in the command line or the trigger."""


def _content_files(ansible_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of every file that shapes an Ansible run, names relative to the project directory."""
    files: dict[str, Path] = {}
    project = ansible_dir.parent
    for path in ansible_dir.rglob("*"):
        if path.is_symlink() or not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        files["ansible/" + path.relative_to(ansible_dir).as_posix()] = path
    for pattern in SHIPPED_GLOBS:
        for path in project.glob(pattern):
            if path.is_file():
                files[path.relative_to(project).as_posix()] = path
    return sorted(files.items())


def ansible_content_hash(inventory_yaml: str, ansible_dir: Path) -> str:
    """sha256 over the inventory, every file under ansible/ (roles, playbooks, ansible.cfg) and the files the roles
    ship from elsewhere in the project, by relative path — so edits, additions and renames all count as changes."""
    digest = hashlib.sha256()
    digest.update(b"inventory\0" + inventory_yaml.encode() + b"\0")
    for name, path in _content_files(Path(ansible_dir)):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


SECRET_VARS_ENV = "FINML_ANSIBLE_SECRET_VARS"


def ansible_command(playbook: str, ansible_dir: str) -> str:
    """Shell for local.Command: the inventory arrives on stdin and the secret vars (if any) in an environment
    variable; both live in private temp files that are removed on exit."""
    return (
        "set -eu; umask 077; inventory=$(mktemp); secrets=$(mktemp); trap 'rm -f \"$inventory\" \"$secrets\"' EXIT; "
        "cat > \"$inventory\"; "
        f"printf '%s' \"${{{SECRET_VARS_ENV}:-}}\" > \"$secrets\"; "
        f"if [ -s \"$secrets\" ]; then set -- -e \"@$secrets\"; else set --; fi; "
        f"ANSIBLE_CONFIG={shlex.quote(ansible_dir + '/ansible.cfg')} "
        f"ansible-playbook -i \"$inventory\" \"$@\" {shlex.quote(playbook)}"
    )


class OnPremCluster(pulumi.ComponentResource):
    ansible_run: command.local.Command | None
    k8s_provider: k8s.Provider
    content_hash: str

    def __init__(self, name: str, args: OnPremClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, {"site": args.site}, opts)
        self._name = name
        self._args = args
        self.content_hash = ansible_content_hash(args.inventory_yaml, Path(args.ansible_dir))
        self.ansible_run = self._create_ansible_run() if args.run_ansible else None
        self.k8s_provider = self._create_provider()
        self.register_outputs({"site": args.site, "ansibleContentHash": self.content_hash})

    def _create_ansible_run(self) -> command.local.Command:
        shell = ansible_command(self._args.playbook, self._args.ansible_dir)
        # Default providers are disabled in every stack ("*"), so the command package needs its own explicit one.
        runner = command.Provider(child_name(self._name, "command"), opts=pulumi.ResourceOptions(parent=self))
        environment = None
        if self._args.secret_vars is not None:
            environment = {SECRET_VARS_ENV: pulumi.Output.secret(self._args.secret_vars)}
        return command.local.Command(
            child_name(self._name, "ansible"),
            create=shell,
            update=shell,
            stdin=self._args.inventory_yaml,
            environment=environment,
            triggers=[self.content_hash],
            opts=pulumi.ResourceOptions(parent=self, provider=runner),
        )

    def _create_provider(self) -> k8s.Provider:
        depends = [self.ansible_run] if self.ansible_run is not None else []
        return k8s.Provider(
            child_name(self._name, "k8s"),
            kubeconfig=pulumi.Output.secret(self._args.kubeconfig),
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
