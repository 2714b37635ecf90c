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


def write_text_atomic(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a file, and a failed write leaves the old file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plan(plan: Plan, path: Path) -> None:
    write_text_atomic(path, plan.dumps())


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_plan_json(data: Any, source: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise PlanError(f"{source}: {where}: {err.message}{more}; expected a {PLAN_FORMAT} plan as documented in "
                        f"the README")
    urns = [r["urn"] for r in data["resources"]]
    if len(set(urns)) != len(urns):
        dup = next(u for u in urns if urns.count(u) > 1)
        raise PlanError(f"{source}: resources: duplicate urn {dup}")
    known = set(urns)
    for i, res in enumerate(data["resources"]):
        for key in ("parent", "provider"):
            if res[key] is not None and res[key] not in known:
                raise PlanError(f"{source}: resources/{i}/{key}: {res[key]} is not a resource of this plan")


def load_plan(path: Path) -> Plan:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{source}: cannot read plan file: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and data.get("format") not in (None, PLAN_FORMAT):
        raise PlanError(f"{source}: format: {data.get('format')!r} is not supported; allowed: {PLAN_FORMAT!r}")
    validate_plan_json(data, source)
    return Plan(project=data["project"], stack=data["stack"], config=data["config"],
                resources=[PlanResource.from_json(r) for r in data["resources"]])
