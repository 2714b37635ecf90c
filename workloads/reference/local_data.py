"""Training sets for local runs, benchmarks and the GPU check, written in the feature store's contract format.

- `build_feature_store_training_set`: the real path — synthetic transactions into an offline store, Feast
  definitions applied, `build_training_set` (point-in-time join). Needs Feast; slow for large row counts.
- `build_direct_training_set`: the same generator's request-time columns only (amount, card presence, hour,
  merchant category), no Feast: for throughput measurements at sizes where the join would dominate. Its lineage
  names a single `transactions` view, classified as the feature store classifies raw transactions.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_SITE = "onprem:fra-dc1"


def build_feature_store_training_set(directory: Path, rows: int, *, seed: int = 0, site: str = DEFAULT_SITE,
                                     allowed: str = "restricted") -> Path:
    from feast import FeatureStore, RepoConfig
    from feast.repo_config import RegistryConfig

    from workloads.feature_repo.catalog import PROJECT
    from workloads.feature_repo.definitions import feature_objects
    from workloads.feature_repo.sources import write_offline_store
    from workloads.feature_repo.synthetic import entity_tables, generate_transactions
    from workloads.feature_repo.training_set import build_training_set

    directory = Path(directory)
    transactions = generate_transactions(rows, seed=seed)
    write_offline_store(directory / "offline", transactions, entity_tables(rows, seed=seed))
    config = RepoConfig(project=PROJECT, provider="local", repo_path=str(directory),
                        registry=RegistryConfig(path=str(directory / "registry.db")),
                        online_store={"type": "sqlite", "path": str(directory / "online.db")},
                        offline_store={"type": "file"}, entity_key_serialization_version=3)
    store = FeatureStore(config=config)
    store.apply(feature_objects(site=site, offline_uri=str(directory / "offline"), allowed=allowed))
    out = directory / "training-set"
    build_training_set(store, out, transactions=transactions, site=site)
    return out


def build_direct_training_set(directory: Path, rows: int, *, seed: int = 0, site: str = DEFAULT_SITE) -> Path:
    import pandas as pd

    from workloads.feature_repo.synthetic import CATEGORY_CODE, generate_transactions

    tx = generate_transactions(rows, seed=seed)
    times = pd.to_datetime(tx["event_timestamp"], utc=True)
    frame = pd.DataFrame({
        "card_id": tx["card_id"].astype(str), "event_timestamp": times, "is_fraud": tx["is_fraud"].astype("int64"),
        "amount": tx["amount"].astype("float64"), "card_present": tx["card_present"].astype("int64"),
        "tx_hour": times.dt.hour.astype("int64"),
        "tx_merchant_category_code": tx["merchant_category"].map(CATEGORY_CODE).astype("int64"),
    })
    out = Path(directory) / "training-set-direct"
    out.mkdir(parents=True, exist_ok=True)
    parquet = out / "training_set.parquet"
    frame.to_parquet(parquet, index=False)
    digest = hashlib.sha256(parquet.read_bytes()).hexdigest()
    lineage = {"format": "finml-training-set/1", "site": site,
               "feature_views": [{"name": "transactions", "classification": "confidential",
                                  "features": ["is_fraud", "amount", "card_present", "tx_hour",
                                               "tx_merchant_category_code"]}],
               "classification": "confidential", "rows": len(frame), "sha256": digest}
    tmp = out / ".training_set.lineage.json.tmp"
    tmp.write_text(json.dumps(lineage, indent=2) + "\n")
    os.replace(tmp, out / "training_set.lineage.json")
    return out
