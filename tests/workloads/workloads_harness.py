"""Mock-runtime harness for the workload tests.

A MockMonitor subclass records every registration with its URN, parent, provider, dependencies and inputs (camelCase,
as the engine sees them); `manifest()` turns a Kubernetes registration back into the manifest the provider would
send to the API server, for kubernetes-validate and the security checks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from components.naming import child_name
from finml.config import AwsSite, OnPremSite, StackConfig, load_stack_file, parse_platform
from gpu_profiles import load_profiles
from tests.computed_outputs import computed_outputs

REPO_ROOT = Path(__file__).resolve().parents[2]
STACKS_DIR = REPO_ROOT / "stacks"
STACK_FILES = sorted(STACKS_DIR.glob("Pulumi.*.yaml"))
K8S_VERSION = "1.35"
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "Job"}


@dataclass
class Registered:
    urn: str
    typ: str
    name: str
    custom: bool
    parent: str | None
    provider: str | None  # provider URN (without the id), or None
    dependencies: list[str]
    inputs: dict[str, Any]

    @property
    def is_k8s(self) -> bool:
        return self.custom and self.typ.startswith("kubernetes:") and not self.typ.startswith("pulumi:providers:")

    @property
    def parent_type(self) -> str | None:
        """Type token of the parent: the last segment of the parent URN's type chain."""
        return self.parent.split("::")[2].split("$")[-1] if self.parent else None

    @property
    def kind(self) -> str:
        return self.typ.rsplit(":", 1)[1]

    def __str__(self) -> str:
        return self.urn


class _Mocks(pulumi.runtime.Mocks):
    """Update mode: ids known. Preview mode (the engine's dry run): no ids, computed attributes unknown."""

    def __init__(self, preview: bool = False) -> None:
        self.preview = preview

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if not self.preview:  # values the random and tls providers compute (unknown in a preview)
            outputs.update(computed_outputs(args.typ, args.name))
        return ("" if self.preview else f"{args.name}-id"), outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, preview: bool = False) -> None:
        super().__init__(_Mocks(preview))
        self.registered: list[Registered] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request):  # noqa: N802 — gRPC method name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            provider = request.provider.rsplit("::", 1)[0] if request.provider else None
            record = Registered(
                urn=response.urn, typ=request.type, name=request.name, custom=bool(request.custom),
                parent=request.parent or None, provider=provider, dependencies=list(request.dependencies),
                inputs=rpc.deserialize_properties(request.object),
            )
            with self._lock:
                self.registered.append(record)
        return response

    # -- queries ---------------------------------------------------------------------------------------------------

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.registered if r.typ == typ]

    def k8s(self, kind: str | None = None) -> list[Registered]:
        return [r for r in self.registered if r.is_k8s and (kind is None or r.kind == kind)]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.registered if r.urn == urn)

    def provider_of(self, record: Registered) -> str | None:
        """Name of the provider resource a registration uses (its cluster, hence its site); None without one."""
        return record.provider.rsplit("::", 1)[1] if record.provider else None


def run_program(program: Callable[[], Any], preview: bool = False) -> tuple[RecordingMonitor, Any]:
    """Run `program` under a fresh recording monitor; every registration is finished when this returns.

    `preview=True` runs it as `pulumi preview` does (the path the policy gate sees): ids and computed outputs are
    unknown. The default is the update path."""
    monitor = RecordingMonitor(preview)
    pulumi.runtime.set_mocks(monitor.mocks, project="finml", stack="test", preview=preview, monitor=monitor)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run():
        holder["result"] = program()

    _run()
    return monitor, holder.get("result")


def cluster_sites(stack: StackConfig) -> list[str]:
    """Sites with a Kubernetes cluster: every on-prem site, and AWS sites with EKS."""
    return [site_id for site_id, site in stack.platform.sites.items()
            if isinstance(site, OnPremSite) or (isinstance(site, AwsSite) and site.eks is not None)]


def provider_name(site: str) -> str:
    return child_name("k8s", site)


