#!/usr/bin/env python3
"""Benchmark the policy gate: time to check each stack's plan over gRPC, and resources per second.

    python scripts/bench_policy.py [--out build] [--repeat 3]

Plans come from `finml preview` (run it first, or pass --preview to make them). A plan whose embedded config is not
the stack file's (made before the stack changed) is stale and is not timed. Figures are printed, not asserted:
speed targets are tracked here, never by timed tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finml.cli import _embedded_config, _first_difference, pack_config_for  # noqa: E402
from finml.config import list_stacks, load_stack_file  # noqa: E402
from finml.plan import load_plan  # noqa: E402
from finml.policy_check import check_plan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "build"), help="directory holding <stack>/plan.json")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stack (median reported)")
    parser.add_argument("--preview", action="store_true", help="run `finml preview --all` first")
    args = parser.parse_args()
    if args.preview:
        proc = subprocess.run([sys.executable, "-m", "finml.cli", "--cwd", str(ROOT), "preview", "--all", "--out",
                               args.out], cwd=ROOT, stdout=subprocess.DEVNULL)
        if proc.returncode not in (0, 1):  # 1 = violations: the plans are still fresh and worth timing
            print(f"finml preview failed (exit {proc.returncode}); not timing old plans", file=sys.stderr)
            return proc.returncode
    pack = ROOT / "policies"
    print(f"{'stack':<14} {'resources':>9} {'median s':>9} {'min s':>7} {'res/s':>8} {'violations':>10}")
    for name in list_stacks(ROOT / "stacks"):
        plan_path = Path(args.out) / name / "plan.json"
        if not plan_path.exists():
            print(f"{name:<14} no plan at {plan_path}; run with --preview", file=sys.stderr)
            continue
        plan = load_plan(plan_path)
        stack = load_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml")
        stack_path = ROOT / "stacks" / f"Pulumi.{name}.yaml"
        if (_first_difference(_embedded_config(plan.config), stack.non_secret_config()) is not None
                or plan_path.stat().st_mtime < stack_path.stat().st_mtime):
            print(f"{name:<14} stale plan at {plan_path} (older than, or not made from, the stack file); run with --preview",
                  file=sys.stderr)
            continue
        config = pack_config_for(stack.platform, pack)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = check_plan(plan, pack, config)
            times.append(time.perf_counter() - started)
        med = statistics.median(times)
        print(f"{name:<14} {result.resources_checked:>9} {med:>9.2f} {min(times):>7.2f} "
              f"{result.resources_checked / med:>8.1f} {len(result.violations):>10}")
    print("(times include starting the pack process and the gRPC round trips, as `pulumi preview` pays them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
