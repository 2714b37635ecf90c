"""Policy results for people (text) and for CI (JSON, SARIF 2.1.0 for code scanning, JUnit XML for test views)."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree as ET

from finml import __version__
from finml.policy_check import CheckResult, Violation

FORMATS = ("text", "json", "sarif", "junit", "html")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _stack_file(result: CheckResult) -> str:
    return f"stacks/Pulumi.{result.stack}.yaml"


def render_text(result: CheckResult, show_summary: bool = True) -> str:
    if getattr(result, "kind", "policy") == "audit":  # finml.audit.run.AuditResult: a live account, not a plan
        lines = [f"Stack {result.stack}: {result.resources_checked} live resources audited in account "
                 f"{result.account} across {len(result.regions)} regions ({len(result.policies)} rules)"]
    else:
        lines = [f"Stack {result.stack}: {result.resources_checked} resources checked by policy pack "
                 f"{result.pack}@{result.pack_version} ({len(result.policies)} policies)"]
    if show_summary:
        lines.append("  resources by site:")
        lines += [f"    {site:<24} {n:>5}" for site, n in sorted(result.resources_by_site.items())]
        lines.append("  resources by type:")
        lines += [f"    {t:<72} {n:>5}" for t, n in sorted(result.resources_by_type.items())]
    for title, items in (("MANDATORY violations", result.mandatory), ("Advisory findings", result.advisory)):
        if not items:
            continue
        lines.append(f"  {title} ({len(items)}):")
        for v in items:
            lines.append(f"    [{v.policy}] {v.severity} {v.urn or '(stack)'}")
            lines.append(f"        site={v.site} classification={v.classification}")
            lines.append(f"        {v.message}")
            if v.remediation:
                lines.append(f"        fix: {v.remediation}")
    if result.waived:
        lines.append(f"  Waived findings ({len(result.waived)}) — not failing, until their waiver expires:")
        for v in result.waived:
            w = v.waiver or {}
            lines.append(f"    [{v.policy}] {v.severity} {v.urn or '(stack)'}")
            lines.append(f"        {v.message}")
            lines.append(f"        waived by {w.get('ticket')} (approver {w.get('approver')}, expires "
                         f"{w.get('expires')}): {w.get('reason')}")
    verdict = "FAIL" if result.mandatory else "PASS"
    lines.append(f"  policy result: {verdict} — {len(result.mandatory)} mandatory, {len(result.advisory)} advisory, "
                 f"{len(result.waived)} waived")
    return "\n".join(lines) + "\n"


def render_json(results: list[CheckResult]) -> str:
    kind = getattr(results[0], "kind", "policy") if results else "policy"
    doc = {"format": f"finml-{kind}-report/1", "stacks": [r.to_json() for r in results],
           "passed": all(not r.mandatory for r in results)}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _sarif_level(v: Violation) -> str:
    return "error" if v.enforcement == "mandatory" else "warning"


def _sarif_rules(result: CheckResult) -> list[dict]:
    return [{
        "id": p.name, "name": p.name,
        "shortDescription": {"text": p.description},
        "fullDescription": {"text": p.description},
        "help": {"text": p.remediation or p.description},
        "defaultConfiguration": {"level": "error" if p.enforcement == "mandatory" else "warning"},
        "properties": {"severity": p.severity, "enforcement": p.enforcement, "kind": p.kind,
                       "tags": _rule_controls(result, p.name)},
    } for p in sorted(result.policies, key=lambda p: p.name)]


def _rule_controls(result: CheckResult, name: str) -> list[str]:
    for v in list(result.violations) + list(result.waived):
        if v.policy == name:
            return list(v.controls)
    from finml.policy_check import _pack_helpers, DEFAULT_PACK_DIR  # pylint: disable=import-outside-toplevel

    return list(_pack_helpers(DEFAULT_PACK_DIR)[0](name))


def _sarif_result(r: CheckResult, v: Violation, rule_ids: list[str]) -> dict:
    out = {
        "ruleId": v.policy,
        "ruleIndex": rule_ids.index(v.policy) if v.policy in rule_ids else -1,
        "level": _sarif_level(v),
        "message": {"text": f"{v.message} (site {v.site}, classification {v.classification}). "
                            f"Fix: {v.remediation}".strip()},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": _stack_file(r)}, "region": {"startLine": 1}},
            "logicalLocations": [{"fullyQualifiedName": v.urn or f"stack:{r.stack}", "kind": "resource",
                                  "name": v.resource_name or r.stack}],
        }],
        "partialFingerprints": {"finmlViolation/v1": f"{v.policy}|{v.urn}|{v.message}"},
        "properties": {"stack": r.stack, "urn": v.urn, "site": v.site, "classification": v.classification,
                       "severity": v.severity, "enforcement": v.enforcement, "remediation": v.remediation,
                       "controls": list(v.controls)},
    }
    if v.waiver is not None:
        w = v.waiver
        out["suppressions"] = [{"kind": "external", "status": "accepted",
                                "justification": f"{w.get('reason')} (ticket {w.get('ticket')}, approver "
                                                 f"{w.get('approver')}, expires {w.get('expires')})",
                                "properties": {"ticket": w.get("ticket"), "approver": w.get("approver"),
                                               "expires": w.get("expires")}}]
    return out


def render_sarif(results: list[CheckResult]) -> str:
    """One run per stack, each with its own automationDetails id (its code-scanning category), so every stack's
    alerts stay apart whether the files are uploaded together or one by one."""
    runs = []
    for r in results:
        rules = _sarif_rules(r)
        rule_ids = [rule["id"] for rule in rules]
        sarif_results = [_sarif_result(r, v, rule_ids) for v in list(r.violations) + list(r.waived)]
        runs.append({
            "tool": {"driver": {"name": f"finml-{getattr(r, 'kind', 'policy')}", "version": __version__,
                                "rules": rules}},
            "automationDetails": {"id": f"finml-{getattr(r, 'kind', 'policy')}/{r.stack}/"},
            "results": sarif_results,
        })
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """XML 1.0 cannot hold most control characters even escaped: show them as \\xNN so the report stays valid."""
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def render_junit(results: list[CheckResult]) -> str:
    kind = getattr(results[0], "kind", "policy") if results else "policy"
    suites = ET.Element("testsuites", name="finml policy check" if kind == "policy" else f"finml {kind}")
    total_tests = total_failures = 0
    for r in results:
        suite = ET.SubElement(suites, "testsuite", name=_xml(f"{kind}.{r.stack}"))
        by_policy: dict[str, list[Violation]] = {}
        for v in r.violations:
            by_policy.setdefault(v.policy, []).append(v)
        failures = 0
        for p in sorted(r.policies, key=lambda p: p.name):
            case = ET.SubElement(suite, "testcase", classname=_xml(f"finml.{kind}.{r.stack}"), name=_xml(p.name))
            found = by_policy.get(p.name, [])
            mandatory = [v for v in found if v.enforcement == "mandatory"]
            body = "\n".join(f"{v.urn or '(stack)'}: {v.message} [site={v.site}; classification={v.classification}]"
                             f" — fix: {v.remediation}" for v in found)
            if mandatory:
                failures += 1
                fail = ET.SubElement(case, "failure", type=_xml(p.severity),
                                     message=_xml(f"{len(mandatory)} mandatory violation(s) of {p.name}"))
                fail.text = _xml(body)
            elif found:
                ET.SubElement(case, "system-out").text = _xml("advisory:\n" + body)
            waived = [v for v in r.waived if v.policy == p.name]
            if waived:
                ET.SubElement(case, "system-err" if found else "system-out").text = _xml("waived:\n" + "\n".join(
                    f"{v.urn or '(stack)'}: {v.message} — waived by {(v.waiver or {}).get('ticket')} until "
                    f"{(v.waiver or {}).get('expires')}" for v in waived))
        suite.set("tests", str(len(r.policies)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        total_tests += len(r.policies)
        total_failures += failures
    suites.set("tests", str(total_tests))
    suites.set("failures", str(total_failures))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render(results: list[CheckResult], fmt: str) -> str:
    if fmt == "text":
        return "".join(render_text(r) for r in results)
    if fmt == "json":
        return render_json(results)
    if fmt == "sarif":
        return render_sarif(results)
    if fmt == "junit":
        return render_junit(results)
    if fmt == "html":
        from finml.report_html import render_html  # pylint: disable=import-outside-toplevel

        return render_html(results)
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
