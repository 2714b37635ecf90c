"""Classification-aware access, enforced by the running `feast serve` over HTTPS.

The local feature server runs Feast's `oidc` authentication against the loopback OIDC issuer (finml/local/oidc.py):
Feast fetches the discovery document and signing keys over verified TLS, checks each bearer token's signature,
expiry, issuer and audience, and then enforces the permissions stored in the SQL registry
(workloads/feature_repo/definitions.py). Every request here goes through that real server; nothing is mocked.

The shared store's readers (tests/conftest.py FEATURE_STORE_READERS): restricted views only for finml-training;
public/internal/confidential for finml-training and finml-serving; nobody else.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import jwt
import pytest

from finml.local.oidc import new_signing_key, public_jwk, service_account_groups, sign_token

pytestmark = pytest.mark.slow

RESTRICTED = ["customer_profile:customer_age", "customer_profile:customer_credit_limit"]
INTERNAL = ["merchant_risk:merchant_fraud_rate_28d"]
CONFIDENTIAL = ["card_transactions_24h:card_txn_count_24h"]


def _entities(fs) -> dict[str, list]:
    row = fs.transactions.iloc[0]
    return {"card_id": [row.card_id], "customer_id": [row.customer_id], "merchant_id": [row.merchant_id]}


def _post(fs, path: str, body: dict, token: str | None, *, raw_auth: str | None = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if raw_auth is not None:
        headers["Authorization"] = raw_auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{fs.server_url}{path}", data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, context=fs.ssl_context(), timeout=30) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, text.decode(errors="replace")


def _read(fs, features: list[str] | None, token: str | None, *, feature_service: str | None = None, **kw):
    body: dict = {"entities": _entities(fs), "full_feature_names": True}
    if feature_service:
        body["feature_service"] = feature_service
    else:
        body["features"] = features
    return _post(fs, "/get-online-features", body, token, **kw)


def _refused_by_permission(status: int, body, permission: str) -> None:
    assert status == 403, (status, body)
    detail = json.loads(body) if isinstance(body, str) else body
    assert detail["class"] == "FeastPermissionError", detail
    assert permission in detail["message"], detail


def _unauthenticated(status: int, body) -> None:
    assert status == 401, (status, body)


@pytest.fixture(scope="module")
def tokens(feature_store):
    return {"training": feature_store.token("finml-training", "trainer"),
            "serving": feature_store.token("finml-serving", "model-server"),
            "outsider": feature_store.token("default", "someone"),
            "admin": feature_store.token("finml-data", "materializer", roles=("finml-feature-admin",))}


# ---- classification decides, on the server -----------------------------------------------------------------------

def test_restricted_view_is_refused_to_a_principal_that_is_not_allowed(feature_store, tokens):
    assert feature_store.store.get_feature_view("customer_profile").tags["finml.classification"] == "restricted"
    for who in ("serving", "outsider"):
        status, body = _read(feature_store, RESTRICTED, tokens[who])
        _refused_by_permission(status, body, "read-restricted-features")


def test_restricted_view_is_allowed_to_a_principal_that_is(feature_store, tokens):
    status, body = _read(feature_store, RESTRICTED, tokens["training"])
    assert status == 200, body
    profile = feature_store.store.get_online_features(features=RESTRICTED,
                                                      entity_rows=[{"customer_id": _entities(feature_store)
                                                                    ["customer_id"][0]}]).to_dict()
    served = dict(zip(body["metadata"]["feature_names"], body["results"]))
    assert served["customer_profile__customer_age"]["statuses"] == ["PRESENT"]
    assert served["customer_profile__customer_age"]["values"] == profile["customer_age"]


def test_lower_classifications_follow_their_own_reader_lists(feature_store, tokens):
    for who in ("training", "serving"):
        status, body = _read(feature_store, INTERNAL + CONFIDENTIAL, tokens[who])
        assert status == 200, (who, body)
        assert all(r["statuses"] == ["PRESENT"] for r in body["results"])
    status, body = _read(feature_store, INTERNAL, tokens["outsider"])
    _refused_by_permission(status, body, "read-internal-features")


def test_one_restricted_view_refuses_the_whole_request(feature_store, tokens):
    status, body = _read(feature_store, INTERNAL + RESTRICTED, tokens["serving"])
    _refused_by_permission(status, body, "read-restricted-features")


def test_feature_service_carries_its_highest_classification(feature_store, tokens):
    assert feature_store.store.get_feature_service("fraud_detection").tags["finml.classification"] == "restricted"
    status, body = _read(feature_store, None, tokens["training"], feature_service="fraud_detection")
    assert status == 200, body
    status, body = _read(feature_store, None, tokens["serving"], feature_service="fraud_detection")
    _refused_by_permission(status, body, "read-restricted-features")


def test_readers_cannot_write_and_the_admin_role_can(feature_store, tokens):
    merchant = "m-auth-test-0001"  # a key no other test reads
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    df = {"merchant_id": [merchant], "merchant_category_code": [5999], "merchant_txn_count_28d": [7],
          "merchant_fraud_rate_28d": [0.25], "merchant_amount_mean_28d": [12.5],
          "event_timestamp": [now], "created_timestamp": [now]}
    body = {"feature_view_name": "merchant_risk", "df": df}
    status, detail = _post(feature_store, "/write-to-online-store", body, tokens["training"])
    assert status == 403, (status, detail)
    status, detail = _post(feature_store, "/write-to-online-store", body, tokens["admin"])
    assert status == 200, (status, detail)
    status, got = _post(feature_store, "/get-online-features",
                        {"entities": {"merchant_id": [merchant]}, "features": INTERNAL, "full_feature_names": True},
                        tokens["serving"])
    assert status == 200, got
    served = dict(zip(got["metadata"]["feature_names"], got["results"]))
    assert served["merchant_risk__merchant_fraud_rate_28d"]["values"] == [0.25], got


# ---- authentication: no token, a malformed or forged one ----------------------------------------------------------

def test_request_without_a_token_is_refused(feature_store):
    _unauthenticated(*_read(feature_store, INTERNAL, None))
    _unauthenticated(*_read(feature_store, INTERNAL, None, raw_auth="Basic dXNlcjpwYXNz"))
    _unauthenticated(*_read(feature_store, INTERNAL, None, raw_auth="Bearer not-a-jwt"))


def test_token_signed_by_another_key_is_refused(feature_store):
    issuer = feature_store.issuer
    other = new_signing_key()
    groups = service_account_groups("finml-training")
    # a key the issuer never published, under its own key id ...
    _unauthenticated(*_read(feature_store, INTERNAL, sign_token(other, issuer=issuer.url, subject="x",
                                                                groups=groups)))
    # ... and under the issuer's key id: the signature check itself refuses it
    forged = sign_token(other, issuer=issuer.url, subject="x", groups=groups, kid=issuer.jwk["kid"])
    assert jwt.get_unverified_header(forged)["kid"] == issuer.jwk["kid"] != public_jwk(other)["kid"]
    _unauthenticated(*_read(feature_store, INTERNAL, forged))


def test_unsigned_token_is_refused(feature_store):
    claims = jwt.decode(feature_store.token("finml-training", "trainer"), options={"verify_signature": False})
    _unauthenticated(*_read(feature_store, INTERNAL, jwt.encode(claims, key=None, algorithm="none")))


def test_expired_wrong_audience_and_wrong_issuer_tokens_are_refused(feature_store):
    issuer = feature_store.issuer
    key = issuer._key  # the real signing key: only the claims are wrong
    groups = service_account_groups("finml-training")
    expired = sign_token(key, issuer=issuer.url, subject="x", groups=groups, ttl_s=-120, kid=issuer.jwk["kid"])
    other_aud = sign_token(key, issuer=issuer.url, subject="x", groups=groups, audience="mlflow",
                           kid=issuer.jwk["kid"])
    other_iss = sign_token(key, issuer="https://127.0.0.1:1", subject="x", groups=groups, kid=issuer.jwk["kid"])
    for token in (expired, other_aud, other_iss):
        _unauthenticated(*_read(feature_store, INTERNAL, token))
    # the same claims with a valid lifetime, audience and issuer are accepted: the refusals above are the claims'
    status, _ = _read(feature_store, INTERNAL, sign_token(key, issuer=issuer.url, subject="x", groups=groups,
                                                          kid=issuer.jwk["kid"]))
    assert status == 200


def test_forged_kubernetes_token_is_refused(feature_store):
    """Feast routes a token with a `kubernetes.io` claim to a TokenReview instead of the issuer's keys; off-cluster
    there is no API server, so such a token — whatever it claims — must be refused, not trusted."""
    forged = sign_token(new_signing_key(), issuer="https://kubernetes.default.svc", subject=
                        "system:serviceaccount:finml-training:trainer", groups=service_account_groups("finml-training"),
                        extra={"kubernetes.io": {"namespace": "finml-training",
                                                 "serviceaccount": {"name": "trainer"}}})
    _unauthenticated(*_read(feature_store, RESTRICTED, forged))


def test_health_needs_no_token(feature_store):
    with urllib.request.urlopen(f"{feature_store.server_url}/health", context=feature_store.ssl_context(),
                                timeout=10) as resp:
        assert resp.status == 200


# ---- the deployed parser's users, against the same stored permissions ----------------------------------------------

def test_permissions_decide_the_same_for_users_as_the_kubernetes_parser_builds_them(feature_store):
    """On the cluster Feast's KubernetesTokenParser builds the user (no API server here to run it): user `ns:sa`,
    the TokenReview's groups and the namespace. The server then runs this same SecurityManager step on the permissions
    read back from the registry, so the decisions must match the OIDC ones above."""
    from feast.errors import FeastPermissionError
    from feast.permissions.action import AuthzedAction
    from feast.permissions.security_manager import SecurityManager
    from feast.permissions.user import User

    def k8s_user(ns: str, sa: str, *, groups: bool = True) -> User:
        return User(f"{ns}:{sa}", groups=service_account_groups(ns) if groups else [], namespaces=[ns])

    restricted = feature_store.store.get_feature_view("customer_profile")

    def decide(user: User) -> bool:
        manager = SecurityManager(project=feature_store.project, registry=feature_store.store.registry)
        manager.set_current_user(user)
        try:
            manager.assert_permissions([restricted], AuthzedAction.READ_ONLINE)
            return True
        except FeastPermissionError:
            return False

    assert decide(k8s_user("finml-training", "trainer"))
    assert decide(k8s_user("finml-training", "trainer", groups=False))  # namespace alone suffices
    assert not decide(k8s_user("finml-serving", "model-server"))
    assert not decide(k8s_user("default", "someone"))


# ---- a Feast behaviour the permissions are built around -----------------------------------------------------------

def test_why_permissions_use_name_patterns_not_required_tags(feature_store):
    """Feast 0.67 matches `required_tags` against a `required_tags` attribute that feature views do not have, so a
    tag-keyed permission matches every view: a permission meant for internal views would grant restricted ones.
    If Feast fixes this, this test fails and the permissions can move to required_tags."""
    from feast.permissions.permission import Permission
    from feast.permissions.policy import NamespaceBasedPolicy

    view = feature_store.store.get_feature_view("merchant_risk")
    internal_only = Permission(name="internal-by-tag", types=[type(view)],
                               required_tags={"finml.classification": "internal"},
                               policy=NamespaceBasedPolicy(namespaces=["finml-serving"]))
    assert internal_only.match_resource(feature_store.store.get_feature_view("customer_profile"))
