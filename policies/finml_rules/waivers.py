"""Waivers: a stack may exempt named resources from one rule, for a reason, with a ticket, an approver and an expiry.

A waiver comes from stack config (``finml:platform`` -> ``waivers``) through the pack config to the pack:

    {"rule": "network-imds-hop-limit", "resources": ["urn:pulumi:*::*LaunchTemplate::gpu-*"],
     "reason": "...", "ticket": "SEC-1234", "approver": "jane.doe", "expires": "2027-03-31"}

``resources`` are URNs or globs over URNs (``fnmatch``, case-sensitive). A waiver applies to a finding when its rule
matches, one of its patterns matches the finding's URN, and ``today <= expires``. It never applies to a residency
finding about restricted data, or about data whose classification is unknown (unknown is the highest): those are
refused and stay violations. A malformed or expired waiver is itself a violation (rule ``policy-waivers-valid``).

Pure Python (no pulumi_policy): ``finml config check`` and the audit tool import ``parse_waivers``/``evaluate``.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from .controls import NEVER_WAIVABLE_PREFIX

FIELDS = ("rule", "resources", "reason", "ticket", "approver", "expires")
#: Longest a waiver may run from the day it is checked: waivers are exceptions with an end, not configuration.
MAX_DAYS = 366
_TICKET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-\d+$")
NEVER_WAIVABLE_CLASSIFICATIONS = ("restricted", None, "?", "")


@dataclass(frozen=True)
class Waiver:
    index: int
    rule: str
    resources: tuple[str, ...]
    reason: str
    ticket: str
    approver: str
    expires: datetime.date

    def covers(self, rule: str, urn: Optional[str]) -> bool:
        return rule == self.rule and bool(urn) and any(
            urn == pattern or fnmatch.fnmatchcase(urn, pattern) for pattern in self.resources)

    def expired(self, today: datetime.date) -> bool:
        return today > self.expires

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rule": self.rule, "resources": list(self.resources), "reason": self.reason,
                "ticket": self.ticket, "approver": self.approver, "expires": self.expires.isoformat()}


@dataclass(frozen=True)
class Decision:
    """What a waiver does to one finding: ``waived`` (with the waiver), or refused (``refused`` says why), or
    nothing applies (both empty)."""

    waiver: Optional[Waiver] = None
    refused: Optional[str] = None

    @property
    def waived(self) -> bool:
        return self.waiver is not None and self.refused is None


def today_utc() -> datetime.date:
    return datetime.datetime.now(datetime.timezone.utc).date()


def parse_date(value: Any) -> Optional[datetime.date]:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def parse_waiver(index: int, raw: Any, rule_names: Optional[Iterable[str]] = None) -> tuple[Optional[Waiver],
                                                                                             list[str]]:
    """One waiver, or the problems that make it malformed (each names the key and what is allowed)."""
    where = f"waivers[{index}]"
    if not isinstance(raw, dict):
        return None, [f"{where} must be an object with keys {', '.join(FIELDS)}"]
    problems = []
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    for key in ("rule", "reason", "ticket", "approver"):
        if not isinstance(raw.get(key), str) or not raw.get(key).strip():
            problems.append(f"{where}.{key} is required and must be a non-empty string")
    rule = raw.get("rule")
    names = set(rule_names) if rule_names is not None else None
    if isinstance(rule, str) and names is not None and rule not in names:
        problems.append(f"{where}.rule {rule!r} is not a rule of the pack (see `finml policies list`)")
    if isinstance(rule, str) and rule.startswith("policy-waive"):
        problems.append(f"{where}.rule {rule!r}: the waiver rules themselves cannot be waived")
    ticket = raw.get("ticket")
    if isinstance(ticket, str) and ticket.strip() and not _TICKET_RE.match(ticket):
        problems.append(f"{where}.ticket {ticket!r} is not a ticket id such as SEC-1234")
    resources = raw.get("resources")
    if not isinstance(resources, list) or not resources or not all(isinstance(r, str) and r for r in resources):
        problems.append(f"{where}.resources must be a non-empty list of URNs or URN globs")
    elif any(r.strip("*?") == "" for r in resources):
        problems.append(f"{where}.resources: a pattern of only wildcards would waive the rule for every resource; "
                        "name the resources (URN or a glob with a fixed part)")
    expires = parse_date(raw.get("expires"))
    if expires is None:
        problems.append(f"{where}.expires must be a date (YYYY-MM-DD), got {raw.get('expires')!r}")
    if problems:
        return None, problems
    return Waiver(index, rule, tuple(resources), raw["reason"].strip(), ticket, raw["approver"].strip(),
                  expires), []


def parse_waivers(raw: Any, rule_names: Optional[Iterable[str]] = None) -> tuple[list[Waiver], list[str]]:
    """(well-formed waivers, problems of the malformed ones)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], ["waivers must be a list of waiver objects"]
    names = list(rule_names) if rule_names is not None else None
    waivers, problems = [], []
    for index, item in enumerate(raw):
        waiver, found = parse_waiver(index, item, names)
        problems.extend(found)
        if waiver is not None:
            waivers.append(waiver)
    return waivers, problems


def validity_problems(raw: Any, today: datetime.date, rule_names: Optional[Iterable[str]] = None,
                      include_expired: bool = True) -> list[tuple[Optional[int], str]]:
    """Everything wrong with the stack's waivers on ``today``: malformed, expired (unless ``include_expired`` is
    false), or running longer than MAX_DAYS. (index or None, message)."""
    waivers, problems = parse_waivers(raw, rule_names)
    out: list[tuple[Optional[int], str]] = []
    for problem in problems:
        match = re.match(r"^waivers\[(\d+)\]", problem)
        out.append((int(match.group(1)) if match else None, problem))
    for waiver in waivers:
        if waiver.expired(today):
            if not include_expired:
                continue
            out.append((waiver.index, f"waivers[{waiver.index}] ({waiver.ticket}, rule {waiver.rule}) expired on "
                                      f"{waiver.expires.isoformat()}; renew it with a new approval or fix the "
                                      "finding"))
        elif (waiver.expires - today).days > MAX_DAYS:
            out.append((waiver.index, f"waivers[{waiver.index}] ({waiver.ticket}) expires "
                                      f"{waiver.expires.isoformat()}, more than {MAX_DAYS} days after "
                                      f"{today.isoformat()}; waivers must end within a year"))
    return out


def never_waivable(rule: str, classification: Optional[str]) -> bool:
    return rule.startswith(NEVER_WAIVABLE_PREFIX) and classification in NEVER_WAIVABLE_CLASSIFICATIONS


def evaluate(rule: str, urn: Optional[str], classification: Optional[str], waivers: Sequence[Waiver],
             today: datetime.date) -> Decision:
    """The waiver decision for one finding of ``rule`` on ``urn`` (classification as the finding states it)."""
    candidates = [w for w in waivers if w.covers(rule, urn)]
    if not candidates:
        return Decision()
    live = [w for w in candidates if not w.expired(today)]
    if not live:
        return Decision(candidates[0], f"waiver {candidates[0].ticket} expired on {candidates[0].expires}")
    waiver = live[0]
    if never_waivable(rule, classification):
        shown = classification if classification not in (None, "?", "") else "unknown (treated as restricted)"
        return Decision(waiver, f"waiver {waiver.ticket} refused: a residency finding about {shown} data is never "
                                "waivable")
    if (waiver.expires - today).days > MAX_DAYS:
        return Decision(waiver, f"waiver {waiver.ticket} refused: it runs past {MAX_DAYS} days")
    return Decision(waiver)
