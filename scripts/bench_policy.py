#!/usr/bin/env python3
"""Benchmark the policy gate against its floor: the real pack vs a trivial pack on the same scaled plans.

    python scripts/bench_policy.py [--stack hybrid-prod] [--scales 1,2,5,10,20,50] [--targets 1000,5000]
                                   [--repeat 5] [--out build]

Plans are a real stack's plan (from `finml preview`; made here if missing) copied k times with every URN renamed,
so lineage stays within each copy. For each plan size both packs run in the same process tree over the same
Analyzer gRPC protocol `pulumi preview` uses: the trivial pack (tests/fixtures/packs/trivial, one rule that returns
nothing, on the stock SDK) measures the protocol floor - shipping every resource twice (Analyze and AnalyzeStack),
the SDK decoding each resource once and its per-request work - and the ratio real/trivial is what the rules and
the pack's engine add. Both pack processes are started once, before any timing; their start-up is printed
separately (wall and CPU), not folded into the ratio.

Runs are interleaved so that load from other work on a shared machine hits both packs alike: for each size,
`--repeat` rounds of one trivial and one real check, the order alternating from round to round (trivial first,
then real first, ...). Printed per pack: the median and the spread (min-max) of the wall times, the median of the
pack process's own CPU seconds (/proc/<pid>/stat, which other processes' load does not inflate), and the ratios:
of the medians, and the median (min-max) of the per-round ratios. The machine's load average is printed before
and after. A plan whose embedded config is not the stack file's (made before the stack changed) is stale and is
made again. Figures are printed, never asserted (a loaded machine moves them): the README keeps the measured ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finml.cli import _embedded_config, _first_difference, pack_config_for  # noqa: E402
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


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the pack process has used so far: unlike wall time, it does not grow when other
    work on a shared machine takes the cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check(plan: Plan, pack: PolicyPackProcess, config: dict | None) -> tuple[float, float, int]:
    """One check of ``plan``: wall seconds (client included), the pack process's CPU seconds, mandatory findings."""
    cpu = _cpu_seconds(pack.proc.pid)
    started = time.perf_counter()
    result = check_plan(plan, pack.pack_dir, config, pack=pack)
    return time.perf_counter() - started, _cpu_seconds(pack.proc.pid) - cpu, len(result.mandatory)


def _interleaved(plan: Plan, trivial: PolicyPackProcess, real: PolicyPackProcess, config: dict | None,
                 repeat: int) -> tuple[list, list]:
    """``repeat`` rounds of (trivial, real) checks of the same plan, alternating which goes first."""
    floors, reals = [], []
    for round_ in range(repeat):
        if round_ % 2 == 0:
            floors.append(_check(plan, trivial, None))
            reals.append(_check(plan, real, config))
        else:
            reals.append(_check(plan, real, config))
            floors.append(_check(plan, trivial, None))
    return floors, reals


