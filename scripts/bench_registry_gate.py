"""Benchmark the promotion gate: lineage resolution + residency decision for a model version whose source run has
1, 100 and 1,000 dataset inputs, against a real MLflow server (basic-auth, TLS, PostgreSQL) on loopback.

    /work/main/.venv/bin/python scripts/bench_registry_gate.py [--repeat 7] [--sizes 1,100,1000]

Prints, per size: median and max wall time of `resolve_lineage` (registry round trips included) and of
`residency_decision` alone (in memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from finml.local.mlflow_server import MlflowServer  # noqa: E402
from finml.local.postgres import PrivatePostgres  # noqa: E402
from finml.local.tls import LocalCA  # noqa: E402
from finml.model_registry.gate import residency_decision  # noqa: E402
from finml.model_registry.lineage import resolve_lineage  # noqa: E402

RESIDENCY = {"confidential": ["onprem:*", "aws:eu-central-1"], "restricted": ["onprem:fra-dc1"]}


def register(client, name: str, n_inputs: int) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    exp = client.get_experiment_by_name("bench") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("bench")
    run = client.create_run(exp_id)
    inputs = [DatasetInput(Dataset(name=f"ds-{i}", digest=f"{i:08x}", source_type="local",
                                   source=f"file:///data/ds-{i}.parquet"),
                           [InputTag("finml.classification", "restricted" if i == n_inputs - 1 else "confidential"),
                            InputTag("finml.site", "onprem:fra-dc1")])
              for i in range(n_inputs)]
    for start in range(0, n_inputs, 100):
        client.log_inputs(run.info.run_id, datasets=inputs[start:start + 100])
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(mv.version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", default="1,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="finml-bench-") as tmp:
        base = Path(tmp)
        ca = LocalCA(base / "ca")
        print("starting PostgreSQL and MLflow (basic-auth, TLS)…", file=sys.stderr)
        with PrivatePostgres(base / "pg", ca) as pg, MlflowServer(base / "mlflow", ca, pg) as server:
            os.environ.update(server.env(server.writer, base={}))
            from mlflow import MlflowClient

            client = MlflowClient(server.tracking_uri)
            versions = {}
            for n in sizes:
                versions[n] = register(client, f"bench-{n}", n)
                print(f"registered bench-{n} with {n} dataset inputs", file=sys.stderr)
            print(f"{'inputs':>7}  {'resolve_lineage median':>23}  {'max':>9}  {'decision median':>16}  verdict")
            for n in sizes:
                resolve, decide = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    lineage = resolve_lineage(client, f"bench-{n}", versions[n])
                    t1 = time.perf_counter()
                    decision = residency_decision(lineage, "aws:eu-central-1", RESIDENCY)
                    t2 = time.perf_counter()
                    resolve.append(t1 - t0)
                    decide.append(t2 - t1)
                assert len(lineage.datasets) == n and not decision.allowed and decision.dataset.startswith(
                    f"ds-{n - 1}@"), decision
                print(f"{n:>7}  {statistics.median(resolve) * 1000:>20.1f} ms  {max(resolve) * 1000:>6.1f} ms"
                      f"  {statistics.median(decide) * 1e6:>13.1f} µs  refused ({decision.rule}, "
                      f"{decision.dataset.split('@')[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
