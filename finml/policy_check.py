"""Drive the policy pack exactly as `pulumi preview --policy-pack policies` does, from a plan file.

The pack is started as a program (`python -u -m pulumi.policy <engine> <pack dir>`, the command the engine's Python
analyzer plugin runs), it prints its gRPC port, and we call the Analyzer service over real gRPC: GetAnalyzerInfo,
Configure (policy config), ConfigureStack, Analyze for every resource and AnalyzeStack once. The verdicts therefore
come from the same code path as a real preview; offline and online cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from finml.plan import Plan, PlanResource, plan_value_to_wire

DEFAULT_PACK_DIR = Path(__file__).resolve().parent.parent / "policies"
START_TIMEOUT_S = 120
RPC_TIMEOUT_S = 120
_MAX_MESSAGE = 400 * 1024 * 1024
_SUFFIX_RE = re.compile(r"\s*\[site=(?P<site>[^;\]]*); classification=(?P<cls>[^\]]*)\]\s*$")

LEVELS = {analyzer_pb2.ADVISORY: "advisory", analyzer_pb2.MANDATORY: "mandatory",
          analyzer_pb2.DISABLED: "disabled", analyzer_pb2.REMEDIATE: "remediate"}
LEVEL_VALUES = {v: k for k, v in LEVELS.items()}
SEVERITIES = {analyzer_pb2.POLICY_SEVERITY_UNSPECIFIED: "unspecified", analyzer_pb2.POLICY_SEVERITY_LOW: "low",
              analyzer_pb2.POLICY_SEVERITY_MEDIUM: "medium", analyzer_pb2.POLICY_SEVERITY_HIGH: "high",
              analyzer_pb2.POLICY_SEVERITY_CRITICAL: "critical"}


class PolicyPackError(Exception):
    """The pack could not be started or answered wrongly; the message says what happened."""


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    description: str
    enforcement: str
    severity: str
    remediation: str
    kind: str  # "resource" or "stack"


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str
    severity: str
    urn: str
    resource_type: str
    resource_name: str
    site: str
    classification: str
    message: str
    description: str
    remediation: str
    controls: tuple[str, ...] = ()  # framework:id, e.g. pci-dss:3.5.1 (finml_rules/controls.py)
    waiver: dict[str, Any] | None = None  # for a waived finding: the waiver that exempted it


@dataclass
class CheckResult:
    project: str
    stack: str
    pack: str
    pack_version: str
    policies: list[PolicyInfo]
    violations: list[Violation]
    resources_checked: int
    resources_by_type: dict[str, int] = field(default_factory=dict)
    resources_by_site: dict[str, int] = field(default_factory=dict)
    waived: list[Violation] = field(default_factory=list)
    data_placement: list[dict[str, str]] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement != "mandatory"]

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "policyPack": {"name": self.pack, "version": self.pack_version, "policies": len(self.policies)},
            "resourcesChecked": self.resources_checked,
            "resourcesByType": dict(sorted(self.resources_by_type.items())),
            "resourcesBySite": dict(sorted(self.resources_by_site.items())),
            "summary": {"mandatory": len(self.mandatory), "advisory": len(self.advisory),
                        "passed": not self.mandatory},
            "violations": [_violation_json(v) for v in self.violations],
            "waived": [_violation_json(v) for v in self.waived],
        }


def _violation_json(v: Violation) -> dict[str, Any]:
    out = asdict(v)
    out["controls"] = list(v.controls)
    if out["waiver"] is None:
        del out["waiver"]
    return out


# ------------------------------------------------------------------------------------------------ wire conversion


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(plan_value_to_wire(props))
    return s


def _provider_message(plan_index: dict[str, PlanResource], res: PlanResource):
    if res.provider is None or res.provider not in plan_index:
        return None
    prov = plan_index[res.provider]
    return analyzer_pb2.AnalyzerProviderResource(type=prov.type, properties=_struct(prov.props), urn=prov.urn,
                                                 name=prov.name)


def _options(res: PlanResource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(parent=res.parent or "")


# ------------------------------------------------------------------------------------------------ the pack process


class PolicyPackProcess:
    """The pack as a child process speaking the Analyzer protocol on 127.0.0.1."""

    def __init__(self, pack_dir: Path = DEFAULT_PACK_DIR, python: str = sys.executable):
        self.pack_dir = Path(pack_dir).resolve()
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._stderr: list[str] = []

    def __enter__(self) -> PolicyPackProcess:
        if not (self.pack_dir / "PulumiPolicy.yaml").is_file():
            raise PolicyPackError(f"{self.pack_dir}: not a policy pack (no PulumiPolicy.yaml)")
        env = dict(os.environ)
        env.pop("PULUMI_CONFIG", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [self.python, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(self.pack_dir)],
            cwd=self.pack_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        port = self._read_port()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)])
        try:
            grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            self.close()
            raise PolicyPackError(f"policy pack at {self.pack_dir} did not accept gRPC connections on port {port}")
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        return self

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _read_port(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = result[0].strip() if result else ""
        if not line.isdigit():
            self.close()
            tail = "".join(self._stderr[-15:]).strip()
            raise PolicyPackError(f"policy pack at {self.pack_dir} did not start (expected its gRPC port on stdout, "
                                  f"got {line!r})" + (f":\n{tail}" if tail else ""))
        return int(line)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, reported: str) -> str:
        """The engine takes a Python pack's version from PulumiPolicy.yaml (the SDK reports a placeholder)."""
        import yaml

        try:
            meta = yaml.safe_load((self.pack_dir / "PulumiPolicy.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return reported
        return str(meta.get("version", reported))

    def stderr_text(self) -> str:
        return "".join(self._stderr)


# ------------------------------------------------------------------------------------------------ checking


def _policy_infos(info: analyzer_pb2.AnalyzerInfo) -> list[PolicyInfo]:
    out = []
    for p in info.policies:
        out.append(PolicyInfo(
            name=p.name, description=p.description, enforcement=LEVELS.get(p.enforcementLevel, "advisory"),
            severity=SEVERITIES.get(p.severity, "unspecified"), remediation=p.remediation_steps,
            kind="stack" if p.policy_type == analyzer_pb2.POLICY_TYPE_STACK else "resource"))
    return out


class PolicyConfigError(ValueError):
    """A `--policy-pack-config` document the engine would reject; the message names the key and what is allowed."""


def _level(where: str, value: Any) -> str:
    if value not in LEVEL_VALUES:
        raise PolicyConfigError(f"{where}: enforcement level {value!r} is not valid; allowed: "
                                f"{', '.join(sorted(LEVEL_VALUES))}")
    return value


def configure_request(config: dict[str, Any] | None, policies: list[PolicyInfo]) -> analyzer_pb2.ConfigureAnalyzerRequest:
    """`--policy-pack-config` JSON → ConfigureAnalyzerRequest, expanding "all" as the engine does."""
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    config = dict(config or {})
    known = {p.name for p in policies}
    unknown = sorted(set(config) - known - {"all"})
    if unknown:
        raise PolicyConfigError(f"unknown policy {unknown[0]!r} in the policy config; allowed: 'all' or one of the "
                                f"{len(known)} policy names of this pack (see `finml policy config`)")
    all_level = config.pop("all", None)
    if isinstance(all_level, dict):
        all_level = all_level.get("enforcementLevel")
    if all_level is not None:
        _level("all", all_level)
    for policy in policies:
        value = config.get(policy.name, {})
        if isinstance(value, str):
            value = {"enforcementLevel": value}
        if not isinstance(value, dict):
            raise PolicyConfigError(f"{policy.name}: must be an enforcement level or an object of config values "
                                    f"(got {type(value).__name__})")
        level = _level(f"{policy.name}.enforcementLevel",
                       value.get("enforcementLevel", all_level or policy.enforcement))
        props = {k: v for k, v in value.items() if k != "enforcementLevel"}
        pc = analyzer_pb2.PolicyConfig(enforcementLevel=LEVEL_VALUES[level])
        pc.properties.update(props)
        request.policyConfig[policy.name].CopyFrom(pc)
    return request


def site_of(plan_index: dict[str, PlanResource], res: PlanResource) -> str:
    """Best-effort site for summaries and reports; the pack derives sites itself (same lineage) for its verdicts."""
    seen: set[str] = set()
    cur: PlanResource | None = res
    while cur is not None and cur.urn not in seen:
        seen.add(cur.urn)
        if cur.type.startswith("aws:") or cur.type == "pulumi:providers:aws":
            region = cur.props.get("region")
            if isinstance(region, str) and region:
                return f"aws:{region}"
        if cur.type == "finml:compute:OnPremCluster" and isinstance(cur.props.get("site"), str):
            return cur.props["site"]
        if cur.type == "finml:compute:GpuCluster":
            eks = next((r for r in plan_index.values()
                        if r.parent == cur.urn and r.type == "aws:eks/cluster:Cluster"), None)
            cur = eks
            continue
        if cur.provider and cur.provider in plan_index:
            cur = plan_index[cur.provider]
            continue
        cur = plan_index.get(cur.parent) if cur.parent else None
    return "?"


def check_plan(plan: Plan, pack_dir: Path = DEFAULT_PACK_DIR, policy_config: dict[str, Any] | None = None,
               pack: PolicyPackProcess | None = None) -> CheckResult:
    """Check one plan. Pass a started `pack` to check many plans against one pack process (mutation tests)."""
    if pack is None:
        with PolicyPackProcess(pack_dir) as started:
            return _check_with(plan, started, policy_config)
    return _check_with(plan, pack, policy_config)


def _check_with(plan: Plan, pack: PolicyPackProcess, policy_config: dict[str, Any] | None) -> CheckResult:
    index = plan.by_urn()
    resources = sorted(plan.resources, key=lambda r: r.urn)
    checked = [r for r in resources if r.type != "pulumi:pulumi:Stack"]
    by_type: dict[str, int] = {}
    by_site: dict[str, int] = {}
    for r in checked:
        by_type[r.type] = by_type.get(r.type, 0) + 1
        if r.custom and not r.type.startswith("pulumi:providers:"):
            site = site_of(index, r)
            by_site[site] = by_site.get(site, 0) + 1

    stub = pack.stub
    assert stub is not None
    try:
        info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=RPC_TIMEOUT_S)
        stub.GetPluginInfo(empty_pb2.Empty(), timeout=RPC_TIMEOUT_S)
        policies = _policy_infos(info)
        try:
            configure = configure_request(policy_config, policies)
        except PolicyConfigError as exc:
            raise PolicyPackError(f"bad policy config: {exc}") from None
        stub.Configure(configure, timeout=RPC_TIMEOUT_S)
        stub.ConfigureStack(analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=plan.stack, project=plan.project, organization="organization", dry_run=True,
            config={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in plan.config.items()}),
            timeout=RPC_TIMEOUT_S)
        diagnostics = []
        for r in checked:
            req = analyzer_pb2.AnalyzeRequest(type=r.type, properties=_struct(r.props), urn=r.urn, name=r.name,
                                              options=_options(r), provider=_provider_message(index, r))
            resp = stub.Analyze(req, timeout=RPC_TIMEOUT_S)
            diagnostics.extend((d, r.urn) for d in resp.diagnostics)
        stack_req = analyzer_pb2.AnalyzeStackRequest(resources=[
            analyzer_pb2.AnalyzerResource(
                type=r.type, properties=_struct(r.stack_view()), urn=r.urn, name=r.name, options=_options(r),
                provider=_provider_message(index, r), parent=r.parent or "", dependencies=r.dependencies,
                propertyDependencies={k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                                      for k, v in r.property_dependencies.items()})
            for r in resources])
        resp = stub.AnalyzeStack(stack_req, timeout=RPC_TIMEOUT_S)
        diagnostics.extend((d, "") for d in resp.diagnostics)
    except grpc.RpcError as exc:
        raise PolicyPackError(f"policy pack failed during analysis: {exc.details()}\n"
                              f"{pack.stderr_text()[-3000:]}") from None

    by_name = {p.name: p for p in policies}
    controls, parse_waived = _pack_helpers(pack.pack_dir)
    violations, waived = [], []
    for diag, default_urn in diagnostics:
        urn = diag.urn or default_urn
        res = index.get(urn)
        message = diag.message
        if message.startswith(diag.description):
            message = message[len(diag.description):].strip()
        policy_name, waiver = diag.policyName, None
        parsed = parse_waived(message) if policy_name == "policy-waived-findings" else None
        if parsed is not None:
            policy_name, message, waiver = parsed
        site, classification = "?", "?"
        m = _SUFFIX_RE.search(message)
        if m:
            site, classification = m.group("site").strip() or "?", m.group("cls").strip() or "?"
            message = message[:m.start()].rstrip()
        if site == "?" and res is not None:
            site = site_of(index, res)
        policy = by_name.get(policy_name)
        found = Violation(
            policy=policy_name, enforcement=LEVELS.get(diag.enforcementLevel, "advisory"),
            severity=(policy.severity if waiver is not None and policy else
                      SEVERITIES.get(diag.severity, policy.severity if policy else "unspecified")),
            urn=urn, resource_type=res.type if res else "", resource_name=res.name if res else "",
            site=site, classification=classification, message=message or diag.description,
            description=policy.description if waiver is not None and policy else diag.description,
            remediation=policy.remediation if policy else "",
            controls=tuple(controls(policy_name)), waiver=waiver)
        if waiver is not None:
            waived.append(replace(found, enforcement="waived"))
        else:
            violations.append(found)
    violations.sort(key=lambda v: (v.enforcement != "mandatory", v.policy, v.urn, v.message))
    waived.sort(key=lambda v: (v.policy, v.urn, v.message))
    return CheckResult(project=plan.project, stack=plan.stack, pack=info.name, pack_version=pack.version(info.version),
                       policies=policies, violations=violations, resources_checked=len(checked),
                       resources_by_type=by_type, resources_by_site=by_site, waived=waived,
                       data_placement=data_placement(plan, policy_config))


