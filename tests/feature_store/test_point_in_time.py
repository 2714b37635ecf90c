"""Point-in-time correctness of training sets built with Feast's get_historical_features.

Every feature value of a training row may only use source rows with event time strictly before the transaction
(features are taken as of one microsecond before it), including exactly at window and TTL boundaries.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workloads.feature_repo.catalog import WINDOWS
from workloads.feature_repo.synthetic import entity_tables, generate_transactions
from workloads.feature_repo.training_set import (
    FORMAT,
    LINEAGE_NAME,
    PARQUET_NAME,
    build_training_set,
    read_training_set,
)

T0 = pd.Timestamp("2026-01-10 00:00:00", tz="UTC")
US = pd.Timedelta(microseconds=1)
H = pd.Timedelta(hours=1)
SITE = "onprem:fra-dc1"


def _tx(rows, ents):
    """rows: (card_id, merchant_id, time, amount, is_fraud)."""
    owner = dict(zip(ents["cards"]["card_id"], ents["cards"]["customer_id"]))
    category = dict(zip(ents["merchants"]["merchant_id"], ents["merchants"]["merchant_category"]))
    frame = pd.DataFrame(rows, columns=["card_id", "merchant_id", "event_timestamp", "amount", "is_fraud"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    frame.insert(0, "transaction_id", [f"t{i}" for i in range(len(frame))])
    frame.insert(2, "customer_id", frame["card_id"].map(owner))
    frame.insert(4, "merchant_category", frame["merchant_id"].map(category))
    frame["card_present"] = 0
    frame["fraud_scenario"] = np.where(frame["is_fraud"] == 1, "burst", "genuine")
    return frame[["transaction_id", "card_id", "customer_id", "merchant_id", "merchant_category", "amount",
                  "card_present", "event_timestamp", "is_fraud", "fraud_scenario"]]


def reference_card_features(tx: pd.DataFrame) -> pd.DataFrame:
    """Brute force, independent of sources.py: the state after the card's last transaction strictly before each
    transaction, if that state is within the view's TTL (= window) of the as-of time; zeros otherwise."""
    out = []
    for _, row in tx.iterrows():
        t = row["event_timestamp"]
        prev = tx[(tx["card_id"] == row["card_id"]) & (tx["event_timestamp"] < t)]
        feats = {}
        for name, length in WINDOWS:
            w = pd.Timedelta(length)
            if prev.empty or (t - US) - prev["event_timestamp"].max() > w:
                inside = prev.iloc[0:0]
            else:
                last = prev["event_timestamp"].max()
                inside = prev[(prev["event_timestamp"] > last - w) & (prev["event_timestamp"] <= last)]
            feats[f"card_txn_count_{name}"] = len(inside)
            feats[f"card_amount_sum_{name}"] = round(inside["amount"].sum(), 2)
            feats[f"card_amount_max_{name}"] = inside["amount"].max() if len(inside) else 0.0
            if name == "1h":
                feats["card_small_txn_count_1h"] = int((inside["amount"] < 3).sum())
        feats["_max_source_time"] = prev["event_timestamp"].max() if len(prev) else pd.NaT
        out.append(feats)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    ents = entity_tables(100)
    a, b = "ca000000", "ca000001"
    grocery, jewellery = "me000000", "me000007"
    a3 = T0 + H
    a4 = T0 + 2.5 * H
    a5 = a4 + H + US            # as-of time is exactly one TTL (1 h) after a4: a4 still counts
    a6 = a5 + H + 2 * US        # as-of time one microsecond past the TTL of a5: the 1 h view has expired
    rows = [
        (a, grocery, T0, 10.0, 0),
        (a, grocery, T0 + 0.5 * H, 20.0, 0),
        (a, grocery, a3, 40.0, 0),              # exactly 1 h after the first: (t-1h, t] excludes it
        (a, grocery, a4, 80.0, 0),
        (a, grocery, a5, 1.0, 0),
        (a, grocery, a6, 2.0, 0),
        (a, jewellery, T0 + pd.Timedelta(days=8), 9_999.0, 1),   # far future, huge: must never leak backwards
        (a, grocery, T0 + pd.Timedelta(days=8) + US, 5.0, 0),   # one microsecond later it is visible
        (b, jewellery, T0 + pd.Timedelta(days=1, hours=10), 500.0, 1),   # fraud at the merchant on day 1, 10:00
        (b, jewellery, T0 + pd.Timedelta(days=1, hours=12), 50.0, 0),    # same day: snapshot of 00:00 excludes it
        (b, jewellery, T0 + pd.Timedelta(days=2, hours=1), 60.0, 0),     # next day: it counts
    ]
    tx = _tx(rows, ents)
    from tests.feature_store.conftest import offline_feature_store

    d = tmp_path_factory.mktemp("pit")
    store = offline_feature_store(d, tx, ents)
    ts = build_training_set(store, d / "out", transactions=tx, site=SITE)
    return tx, ts


