"""Point-in-time correct training sets with lineage, the contract between the feature store and training.

    ts = build_training_set(store, out_dir, transactions=tx, site="onprem:fra-dc1")
    ts.parquet, ts.lineage_path, ts.lineage["classification"]

Writes ``<out_dir>/training_set.parquet`` (``card_id``, ``event_timestamp`` UTC, ``is_fraud``, then numeric feature
columns) and ``<out_dir>/training_set.lineage.json``::

    {"format": "finml-training-set/1", "site": ..., "feature_views": [{"name", "classification", "features"}],
     "classification": <highest>, "rows": N, "sha256": <of the parquet file>}

Each labelled transaction is one row. Its features come from Feast's ``get_historical_features`` *as of one
microsecond before the transaction*: the card's history before it, the merchant snapshot of that day, the profiles
— never the transaction itself or anything after it (what the online store holds when the transaction is scored).
The transaction's own request-time columns (amount, card present, hour, merchant category) are added from the
transaction, and the labels' source is listed in the lineage as ``transactions`` with its classification.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workloads.feature_repo.catalog import (
    FEATURE_VIEWS_BY_NAME,
    REQUEST_FEATURES,
    highest_classification,
)
from workloads.feature_repo.sources import write_parquet
from workloads.feature_repo.synthetic import CATEGORY_CODE

FORMAT = "finml-training-set/1"
PARQUET_NAME = "training_set.parquet"
LINEAGE_NAME = "training_set.lineage.json"
#: Classification of the raw transactions that provide labels and request-time columns.
TRANSACTIONS_CLASSIFICATION = "confidential"
LABEL = "is_fraud"
#: Entity rows ask for features as of this long before the transaction.
AS_OF_OFFSET = pd.Timedelta(microseconds=1)
#: Views whose rows mean "activity in a window": no row in the window is a count of zero, not unknown.
_ZERO_WHEN_MISSING = ("card_transactions_", "merchant_risk")
#: Profile attributes that are missing are unknown: -1 (every synthetic entity has a profile).
UNKNOWN = -1


@dataclass(frozen=True)
class TrainingSet:
    frame: pd.DataFrame
    lineage: dict
    parquet: Path
    lineage_path: Path


def entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """The entity frame for Feast: keys, the as-of time, the label and the request-time columns."""
    ts = transactions["event_timestamp"].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    category = transactions["merchant_category"].map(CATEGORY_CODE)
    if category.isna().any():
        bad = transactions.loc[category.isna(), "merchant_category"].iloc[0]
        raise ValueError(f"unknown merchant_category {bad!r}; known: {', '.join(CATEGORY_CODE)}")
    return pd.DataFrame({
        "card_id": transactions["card_id"].to_numpy(),
        "merchant_id": transactions["merchant_id"].to_numpy(),
        "customer_id": transactions["customer_id"].to_numpy(),
        "event_timestamp": ts - AS_OF_OFFSET,
        LABEL: transactions[LABEL].astype(np.int64).to_numpy(),
        "amount": transactions["amount"].astype(np.float64).to_numpy(),
        "card_present": transactions["card_present"].astype(np.int64).to_numpy(),
        "tx_hour": ts.dt.hour.astype(np.int64).to_numpy(),
        "tx_merchant_category_code": category.astype(np.int64).to_numpy(),
        "_row": np.arange(len(transactions)),
    })


def _join_view(store, entity_df: pd.DataFrame, spec) -> pd.DataFrame:
    """One view's features by entity row. Feast 0.67's file (dask) offline store drops an entity row when every
    candidate feature row is outside the TTL or later than the row, instead of returning nulls; joining each view
    on its own and merging back on the row number keeps every entity row (its features then count as missing)."""
    join_key = {"card": "card_id", "merchant": "merchant_id", "customer": "customer_id"}[spec.entity]
    rows = entity_df[["_row", join_key, "event_timestamp"]]
    refs = [f"{spec.name}:{feature}" for feature in spec.feature_names]
    got = store.get_historical_features(entity_df=rows, features=refs, full_feature_names=False).to_df()
    if got["_row"].duplicated().any():
        raise RuntimeError(f"point-in-time join of {spec.name} returned several rows for one entity row")
    return got[["_row", *spec.feature_names]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_training_set(store, out_dir: Path, *, transactions: pd.DataFrame, site: str,
                       feature_views: Sequence[str] | None = None) -> TrainingSet:
    """Join features point-in-time onto `transactions` and write the training set and its lineage to `out_dir`.

    `store`: a `feast.FeatureStore` whose registry holds the views. `feature_views`: names to use (default: every
    catalogue view the store's registry holds — on a site without restricted data that excludes the restricted
    ones). A requested view the registry does not hold is an error, not a silent gap.
    """
    registered = {fv.name for fv in store.list_feature_views()}
    if feature_views is None:
        names = [name for name in FEATURE_VIEWS_BY_NAME if name in registered]
    else:
        names = list(dict.fromkeys(feature_views))
        unknown = [n for n in names if n not in FEATURE_VIEWS_BY_NAME]
        if unknown:
            raise ValueError(f"unknown feature view(s) {', '.join(unknown)}; known: {', '.join(FEATURE_VIEWS_BY_NAME)}")
        missing = [n for n in names if n not in registered]
        if missing:
            raise ValueError(f"feature view(s) {', '.join(missing)} not registered in project {store.project!r} "
                             f"(a site only registers the views its residency allows)")
    specs = [FEATURE_VIEWS_BY_NAME[n] for n in names]
    entity_df = entity_rows(transactions)
    joined = entity_df
    for spec in specs:
        joined = joined.merge(_join_view(store, entity_df, spec), on="_row", how="left", validate="one_to_one")
    out = pd.DataFrame({
        "card_id": joined["card_id"].astype(str),
        "event_timestamp": (pd.to_datetime(joined["event_timestamp"], utc=True) + AS_OF_OFFSET)
        .astype("datetime64[us, UTC]"),
        LABEL: joined[LABEL].astype(np.int64),
    })
    for col in REQUEST_FEATURES:
        out[col] = joined[col]
    for spec in specs:
        fill = 0 if spec.name.startswith(_ZERO_WHEN_MISSING) else UNKNOWN
        for col, dtype in spec.features:
            out[col] = joined[col].fillna(fill).astype(dtype)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = write_parquet(out, out_dir / PARQUET_NAME)
    views = [{"name": "transactions", "classification": TRANSACTIONS_CLASSIFICATION,
              "features": [LABEL, *REQUEST_FEATURES]}]
    views += [{"name": s.name, "classification": s.classification, "features": s.feature_names} for s in specs]
    lineage = {
        "format": FORMAT,
        "site": site,
        "feature_views": views,
        "classification": highest_classification(v["classification"] for v in views),
        "rows": int(len(out)),
        "sha256": _sha256(parquet),
    }
    lineage_path = out_dir / LINEAGE_NAME
    tmp = lineage_path.with_name(f".{lineage_path.name}.tmp")
    tmp.write_text(json.dumps(lineage, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, lineage_path)
    return TrainingSet(out, lineage, parquet, lineage_path)


def read_training_set(directory: Path) -> tuple[pd.DataFrame, dict]:
    """Read both files and verify the parquet against the lineage's checksum and row count."""
    directory = Path(directory)
    lineage = json.loads((directory / LINEAGE_NAME).read_text())
    if lineage.get("format") != FORMAT:
        raise ValueError(f"{directory / LINEAGE_NAME}: format {lineage.get('format')!r}, expected {FORMAT!r}")
    if _sha256(directory / PARQUET_NAME) != lineage["sha256"]:
        raise ValueError(f"{directory / PARQUET_NAME}: sha256 does not match {LINEAGE_NAME}")
    frame = pd.read_parquet(directory / PARQUET_NAME)
    if len(frame) != lineage["rows"]:
        raise ValueError(f"{directory / PARQUET_NAME}: {len(frame)} rows, lineage says {lineage['rows']}")
    return frame, lineage
