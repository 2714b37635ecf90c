"""`./dev.sh demo`: the whole ML lifecycle on this machine with real components, stage by stage.

    python -m finml.demo [--dir build/demo] [--rows 20000] [--epochs 3] [--json build/demo/summary.json]

1. local services: a per-run CA, PostgreSQL (TLS), Redis (TLS + ACL), MLflow (basic auth, TLS) on 127.0.0.1
2. feature store: synthetic card transactions -> Feast apply and materialize -> `feast serve` over HTTPS
3. training set: point-in-time join with lineage (classification of every feature view)
4. training: `torchrun` DDP with 2 CPU processes (gloo), tracked in MLflow, the model registered with one dataset
   input per feature view (classification, site)
5. lineage: the version's computed classification from the registry
6. promotion: `finml model promote` refused for the AWS site, allowed on-prem (alias champion)
7. serving: the model server (MLServer, serving venv) loads models:/NAME@champion over TLS after its load-time gate;
   the same gate refuses to start under the AWS site's settings
8. scoring: requests whose features come from the feature server, answered by the model server; audit lines

Everything runs under `--dir`; every process is stopped at the end. Residency and promotion rules come from a copy of
`stacks/Pulumi.hybrid-prod.yaml` (see `_demo_stack`). Exit 0 when every stage had its expected outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, redirect_stdout
from pathlib import Path
from typing import Any

import yaml

from finml.envscope import scoped_environ

ROOT = Path(__file__).resolve().parent.parent
SITE, AWS_SITE = "onprem:fra-dc1", "aws:eu-central-1"
MODEL = "fraud-scorer"
STACK = "demo"
#: Metric the reference training logs and the demo's promotion threshold applies to (see `_demo_stack`).
PROMOTION_METRIC = ("final_holdout_pr_auc", 0.05)


class Demo:
    def __init__(self, work: Path, rows: int, epochs: int) -> None:
        self.work = work
        self.rows = rows
        self.epochs = epochs
        self.stages: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def stage(self, name: str, outcome: str, ok: bool, **facts: Any) -> None:
        number = len(self.stages) + 1
        record = {"stage": number, "name": name, "ok": ok, "outcome": outcome, **facts}
        self.stages.append(record)
        mark = "ok " if ok else "FAIL"
        print(f"[{number}/8] {mark} {name}: {outcome}", flush=True)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)


def _demo_stack(stacks_dir: Path) -> Path:
    """hybrid-prod's residency and registry sites, with the promotion threshold lowered: the demo trains a few epochs
    on little data, which proves the path, not the model (hybrid-prod asks for final_holdout_pr_auc >= 0.8)."""
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").read_text())
    platform = doc["config"]["finml:platform"]
    if platform.get("registry", {}).get("promotion"):
        metric, minimum = PROMOTION_METRIC
        platform["registry"]["promotion"]["metrics"] = [{"metric": metric, "min": minimum}]
    stacks_dir.mkdir(parents=True, exist_ok=True)
    path = stacks_dir / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _finml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)


def run(work: Path, *, rows: int = 20_000, epochs: int = 3) -> dict[str, Any]:
    from finml.local.feature_store import LocalFeatureStore
    from finml.local.mlflow_server import MlflowServer
    from finml.local.model_server import LocalModelServer
    from finml.local.postgres import PrivatePostgres
    from finml.local.redis import PrivateRedis
    from finml.local.tls import LocalCA

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    demo = Demo(work, rows, epochs)
    stacks_dir = work / "stacks"
    stack_path = _demo_stack(stacks_dir)
    residency = yaml.safe_load(stack_path.read_text())["config"]["finml:platform"]["residency"]
    with ExitStack() as stack:
        # 1 -------------------------------------------------------------------------------------------------------
        ca = LocalCA(work / "ca")
        pg = stack.enter_context(PrivatePostgres(work / "postgres", ca))
        redis = stack.enter_context(PrivateRedis(work / "redis", ca))
        registry = stack.enter_context(MlflowServer(work / "mlflow", ca, pg, name="demo_registry"))
        demo.stage("local services", f"CA {ca.bundle}; PostgreSQL, Redis and MLflow {registry.tracking_uri} on "
                   f"loopback, TLS only", True, registry=registry.tracking_uri)

        # 2 -------------------------------------------------------------------------------------------------------
        fs = stack.enter_context(LocalFeatureStore(work / "feast", ca, pg, redis, site=SITE))
        with redirect_stdout(sys.stderr):
            transactions = fs.seed(rows, seed=0)
        server_url = fs.serve()
        refusals = _feature_server_refusals(fs, transactions)
        demo.stage("feature store", f"{len(transactions)} synthetic transactions; Feast applied and materialized; "
                   f"feature server {server_url}, authentication required (no token: HTTP "
                   f"{refusals['no_token']}, a service account outside the reader lists: HTTP "
                   f"{refusals['outsider']})", refusals == {"no_token": 401, "outsider": 403},
                   transactions=len(transactions), feature_server=server_url, refusals=refusals)

        # 3 -------------------------------------------------------------------------------------------------------
        from workloads.feature_repo.training_set import build_training_set

        with redirect_stdout(sys.stderr):
            ts = build_training_set(fs.store, work / "training-set", transactions=transactions, site=SITE)
        lineage = ts.lineage
        views = {v["name"]: v["classification"] for v in lineage["feature_views"]}
        demo.stage("training set", f"{lineage['rows']} rows, classification {lineage['classification']} "
                   f"(views: {', '.join(f'{k}={v}' for k, v in sorted(views.items()))})", True,
                   classification=lineage["classification"], rows=lineage["rows"])

        # 4 -------------------------------------------------------------------------------------------------------
        writer_env = registry.env(registry.writer)
        writer_env["PYTHONPATH"] = str(ROOT)
        proc = _finml("train", "local", "--nproc", "2", "--mode", "ddp", "--epochs", str(epochs),
                      "--training-set", str(work / "training-set"), "--tracking-uri", registry.tracking_uri,
                      "--model-name", MODEL, "--run-name", "demo", "--work-dir", str(work / "train"),
                      env=writer_env)
        summary_path = work / "train" / "summary" / "demo.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        version = summary.get("model_version")
        trained = proc.returncode == 0 and version is not None
        demo.stage("training", f"torchrun DDP, 2 CPU processes: {MODEL} version {version} registered "
                   f"(holdout PR-AUC {summary.get('holdout_pr_auc', float('nan')):.3f})" if trained else
                   f"train local exited {proc.returncode}: " + " | ".join(
                       sorted({line for line in proc.stderr.splitlines() if line.startswith("error")})[:3]
                       or [proc.stderr[-600:]]), trained, model_version=version,
                   holdout_pr_auc=summary.get("holdout_pr_auc"))
        if not trained:
            return _finish(demo)

        # 5 -------------------------------------------------------------------------------------------------------
        import mlflow

        from finml.model_registry.lineage import resolve_lineage

        with scoped_environ(registry.env(registry.reader, base={})):
            lin = resolve_lineage(mlflow.MlflowClient(registry.tracking_uri), MODEL, version)
        demo.stage("lineage", f"version {version} is {lin.classification} from "
                   f"{', '.join(sorted(f'{d.name}={d.classification}@{d.site}' for d in lin.datasets))}",
                   not lin.unknown, classification=lin.classification)

        # 6 -------------------------------------------------------------------------------------------------------
        audit_log = work / "registry-audit.jsonl"
        common = ("--stacks-dir", str(stacks_dir), "model", "promote", "--stack", STACK, "--alias", "champion",
                  "--tracking-uri", registry.tracking_uri, "--audit-log", str(audit_log))
        aws = _finml(*common, "--site", AWS_SITE, MODEL, version, env=writer_env)
        onprem = _finml(*common, "--site", SITE, MODEL, version, env=writer_env)
        refused_aws, allowed_onprem = aws.returncode == 1, onprem.returncode == 0
        demo.stage("promotion", f"{AWS_SITE}: {'refused' if refused_aws else f'exit {aws.returncode}'} "
                   f"({_last_line(aws)}); {SITE}: {'allowed' if allowed_onprem else f'exit {onprem.returncode}'} "
                   f"({_last_line(onprem)})", refused_aws and allowed_onprem,
                   aws_exit=aws.returncode, onprem_exit=onprem.returncode, audit_log=str(audit_log))
        if not allowed_onprem:
            return _finish(demo)

        # 7 -------------------------------------------------------------------------------------------------------
        restricted = [f for v in lineage["feature_views"] if v["classification"] == "restricted"
                      for f in v["features"]]
        refused = LocalModelServer(work / "serve-aws", registry, ca, name=MODEL, site=AWS_SITE, residency=residency,
                                   restricted=tuple(restricted))
        refused_rc = refused.proc.wait(timeout=600)
        refused.stop()
        server = LocalModelServer(work / "serve", registry, ca, name=MODEL, site=SITE, residency=residency,
                                  restricted=tuple(restricted), batch_size=16, batch_time_ms=10)
        stack.callback(server.stop)
        server.wait_ready(timeout=600)
        demo.stage("serving", f"MLServer loads models:/{MODEL}@champion (version {version}) over TLS at "
                   f"{server.url} on {SITE}; under {AWS_SITE}'s settings the load gate refused to start "
                   f"(exit {refused_rc})", refused_rc == 1, url=server.url, aws_gate_exit=refused_rc)

        # 8 -------------------------------------------------------------------------------------------------------
        scored = _score(fs, server, ts, transactions)
        audit_lines = [line for line in server.output().splitlines() if '"finml.prediction"' in line]
        demo.stage("scoring", f"{scored['requests']} requests, {scored['rows']} transactions scored with online "
                   f"features from the feature server (fraud score mean {scored['mean_score']:.3f}); "
                   f"{len(audit_lines)} audit lines, restricted features hashed", scored["rows"] > 0 and
                   len(audit_lines) >= scored["rows"], **scored, audit_lines=len(audit_lines))
    return _finish(demo)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return text[-1][:220] if text else ""


def _feature_server_refusals(fs: Any, transactions: Any) -> dict[str, int | None]:
    """HTTP status of an online read without a token, and with a token of a namespace no permission names."""
    import urllib.error

    entities = {"merchant_id": [transactions["merchant_id"].iloc[0]]}
    out: dict[str, int | None] = {}
    for who, token in (("no_token", None), ("outsider", fs.token("default", "someone"))):
        try:
            fs.get_online_features(["merchant_risk:merchant_fraud_rate_28d"], entities, token=token)
            out[who] = None
        except urllib.error.HTTPError as err:
            out[who] = err.code
    return out


def _score(fs: Any, server: Any, ts: Any, transactions: Any, n: int = 8) -> dict[str, Any]:
    """Score the last `n` transactions: request-time columns from the transaction, every other model input from the
    feature server's online store (what serving has at scoring time)."""
    import urllib.request

    import pandas as pd

    frame = ts.frame
    features = [c for c in frame.columns if c not in ("card_id", "event_timestamp", "is_fraud")]
    view_features = {f: v["name"] for v in ts.lineage["feature_views"] for f in v["features"]
                     if v["name"] != "transactions"}
    from workloads.feature_repo.training_set import entity_rows

    rows = entity_rows(transactions.tail(n)).reset_index(drop=True)
    entities = {"card_id": rows["card_id"].tolist(), "merchant_id": rows["merchant_id"].tolist(),
                "customer_id": rows["customer_id"].tolist()}
    refs = [f"{view}:{feature}" for feature, view in view_features.items() if feature in features]
    # as the serving namespace's service account, as the model server reads them in the cluster
    online = fs.get_online_features(refs, entities, token=fs.token("finml-serving", "model-server"))
    names = online["metadata"]["feature_names"]
    columns = {}
    for name, result in zip(names, online["results"]):
        feature = name.split("__", 1)[1] if "__" in name else name
        columns[feature] = [(-1 if v is None else v) for v in result["values"]]
    inputs = []
    for feature in features:
        values = columns.get(feature, rows[feature].tolist() if feature in rows else [0] * len(rows))
        dtype = frame[feature].dtype
        if pd.api.types.is_integer_dtype(dtype):
            inputs.append({"name": feature, "shape": [len(rows)], "datatype": "INT64",
                           "data": [int(v) if v is not None else -1 for v in values]})
        else:
            inputs.append({"name": feature, "shape": [len(rows)], "datatype": "FP64",
                           "data": [float(v) if v is not None else 0.0 for v in values]})
    body = json.dumps({"id": "demo-1", "parameters": {"content_type": "pd"}, "inputs": inputs}).encode()
    req = urllib.request.Request(f"{server.url}/v2/models/{server.name}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=server.context(), timeout=120) as resp:
        reply = json.loads(resp.read())
    scores = [float(x) for x in reply["outputs"][0]["data"]]
    return {"requests": 1, "rows": len(scores), "mean_score": sum(scores) / max(len(scores), 1),
            "online_features": len(names), "model_version": reply.get("model_version")}


def _finish(demo: Demo) -> dict[str, Any]:
    ok = len(demo.stages) == 8 and all(s["ok"] for s in demo.stages)
    print("\nsummary", flush=True)
    for s in demo.stages:
        print(f"  {s['stage']}. {s['name']:14s} {'ok' if s['ok'] else 'FAILED'}")
    print(f"  {'every stage had its expected outcome' if ok else 'the demo did not complete'}; "
          f"data and model stayed on {SITE}; {demo.elapsed()} s; everything under {demo.work}", flush=True)
    return {"ok": ok, "stages": demo.stages, "seconds": demo.elapsed(), "dir": str(demo.work)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="finml-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=ROOT / "build" / "demo", help="working directory (build/demo)")
    p.add_argument("--rows", type=int, default=20_000, help="synthetic transactions (20000: enough fraud before the hold-out split)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (3)")
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    args = p.parse_args(argv)
    result = run(args.dir, rows=args.rows, epochs=args.epochs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
