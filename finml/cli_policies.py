"""`finml policies list`: the pack's rule catalogue with the controls each rule evidences."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

def _pack_modules(pack_dir: Path):
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    from finml_rules import controls  # pylint: disable=import-outside-toplevel
    from finml_rules.config import all_policies  # pylint: disable=import-outside-toplevel

    return controls, all_policies()


def catalogue(pack_dir: Path, framework: str | None = None) -> list[dict[str, Any]]:
    """One entry per rule (pack order): name, kind, severity, description, remediation, controls. With
    ``framework`` (a key of ``controls.FRAMEWORKS``): only rules evidencing a control of it, only those controls."""
    controls, policies = _pack_modules(pack_dir)
    out = []
    for policy in policies:
        mapped = controls.controls_for(policy.name)
        if framework is not None:
            mapped = [c for c in mapped if c["framework"] == framework]
            if not mapped:
                continue
        out.append({
            "name": policy.name,
            "kind": "stack" if type(policy).__name__ == "StackValidationPolicy" else "resource",
            "severity": policy.severity.name.lower() if policy.severity is not None else "unspecified",
            "enforcement": policy.enforcement_level.value if policy.enforcement_level else "mandatory",
            "description": policy.description,
            "remediation": policy.remediation_steps or "",
            "controls": mapped,
        })
    return out


def waiver_problems(stack: Any, pack_dir: Path, today: str | None = None, include_expired: bool = True) -> list[str]:
    """What is wrong with a stack's waivers, judged by the pack's own code: malformed, unknown rules, running over a
    year and (unless ``include_expired`` is false) expired. `today` YYYY-MM-DD, default today UTC."""
    if not stack.platform.waivers:
        return []
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    from finml_rules import waivers  # pylint: disable=import-outside-toplevel
    from finml_rules.config import all_policy_names  # pylint: disable=import-outside-toplevel

    day = waivers.parse_date(today) if today else waivers.today_utc()
    raw = [w.to_pack() for w in stack.platform.waivers]
    return [problem for _, problem in waivers.validity_problems(raw, day, all_policy_names(), include_expired)]


def cmd_policies_list(args: argparse.Namespace) -> int:
    from finml.cli import _pack_dir  # pylint: disable=import-outside-toplevel

    pack_dir = _pack_dir(args)
    controls, _ = _pack_modules(pack_dir)
    framework = None
    if args.framework:
        framework = controls.framework_key(args.framework)
        if framework is None:
            # Printed here rather than raised as finml.cli.UsageError: under `python -m finml.cli` that class
            # lives in __main__, so an import of finml.cli would raise a different class than main() catches.
            print(f"finml: --framework: unknown framework {args.framework!r}; allowed: "
                  f"{', '.join(controls.FRAMEWORKS)}", file=sys.stderr)
            return 2
    rules = catalogue(pack_dir, framework)
    if args.format == "json":
        doc = {"format": "finml-policy-catalogue/1",
               "frameworks": {k: {"name": n, "version": v} for k, (n, v) in controls.FRAMEWORKS.items()
                              if framework in (None, k)},
               "rules": rules}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    title = controls.framework_label(framework) if framework else "all frameworks"
    print(f"{len(rules)} rule(s) — controls: {title}")
    for rule in rules:
        print(f"{rule['name']}  [{rule['kind']}, {rule['severity']}]")
        print(f"    {rule['description']}")
        for c in rule["controls"]:
            print(f"    - {c['framework']} {c['id']}: {c['title']}")
    return 0


def register(sub: Any) -> None:
    pol = sub.add_parser("policies", help="the policy pack's rule catalogue and control mapping")
    commands = pol.add_subparsers(dest="policies_command", required=True)
    p = commands.add_parser("list", help="list rules with the controls they evidence")
    p.add_argument("--framework", help="only rules evidencing this framework: cis-aws, cis-eks, nist-800-53, "
                                       "pci-dss, gdpr")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (text)")
    p.add_argument("--pack", help="policy pack directory (default: the project's policies/)")
    p.set_defaults(func=cmd_policies_list)
