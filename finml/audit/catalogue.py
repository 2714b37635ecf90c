"""Rule metadata for audit findings: the pack's own rules (same ids, descriptions, severities and fixes — read from
the pack, not copied) plus the few checks only a live account has (coverage, drift, log-group keys, endpoints)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from finml.policy_check import PolicyInfo

PACK_DIR = Path(__file__).resolve().parent.parent.parent / "policies"

AUDIT_COVERAGE = "audit-coverage"
DRIFT_UNMANAGED = "drift-unmanaged-resource"
DRIFT_PROPERTY = "drift-changed-property"
VPC_ENDPOINTS = "network-vpc-endpoints-present"

AUDIT_ONLY_RULES = (
    PolicyInfo(AUDIT_COVERAGE, "Ensure the audit could read every service, region and resource it covers.",
               "mandatory", "high",
               "Grant the audit role the read-only permissions in iam/finml-audit-policy.json and make the endpoint "
               "reachable; a part that could not be read is not known to be compliant.", "stack"),
    PolicyInfo(DRIFT_UNMANAGED, "Ensure every resource carrying the stack's tags is in the stack's latest plan.",
               "mandatory", "high",
               "Import the resource into the stack (pulumi import) or delete it; then run `finml preview` again.",
               "stack"),
    PolicyInfo(DRIFT_PROPERTY, "Ensure the live settings of the stack's resources match its plan on every checked "
               "property.", "mandatory", "high",
               "Run `pulumi refresh` to see the change and `pulumi up` to restore the planned setting; find who changed "
               "it in CloudTrail.", "stack"),
    PolicyInfo(VPC_ENDPOINTS, "Ensure every non-default VPC has the S3 gateway endpoint and the interface endpoints "
               "the network component creates, so nodes reach AWS APIs without internet egress.",
               "mandatory", "medium", "Create the missing VPC endpoints (the Network component does).", "resource"),
)

_SEVERITY_NAMES = {0: "unspecified", 1: "low", 2: "medium", 3: "high", 4: "critical"}

# Controls the audit-only rules evidence (NIST SP 800-53 rev. 5): the pack's rules take theirs from
# finml_rules/controls.py. Audit-only rules are not waivable: `finml config check` accepts waivers of pack rules only.
AUDIT_ONLY_CONTROLS = {
    AUDIT_COVERAGE: ("nist-800-53:CA-7",),  # Continuous Monitoring: a part not read is a part not monitored
    DRIFT_UNMANAGED: ("nist-800-53:CM-8",),  # System Component Inventory
    DRIFT_PROPERTY: ("nist-800-53:CM-3", "nist-800-53:CM-6"),  # Configuration Change Control; Settings
    VPC_ENDPOINTS: ("nist-800-53:SC-7",),  # Boundary Protection
}


@functools.cache
def pack_rules() -> dict[str, PolicyInfo]:
    if str(PACK_DIR) not in sys.path:
        sys.path.insert(0, str(PACK_DIR))
    from finml_rules.config import all_policies  # the pack's own catalogue

    rules: dict[str, PolicyInfo] = {}
    for policy in all_policies():
        severity = getattr(policy.severity, "name", None) or _SEVERITY_NAMES.get(policy.severity, "unspecified")
        level = policy.enforcement_level.value if policy.enforcement_level else "mandatory"
        rules[policy.name] = PolicyInfo(policy.name, policy.description, level, str(severity).lower(),
                                        policy.remediation_steps or "", "stack")
    return rules


@functools.cache
def catalogue() -> dict[str, PolicyInfo]:
    rules = dict(pack_rules())
    rules.update({r.name: r for r in AUDIT_ONLY_RULES})
    return rules


def rule(name: str) -> PolicyInfo:
    return catalogue()[name]


def controls(name: str) -> tuple[str, ...]:
    """``framework:id`` control ids a rule evidences (the pack's mapping; empty where the pack has none)."""
    if name in AUDIT_ONLY_CONTROLS:
        return AUDIT_ONLY_CONTROLS[name]
    pack_rules()  # the pack on sys.path
    try:
        from finml_rules.controls import control_ids
    except ImportError:  # a pack without a control catalogue
        return ()
    return tuple(control_ids(name))
