"""Load benchmark of the model server on loopback: throughput and p50/p99 latency, adaptive batching off vs on.

    /work/main/.venv/bin/python scripts/bench_serving.py [--requests 2000] [--concurrency 32]

For each setting it starts the finml model server (the same `build_server` as production: MLServer 1.7.1 with its
MLflow runtime, TLS on every port, the batch-size and audit hooks) from the serving venv on 127.0.0.1 with a
small scikit-learn model saved locally, then fires single-row requests from `--concurrency` keep-alive HTTPS
clients. The load gate is not on the request path, so the benchmark loads the model from a local directory
instead of a registry. Prints one line per setting, and `--json` writes the figures.

On a GPU machine the same client can be pointed at a server on a MIG slice and one on a whole GPU
(`--url`); this repository's CI has no GPU, so that comparison is not run here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING_PYTHON = Path(os.environ.get("FINML_SERVING_PYTHON", "/work/main/.venv-serving/bin/python"))
MODEL = "bench"
FEATURES = ("amount", "merchant_risk", "customer_age")
SETTINGS = {"batching off": (1, 0), "adaptive batching (32 rows, 5 ms)": (32, 5)}


# -- server side (runs under the serving venv) ----------------------------------------------------------------------

def serve(args: argparse.Namespace) -> None:
    import asyncio

    sys.path.insert(0, str(ROOT))
    from mlserver.cli.serve import load_settings

    from workloads.model_server import gate, serve as finml_serve

    server_args = finml_serve.parse_args([
        "--name", MODEL, "--site", "onprem:bench", "--residency-file", "/dev/null", "--models-dir", args.models_dir,
        "--host", "127.0.0.1", "--http-port", str(args.port), "--grpc-port", str(args.port + 1),
        "--metrics-port", str(args.port + 2), "--tls-cert", args.cert, "--tls-key", args.key,
        "--audit-key-file", args.key, "--max-batch-size", str(args.batch_size),
        "--max-batch-time-ms", str(args.batch_time_ms), "--parallel-workers", "0",
        "--restricted-features", "customer_age"])
    result = gate.GateResult(MODEL, "bench", "1", "internal", "onprem:bench", "benchmark: local model, no registry")
    root = finml_serve.write_settings(server_args, result)
    settings_file = root / MODEL / "model-settings.json"
    model_settings = json.loads(settings_file.read_text())
    model_settings["parameters"]["uri"] = args.model_dir
    settings_file.write_text(json.dumps(model_settings))

    async def run() -> None:
        settings, models = await load_settings(str(root))
        await finml_serve.build_server(settings, server_args, result).start(models)

    # The audit log would dominate a loopback benchmark's output: send it to /dev/null like a log shipper would.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    asyncio.run(run())


def save_model(model_dir: Path) -> None:
    code = f"""
import numpy as np, pandas as pd, mlflow.sklearn
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame({{f: rng.random(500) for f in {FEATURES!r}}})
y = (X.amount + X.merchant_risk > 1).astype(int)
mlflow.sklearn.save_model(LogisticRegression().fit(X, y), {str(model_dir)!r}, input_example=X.head(2))
"""
    subprocess.run([str(SERVING_PYTHON), "-c", code], check=True, capture_output=True,
                   env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})


# -- client side ----------------------------------------------------------------------------------------------------

BODY = json.dumps({"parameters": {"content_type": "pd"},
                   "inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [0.5]} for f in FEATURES]})


def load(port: int, ca: str, requests: int, concurrency: int) -> dict:
    ctx = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = requests // concurrency

    def client() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        mine = []
        for _ in range(per_client):
            start = time.perf_counter()
            conn.request("POST", f"/v2/models/{MODEL}/infer", BODY, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - start)
            if resp.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "errors": errors[0], "seconds": round(elapsed, 2),
            "throughput_rps": round(len(latencies) / elapsed, 1), "p50_ms": round(q[49] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1)}


def wait_ready(port: int, ca: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
            conn.request("GET", f"/v2/models/{MODEL}/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("server not ready")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--models-dir", "--model-dir", "--cert", "--key"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch-time-ms", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return 0

    sys.path.insert(0, str(ROOT))
    from finml.local.postgres import free_port
    from finml.local.tls import LocalCA

    work = Path(tempfile.mkdtemp(prefix="finml-bench-serving-"))
    results = {}
    try:
        ca = LocalCA(work / "ca")
        cert, key = ca.issue("bench")
        model_dir = work / "model"
        print("saving the benchmark model ...", flush=True)
        save_model(model_dir)
        for label, (batch_size, batch_ms) in SETTINGS.items():
            port = free_port()
            while any(free_port() == port + i for i in (1, 2)):
                port = free_port()
            proc = subprocess.Popen([str(SERVING_PYTHON), __file__, "--serve", "--models-dir", str(work / label[:5]),
                                     "--model-dir", str(model_dir), "--cert", str(cert), "--key", str(key),
                                     "--port", str(port), "--batch-size", str(batch_size),
                                     "--batch-time-ms", str(batch_ms)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
            try:
                wait_ready(port, str(ca.bundle), proc)
                load(port, str(ca.bundle), min(200, args.requests), args.concurrency)  # warm-up
                figures = load(port, str(ca.bundle), args.requests, args.concurrency)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            results[label] = figures
            print(f"{label:36s} {figures['throughput_rps']:8.1f} req/s   p50 {figures['p50_ms']:7.1f} ms   "
                  f"p99 {figures['p99_ms']:7.1f} ms   ({figures['requests']} requests, {figures['errors']} errors, "
                  f"{args.concurrency} clients)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
