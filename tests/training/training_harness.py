"""Helpers of the training tests: the training set from the real generator and training-set builder (Feast
point-in-time join, as the feature store builds it), and a torchrun runner with a hard timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
SITE = "onprem:fra-dc1"
#: 20 000 transactions over 30 days: ~100 frauds, the last 20 % of event time (~35 frauds) held out.
ROWS = 20_000
DATA_SEED = 0
#: Small and fast on a loaded 2-core machine; what every torchrun test trains with unless it says otherwise.
FAST_ARGS = ("--hidden=64,64", "--global-batch-size=1024", "--epochs=3")


def build_fraud_training_set(directory: Path, rows: int = ROWS, seed: int = DATA_SEED) -> Path:
    """generate_transactions -> offline store -> Feast -> build_training_set, as workloads/feature_repo does it."""
    from workloads.reference.local_data import build_feature_store_training_set

    return build_feature_store_training_set(directory, rows, seed=seed, site=SITE)


@dataclass
class TrainRun:
    returncode: int
    stderr: str
    summary: dict[str, Any] | None


def torchrun_command(nproc: int, training_set: Path, checkpoint_dir: Path, summary: Path, *args: str,
                     max_restarts: int = 0) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
            "-m", "workloads.reference.train", f"--training-set={training_set}",
            f"--checkpoint-dir={checkpoint_dir}", f"--summary-json={summary}", *args]


def train_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def run_training(tmp: Path, training_set: Path, *args: str, nproc: int = 2, env: dict[str, str] | None = None,
                 timeout: int = 240) -> TrainRun:
    summary = tmp / "summary.json"
    proc = subprocess.run(torchrun_command(nproc, training_set, tmp / "checkpoints", summary, *args), cwd=ROOT,
                          env=train_env(env), capture_output=True, text=True, timeout=timeout)
    return TrainRun(proc.returncode, proc.stderr, json.loads(summary.read_text()) if summary.exists() else None)
