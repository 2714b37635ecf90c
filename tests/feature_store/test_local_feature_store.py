"""The feature store running for real on this machine: Feast (SQL registry in the private PostgreSQL, Parquet offline
store), Debian's redis-server with TLS and an ACL password, `feast serve` over HTTPS."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request

import pandas as pd
import pytest

from workloads.feature_repo.catalog import FEATURE_VIEWS_BY_NAME, PROJECT

pytestmark = pytest.mark.slow


def _latest(frame: pd.DataFrame, key: str, value: str) -> pd.Series:
    rows = frame[frame[key] == value].sort_values("event_timestamp")
    return rows.iloc[-1]


def test_repository_is_applied_to_the_sql_registry(feature_store, postgres):
    names = {fv.name for fv in feature_store.store.list_feature_views()}
    assert names == set(FEATURE_VIEWS_BY_NAME)
    for fv in feature_store.store.list_feature_views():
        assert fv.tags["finml.classification"] == FEATURE_VIEWS_BY_NAME[fv.name].classification
        assert fv.tags["finml.site"] == "onprem:fra-dc1"
    for source in feature_store.store.list_data_sources():
        assert source.tags["finml.classification"] in {"internal", "confidential", "restricted"}
    with postgres.admin_connect("feast_registry") as conn:
        rows = conn.execute("SELECT feature_view_name FROM feature_views WHERE project_id = %s",
                            (PROJECT,)).fetchall()
    assert {r[0] for r in rows} == names, "the registry lives in PostgreSQL, not a local file"


def test_online_features_over_https_match_the_latest_offline_rows(feature_store):
    from workloads.feature_repo.sources import card_transaction_stats

    tx = feature_store.transactions
    cards = list(tx["card_id"].drop_duplicates().iloc[:5])
    got = feature_store.get_online_features(
        ["card_transactions_24h:card_txn_count_24h", "card_transactions_24h:card_amount_sum_24h",
         "customer_profile:customer_age"],
        {"card_id": cards, "customer_id": list(tx.drop_duplicates("card_id")["customer_id"].iloc[:5])},
        token=feature_store.token("finml-training", "trainer"))
    names = got["metadata"]["feature_names"]
    values = {name: result["values"] for name, result in zip(names, got["results"])}
    assert all(s == "PRESENT" for r in got["results"] for s in r["statuses"])
    stats = card_transaction_stats(tx)
    for i, card in enumerate(cards):
        last = _latest(stats, "card_id", card)
        assert values["card_transactions_24h__card_txn_count_24h"][i] == last["card_txn_count_24h"]
        assert values["card_transactions_24h__card_amount_sum_24h"][i] == pytest.approx(last["card_amount_sum_24h"])


def test_feature_service_serves_every_view(feature_store):
    tx = feature_store.transactions
    row = tx.iloc[0]
    got = feature_store.get_online_features(None, {"card_id": [row.card_id], "customer_id": [row.customer_id],
                                                   "merchant_id": [row.merchant_id]},
                                            feature_service="fraud_detection",
                                            token=feature_store.token("finml-training", "trainer"))
    served = set(got["metadata"]["feature_names"])
    expected = {f"{fv.name}__{f}" for fv in FEATURE_VIEWS_BY_NAME.values() for f in fv.feature_names}
    assert expected <= served


def test_plain_http_is_refused(feature_store):
    port = int(feature_store.server_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/health")
        resp = conn.getresponse()
        # uvicorn's TLS socket never answers a plain request with a page
        pytest.fail(f"plain HTTP got an answer: {resp.status}")
    conn.close()


def test_untrusted_certificate_is_refused(feature_store):
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{feature_store.server_url}/health", context=ssl.create_default_context(),
                               timeout=10)


def test_wrong_redis_password_is_refused(feature_store, redis_server):
    import redis
    from feast import FeatureStore, RepoConfig

    with pytest.raises(redis.AuthenticationError):
        redis_server.client(password="not-the-password").ping()
    bad = redis_server.feast_connection_string().replace(redis_server.password, "not-the-password")
    cfg = feature_store._config_dict(feature_store.registry_url, bad)
    store = FeatureStore(config=RepoConfig(repo_path=feature_store.repo_dir, **cfg))
    with pytest.raises(redis.AuthenticationError):
        store.get_online_features(features=["card_profile:card_type"], entity_rows=[{"card_id": "ca000001"}])


def test_redis_has_no_plain_port_and_no_anonymous_user(redis_server):
    import redis

    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5).ping()
    anonymous = redis.Redis(host=redis_server.host, port=redis_server.port, ssl=True,
                            ssl_ca_certs=str(redis_server.ca.bundle), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis_server.client().config_get("dir")  # the feature store's user cannot reconfigure the server
