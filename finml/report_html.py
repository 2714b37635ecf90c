"""`--format html`: one self-contained page for auditors and reviewers (no scripts, fonts or images from anywhere).

Per stack: the verdict, findings grouped by control and by site, waived findings with their waivers, and a
site x classification matrix showing where every classified data-bearing resource lives and which residency
pattern allows it (a cell with data but no allowing pattern is marked).
"""

from __future__ import annotations

from collections import defaultdict
from html import escape

from finml import __version__
from finml.policy_check import CheckResult, Violation

CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1b1f24;max-width:80rem}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ccd;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f8}td.num{text-align:right}
.verdict{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}
.sev-critical,.sev-high{color:#cf222e;font-weight:600}.sev-medium{color:#9a6700}
.waived{color:#57606a}.bad{background:#ffebe9}.ok{background:#dafbe1}
code{font-size:.9em;word-break:break-all}
"""


def _finding_rows(items: list[Violation], with_waiver: bool = False) -> str:
    rows = []
    for v in items:
        waiver = ""
        if with_waiver and v.waiver:
            w = v.waiver
            waiver = (f"<td>{escape(str(w.get('ticket')))} — {escape(str(w.get('reason')))}<br>approver "
                      f"{escape(str(w.get('approver')))}, expires {escape(str(w.get('expires')))}</td>")
        rows.append(
            f"<tr><td><code>{escape(v.policy)}</code></td><td class=\"sev-{escape(v.severity)}\">{escape(v.severity)}"
            f"</td><td>{escape(v.enforcement)}</td><td><code>{escape(v.urn or '(stack)')}</code></td>"
            f"<td>{escape(v.site)}</td><td>{escape(v.classification)}</td><td>{escape(v.message)}</td>{waiver}</tr>")
    head = ("<tr><th>rule</th><th>severity</th><th>level</th><th>resource</th><th>site</th><th>classification</th>"
            "<th>finding</th>" + ("<th>waiver</th>" if with_waiver else "") + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _by_control(result: CheckResult) -> str:
    groups: dict[str, list[Violation]] = defaultdict(list)
    for v in result.violations:
        for control in v.controls or ("(no mapped control)",):
            groups[control].append(v)
    if not groups:
        return "<p>No findings.</p>"
    parts = []
    for control in sorted(groups):
        parts.append(f"<h3>{escape(control)} ({len(groups[control])})</h3>{_finding_rows(groups[control])}")
    return "".join(parts)


def _by_site(result: CheckResult) -> str:
    groups: dict[str, list[Violation]] = defaultdict(list)
    for v in result.violations:
        groups[v.site].append(v)
    if not groups:
        return "<p>No findings.</p>"
    return "".join(f"<h3>{escape(site)} ({len(items)})</h3>{_finding_rows(items)}"
                   for site, items in sorted(groups.items()))


def _matrix(result: CheckResult) -> str:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for item in result.data_placement:
        cells[(item["site"], item["classification"])].append(item)
    sites = sorted({s for s, _ in cells})
    if not sites:
        return "<p>No classified data-bearing resources.</p>"
    head = "<tr><th>site \\ classification</th>" + "".join(f"<th>{c}</th>" for c in CLASSIFICATIONS) + "</tr>"
    rows = []
    for site in sites:
        tds = []
        for cls in CLASSIFICATIONS:
            items = cells.get((site, cls), [])
            if not items:
                tds.append("<td></td>")
                continue
            patterns = sorted({i["allowedBy"] for i in items if i["allowedBy"]})
            unallowed = [i for i in items if not i["allowedBy"]]
            css = "bad" if unallowed else "ok"
            allowed = ", ".join(escape(p) for p in patterns) or "no residency pattern"
            names = "<br>".join(f"<code>{escape(i['type'].split(':')[-1])} {escape(i['name'])}</code>"
                                for i in items[:12])
            more = f"<br>… {len(items) - 12} more" if len(items) > 12 else ""
            tds.append(f"<td class=\"{css}\"><b>{len(items)}</b> resource(s), allowed by {allowed}"
                       f"<details><summary>which</summary>{names}{more}</details></td>")
        rows.append(f"<tr><th>{escape(site)}</th>{''.join(tds)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(results: list[CheckResult]) -> str:
    passed = all(not r.mandatory for r in results)
    body = [f"<h1>finml policy report <span class=\"verdict {'pass' if passed else 'fail'}\">"
            f"{'PASS' if passed else 'FAIL'}</span></h1>",
            f"<p>finml {escape(__version__)} — {len(results)} stack(s).</p>",
            "<table><tr><th>stack</th><th>verdict</th><th>resources</th><th>mandatory</th><th>advisory</th>"
            "<th>waived</th><th>policy pack</th></tr>"]
    for r in results:
        ok = not r.mandatory
        body.append(f"<tr><td><a href=\"#stack-{escape(r.stack)}\">{escape(r.stack)}</a></td>"
                    f"<td><span class=\"verdict {'pass' if ok else 'fail'}\">{'PASS' if ok else 'FAIL'}</span></td>"
                    f"<td class=\"num\">{r.resources_checked}</td><td class=\"num\">{len(r.mandatory)}</td>"
                    f"<td class=\"num\">{len(r.advisory)}</td><td class=\"num\">{len(r.waived)}</td>"
                    f"<td>{escape(r.pack)}@{escape(r.pack_version)} ({len(r.policies)} rules)</td></tr>")
    body.append("</table>")
    for r in results:
        body.append(f"<h2 id=\"stack-{escape(r.stack)}\">Stack {escape(r.stack)}</h2>")
        body.append("<h3>Where the data lives (site × classification)</h3>" + _matrix(r))
        body.append("<h3>Findings by control</h3>" + _by_control(r))
        body.append("<h3>Findings by site</h3>" + _by_site(r))
        body.append(f"<h3>Waived findings ({len(r.waived)})</h3>"
                    + (_finding_rows(r.waived, with_waiver=True) if r.waived else "<p>None.</p>"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>finml policy report</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
