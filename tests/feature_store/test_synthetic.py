"""The synthetic generator: deterministic, realistic shape, fast at a million rows."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from workloads.feature_repo.synthetic import (
    CATEGORY_NAMES,
    SCENARIO_BURST,
    SCENARIO_CARD_TESTING,
    entity_tables,
    generate_transactions,
)


def test_same_arguments_give_identical_frames():
    a = generate_transactions(5_000, seed=7)
    b = generate_transactions(5_000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_transactions(5_000, seed=8))


def test_columns_types_and_period():
    tx = generate_transactions(20_000, seed=1, start="2026-03-01", days=10)
    assert list(tx.columns) == ["transaction_id", "card_id", "customer_id", "merchant_id", "merchant_category",
                                "amount", "card_present", "event_timestamp", "is_fraud", "fraud_scenario"]
    assert str(tx["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert tx["event_timestamp"].min() >= pd.Timestamp("2026-03-01", tz="UTC")
    assert tx["event_timestamp"].max() < pd.Timestamp("2026-03-11", tz="UTC")
    assert tx["event_timestamp"].is_monotonic_increasing
    assert tx["transaction_id"].is_unique
    assert not tx.duplicated(["card_id", "event_timestamp"]).any(), "timestamps must be unique per card"
    assert set(tx["merchant_category"]) <= set(CATEGORY_NAMES)
    assert (tx["amount"] > 0).all() and (tx["amount"].round(2) == tx["amount"]).all()


def test_entity_tables_cover_every_key():
    n = 20_000
    tx = generate_transactions(n, seed=3)
    ents = entity_tables(n, seed=3)
    assert set(tx["card_id"]) <= set(ents["cards"]["card_id"])
    assert set(tx["merchant_id"]) <= set(ents["merchants"]["merchant_id"])
    card_owner = dict(zip(ents["cards"]["card_id"], ents["cards"]["customer_id"]))
    assert (tx["card_id"].map(card_owner) == tx["customer_id"]).all()
    assert set(ents["cards"]["customer_id"]) <= set(ents["customers"]["customer_id"])
    for table in ents.values():
        assert (table["event_timestamp"] < tx["event_timestamp"].min()).all()


def test_class_imbalance_and_fraud_scenarios():
    tx = generate_transactions(200_000, seed=0)
    rate = tx["is_fraud"].mean()
    assert 0.003 < rate < 0.008, rate
    fraud = tx[tx["is_fraud"] == 1]
    assert set(fraud["fraud_scenario"]) == {SCENARIO_BURST, SCENARIO_CARD_TESTING}
    testing = fraud[fraud["fraud_scenario"] == SCENARIO_CARD_TESTING]
    # card testing: mostly tiny amounts, at card-not-present merchants, seconds apart on one card
    assert (testing["amount"] < 3).mean() > 0.7
    assert (fraud["card_present"] == 0).all()
    gaps = testing.groupby("card_id")["event_timestamp"].diff().dropna().dt.total_seconds()
    assert gaps.median() < 120
    # bursts spend more than genuine purchases and happen more at night
    genuine = tx[tx["is_fraud"] == 0]
    burst = fraud[fraud["fraud_scenario"] == SCENARIO_BURST]
    assert burst["amount"].median() > 2 * genuine["amount"].median()
    night = lambda f: f["event_timestamp"].dt.hour.isin([0, 1, 2, 3, 4]).mean()  # noqa: E731
    assert night(burst) > 2 * night(genuine)


def test_time_of_day_and_category_amounts_are_realistic():
    tx = generate_transactions(100_000, seed=2)
    genuine = tx[tx["is_fraud"] == 0]
    by_hour = genuine["event_timestamp"].dt.hour.value_counts()
    assert by_hour[19] > 5 * by_hour[3]
    medians = genuine.groupby("merchant_category")["amount"].median()
    assert medians["travel"] > 5 * medians["grocery"] > 5 * medians["digital_goods"] / 2


def test_degenerate_sizes():
    assert len(generate_transactions(0)) == 0
    assert len(generate_transactions(1)) == 1
    with pytest.raises(ValueError, match="n_rows"):
        generate_transactions(-1)
    with pytest.raises(ValueError, match="days"):
        generate_transactions(10, days=0)


def test_a_large_run_has_exactly_the_rows_asked_for_and_finite_amounts():
    # Speed is measured by scripts/bench_feature_store.py (generation + offline write for 1 million rows), not here.
    tx = generate_transactions(200_000, seed=0)
    assert len(tx) == 200_000
    assert np.isfinite(tx["amount"]).all()