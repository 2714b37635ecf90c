"""`finml gpu plan --stack STACK [--site SITE]`: the MIG layout of a site's GPUs for its served models.

Prints per node the MIG geometry of each GPU, the GPUs used against the lower bound, and writes the mig-parted
configuration the GPU Operator's MIG manager consumes (`--out`, default build/<stack>/<site>/mig-parted.yaml).
Exit 0 planned, 1 a demand does not fit (each one named), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2


def register(gpu_sub: argparse._SubParsersAction) -> None:
    """Hook under the `finml gpu` group (its subparsers object)."""
    p = gpu_sub.add_parser("plan", help="plan MIG layouts for the served models of a stack's sites")
    p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
    p.add_argument("--site", help="one site of the stack (default: every site with GPU serving)")
    p.add_argument("--out", help="directory for <site>/mig-parted.yaml (default: build/<stack>)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of text")
    p.set_defaults(func=cmd_gpu_plan)


def _site_dir(site: str) -> str:
    return site.replace(":", "-")


def format_plan(plan, profiles) -> str:
    lines = [f"site {plan.site}"]
    for node in plan.nodes:
        fixed = " (fixed migLayout from the stack)" if node.fixed else ""
        scale = f" x {node.nodes} identical nodes" if node.nodes > 1 else ""
        lines.append(f"  {node.pool} [{node.gpu_profile}]{scale}: nvidia.com/mig.config={node.config_name}{fixed}")
        for entry in node.devices:
            devices = entry["devices"] if entry["devices"] == "all" else ",".join(map(str, entry["devices"]))
            if entry["mig-enabled"]:
                geometry = " + ".join(f"{c} x {n}" for n, c in sorted(entry["mig-devices"].items()))
                lines.append(f"    GPU {devices}: MIG {geometry}")
            else:
                lines.append(f"    GPU {devices}: MIG off (whole GPU)")
    for gpu in sorted(plan.gpus_used):
        ts = f"; time-slicing {plan.time_slicing[gpu]} replicas per GPU" if gpu in plan.time_slicing else ""
        lines.append(f"  {gpu}: {plan.gpus_used[gpu]} GPUs used, lower bound {plan.lower_bound.get(gpu, 0)}{ts}")
        if plan.mig_resources.get(gpu):
            res = ", ".join(f"nvidia.com/mig-{n}: {c}" for n, c in sorted(plan.mig_resources[gpu].items()))
            lines.append(f"    advertises {res}")
    if not plan.gpus_used:
        lines.append("  no GPU serving on this site")
    return "\n".join(lines)


def cmd_gpu_plan(args: argparse.Namespace) -> int:
    from finml.cli import ROOT, _err, _load_stack, _stack_names
    from finml.config import ConfigError
    from finml.mig_planner import PlanError, plan_stack_site
    from finml.plan import write_text_atomic
    from gpu_profiles import load_profiles

    # Errors are printed here: under `python -m finml.cli` the CLI module is __main__, whose UsageError is not
    # the one importable as finml.cli.UsageError.
    try:
        stack = _load_stack(args, _stack_names(args)[0])
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 — finml.cli.UsageError: one line, exit 2
        if type(exc).__name__ != "UsageError":
            raise
        _err(str(exc))
        return EXIT_BAD_INPUT
    sites = sorted(stack.platform.sites)
    if args.site is not None and args.site not in sites:
        _err(f"--site: unknown site {args.site!r} of stack {stack.stack}; allowed: {', '.join(sites)}")
        return EXIT_BAD_INPUT
    wanted = [args.site] if args.site else sites
    profiles = load_profiles()
    out_dir = Path(args.out) if args.out else ROOT / "build" / stack.stack
    worst = EXIT_OK
    documents = []
    for site in wanted:
        try:
            plan = plan_stack_site(stack, site, profiles)
        except PlanError as exc:
            _err(f"{stack.source}: {exc}")
            for demand in exc.demands:
                _err(f"  refused: {demand}")
            worst = EXIT_REFUSED
            continue
        target = out_dir / _site_dir(site) / "mig-parted.yaml"
        write_text_atomic(target, yaml.safe_dump(plan.mig_parted_config(), sort_keys=False))
        if args.json:
            documents.append({"site": site, "gpusUsed": plan.gpus_used, "lowerBound": plan.lower_bound,
                              "migParted": plan.mig_parted_config(), "nodeLabels": plan.node_labels(),
                              "timeSlicing": plan.time_slicing, "file": str(target)})
        else:
            print(format_plan(plan, profiles))
            print(f"  mig-parted config: {target}")
    if args.json:
        json.dump(documents, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return worst