def _row(ts, card, when):
    f = ts.frame
    got = f[(f["card_id"] == card) & (f["event_timestamp"] == when)]
    assert len(got) == 1, (card, when)
    return got.iloc[0]


def test_window_boundaries_by_hand(designed):
    tx, ts = designed
    a = "ca000000"
    first = _row(ts, a, T0)
    assert first["card_txn_count_7d"] == 0 and first["card_amount_sum_7d"] == 0  # nothing before the first
    # at a3 (T0+1h): state after T0+30m: both earlier transactions inside 1 h, a3 itself not
    r3 = _row(ts, a, T0 + H)
    assert (r3["card_txn_count_1h"], r3["card_amount_sum_1h"], r3["card_amount_max_1h"]) == (2, 30.0, 20.0)
    # at a4 (T0+2.5h): last state is after a3, 1.5 h old: the 1 h view expired, 24 h sees three, a4 not itself
    r4 = _row(ts, a, T0 + 2.5 * H)
    assert r4["card_txn_count_1h"] == 0
    assert (r4["card_txn_count_24h"], r4["card_amount_sum_24h"]) == (3, 70.0)
    # exactly at the TTL: state after a4 = (a4-1h, a4] = a4 alone (a3 is 1.5 h before it)
    r5 = _row(ts, a, T0 + 3.5 * H + US)
    assert (r5["card_txn_count_1h"], r5["card_amount_sum_1h"]) == (1, 80.0)
    assert (r5["card_txn_count_24h"], r5["card_amount_sum_24h"]) == (4, 150.0)
    # one microsecond past the TTL: expired
    r6 = _row(ts, a, T0 + 4.5 * H + 3 * US)
    assert r6["card_txn_count_1h"] == 0 and r6["card_small_txn_count_1h"] == 0
    assert r6["card_txn_count_24h"] == 5


def test_no_future_leakage(designed):
    tx, ts = designed
    f = ts.frame
    big = T0 + pd.Timedelta(days=8)
    before = f[f["event_timestamp"] <= big]
    assert (before["card_amount_max_7d"] < 9_999).all(), "a later transaction leaked into earlier features"
    assert (before["card_amount_max_24h"] < 9_999).all()
    after = _row(ts, "ca000000", big + US)
    assert after["card_amount_max_1h"] == 9_999.0 and after["card_txn_count_1h"] == 1


def test_merchant_snapshot_excludes_its_own_day(designed):
    tx, ts = designed
    b = "ca000001"
    same_day = _row(ts, b, T0 + pd.Timedelta(days=1, hours=12))
    assert same_day["merchant_fraud_rate_28d"] == 0.0 and same_day["merchant_txn_count_28d"] == 0
    next_day = _row(ts, b, T0 + pd.Timedelta(days=2, hours=1))
    assert next_day["merchant_txn_count_28d"] == 2 and next_day["merchant_fraud_rate_28d"] == 0.5


