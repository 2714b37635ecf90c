#!/usr/bin/env python3
"""Benchmark the policy gate against its floor: the real pack vs a trivial pack on the same scaled plans.

    python scripts/bench_policy.py [--stack hybrid-prod] [--scales 1,2,5,10,20,50] [--targets 1000,5000]
                                   [--repeat 3] [--out build]

Plans are a real stack's plan (from `finml preview`; made here if missing) copied k times with every URN renamed,
so lineage stays within each copy. For each plan size both packs run in the same process tree, one after the other,
over the same Analyzer gRPC protocol `pulumi preview` uses: the trivial pack (tests/fixtures/packs/trivial, one rule
that returns nothing) measures the protocol floor - starting the pack, shipping every resource twice (Analyze and
AnalyzeStack) and the SDK's per-request work - and the ratio real/trivial is the time the rules themselves add.
Figures are printed, never asserted (a loaded machine moves them): the README keeps the measured ones.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finml.cli import pack_config_for  # noqa: E402
from finml.config import load_stack_file  # noqa: E402
from finml.plan import Plan, load_plan  # noqa: E402
from finml.policy_check import PolicyPackProcess, check_plan  # noqa: E402

TRIVIAL_PACK = ROOT / "tests" / "fixtures" / "packs" / "trivial"
REAL_PACK = ROOT / "policies"


def scaled(plan: Plan, copies: int) -> Plan:
    """``copies`` copies of the plan's resources (the stack resource once); copy i renames every URN with -x<i>."""
    out = copy.deepcopy(plan)
    stack = [r for r in plan.resources if r.type == "pulumi:pulumi:Stack"]
    body = [r for r in plan.resources if r.type != "pulumi:pulumi:Stack"]
    stack_urns = {r.urn for r in stack}
    resources = list(copy.deepcopy(stack))
    for i in range(copies):
        def rename(urn, i=i):
            if urn is None or i == 0 or urn in stack_urns:
                return urn
            return f"{urn}-x{i}"
        for r in copy.deepcopy(body):
            r.urn = rename(r.urn)
            r.parent = rename(r.parent)
            r.provider = rename(r.provider)
            r.dependencies = [rename(d) for d in r.dependencies]
            r.property_dependencies = {k: [rename(d) for d in v] for k, v in r.property_dependencies.items()}
            resources.append(r)
    out.resources = resources
    return out


def _time(plan: Plan, pack: PolicyPackProcess, config: dict | None, repeat: int) -> tuple[float, int]:
    times, violations = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = check_plan(plan, pack.pack_dir, config, pack=pack)
        times.append(time.perf_counter() - started)
        violations = len(result.mandatory)
    return statistics.median(times), violations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="hybrid-prod", help="stack whose plan is scaled (hybrid-prod)")
    parser.add_argument("--scales", default="1,2,5,10,20,50", help="copies of the plan (1,2,5,10,20,50)")
    parser.add_argument("--targets", default="1000,5000",
                        help="also plans of about these many resources (1000,5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and pack (median reported)")
    parser.add_argument("--out", default=str(ROOT / "build"), help="directory holding <stack>/plan.json")
    args = parser.parse_args()

    plan_path = Path(args.out) / args.stack / "plan.json"
    if not plan_path.exists():
        subprocess.run([sys.executable, "-m", "finml.cli", "preview", "--stack", args.stack, "--out", args.out],
                       cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
    base = load_plan(plan_path)
    config = pack_config_for(load_stack_file(ROOT / "stacks" / f"Pulumi.{args.stack}.yaml").platform, REAL_PACK)
    n_base = len([r for r in base.resources if r.type != "pulumi:pulumi:Stack"])
    sizes = {int(s) for s in args.scales.split(",") if s}
    sizes |= {max(1, round(int(t) / n_base)) for t in args.targets.split(",") if t}
    print(f"plan: {args.stack} ({n_base} resources) x copies; median of {args.repeat} runs; pack processes started "
          "once (start-up excluded)")
    print(f"{'copies':>6} {'resources':>9} {'trivial s':>9} {'real s':>8} {'trivial res/s':>13} {'real res/s':>10} "
          f"{'ratio':>6} {'violations':>10}")
    with PolicyPackProcess(TRIVIAL_PACK) as trivial, PolicyPackProcess(REAL_PACK) as real:
        for copies in sorted(sizes):
            plan = scaled(base, copies)
            n = len(plan.resources) - 1
            floor, _ = _time(plan, trivial, None, args.repeat)
            took, violations = _time(plan, real, config, args.repeat)
            print(f"{copies:>6} {n:>9} {floor:>9.2f} {took:>8.2f} {n / floor:>13.0f} {n / took:>10.0f} "
                  f"{took / floor:>6.2f} {violations:>10}", flush=True)
    print("(ratio = real pack / trivial pack on the same plan; both over real Analyzer gRPC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
