"""Waivers as rules: a malformed or expired waiver is a violation; waived findings are reported, not hidden.

``policy-waived-findings`` is ADVISORY and must stay the last stack rule of the pack: the SDK runs stack rules in pack
order, so by then every other rule of this request (resource rules in the preceding Analyze calls, stack rules before
it) has handed over what its waivers took out.
"""

from __future__ import annotations

import json
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyConfigSchema, ReportViolation, Severity, StackValidationArgs

from . import engine, waivers
from .common import WAIVER_SCHEMA_PROPERTIES, plain, stack_policy

WAIVED_MARK = "WAIVED "
_SCHEMA = PolicyConfigSchema(properties=dict(WAIVER_SCHEMA_PROPERTIES))


def waivers_valid(args: StackValidationArgs, report: ReportViolation) -> None:
    from .config import all_policy_names  # pylint: disable=import-outside-toplevel

    config = plain(args.get_config() or {})
    today = waivers.parse_date(config.get("waiverDate")) or waivers.today_utc()
    for _, problem in waivers.validity_problems(config.get("waivers") or [], today, all_policy_names()):
        report(problem)


def waived_findings(args: StackValidationArgs, report: ReportViolation) -> None:
    for entry in engine.take_waived():
        waiver = entry["waiver"]
        report(f"{WAIVED_MARK}{entry['rule']}: {entry['message']} {{waiver {json.dumps(waiver, sort_keys=True)}}}",
               entry["urn"] or None)


def parse_waived(message: str) -> Any:
    """(rule, original message, waiver dict) from a policy-waived-findings message; None if it is not one."""
    if not message.startswith(WAIVED_MARK) or not message.endswith("}}"):
        return None
    head, _, payload = message[len(WAIVED_MARK):].rpartition(" {waiver ")
    rule, _, original = head.partition(": ")
    try:
        return rule, original, json.loads(payload[:-1])
    except ValueError:
        return None


POLICIES: list = [
    stack_policy("policy-waivers-valid",
                 "Ensure every waiver in the stack config is well-formed, names a rule of the pack, and has not "
                 "expired.",
                 waivers_valid, Severity.HIGH,
                 "Fix or remove the waiver: rule, resources (URNs or globs), reason, ticket, approver and an expiry "
                 "date within a year; renew an expired waiver only with a new approval.",
                 _SCHEMA, waivable=False),
    stack_policy("policy-waived-findings",
                 "Ensure every finding a valid waiver exempted is still reported (advisory), so waived risk stays visible.",
                 waived_findings, Severity.LOW,
                 "Fix the finding before the waiver expires.", _SCHEMA, waivable=False,
                 enforcement=EnforcementLevel.ADVISORY),
]
