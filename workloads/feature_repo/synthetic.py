"""Deterministic synthetic card transactions for the reference card-fraud use case.

    customers, cards, merchants = generate_entities(n_rows, seed=0)
    tx = generate_transactions(1_000_000, seed=0)          # ~1 s, same frame for the same arguments

What it models (all vectorised numpy; nothing is read from outside):
- class imbalance: about 0.5 % of transactions are fraud, in two scenarios:
  * ``burst``: a compromised card is drained in a few high-value purchases minutes apart, mostly at night, at
    high-risk merchant categories (electronics, travel, jewellery, digital goods);
  * ``card_testing``: a run of tiny amounts seconds apart at online merchants, then one large purchase;
- amounts: log-normal per merchant category (groceries ~ 40, travel ~ 400), rounded to cents;
- merchants: categories with popularity and risk; a few merchants are much more popular than the rest;
- time of day: a daily cycle (lunch and evening peaks, quiet nights) for genuine spending;
- cards: each belongs to one customer; activity per card is skewed (gamma-distributed).

The entity tables are derived from ``n_rows`` and ``seed`` alone, so ``generate_transactions`` and
``generate_entities`` called with the same arguments always agree. Timestamps are UTC, microsecond precision, and
unique per card (the point-in-time join needs one row per card and instant).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

#: Default start of the generated period: fixed, so output never depends on the wall clock.
DEFAULT_START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
#: Share of transactions that are fraud (both scenarios together).
FRAUD_RATE = 0.005
#: Share of fraud events that are card testing (the rest are bursts).
CARD_TESTING_SHARE = 0.4

#: (category, popularity weight, log-normal mu, sigma, risk weight for fraud bursts, online?)
MERCHANT_CATEGORIES: tuple[tuple[str, float, float, float, float, bool], ...] = (
    ("grocery", 0.26, 3.6, 0.6, 0.2, False),
    ("restaurants", 0.16, 3.3, 0.5, 0.3, False),
    ("fuel", 0.10, 3.9, 0.3, 0.3, False),
    ("pharmacy", 0.06, 3.2, 0.6, 0.2, False),
    ("online_retail", 0.14, 4.0, 0.9, 1.5, True),
    ("electronics", 0.05, 5.3, 0.8, 3.0, False),
    ("travel", 0.04, 6.0, 0.7, 2.0, True),
    ("jewellery", 0.02, 5.8, 0.9, 2.5, False),
    ("digital_goods", 0.07, 2.8, 1.0, 3.0, True),
    ("utilities", 0.06, 4.4, 0.4, 0.1, True),
    ("gambling", 0.04, 4.2, 1.1, 1.0, True),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c[0] for c in MERCHANT_CATEGORIES)
#: Stable integer code per category (feature columns are numeric).
CATEGORY_CODE: dict[str, int] = {name: i for i, name in enumerate(CATEGORY_NAMES)}

#: Relative spending by hour of day (UTC), genuine transactions: quiet nights, lunch and evening peaks.
GENUINE_HOURLY = np.array([0.6, 0.35, 0.25, 0.2, 0.2, 0.35, 0.9, 2.0, 3.2, 3.6, 3.8, 4.5,
                           5.6, 5.2, 4.2, 4.0, 4.3, 5.0, 5.8, 6.0, 5.2, 3.8, 2.4, 1.3])
#: Fraud bursts favour the small hours, when the card holder is asleep.
FRAUD_HOURLY = np.array([5.0, 5.5, 6.0, 6.0, 5.0, 3.5, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5,
                         1.5, 1.5, 1.5, 1.5, 1.5, 1.8, 2.0, 2.2, 2.5, 3.0, 3.8, 4.5])

SCENARIO_GENUINE = "genuine"
SCENARIO_BURST = "burst"
SCENARIO_CARD_TESTING = "card_testing"

_US_PER_S = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_S


def entity_counts(n_rows: int) -> tuple[int, int, int]:
    """(customers, cards, merchants) for a data set of `n_rows` transactions."""
    n_customers = max(20, n_rows // 150)
    n_cards = max(25, int(n_customers * 1.3))
    n_merchants = max(len(MERCHANT_CATEGORIES) * 2, n_rows // 400)
    return n_customers, n_cards, n_merchants


def _start_ts(start: dt.datetime | pd.Timestamp | str | None) -> pd.Timestamp:
    ts = pd.Timestamp(DEFAULT_START if start is None else start)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    if n == 0:
        return np.zeros(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def generate_entities(n_rows: int, *, seed: int = 0, start: dt.datetime | str | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Customers, cards and merchants for a data set of `n_rows` transactions (same seed → same tables).

    Each table has an ``event_timestamp`` (when the profile became known, before the transaction period) and a
    ``created_timestamp`` so Feast can join them point-in-time.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    rng = np.random.default_rng([seed, 1])
    t0 = _start_ts(start)
    n_customers, n_cards, n_merchants = entity_counts(n_rows)

    tenure_days = rng.integers(30, 365 * 25, n_customers)
    age = np.clip(rng.normal(44, 14, n_customers), 18, 95).astype(np.int64)
    income_band = rng.choice(np.arange(1, 6), n_customers, p=[0.15, 0.3, 0.3, 0.17, 0.08])
    credit_limit = np.round(np.exp(rng.normal(8.0 + 0.25 * income_band, 0.4)), -2)
    profile_known = t0 - pd.Timedelta(days=1)
    customers = pd.DataFrame({
        "customer_id": _ids("cu", n_customers),
        "customer_age": age,
        "customer_tenure_days": tenure_days.astype(np.int64),
        "customer_income_band": income_band.astype(np.int64),
        "customer_credit_limit": credit_limit.astype(np.float64),
        "customer_home_region": rng.integers(0, 16, n_customers).astype(np.int64),
        "event_timestamp": profile_known,
        "created_timestamp": profile_known,
    })

    # Every customer has a card; the rest go to random customers (some have two or three).
    owner = np.concatenate([np.arange(n_customers), rng.integers(0, n_customers, n_cards - n_customers)])
    cards = pd.DataFrame({
        "card_id": _ids("ca", n_cards),
        "customer_id": customers["customer_id"].to_numpy()[owner],
        "card_type": rng.choice(np.arange(3), n_cards, p=[0.6, 0.3, 0.1]).astype(np.int64),  # debit/credit/premium
        "activity": rng.gamma(1.5, 1.0, n_cards),
        "event_timestamp": profile_known,
        "created_timestamp": profile_known,
    })

    weights = np.array([c[1] for c in MERCHANT_CATEGORIES])
    # Every category is represented; the remaining merchants are drawn by category popularity.
    category = np.concatenate([np.arange(len(MERCHANT_CATEGORIES)),
                               rng.choice(len(MERCHANT_CATEGORIES), n_merchants - len(MERCHANT_CATEGORIES),
                                          p=weights / weights.sum())])
    merchants = pd.DataFrame({
        "merchant_id": _ids("me", n_merchants),
        "merchant_category": np.array(CATEGORY_NAMES, dtype=object)[category],
        "merchant_category_code": category.astype(np.int64),
        "popularity": rng.pareto(1.2, n_merchants) + 0.1,
        "event_timestamp": profile_known,
        "created_timestamp": profile_known,
    })
    return customers, cards, merchants


def _times_of_day(rng: np.random.Generator, n: int, hourly: np.ndarray) -> np.ndarray:
    """Microseconds into the day, following an hourly profile (uniform within the hour)."""
    hours = rng.choice(24, n, p=hourly / hourly.sum())
    return hours * 3600 * _US_PER_S + rng.integers(0, 3600 * _US_PER_S, n)


def _pick_merchant(rng: np.random.Generator, merchants: pd.DataFrame, n: int,
                   category_weight: np.ndarray) -> np.ndarray:
    weights = merchants["popularity"].to_numpy() * category_weight[merchants["merchant_category_code"].to_numpy()]
    return rng.choice(len(merchants), n, p=weights / weights.sum())


def generate_transactions(n_rows: int, *, seed: int = 0, start: dt.datetime | str | None = None,
                          days: int = 30) -> pd.DataFrame:
    """`n_rows` card transactions over `days` days from `start` (UTC; default 2026-01-01), sorted by time.

    Columns: transaction_id, card_id, customer_id, merchant_id, merchant_category, amount (float, 2 decimals),
    card_present (0/1), event_timestamp (UTC), is_fraud (0/1), fraud_scenario (genuine|burst|card_testing).
    Same arguments → identical frame.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    rng = np.random.default_rng([seed, 2])
    t0 = _start_ts(start)
    customers, cards, merchants = generate_entities(n_rows, seed=seed, start=start)
    n_cards = len(cards)
    period_us = days * _US_PER_DAY
    cat_mu = np.array([c[2] for c in MERCHANT_CATEGORIES])
    cat_sigma = np.array([c[3] for c in MERCHANT_CATEGORIES])
    cat_code = merchants["merchant_category_code"].to_numpy()
    online = np.array([c[5] for c in MERCHANT_CATEGORIES])

    # ---- fraud events: sizes first, so the genuine rows fill the rest exactly
    target_fraud = int(round(n_rows * FRAUD_RATE))
    event_sizes: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    if target_fraud >= 2:
        n_events = max(1, target_fraud // 6)
        kind = rng.random(n_events) < CARD_TESTING_SHARE  # True: card testing
        sizes = np.where(kind, rng.integers(6, 16, n_events), rng.integers(2, 7, n_events))
        keep = np.cumsum(sizes) <= max(target_fraud, int(sizes[0]))
        event_sizes.append(sizes[keep])
        kinds.append(kind[keep])
    sizes = np.concatenate(event_sizes) if event_sizes else np.zeros(0, np.int64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, bool)
    n_fraud = int(sizes.sum())
    n_genuine = n_rows - n_fraud

    # ---- genuine spending
    g_card = rng.choice(n_cards, n_genuine, p=(a := cards["activity"].to_numpy()) / a.sum())
    g_time = rng.integers(0, days, n_genuine) * _US_PER_DAY + _times_of_day(rng, n_genuine, GENUINE_HOURLY)
    g_merchant = _pick_merchant(rng, merchants, n_genuine, np.ones(len(MERCHANT_CATEGORIES)))
    g_cat = cat_code[g_merchant]
    g_amount = np.exp(rng.normal(cat_mu[g_cat], cat_sigma[g_cat]))
    g_present = (~online[g_cat]) & (rng.random(n_genuine) < 0.9)

    # ---- fraud rows: one victim card and start time per event, rows spaced by exponential gaps
    n_events = len(sizes)
    e_card = rng.integers(0, n_cards, n_events)
    e_start = (rng.integers(0, days, n_events) * _US_PER_DAY + _times_of_day(rng, n_events, FRAUD_HOURLY))
    e_start = np.minimum(e_start, period_us - 4 * 3600 * _US_PER_S)  # an event ends inside the period
    row_event = np.repeat(np.arange(n_events), sizes)
    row_testing = kind[row_event]
    first_of_event = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if n_events else sizes
    pos = np.arange(n_fraud) - np.repeat(first_of_event, sizes)
    # card testing: probes ~20 s apart; bursts: purchases ~8 min apart
    gap = np.where(row_testing, rng.exponential(20.0, n_fraud), rng.exponential(480.0, n_fraud)) * _US_PER_S
    gap[pos == 0] = 0
    offsets = np.cumsum(gap) - np.repeat(np.cumsum(gap)[first_of_event] if n_events else gap, sizes)
    f_time = e_start[row_event] + offsets.astype(np.int64)
    risk = np.array([c[4] for c in MERCHANT_CATEGORIES])
    testing_weight = np.where(online, 1.0, 0.0) + np.where(np.array(CATEGORY_NAMES) == "digital_goods", 3.0, 0.0)
    f_merchant = np.where(row_testing, _pick_merchant(rng, merchants, n_fraud, testing_weight),
                          _pick_merchant(rng, merchants, n_fraud, risk))
    f_cat = cat_code[f_merchant]
    last_of_event = pos == (sizes[row_event] - 1)
    f_amount = np.where(
        row_testing,
        np.where(last_of_event, np.exp(rng.normal(6.2, 0.5, n_fraud)), rng.uniform(0.5, 2.5, n_fraud)),
        np.exp(rng.normal(cat_mu[f_cat] + 1.0, cat_sigma[f_cat] * 0.8)))
    f_present = np.zeros(n_fraud, bool)  # stolen credentials are used card-not-present

    card = np.concatenate([g_card, e_card[row_event]])
    t_us = np.minimum(np.concatenate([g_time, f_time]), period_us - 1)
    merchant = np.concatenate([g_merchant, f_merchant])
    amount = np.round(np.maximum(np.concatenate([g_amount, f_amount]), 0.01), 2)
    present = np.concatenate([g_present, f_present]).astype(np.int64)
    fraud = np.concatenate([np.zeros(n_genuine, np.int64), np.ones(n_fraud, np.int64)])
    scenario = np.concatenate([np.full(n_genuine, SCENARIO_GENUINE, dtype=object),
                               np.where(row_testing, SCENARIO_CARD_TESTING, SCENARIO_BURST).astype(object)])

    # Sort by (time, card) and make timestamps unique per card: bump a clash by whole microseconds.
    order = np.lexsort((card, t_us))
    card, t_us, merchant, amount, present, fraud, scenario = (
        x[order] for x in (card, t_us, merchant, amount, present, fraud, scenario))
    by_card = np.lexsort((t_us, card))
    tc, cc = t_us[by_card], card[by_card]
    for _ in range(64):  # clashes are rare; each pass resolves one level of a pile-up
        clash = np.zeros(len(tc), bool)
        clash[1:] = (tc[1:] <= tc[:-1]) & (cc[1:] == cc[:-1])
        if not clash.any():
            break
        tc[clash] = tc[np.flatnonzero(clash) - 1] + 1
    t_us[by_card] = tc
    order = np.lexsort((card, t_us))
    card, t_us, merchant, amount, present, fraud, scenario = (
        x[order] for x in (card, t_us, merchant, amount, present, fraud, scenario))

    card_ids = cards["card_id"].to_numpy()
    tx = pd.DataFrame({
        "transaction_id": _ids("tx", n_rows),
        "card_id": card_ids[card],
        "customer_id": cards["customer_id"].to_numpy()[card],
        "merchant_id": merchants["merchant_id"].to_numpy()[merchant],
        "merchant_category": merchants["merchant_category"].to_numpy()[merchant],
        "amount": amount.astype(np.float64),
        "card_present": present,
        "event_timestamp": t0 + pd.to_timedelta(t_us, unit="us"),
        "is_fraud": fraud,
        "fraud_scenario": scenario,
    })
    tx["event_timestamp"] = tx["event_timestamp"].astype("datetime64[us, UTC]")
    return tx


def entity_tables(n_rows: int, *, seed: int = 0, start: dt.datetime | str | None = None
                  ) -> dict[str, pd.DataFrame]:
    """The entity tables by name (``customers``, ``cards``, ``merchants``), as Feast source tables: the helper
    columns used only for generation (activity, popularity) are dropped."""
    customers, cards, merchants = generate_entities(n_rows, seed=seed, start=start)
    return {"customers": customers,
            "cards": cards.drop(columns=["activity"]),
            "merchants": merchants.drop(columns=["popularity"])}