def test_every_row_matches_the_brute_force_reference(designed):
    tx, ts = designed
    _compare_with_reference(tx, ts)


def _compare_with_reference(tx, ts):
    expected = reference_card_features(tx)
    got = ts.frame.reset_index(drop=True)
    assert (got["event_timestamp"].to_numpy() == tx["event_timestamp"].to_numpy()).all()
    assert (got["card_id"].to_numpy() == tx["card_id"].to_numpy()).all()
    for col in expected.columns.drop("_max_source_time"):
        np.testing.assert_allclose(got[col].to_numpy(np.float64), expected[col].to_numpy(np.float64),
                                   err_msg=col)
    # the newest source row any feature used is strictly before its entity row
    used = expected["_max_source_time"].dropna()
    assert (used.to_numpy() < tx.loc[used.index, "event_timestamp"].to_numpy()).all()


def test_generated_data_matches_the_reference(tmp_path):
    from tests.feature_store.conftest import offline_feature_store

    n = 3_000
    tx = generate_transactions(n, seed=5, days=10)
    ents = entity_tables(n, seed=5)
    # a handful of cards keeps the brute force quick while covering bursts and quiet periods
    cards = tx["card_id"].value_counts().index[:6]
    tx = tx[tx["card_id"].isin(cards)].reset_index(drop=True)
    store = offline_feature_store(tmp_path, tx, ents)
    ts = build_training_set(store, tmp_path / "out", transactions=tx, site=SITE)
    _compare_with_reference(tx, ts)


def test_contract_files_and_lineage(designed):
    tx, ts = designed
    assert ts.parquet.name == PARQUET_NAME and ts.lineage_path.name == LINEAGE_NAME
    lineage = json.loads(ts.lineage_path.read_text())
    assert set(lineage) == {"format", "site", "feature_views", "classification", "rows", "sha256"}
    assert lineage["format"] == FORMAT and lineage["site"] == SITE and lineage["rows"] == len(tx)
    assert lineage["classification"] == "restricted"
    by_name = {v["name"]: v for v in lineage["feature_views"]}
    assert by_name["customer_profile"]["classification"] == "restricted"
    assert by_name["merchant_risk"]["classification"] == "internal"
    assert by_name["transactions"]["classification"] == "confidential"
    frame, read_lineage = read_training_set(ts.parquet.parent)
    assert read_lineage == lineage
    assert list(frame.columns[:3]) == ["card_id", "event_timestamp", "is_fraud"]
    assert str(frame["event_timestamp"].dtype).startswith("datetime64") and "UTC" in str(frame["event_timestamp"].dtype)
    assert all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns[2:])
    assert not frame.isna().any().any()


def test_tampered_parquet_is_refused(designed, tmp_path):
    _, ts = designed
    import shutil

    shutil.copy(ts.parquet, tmp_path / PARQUET_NAME)
    shutil.copy(ts.lineage_path, tmp_path / LINEAGE_NAME)
    with open(tmp_path / PARQUET_NAME, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        read_training_set(tmp_path)


def test_a_site_without_restricted_data_builds_without_restricted_views(tmp_path):
    from tests.feature_store.conftest import offline_feature_store

    n = 500
    tx, ents = generate_transactions(n, seed=1), entity_tables(n, seed=1)
    store = offline_feature_store(tmp_path, tx, ents, site="aws:eu-central-1", allowed="confidential")
    ts = build_training_set(store, tmp_path / "out", transactions=tx, site="aws:eu-central-1")
    assert ts.lineage["classification"] == "confidential"
    assert "customer_profile" not in {v["name"] for v in ts.lineage["feature_views"]}
    assert not any(c.startswith("customer_") for c in ts.frame.columns)
    with pytest.raises(ValueError, match="not registered"):
        build_training_set(store, tmp_path / "out2", transactions=tx, site="aws:eu-central-1",
                           feature_views=["customer_profile"])
