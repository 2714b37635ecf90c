"""The `finml-plan/1` plan file: what the program registered, as the engine sees it.

A plan is deterministic (resources sorted by URN, keys sorted, integral numbers as integers) so the same stack always
gives a byte-identical file. Secret values are replaced by {"secret": true} and values unknown at preview by
{"unknown": true}. The JSON Schema in finml/schemas/plan.schema.json is the contract; `load_plan` checks it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

PLAN_FORMAT = "finml-plan/1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.schema.json"
SECRET_MARKER = {"secret": True}
UNKNOWN_MARKER = {"unknown": True}
STACK_TYPE = "pulumi:pulumi:Stack"


class PlanError(Exception):
    """A plan file that cannot be used; the message names the file and what is wrong."""


@dataclass
class PlanResource:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str | None
    provider: str | None
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    props: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "custom": self.custom,
            "parent": self.parent,
            "provider": self.provider,
            "dependencies": sorted(set(self.dependencies)),
            "propertyDependencies": {k: sorted(set(v)) for k, v in sorted(self.property_dependencies.items())},
            "props": self.props,
        }
        if self.outputs is not None:
            out["outputs"] = self.outputs
        return out

    def stack_view(self) -> dict[str, Any]:
        """What the engine hands stack policies: a component's registered outputs (inputs until it registers any);
        a custom resource's planned state, which at preview is its inputs with computed values unknown."""
        return self.outputs if (not self.custom and self.outputs is not None) else self.props

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanResource:
        return cls(urn=data["urn"], type=data["type"], name=data["name"], custom=data["custom"],
                   parent=data["parent"], provider=data["provider"], dependencies=list(data["dependencies"]),
                   property_dependencies={k: list(v) for k, v in data.get("propertyDependencies", {}).items()},
                   props=data["props"], outputs=data.get("outputs"))


@dataclass
class Plan:
    project: str
    stack: str
    config: dict[str, Any]
    resources: list[PlanResource]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "project": self.project,
            "stack": self.stack,
            "config": self.config,
            "resources": [r.to_json() for r in sorted(self.resources, key=lambda r: r.urn)],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def by_urn(self) -> dict[str, PlanResource]:
        return {r.urn: r for r in self.resources}


def normalise(value: Any) -> Any:
    """Integral floats (protobuf Struct numbers) become ints so plans read as they were written."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value

# ---------------------------------------------------------------------------------------------------------------
# The engine's wire encoding (protobuf Struct values) <-> plan JSON, in one place for both directions:
# the mock-runtime recorder writes plans with it, the gRPC policy driver reads them back with it.
# ---------------------------------------------------------------------------------------------------------------

UNKNOWN_SENTINEL = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_REF_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_VALUE_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"


def wire_to_plan_value(value: Any) -> Any:
    """Engine wire values -> plan JSON: secrets and unknowns become markers, resource refs their URN."""
    if isinstance(value, str):
        return dict(UNKNOWN_MARKER) if value == UNKNOWN_SENTINEL else value
    if isinstance(value, list):
        return [wire_to_plan_value(v) for v in value]
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return dict(SECRET_MARKER)
        if sig == RESOURCE_REF_SIG:
            return {"resourceRef": value.get("urn")}
        if sig == OUTPUT_VALUE_SIG:
            if value.get("secret"):
                return dict(SECRET_MARKER)
            if "value" not in value:
                return dict(UNKNOWN_MARKER)
            return wire_to_plan_value(value["value"])
        if sig == ASSET_SIG:
            return {"asset": value.get("path") or value.get("uri") or "<text>"}
        if sig == ARCHIVE_SIG:
            return {"archive": value.get("path") or value.get("uri") or "<assets>"}
        return {k: wire_to_plan_value(v) for k, v in sorted(value.items())}
    return value


def plan_value_to_wire(value: Any) -> Any:
    """Plan JSON -> engine wire values, as the engine sends them to a policy pack."""
    if isinstance(value, dict):
        if value == UNKNOWN_MARKER:
            return UNKNOWN_SENTINEL
        if value == SECRET_MARKER:
            return {SIG_KEY: SECRET_SIG, "value": "[secret]"}
        return {k: plan_value_to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plan_value_to_wire(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a file, and a failed write leaves the old file in place.

    An existing file keeps its mode (a new one gets 0666 minus the umask, as `open` would give it); a symlink is
    written through: its target is replaced, the link stays. Raises OSError naming the path on failure.
    """
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plan(plan: Plan, path: Path) -> None:
    write_text_atomic(path, plan.dumps())


