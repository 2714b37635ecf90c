"""The materialization job of a site (the CronJob's command): apply the site's feature views and permissions to the
registry, then materialize everything new since the last run into the online store.

    python -m workloads.feature_repo.job --repo /etc/feast --site-config /etc/feast/site.json

`site.json` (written by the Pulumi program): {"site", "allowed", "offline_uri", "readers", "feature_views"}.
Exit 0 ok, 2 bad site config, 3 the registry or a store could not be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

REQUIRED = ("site", "allowed", "offline_uri", "readers")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True, help="directory with feature_store.yaml")
    ap.add_argument("--site-config", type=Path, required=True, help="site.json of the site")
    args = ap.parse_args(argv)
    try:
        site = json.loads(args.site_config.read_text())
        missing = [k for k in REQUIRED if k not in site]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
    except (OSError, ValueError) as exc:
        print(f"materialize: {args.site_config}: {exc}", file=sys.stderr)
        return 2

    from feast import FeatureStore

    from workloads.feature_repo.definitions import feature_objects

    try:
        store = FeatureStore(repo_path=str(args.repo))
        store.apply(feature_objects(site=site["site"], offline_uri=site["offline_uri"], allowed=site["allowed"],
                                    readers=site["readers"]))
        store.materialize_incremental(end_date=dt.datetime.now(dt.timezone.utc))
    except Exception as exc:  # noqa: BLE001 - one clear line for the job log, exit 3
        print(f"materialize: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