def deploy_stack(stack: StackConfig) -> Callable[[], dict[str, Any]]:
    """The program as `__main__.py` wires it: lineage once, then the platform per cluster with its provider."""
    from workloads.platform import deploy_platform, register_lineage

    def program() -> dict[str, Any]:
        profiles = load_profiles()
        register_lineage(stack)
        return {
            site: deploy_platform(stack, site, k8s.Provider(provider_name(site), kubeconfig="{}"), profiles)
            for site in cluster_sites(stack)
        }

    return program


def load_stack(path: Path) -> StackConfig:
    return load_stack_file(path, load_profiles())


def stack_from_raw(raw: dict[str, Any]) -> StackConfig:
    platform = parse_platform(raw, "test", load_profiles())
    return StackConfig(stack="test", source="test", platform=platform, secret_keys=(), raw_config={})


# -- manifests -----------------------------------------------------------------------------------------------------


def api_version(typ: str) -> str:
    """`kubernetes:apps/v1:Deployment` -> `apps/v1`; the core group has no prefix (`kubernetes:core/v1:…` -> `v1`)."""
    group_version = typ.split(":")[1]
    return group_version.removeprefix("core/")


_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a secret value on the wire


def _json_numbers(value: Any) -> Any:
    """Inputs travel as protobuf Structs, where every number is a double; JSON has integers, as the provider sends.
    Secret values arrive wrapped with Pulumi's signature; the provider sends the plain value."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and value.get(_SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return _json_numbers(value.get("value"))
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


def manifest(record: Registered) -> dict[str, Any]:
    """The object as the provider sends it: registered inputs plus apiVersion/kind from the type token."""
    body = {k: v for k, v in record.inputs.items() if k not in ("apiVersion", "kind")}
    return _json_numbers({"apiVersion": api_version(record.typ), "kind": record.kind, **body})


def pod_template(record: Registered) -> dict[str, Any]:
    return record.inputs["spec"]["template"]


@dataclass
class SecurityFindings:
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


def pod_security_problems(where: str, template: dict[str, Any], site_label: str) -> list[str]:
    """What keeps a pod template from being restricted, site-pinned and host-isolated; empty when it is."""
    findings = SecurityFindings()
    spec = template.get("spec", {})
    if spec.get("nodeSelector", {}).get("finml.io/site") != site_label:
        findings.add(where, f"nodeSelector finml.io/site is {spec.get('nodeSelector', {}).get('finml.io/site')!r}, "
                            f"expected {site_label!r}")
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host_field):
            findings.add(where, f"{host_field} is set")
    if spec.get("automountServiceAccountToken") is not False:
        findings.add(where, "automountServiceAccountToken is not false")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            findings.add(where, f"volume {volume.get('name')} is a hostPath")
    pod_sc = spec.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True or not pod_sc.get("runAsUser"):
        findings.add(where, "pod securityContext does not run as a non-root uid")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        findings.add(where, "pod seccompProfile is not RuntimeDefault")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    if not containers:
        findings.add(where, "no containers")
    for c in containers:
        sc = c.get("securityContext", {})
        cw = f"{where} container {c.get('name')}"
        if sc.get("privileged"):
            findings.add(cw, "privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            findings.add(cw, "allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            findings.add(cw, "capabilities do not drop ALL (or add some)")
        if sc.get("readOnlyRootFilesystem") is not True:
            findings.add(cw, "root file system is writable")
        if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
            findings.add(cw, "runs as root")
        if "ports" in c and any("hostPort" in p for p in c["ports"]):
            findings.add(cw, "uses a hostPort")
        resources = c.get("resources", {})
        if not resources.get("requests") or resources.get("requests") != resources.get("limits"):
            findings.add(cw, f"requests {resources.get('requests')} differ from limits {resources.get('limits')}")
    return findings.problems


_RUNS: dict[str, RecordingMonitor] = {}


def deployed_stack(stack_name: str) -> RecordingMonitor:
    """The recorded registrations of a real stack file's program, run once per test session."""
    if stack_name not in _RUNS:
        path = next(p for p in STACK_FILES if p.name == f"Pulumi.{stack_name}.yaml")
        _RUNS[stack_name], _ = run_program(deploy_stack(load_stack(path)))
    return _RUNS[stack_name]
