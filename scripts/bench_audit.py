#!/usr/bin/env python3
"""Benchmark `finml audit`: seed a moto server (server mode, 127.0.0.1) with a few hundred resources, audit the
account of the `audit-test` stack and print resources audited per second.

    /work/main/.venv/bin/python scripts/bench_audit.py [--resources 400] [--repeat 3] [--workers 16]

Each run scans every enabled region of the moto account (all of the aws partition) and reads every resource's
settings, as a real audit does. Timed twice: in-process (collect + rules + report object) and as the CLI subprocess
a user runs (including Python start-up and imports).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finml.audit.moto_seed import (STACK, TEST_STACKS, MotoServer, aws_env, run_finml, seed_account,  # noqa: E402
                                   seed_bulk)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=400, help="bulk resources to seed beyond the fixture set")
    parser.add_argument("--repeat", type=int, default=3, help="timed audits (best is reported)")
    parser.add_argument("--workers", type=int, default=16, help="parallel API readers")
    args = parser.parse_args()

    os.environ.update(aws_env())
    from finml.audit.aws import AwsContext
    from finml.audit.run import audit_stack
    from finml.config import load_stack_file, stack_file

    stack = load_stack_file(stack_file(STACK, TEST_STACKS))
    with MotoServer() as server:
        started = time.monotonic()
        seeded = seed_account(server)
        seed_bulk(server, args.resources)
        print(f"seeded {seeded.resources + args.resources} resources (+ moto's default VPCs in every region) in "
              f"{time.monotonic() - started:.1f}s", flush=True)
        audit_stack(AwsContext(endpoint_url=server.url), stack, workers=args.workers)  # warm moto's region backends
        best = None
        best_cpu = 0.0
        for i in range(args.repeat):
            client_cpu, server_cpu = time.process_time(), _process_cpu(server.proc.pid)
            ctx = AwsContext(endpoint_url=server.url)
            result = audit_stack(ctx, stack, workers=args.workers)
            client_cpu = time.process_time() - client_cpu
            server_cpu = _process_cpu(server.proc.pid) - server_cpu
            cpu = client_cpu + server_cpu
            rate = result.resources_checked / result.seconds
            print(f"  in-process run {i + 1}: {result.resources_checked} resources, {len(result.regions)} regions, "
                  f"{len(result.violations)} findings in {result.seconds:.2f}s wall = {rate:.0f} resources/s; "
                  f"CPU {cpu:.2f}s (audit {client_cpu:.2f}s + moto {server_cpu:.2f}s) = "
                  f"{result.resources_checked / cpu:.0f} resources per CPU-second", flush=True)
            if best is None or result.seconds < best.seconds:
                best, best_cpu = result, cpu
        started = time.monotonic()
        proc = run_finml("audit", "--stack", STACK, "--endpoint-url", server.url, "--no-drift", "--format", "json",
                         "--workers", str(args.workers))
        cli_seconds = time.monotonic() - started
        if proc.returncode not in (0, 1):
            print(proc.stderr, file=sys.stderr)
            return 1
    assert best is not None
    print(f"finml audit: {best.resources_checked} resources audited across {len(best.regions)} regions in "
          f"{best.seconds:.2f}s — {best.resources_checked / best.seconds:.0f} resources/s in-process; "
          f"CLI subprocess {cli_seconds:.2f}s — {best.resources_checked / cli_seconds:.0f} resources/s; "
          f"{best.resources_checked / best_cpu:.0f} resources per CPU-second (audit + moto) "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