MAX_PLAN_BYTES = 128 * 1024 * 1024


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _urn_parts(urn: str) -> tuple[str, str, str, str] | None:
    """(stack, project, type, name) of `urn:pulumi:<stack>::<project>::<parent types$>type::<name>`."""
    if not urn.startswith("urn:pulumi:"):
        return None
    parts = urn[len("urn:pulumi:"):].split("::", 3)
    if len(parts) != 4:
        return None
    stack, project, qualified, name = parts
    return stack, project, qualified.rsplit("$", 1)[-1], name


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle in `edges` (node → successors), iteratively; None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if state.get(start):
            continue
        path: list[str] = []
        todo: list[tuple[str, int]] = [(start, 0)]
        while todo:
            node, i = todo.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            succ = edges.get(node, [])
            if i < len(succ):
                todo.append((node, i + 1))
                nxt = succ[i]
                if state.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                if not state.get(nxt):
                    todo.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def semantic_problems(data: dict[str, Any]) -> list[str]:
    """What the schema cannot say: a plan is one consistent resource graph of one stack, as the engine builds it."""
    problems: list[str] = []
    resources = data["resources"]
    urns = [r["urn"] for r in resources]
    seen: set[str] = set()
    for i, urn in enumerate(urns):
        if urn in seen:
            problems.append(f"resources/{i}/urn: duplicate urn {urn}; every resource appears once")
        seen.add(urn)
    by_urn = {r["urn"]: r for r in resources}
    for i, res in enumerate(resources):
        where = f"resources/{i}"
        parts = _urn_parts(res["urn"])
        if parts is None:
            problems.append(f"{where}/urn: {res['urn']} is not a Pulumi URN")
            continue
        stack, project, urn_type, urn_name = parts
        if res["type"] != urn_type:
            problems.append(f"{where}/type: {res['type']!r} does not match the type in its urn ({urn_type!r})")
        if res["name"] != urn_name:
            problems.append(f"{where}/name: {res['name']!r} does not match the name in its urn ({urn_name!r})")
        if stack != data["stack"] or project != data["project"]:
            problems.append(f"{where}/urn: belongs to stack {stack!r} of project {project!r}, not to this plan's "
                            f"stack {data['stack']!r} of project {data['project']!r}")
        if res["type"] == STACK_TYPE:
            if res["parent"] is not None or res["custom"]:
                problems.append(f"{where}: the stack resource has no parent and is not custom")
        elif res["parent"] is None:
            problems.append(f"{where}/parent: missing; every resource but the stack has a parent")
        if res["type"].startswith("pulumi:providers:") and not res["custom"]:
            problems.append(f"{where}/custom: a provider resource is custom")
        if res["parent"] == res["urn"]:
            problems.append(f"{where}/parent: a resource cannot be its own parent")
        if res["provider"] == res["urn"]:
            problems.append(f"{where}/provider: a resource cannot be its own provider")
        if res["provider"] is not None:
            target = by_urn.get(res["provider"])
            if target is None:
                problems.append(f"{where}/provider: {res['provider']} is not a resource of this plan")
            elif not target["type"].startswith("pulumi:providers:"):
                problems.append(f"{where}/provider: {res['provider']} is a {target['type']}, not a provider")
        if res["parent"] is not None and res["parent"] not in by_urn:
            problems.append(f"{where}/parent: {res['parent']} is not a resource of this plan")
        refs = [("dependencies", u) for u in res["dependencies"]]
        refs += [(f"propertyDependencies/{k}", u) for k, v in res.get("propertyDependencies", {}).items() for u in v]
        for key, urn in refs:
            if urn not in by_urn:
                problems.append(f"{where}/{key}: {urn} is not a resource of this plan")
            elif urn == res["urn"]:
                problems.append(f"{where}/{key}: a resource cannot depend on itself")
    stacks = [i for i, r in enumerate(resources) if r["type"] == STACK_TYPE]
    if len(stacks) != 1:
        problems.append(f"resources: {len(stacks)} resources of type {STACK_TYPE}; a plan has exactly one, the stack "
                        f"itself")
    edges: dict[str, list[str]] = {}
    for res in resources:
        succ = [u for u in (res["parent"], res["provider"], *res["dependencies"]) if u in by_urn and u != res["urn"]]
        succ += [u for v in res.get("propertyDependencies", {}).values() for u in v if u in by_urn and u != res["urn"]]
        edges.setdefault(res["urn"], []).extend(succ)
    cycle = _find_cycle(edges)
    if cycle:
        problems.append(f"resources: a cycle through parent/provider/dependency references: {' -> '.join(cycle)}")
    return problems


def validate_plan_json(data: Any, source: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        message = err.message if len(err.message) <= 300 else err.message[:300] + "…"
        raise PlanError(f"{source}: {where}: {message}{more}; expected a {PLAN_FORMAT} plan as documented in "
                        f"the README")
    problems = semantic_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise PlanError(f"{source}: {problems[0]}{more}")


def load_plan(path: Path) -> Plan:
    from finml.safeload import InputError, load_json

    source = str(path)
    try:
        data = load_json(path, f"a {PLAN_FORMAT} plan file (JSON object)", dict, MAX_PLAN_BYTES)
    except InputError as exc:
        raise PlanError(str(exc)) from None
    if data.get("format") not in (None, PLAN_FORMAT):
        shown = data.get("format")
        shown = shown[:60] if isinstance(shown, str) else shown
        raise PlanError(f"{source}: format: {shown!r} is not supported; allowed: {PLAN_FORMAT!r}")
    validate_plan_json(data, source)
    return Plan(project=data["project"], stack=data["stack"], config=data["config"],
                resources=[PlanResource.from_json(r) for r in data["resources"]])
