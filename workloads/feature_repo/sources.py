"""Offline-store source tables (Parquet) computed from raw transactions and the entity tables.

    paths = write_offline_store(directory, transactions, entity_tables(n_rows, seed=0))

Point-in-time semantics, which the training-set builder and its tests rely on:
- ``card_transaction_stats``: one row per transaction at its ``event_timestamp``; each window aggregate covers the
  card's transactions with time in ``(t - window, t]`` (the state right after that transaction). Nothing later than
  the row's own timestamp is ever counted.
- ``merchant_risk``: one snapshot per merchant and day at 00:00 UTC over the transactions of the 28 days *before*
  the snapshot day (a snapshot never sees its own day).
- ``card_profile`` / ``customer_profile``: the entity attributes, known from before the transaction period.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.feature_repo.catalog import SMALL_AMOUNT, SOURCES_BY_NAME, WINDOWS
from workloads.feature_repo.synthetic import CATEGORY_CODE

MERCHANT_WINDOW_DAYS = 28
_US = 1_000_000


def _utc_us(series: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(series).tz_convert("UTC").as_unit("us").asi8


def card_transaction_stats(transactions: pd.DataFrame) -> pd.DataFrame:
    """Rolling per-card aggregates over each window in `catalog.WINDOWS`, one row per transaction."""
    tx = transactions[["card_id", "event_timestamp", "amount"]].copy()
    tx["event_timestamp"] = tx["event_timestamp"].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    tx = tx.sort_values(["card_id", "event_timestamp"], kind="stable").reset_index(drop=True)
    card_code = pd.factorize(tx["card_id"])[0].astype(np.int64)
    t_us = _utc_us(tx["event_timestamp"])
    amount = tx["amount"].to_numpy(np.float64)
    small = (amount < SMALL_AMOUNT).astype(np.int64)
    # One sorted key per (card, time): a window start found by binary search can never reach another card.
    span = int(t_us.max() - t_us.min()) + 2 * int(max(w for _, w in WINDOWS).total_seconds() * _US) if len(tx) else 1
    key = card_code * span + (t_us - (t_us.min() if len(tx) else 0))
    amount_cum = np.concatenate([[0.0], np.cumsum(amount)])
    small_cum = np.concatenate([[0], np.cumsum(small)])
    idx = np.arange(len(tx))
    # The same key as a time index lets one pass of pandas' rolling max serve all cards.
    by_key = pd.Series(amount, index=pd.DatetimeIndex(key.astype("datetime64[us]")))
    out = {"card_id": tx["card_id"].to_numpy(), "event_timestamp": tx["event_timestamp"]}
    for name, length in WINDOWS:
        w = int(length.total_seconds() * _US)
        left = np.searchsorted(key, key - w, side="right")  # first row with time > t - w
        out[f"card_txn_count_{name}"] = (idx - left + 1).astype(np.int64)
        out[f"card_amount_sum_{name}"] = np.round(amount_cum[idx + 1] - amount_cum[left], 2)
        out[f"card_amount_max_{name}"] = by_key.rolling(pd.Timedelta(microseconds=w), closed="right").max().to_numpy()
        if name == "1h":
            out["card_small_txn_count_1h"] = (small_cum[idx + 1] - small_cum[left]).astype(np.int64)
    frame = pd.DataFrame(out)
    frame["created_timestamp"] = frame["event_timestamp"]
    return frame


def merchant_risk(transactions: pd.DataFrame, merchants: pd.DataFrame) -> pd.DataFrame:
    """Daily merchant snapshots at 00:00 UTC over the previous `MERCHANT_WINDOW_DAYS` days (snapshot day excluded)."""
    ts = transactions["event_timestamp"].dt.tz_convert("UTC")
    first_day = ts.min().floor("D") if len(ts) else pd.Timestamp("2026-01-01", tz="UTC")
    last_day = ts.max().floor("D") if len(ts) else first_day
    n_days = int((last_day - first_day) / pd.Timedelta(days=1)) + 2  # one snapshot the day after the last data
    m_index = pd.Index(merchants["merchant_id"])
    m = m_index.get_indexer(transactions["merchant_id"])
    if (m < 0).any():
        raise ValueError("transactions reference merchants missing from the merchant table")
    day = ((ts - first_day) // pd.Timedelta(days=1)).to_numpy(np.int64)
    n_m = len(m_index)
    flat = m * n_days + day
    counts = np.bincount(flat, minlength=n_m * n_days).reshape(n_m, n_days)
    frauds = np.bincount(flat, weights=transactions["is_fraud"].to_numpy(np.float64),
                         minlength=n_m * n_days).reshape(n_m, n_days)
    amounts = np.bincount(flat, weights=transactions["amount"].to_numpy(np.float64),
                          minlength=n_m * n_days).reshape(n_m, n_days)

    def window(a: np.ndarray) -> np.ndarray:
        # Snapshot k covers days k-28 .. k-1: cum[k] - cum[k-28] with cum[j] = sum of days < j.
        cum = np.concatenate([np.zeros((n_m, 1)), np.cumsum(a, axis=1)], axis=1)
        k = np.arange(n_days)
        return cum[:, k] - cum[:, np.maximum(k - MERCHANT_WINDOW_DAYS, 0)]

    c, f, s = window(counts), window(frauds), window(amounts)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(c > 0, f / np.maximum(c, 1), 0.0)
        mean = np.where(c > 0, s / np.maximum(c, 1), 0.0)
    snapshot = first_day + pd.to_timedelta(np.arange(n_days), unit="D")
    category = merchants["merchant_category"].map(CATEGORY_CODE).to_numpy(np.int64)
    frame = pd.DataFrame({
        "merchant_id": np.repeat(m_index.to_numpy(), n_days),
        "event_timestamp": np.tile(snapshot.to_numpy(), n_m),
        "merchant_category_code": np.repeat(category, n_days),
        "merchant_txn_count_28d": c.ravel().astype(np.int64),
        "merchant_fraud_rate_28d": np.round(rate.ravel(), 6),
        "merchant_amount_mean_28d": np.round(mean.ravel(), 2),
    })
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    frame["created_timestamp"] = frame["event_timestamp"]
    return frame


def source_tables(transactions: pd.DataFrame, entities: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every offline source of the catalogue, by source name."""
    cards = entities["cards"][["card_id", "card_type", "event_timestamp", "created_timestamp"]]
    customers = entities["customers"]
    return {
        "card_transaction_stats": card_transaction_stats(transactions),
        "card_profile": cards.reset_index(drop=True),
        "merchant_risk": merchant_risk(transactions, entities["merchants"]),
        "customer_profile": customers.reset_index(drop=True),
    }


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write without the pandas index, timestamps as UTC microseconds, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)
    tmp.replace(path)
    return path


def write_offline_store(directory: Path, transactions: pd.DataFrame, entities: dict[str, pd.DataFrame]
                        ) -> dict[str, Path]:
    """Write every source table (and the raw transactions, for labels) under `directory`; returns name → path."""
    directory = Path(directory)
    paths = {name: write_parquet(frame, directory / SOURCES_BY_NAME[name].file)
             for name, frame in source_tables(transactions, entities).items()}
    paths["transactions"] = write_parquet(transactions, directory / "transactions.parquet")
    return paths
