"""Training throughput on this machine: samples/s for 1 and 2 processes, DDP vs FSDP2, and the scaling efficiency.

    python scripts/bench_training.py                      # real training set (generator + Feast builder), CPU/gloo
    python scripts/bench_training.py --direct --rows 200000 --epochs 3
    python scripts/bench_training.py --training-set DIR   # an existing finml-training-set/1 directory

Every configuration runs the same `workloads/reference/train.py` under torchrun (`--standalone`), untracked, without
the baseline. Samples/s is the mean over epochs after the first (the first pays for warm-up); scaling efficiency is
samples/s on N processes / (N x samples/s on 1 process). Prints a table and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(training_set: Path, mode: str, nproc: int, args: argparse.Namespace, work: Path) -> dict:
    summary = work / f"{mode}-{nproc}.json"
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc-per-node={nproc}",
               "-m", "workloads.reference.train", f"--training-set={training_set}",
               f"--checkpoint-dir={work / f'ck-{mode}-{nproc}'}", f"--mode={mode}", f"--epochs={args.epochs}",
               f"--hidden={args.hidden}", f"--global-batch-size={args.batch}", "--no-baseline",
               f"--summary-json={summary}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} x{nproc} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(summary.read_text())
    steady = [h["samples_per_second"] for h in data["history"][1:]] or [data["history"][0]["samples_per_second"]]
    return {"mode": mode, "nproc": nproc, "samples_per_second": statistics.mean(steady),
            "holdout_pr_auc": data["holdout_pr_auc"], "wall_seconds": time.monotonic() - started,
            "peak_rss_bytes": data.get("peak_rss_bytes")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--training-set", type=Path)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--direct", action="store_true", help="generator columns only, no Feast join (faster to build)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", default="128,128,64")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="finml-bench-") as tmp:
        work = Path(tmp)
        training_set = args.training_set
        if training_set is None:
            from workloads.reference.local_data import build_direct_training_set, build_feature_store_training_set
            build = build_direct_training_set if args.direct else build_feature_store_training_set
            print(f"building a training set of {args.rows} rows ({'direct' if args.direct else 'Feast'})…",
                  file=sys.stderr, flush=True)
            training_set = build(work, args.rows)
        results = []
        for mode in ("ddp", "fsdp2"):
            for nproc in (int(n) for n in args.procs.split(",")):
                print(f"{mode} x{nproc}…", file=sys.stderr, flush=True)
                results.append(run(training_set, mode, nproc, args, work))
    base = {r["mode"]: r["samples_per_second"] for r in results if r["nproc"] == 1}
    print(f"{'mode':6} {'procs':>5} {'samples/s':>10} {'scaling eff.':>12} {'PR-AUC':>7} {'wall s':>7}")
    for r in results:
        eff = r["samples_per_second"] / (r["nproc"] * base[r["mode"]]) if r["mode"] in base else float("nan")
        r["scaling_efficiency"] = eff
        print(f"{r['mode']:6} {r['nproc']:>5} {r['samples_per_second']:>10.0f} {eff:>12.2f} "
              f"{r['holdout_pr_auc']:>7.3f} {r['wall_seconds']:>7.1f}")
    print(f"(cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, epochs: {args.epochs}, "
          f"global batch: {args.batch}, hidden: {args.hidden})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