def _started(stack: contextlib.ExitStack, pack_dir: Path) -> tuple[PolicyPackProcess, float, float]:
    """A started pack process (stopped with ``stack``), the wall seconds from spawn to accepting gRPC, and the CPU
    seconds that took."""
    started = time.perf_counter()
    pack = stack.enter_context(PolicyPackProcess(pack_dir))
    return pack, time.perf_counter() - started, _cpu_seconds(pack.proc.pid)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="hybrid-prod", help="stack whose plan is scaled (hybrid-prod)")
    parser.add_argument("--scales", default="1,2,5,10,20,50", help="copies of the plan (1,2,5,10,20,50)")
    parser.add_argument("--targets", default="1000,5000",
                        help="also plans of about these many resources (1000,5000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="interleaved rounds per size, one check of each pack per round (5; median reported)")
    parser.add_argument("--out", default=str(ROOT / "build"), help="directory holding <stack>/plan.json")
    args = parser.parse_args()

    plan_path = Path(args.out) / args.stack / "plan.json"
    stack_path = ROOT / "stacks" / f"Pulumi.{args.stack}.yaml"
    stack = load_stack_file(stack_path)

    def fresh() -> bool:
        return (plan_path.exists() and plan_path.stat().st_mtime >= stack_path.stat().st_mtime
                and _first_difference(_embedded_config(load_plan(plan_path).config),
                                      stack.non_secret_config()) is None)

    if not fresh():
        subprocess.run([sys.executable, "-m", "finml.cli", "--cwd", str(ROOT), "preview", "--stack", args.stack,
                        "--out", args.out], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        if not fresh():
            print(f"no fresh plan of {args.stack} at {plan_path} (finml preview failed?); not timing a stale plan",
                  file=sys.stderr)
            return 2
    base = load_plan(plan_path)
    config = pack_config_for(stack.platform, REAL_PACK)
    n_base = len([r for r in base.resources if r.type != "pulumi:pulumi:Stack"])
    sizes = {int(s) for s in args.scales.split(",") if s}
    sizes |= {max(1, round(int(t) / n_base)) for t in args.targets.split(",") if t}
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    print(f"plan: {args.stack} ({n_base} resources) x copies; {args.repeat} interleaved rounds per size "
          "(trivial/real, order alternating); " + _load())
    with contextlib.ExitStack() as processes:
        trivial, trivial_start, trivial_start_cpu = _started(processes, TRIVIAL_PACK)
        real, real_start, real_start_cpu = _started(processes, REAL_PACK)
        # One check each before the timed rounds (the first request of a process pays one-off costs: imports on
        # first use, the real pack's per-type dispatch tables); printed, as a one-shot `finml policy check` pays it.
        first_trivial, first_real = _check(base, trivial, None), _check(base, real, config)
        print(f"pack start-up (not in the ratios): trivial {trivial_start:.2f} s wall / {trivial_start_cpu:.2f} s CPU, "
              f"real {real_start:.2f} s wall / {real_start_cpu:.2f} s CPU; first check of the {n_base}-resource plan "
              f"after start: trivial {first_trivial[0]:.2f} s / {first_trivial[1]:.2f} s CPU, real "
              f"{first_real[0]:.2f} s / {first_real[1]:.2f} s CPU")
        print(f"{'copies':>6} {'resources':>9} {'trivial s (min-max)':>19} {'real s (min-max)':>17} "
              f"{'trivial res/s':>13} {'real res/s':>10} {'ratio':>5} {'per-round ratio':>15} "
              f"{'pack CPU s trivial/real':>23} {'CPU ratio':>9} {'violations':>10}")
        for copies in sorted(sizes):
            plan = scaled(base, copies)
            n = len(plan.resources) - 1
            floors, reals = _interleaved(plan, trivial, real, config, args.repeat)
            floor, took = statistics.median(f[0] for f in floors), statistics.median(r[0] for r in reals)
            floor_cpu, took_cpu = statistics.median(f[1] for f in floors), statistics.median(r[1] for r in reals)
            pairs = [r[0] / f[0] for f, r in zip(floors, reals)]
            spread_f = f"{floor:.2f} ({min(f[0] for f in floors):.2f}-{max(f[0] for f in floors):.2f})"
            spread_r = f"{took:.2f} ({min(r[0] for r in reals):.2f}-{max(r[0] for r in reals):.2f})"
            per_round = f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})"
            cpu = f"{floor_cpu:.2f}/{took_cpu:.2f}"
            print(f"{copies:>6} {n:>9} {spread_f:>19} {spread_r:>17} {n / floor:>13.0f} {n / took:>10.0f} "
                  f"{took / floor:>5.2f} {per_round:>15} {cpu:>23} {took_cpu / max(floor_cpu, 1e-9):>9.2f} "
                  f"{reals[-1][2]:>10}", flush=True)
    print("(ratio = real pack / trivial pack on the same plan: of the median wall times of the whole check incl. the "
          "client, and per round; CPU = the pack process's own CPU seconds, median; both packs over real Analyzer "
          "gRPC; " + _load() + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
