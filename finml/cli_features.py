"""`finml features …`: the feature store in local mode.

    finml features local up [--dir build/local/features] [--rows 20000] [--seed 0] [--site onprem:local]
        start a private CA, PostgreSQL (Feast SQL registry), TLS-only Redis (online store), a loopback OIDC issuer
        and `feast serve` over HTTPS on loopback, authentication required; seed synthetic data, apply the
        repository, materialize; write bearer tokens for the platform's service accounts to DIR/tokens/ and the
        endpoints to DIR/local.json; run until Ctrl-C, then stop all.
    finml features training-set --out DIR [--rows 20000] [--seed 0] [--site onprem:local] [--allowed restricted]
        the same store, briefly: build a point-in-time training set with lineage into DIR, then stop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
from contextlib import ExitStack, redirect_stdout
from pathlib import Path

DEFAULT_DIR = Path("build/local/features")
EXIT_ENV = 3
CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
#: The service accounts `local up` writes tokens for (namespace → account), and their lifetime.
LOCAL_PRINCIPALS = {"finml-training": "trainer", "finml-serving": "model-server"}
LOCAL_TOKEN_TTL_S = 12 * 3600


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _site(text: str) -> str:
    kind, _, name = text.partition(":")
    if kind not in ("aws", "onprem") or not name:
        raise argparse.ArgumentTypeError(f"site {text!r}: use aws:<region> or onprem:<site-id>")
    return text


def register(sub) -> None:
    features = sub.add_parser("features", help="feature store (Feast) local mode and training sets")
    fsub = features.add_subparsers(dest="features_command", required=True)
    local = fsub.add_parser("local", help="run the feature store on this machine").add_subparsers(
        dest="local_command", required=True)
    p = local.add_parser("up", help="start registry, Redis and the HTTPS feature server; seed and materialize; "
                                    "run until Ctrl-C")
    _common(p)
    p.set_defaults(func=cmd_local_up)
    p = fsub.add_parser("training-set", help="build a point-in-time training set with lineage (local store)")
    _common(p)
    p.add_argument("--out", required=True, help="directory for training_set.parquet and training_set.lineage.json")
    p.add_argument("--allowed", choices=CLASSIFICATIONS, default="restricted",
                   help="highest classification the site may hold (views above it are not registered)")
    p.set_defaults(func=cmd_training_set)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"working directory ({DEFAULT_DIR})")
    p.add_argument("--rows", type=_positive, default=20_000, help="synthetic transactions (20000)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    p.add_argument("--site", type=_site, default="onprem:local", help="site tag of the views (onprem:local)")


def _start(stack: ExitStack, args: argparse.Namespace, *, allowed: str = "restricted"):
    from finml.local.feature_store import LocalFeatureStore
    from finml.local.postgres import PrivatePostgres
    from finml.local.redis import PrivateRedis
    from finml.local.tls import LocalCA

    base = args.dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    ca = LocalCA(base / "ca")
    print(f"[features] PostgreSQL (registry) and Redis (online store) under {base}", file=sys.stderr)
    pg = stack.enter_context(PrivatePostgres(base / "postgres", ca))
    redis = stack.enter_context(PrivateRedis(base / "redis", ca))
    fs = stack.enter_context(LocalFeatureStore(base / "feast", ca, pg, redis, site=args.site, allowed=allowed))
    print(f"[features] seeding {args.rows} synthetic transactions, apply, materialize", file=sys.stderr)
    with redirect_stdout(sys.stderr):  # Feast prints progress; stdout carries only our JSON
        tx = fs.seed(args.rows, seed=args.seed)  # readers: the cluster's default (DEFAULT_READERS)
    return fs, tx


def cmd_local_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with ExitStack() as stack:
            fs, _ = _start(stack, args)
            url = fs.serve()
            tokens = _write_tokens(fs, args.dir.resolve() / "tokens")
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=LOCAL_TOKEN_TTL_S)
            info = {"feature_server": url, "ca_bundle": str(fs.ca.bundle), "project": fs.project,
                    "redis": f"rediss://{fs.redis.host}:{fs.redis.port}", "registry_database": "feast_registry",
                    "repo": str(fs.repo_dir), "oidc_issuer": fs.issuer.url,
                    "tokens": {ns: str(path) for ns, path in tokens.items()},
                    "tokens_expire": expires.isoformat(timespec="seconds")}
            (args.dir.resolve() / "local.json").write_text(json.dumps(info, indent=2) + "\n")
            print(json.dumps(info, indent=2))
            example = tokens["finml-serving"]
            print(f"[features] authentication required: send `Authorization: Bearer <token>`, e.g.\n"
                  f"  curl --cacert {fs.ca.bundle} -H \"Authorization: Bearer $(cat {example})\" "
                  f"-H 'Content-Type: application/json' {url}/get-online-features "
                  f"-d '{{\"features\": [\"merchant_risk:merchant_fraud_rate_28d\"], "
                  f"\"entities\": {{\"merchant_id\": [\"me000000\"]}}}}'\n"
                  f"[features] tokens expire {info['tokens_expire']}; restart to get new ones", file=sys.stderr)
            print("[features] running; Ctrl-C stops everything", file=sys.stderr)
            stop.wait()
    except (OSError, RuntimeError) as exc:
        print(f"finml: features local up: {exc}", file=sys.stderr)
        return EXIT_ENV
    return 0


def _write_tokens(fs, directory: Path) -> dict[str, Path]:
    """One bearer token per platform service account, 0600, under `directory`."""
    from finml.local.files import write_file

    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for namespace, account in LOCAL_PRINCIPALS.items():
        path = directory / f"{namespace}.jwt"
        write_file(path, fs.token(namespace, account, ttl_s=LOCAL_TOKEN_TTL_S) + "\n")
        paths[namespace] = path
    return paths


def cmd_training_set(args: argparse.Namespace) -> int:
    from workloads.feature_repo.training_set import build_training_set

    try:
        with ExitStack() as stack:
            fs, tx = _start(stack, args, allowed=args.allowed)
            with redirect_stdout(sys.stderr):
                ts = build_training_set(fs.store, Path(args.out), transactions=tx, site=args.site)
    except (OSError, RuntimeError) as exc:
        print(f"finml: features training-set: {exc}", file=sys.stderr)
        return EXIT_ENV
    print(json.dumps({"parquet": str(ts.parquet), "lineage": str(ts.lineage_path),
                      "rows": ts.lineage["rows"], "classification": ts.lineage["classification"]}, indent=2))
    return 0
