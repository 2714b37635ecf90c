"""The load-time gate: before the model server starts, may this site hold the model the alias points at?

Defence in depth behind the promotion gate: the alias is resolved to a version, the version's lineage
classification is computed from the registry (the registry issue's `resolve_alias` / `resolve_lineage`), and the
residency rules of the stack decide (`residency_decision`). Anything that cannot be read — registry down, TLS or
authentication failure, alias not set, lineage missing — refuses the start (fail closed). The server then loads
exactly the version that was checked (`models:/NAME/VERSION`), never the alias again, so a re-pointed alias
cannot slip past the gate.

Runs in the serving image (mlflow, pydantic, PyYAML; no Pulumi).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

EXIT_ALLOWED, EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3


class GateRefused(Exception):
    """The gate refuses to start the server; `exit_code` says why (1 residency/lineage, 3 registry unreadable)."""

    def __init__(self, message: str, exit_code: int, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.record = record


@dataclass(frozen=True)
class GateResult:
    name: str
    alias: str
    version: str
    classification: str
    site: str
    message: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def record(self) -> dict[str, Any]:
        return {"event": "finml.load_gate", "allowed": True, "model": self.name, "alias": self.alias,
                "version": self.version, "classification": self.classification, "site": self.site,
                "message": self.message, "timestamp": _now()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def load_residency(path: str | Path) -> dict[str, list[str]]:
    """The residency map (classification -> site patterns), as the platform writes it from the stack file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GateRefused(f"residency file {path} cannot be read: {_short(exc)}", EXIT_BAD_INPUT,
                          {"event": "finml.load_gate", "allowed": False, "reason": "residency-unreadable"}) from None
    residency = data.get("residency", data) if isinstance(data, dict) else None
    if not isinstance(residency, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in residency.values()):
        raise GateRefused(f"residency file {path}: expected {{classification: [site patterns]}}", EXIT_BAD_INPUT,
                          {"event": "finml.load_gate", "allowed": False, "reason": "residency-invalid"})
    return residency


def check(client: Any, name: str, alias: str, site: str, residency: Mapping[str, Sequence[str]]) -> GateResult:
    """Resolve, classify, decide; raises GateRefused (fail closed) unless the site may hold the model."""
    from finml.model_registry.gate import residency_decision
    from finml.model_registry.lineage import resolve_alias, resolve_lineage

    base = {"event": "finml.load_gate", "allowed": False, "model": name, "alias": alias, "site": site,
            "timestamp": _now()}
    try:
        version = resolve_alias(client, name, alias)
    except Exception as exc:  # noqa: BLE001 — any failure to read the registry refuses the start
        raise GateRefused(f"models:/{name}@{alias} cannot be resolved: {_short(exc)}; refusing to start "
                          f"(fail closed)", EXIT_UNREACHABLE, {**base, "reason": "registry-unreadable",
                                                               "error": _short(exc)}) from None
    try:
        lineage = resolve_lineage(client, name, version)
    except Exception as exc:  # noqa: BLE001
        raise GateRefused(f"lineage of {name} version {version} cannot be read: {_short(exc)}; refusing to start "
                          f"(fail closed)", EXIT_UNREACHABLE, {**base, "version": version,
                                                               "reason": "lineage-unreadable",
                                                               "error": _short(exc)}) from None
    decision = residency_decision(lineage, site, residency)
    if not decision.allowed:
        raise GateRefused(decision.message, EXIT_REFUSED,
                          {**base, "version": version, "classification": decision.classification,
                           "rule": decision.rule, "dataset": decision.dataset, "reason": "residency",
                           "message": decision.message})
    return GateResult(name=name, alias=alias, version=version, classification=decision.classification, site=site,
                      message=decision.message)


def emit(record: Mapping[str, Any], stream: Any = None) -> None:
    """One JSON line on stdout: the site's log shipping collects the gate's verdicts with the audit log."""
    stream = stream or sys.stdout
    stream.write(json.dumps(dict(record), sort_keys=True) + "\n")
    stream.flush()
