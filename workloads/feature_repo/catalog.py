"""The feature catalogue of the reference card-fraud use case, as plain data (no Feast import).

The Pulumi program and the policy pack read this module to know which feature views a site would hold and at which
classification; `definitions.py` turns the same entries into Feast objects, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

CLASSIFICATION_TAG = "finml.classification"
SITE_TAG = "finml.site"
CLASSIFICATION_ORDER: tuple[str, ...] = ("public", "internal", "confidential", "restricted")

#: Feast project name of the reference repository.
PROJECT = "finml_fraud"


def service_account_group(namespace: str) -> str:
    """The Kubernetes group of every service account in `namespace` (what a TokenReview reports). Feast permissions
    grant readers by this group as well as by namespace, so the same permission decides whether the caller was
    authenticated by Kubernetes (namespaces) or by an OIDC token carrying the group in its `groups` claim."""
    return f"system:serviceaccounts:{namespace}"


def classification_rank(classification: str) -> int:
    try:
        return CLASSIFICATION_ORDER.index(classification)
    except ValueError:
        raise ValueError(f"unknown classification {classification!r}; allowed: "
                         f"{', '.join(CLASSIFICATION_ORDER)}") from None


def highest_classification(classifications) -> str:
    """Highest of `classifications`; an empty set is unknown and counts as the highest."""
    ranks = [classification_rank(c) for c in classifications]
    return CLASSIFICATION_ORDER[max(ranks)] if ranks else CLASSIFICATION_ORDER[-1]


@dataclass(frozen=True)
class EntitySpec:
    name: str
    join_key: str
    description: str


@dataclass(frozen=True)
class SourceSpec:
    name: str
    file: str
    """Parquet file name inside the site's offline store."""
    classification: str
    description: str


@dataclass(frozen=True)
class FeatureViewSpec:
    name: str
    entity: str
    source: str
    classification: str
    ttl: dt.timedelta
    """How long a feature row stays valid in a point-in-time join (0: forever)."""
    features: tuple[tuple[str, str], ...]
    """(column, dtype) with dtype one of int64, float64."""
    description: str

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self.features]


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec("card", "card_id", "A payment card."),
    EntitySpec("merchant", "merchant_id", "A card-accepting merchant."),
    EntitySpec("customer", "customer_id", "The customer holding one or more cards."),
)

SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("card_transaction_stats", "card_transaction_stats.parquet", "confidential",
               "Per-card rolling transaction aggregates, one row per transaction (state after it)."),
    SourceSpec("card_profile", "card_profile.parquet", "confidential", "Card attributes."),
    SourceSpec("merchant_risk", "merchant_risk.parquet", "internal",
               "Daily merchant risk snapshots from labelled transactions before the snapshot day."),
    SourceSpec("customer_profile", "customer_profile.parquet", "restricted",
               "Customer demographics and credit limit (personal data)."),
)

WINDOWS: tuple[tuple[str, dt.timedelta], ...] = (
    ("1h", dt.timedelta(hours=1)), ("24h", dt.timedelta(hours=24)), ("7d", dt.timedelta(days=7)))
#: Amounts below this count as card-testing probes.
SMALL_AMOUNT = 3.0


def _window_features(window: str) -> tuple[tuple[str, str], ...]:
    cols = [(f"card_txn_count_{window}", "int64"), (f"card_amount_sum_{window}", "float64"),
            (f"card_amount_max_{window}", "float64")]
    if window == "1h":
        cols.append(("card_small_txn_count_1h", "int64"))
    return tuple(cols)


FEATURE_VIEWS: tuple[FeatureViewSpec, ...] = (
    *(FeatureViewSpec(f"card_transactions_{w}", "card", "card_transaction_stats", "confidential", length,
                      _window_features(w), f"Per-card transaction count and amounts over the last {w}.")
      for w, length in WINDOWS),
    FeatureViewSpec("card_profile", "card", "card_profile", "confidential", dt.timedelta(0),
                    (("card_type", "int64"),), "Card product (0 debit, 1 credit, 2 premium)."),
    FeatureViewSpec("merchant_risk", "merchant", "merchant_risk", "internal", dt.timedelta(days=2),
                    (("merchant_category_code", "int64"), ("merchant_txn_count_28d", "int64"),
                     ("merchant_fraud_rate_28d", "float64"), ("merchant_amount_mean_28d", "float64")),
                    "Merchant category and fraud rate over the 28 days before the snapshot day."),
    FeatureViewSpec("customer_profile", "customer", "customer_profile", "restricted", dt.timedelta(0),
                    (("customer_age", "int64"), ("customer_tenure_days", "int64"),
                     ("customer_income_band", "int64"), ("customer_credit_limit", "float64"),
                     ("customer_home_region", "int64")),
                    "Customer demographics and credit limit."),
)

FEATURE_VIEWS_BY_NAME: dict[str, FeatureViewSpec] = {fv.name: fv for fv in FEATURE_VIEWS}
SOURCES_BY_NAME: dict[str, SourceSpec] = {s.name: s for s in SOURCES}

#: Request-time columns of the transaction being scored, part of every training set.
REQUEST_FEATURES: tuple[str, ...] = ("amount", "card_present", "tx_hour", "tx_merchant_category_code")


def feature_views_up_to(classification: str) -> tuple[FeatureViewSpec, ...]:
    """The feature views a site allowed to hold `classification` (and below) may deploy."""
    limit = classification_rank(classification)
    return tuple(fv for fv in FEATURE_VIEWS if classification_rank(fv.classification) <= limit)
