#!/usr/bin/env python3
"""Benchmark the local feature store: materialization rows/s for N source rows, then online lookups through
`feast serve` over HTTPS on loopback (one keep-alive connection, sequential requests) for batches of 1, 100 and
1,000 card keys.

    /work/main/.venv/bin/python scripts/bench_feature_store.py [--rows 1000000] [--json build/bench-features.json]

Everything runs on this machine in a temporary directory: private CA, PostgreSQL (SQL registry), TLS-only Redis.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finml.local.feature_store import LocalFeatureStore  # noqa: E402
from finml.local.postgres import PrivatePostgres  # noqa: E402
from finml.local.redis import PrivateRedis  # noqa: E402
from finml.local.tls import LocalCA  # noqa: E402
from workloads.feature_repo.catalog import FEATURE_VIEWS_BY_NAME  # noqa: E402

CARD_FEATURES = [f"{fv.name}:{f}" for fv in FEATURE_VIEWS_BY_NAME.values() if fv.entity == "card"
                 for f in fv.feature_names]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_lookups(fs: LocalFeatureStore, cards: list[str], batch: int, requests: int) -> dict:
    host, port = fs.server_url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=fs.ssl_context(), timeout=60)
    # as the serving service account: every request pays Feast's token verification and permission check
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {fs.token('finml-serving', 'bench')}"}
    latencies = []
    for i in range(requests + 3):  # three warm-up requests
        start = (i * batch) % max(1, len(cards) - batch)
        body = json.dumps({"features": CARD_FEATURES, "entities": {"card_id": cards[start:start + batch]}})
        t0 = time.perf_counter()
        conn.request("POST", "/get-online-features", body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"feature server answered {resp.status}: {payload[:300]!r}")
        if i >= 3:
            latencies.append(elapsed)
    conn.close()
    total = sum(latencies)
    return {"batch": batch, "requests": requests, "p50_ms": round(_percentile(latencies, 0.50) * 1e3, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1e3, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1e3, 2),
            "requests_per_s": round(requests / total, 1), "keys_per_s": round(requests * batch / total, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic source transactions (1000000)")
    ap.add_argument("--requests", type=int, default=200, help="timed requests per batch size (200; 1000-key: /4)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    results: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="finml-bench-features-") as tmp:
        base = Path(tmp)
        ca = LocalCA(base / "ca")
        with PrivatePostgres(base / "pg", ca) as pg, PrivateRedis(base / "redis", ca, maxmemory_mb=2048) as redis, \
                LocalFeatureStore(base / "feast", ca, pg, redis) as fs:
            t0 = time.perf_counter()
            tx = fs.write_offline(args.rows)
            results["generate_and_offline_s"] = round(time.perf_counter() - t0, 2)
            fs.apply()
            source_rows = sum(
                len(__import__("pandas").read_parquet(p, columns=["event_timestamp"]))
                for p in (fs.offline_dir / f"{s}.parquet" for s in
                          ("card_transaction_stats", "card_profile", "merchant_risk", "customer_profile")))
            print(f"[bench] materializing {source_rows} source rows ({args.rows} transactions)", file=sys.stderr)
            t0 = time.perf_counter()
            fs.materialize()
            elapsed = time.perf_counter() - t0
            results["materialize"] = {"source_rows": source_rows, "transactions": args.rows,
                                      "seconds": round(elapsed, 2),
                                      "transactions_per_s": round(args.rows / elapsed, 1),
                                      "source_rows_per_s": round(source_rows / elapsed, 1),
                                      "online_keys": int(redis.client().dbsize())}
            print(f"[bench] materialize: {elapsed:.1f}s, {args.rows / elapsed:,.0f} transactions/s", file=sys.stderr)
            fs.serve()
            cards = list(tx["card_id"].drop_duplicates())
            results["lookups"] = []
            for batch, n in ((1, args.requests), (100, args.requests), (1000, max(10, args.requests // 4))):
                if batch > len(cards):
                    print(f"[bench] skipping batch {batch}: only {len(cards)} cards", file=sys.stderr)
                    continue
                r = bench_lookups(fs, cards, batch, n)
                results["lookups"].append(r)
                print(f"[bench] batch {batch:>5}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                      f"{r['requests_per_s']} req/s, {r['keys_per_s']} keys/s", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