def _pack_helpers(pack_dir: Path):
    """The pack's own control catalogue and waived-finding parser (one definition of both)."""
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    try:
        from finml_rules.controls import control_ids  # pylint: disable=import-outside-toplevel
        from finml_rules.governance import parse_waived  # pylint: disable=import-outside-toplevel
    except ImportError:  # another pack (tests' mini pack): no controls, no waivers
        return (lambda name: []), (lambda message: None)
    return control_ids, parse_waived


_DATA_TYPES_HINT = ("aws:s3/bucket", "aws:ebs/volume", "aws:efs/", "aws:rds/", "aws:elasticache/", "aws:dynamodb/",
                    "aws:fsx/", "aws:cloudwatch/logGroup", "kubernetes:core/v1:PersistentVolumeClaim",
                    "finml:ml:Dataset", "finml:ml:Model")


def data_placement(plan: Plan, policy_config: dict[str, Any] | None) -> list[dict[str, str]]:
    """Where every classified data-bearing resource lives and which residency pattern allows it (for the HTML
    report's site x classification matrix). Best effort, like `site_of`; verdicts come from the pack."""
    import fnmatch  # pylint: disable=import-outside-toplevel

    residency = ((policy_config or {}).get("residency-aws-data-site") or {}).get("residency") or {}
    index = plan.by_urn()
    out = []
    for r in plan.resources:
        tags = r.props.get("tags") if isinstance(r.props.get("tags"), dict) else {}
        meta = r.props.get("metadata") if isinstance(r.props.get("metadata"), dict) else {}
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        cls = tags.get("finml:classification") or labels.get("finml.io/classification") or (
            r.props.get("classification") if r.type.startswith("finml:ml:") else None)
        if not isinstance(cls, str) or not r.type.startswith(_DATA_TYPES_HINT + ("kubernetes:",)):
            continue
        site = r.props.get("site") if r.type == "finml:ml:Dataset" and isinstance(r.props.get("site"), str) \
            else site_of(index, r)
        allowed_by = next((p for p in residency.get(cls, []) if isinstance(site, str) and fnmatch.fnmatchcase(site, p)),
                          "")
        out.append({"urn": r.urn, "type": r.type, "name": r.name, "site": site, "classification": cls,
                    "allowedBy": allowed_by})
    return out
