"""One audit of one stack: account check, enabled regions, collection, rules, drift — as a report the policy
renderers print (text, JSON, SARIF, JUnit)."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from finml import __version__
from finml.audit import catalogue as cat
from finml.audit.aws import AwsContext, EnvironmentProblem, describe_error, is_connection_problem
from finml.audit.collect import Gap, Inventory, collect, enabled_regions
from finml.audit.drift import drift
from finml.audit.rules import Finding, audited_count, evaluate
from finml.plan import Plan
from finml.policy_check import CheckResult, Violation
from finml_rules.common import Residency


@dataclass
class AuditResult(CheckResult):
    kind: str = "audit"
    account: str = ""
    regions: list[str] = field(default_factory=list)
    iam_actions: list[str] = field(default_factory=list)
    drift_plan: Optional[str] = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc = super().to_json()
        doc.update({"kind": self.kind, "account": self.account, "regions": self.regions,
                    "iamActionsUsed": self.iam_actions, "driftPlan": self.drift_plan,
                    "seconds": round(self.seconds, 3)})
        return doc


def residency_of(stack: Any) -> Residency:
    return Residency({k: tuple(v) for k, v in stack.platform.residency.items()}, tuple(stack.platform.sites))


def _violation(f: Finding, waiver: Optional[dict] = None) -> Violation:
    rule = cat.rule(f.rule)
    return Violation(policy=f.rule, enforcement="waived" if waiver else rule.enforcement, severity=rule.severity,
                     urn=f.arn, resource_type=f.resource_type, resource_name=f.name, site=f.site,
                     classification=f.classification, message=f.message, description=rule.description,
                     remediation=rule.remediation, controls=cat.controls(f.rule), waiver=waiver)


def apply_waivers(findings: list[Finding], stack: Any, today: Optional[datetime.date] = None
                  ) -> tuple[list[Violation], list[Violation]]:
    """(violations, waived): the stack's waivers judged exactly as the pack judges them (finml_rules.waivers), with
    the finding's ARN as the resource a waiver's patterns must match. A malformed or expired waiver is itself a
    ``policy-waivers-valid`` finding; a refused waiver leaves its finding a violation, saying why."""
    from finml_rules import waivers as w

    day = today or w.today_utc()
    raw = [x.to_pack() for x in getattr(stack.platform, "waivers", [])]
    rule_names = list(cat.pack_rules())
    parsed, _ = w.parse_waivers(raw, rule_names)
    violations: list[Violation] = []
    waived: list[Violation] = []
    source = f"{stack.source}#waivers"
    for index, problem in w.validity_problems(raw, day, rule_names):
        violations.append(_violation(Finding("policy-waivers-valid", f"{source}[{index}]" if index is not None
                                             else source, "finml:stack/waiver", stack.stack, "stack", "n/a",
                                             problem)))
    for f in findings:
        decision = w.evaluate(f.rule, f.arn, None if f.classification == "unknown" else f.classification,
                              parsed, day)
        if decision.waived:
            waived.append(_violation(f, decision.waiver.as_dict()))
        elif decision.refused:
            violations.append(_violation(Finding(f.rule, f.arn, f.resource_type, f.name, f.site, f.classification,
                                                 f"{f.message} ({decision.refused})")))
        else:
            violations.append(_violation(f))
    return violations, waived


def _placement(inv: Inventory, residency: Residency) -> list[dict[str, str]]:
    """Where every classified live resource is and which residency pattern allows it (the HTML report's matrix)."""
    import fnmatch

    out = []
    for r in inv.resources:
        if not r.classification:
            continue
        allowed_by = next((p for p in residency.residency.get(r.classification, ())
                           if fnmatch.fnmatchcase(r.site, p)), "")
        out.append({"urn": r.arn, "type": r.type, "name": r.name, "site": r.site,
                    "classification": r.classification, "allowedBy": allowed_by})
    return out


def audit_stack(ctx: AwsContext, stack: Any, plan: Optional[Plan] = None, plan_source: Optional[str] = None,
                workers: int = 16, progress: Optional[Callable[[str], None]] = None,
                today: Optional[datetime.date] = None) -> AuditResult:
    started = time.monotonic()
    aws_regions = [site.split(":", 1)[1] for site in stack.aws_sites]
    if not aws_regions:
        raise ValueError(f"stack {stack.stack} has no AWS site; there is no AWS account to audit")
    home = aws_regions[0]
    account = ctx.account_id(home)
    expected = stack.platform.aws_account_id
    if expected and account != expected:
        raise EnvironmentProblem(f"the credentials are for account {account}, but stack {stack.stack} runs in account "
                                 f"{expected} (awsAccountId in {stack.source})")
    early_gaps: list[Gap] = []
    try:
        regions = enabled_regions(ctx, home)
    except Exception as exc:  # noqa: BLE001 — fall back to the stack's regions, and say so as a finding
        if is_connection_problem(exc) and ctx.endpoint_url is None:
            raise EnvironmentProblem(f"cannot reach EC2 in {home}: {exc}") from None
        regions = sorted(set(aws_regions))
        early_gaps.append(Gap("ec2", "global", "list enabled regions (only the stack's regions were scanned)",
                              describe_error(exc)))
    if progress:
        progress(f"account {account}: scanning {len(regions)} enabled regions…")
    inv: Inventory = collect(ctx, account, regions, set(aws_regions), workers=workers, progress=progress)
    inv.gaps[:0] = early_gaps
    findings = evaluate(inv, residency_of(stack))
    if plan is not None:
        findings += drift(inv, plan, stack.stack)
    findings = sorted(set(findings), key=lambda f: (f.rule, f.arn, f.message))
    violations, waived = apply_waivers(findings, stack, today)
    audited = [r for r in inv.resources if r.type != "aws:ec2/vpcEndpoint:VpcEndpoint"]
    return AuditResult(
        project="finml", stack=stack.stack, pack="finml-audit", pack_version=__version__,
        policies=sorted(cat.catalogue().values(), key=lambda p: p.name),
        violations=violations, waived=waived, resources_checked=audited_count(inv),
        resources_by_type=dict(Counter(r.type for r in audited)),
        resources_by_site=dict(Counter(r.site for r in audited)),
        data_placement=_placement(inv, residency_of(stack)),
        account=account, regions=regions, iam_actions=ctx.iam_actions(), drift_plan=plan_source,
        seconds=time.monotonic() - started)
