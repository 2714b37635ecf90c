"""Classification-aware access through Feast's own permission enforcement.

The feature server authenticates callers with Kubernetes service-account tokens (TokenReview against the cluster
API) or OIDC; neither exists on this machine, so these tests drive the step that follows authentication — the
SecurityManager / enforce_policy path the server calls for every read — with the permissions as stored in and read
back from the SQL registry, and users as the Kubernetes token parser builds them (user `ns:sa`, namespaces).
"""

from __future__ import annotations

import pytest
from feast.errors import FeastPermissionError
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import NamespaceBasedPolicy
from feast.permissions.security_manager import SecurityManager
from feast.permissions.user import User

pytestmark = pytest.mark.slow

TRAINING = User("finml-training:trainer", namespaces=["finml-training"])
SERVING = User("finml-serving:model-server", namespaces=["finml-serving"])
OUTSIDER = User("default:someone", namespaces=["default"])


def _manager(feature_store, user: User) -> SecurityManager:
    manager = SecurityManager(project=feature_store.project, registry=feature_store.store.registry)
    manager.set_current_user(user)
    return manager


def _view(feature_store, name):
    return feature_store.store.get_feature_view(name)


def test_restricted_view_is_refused_to_a_principal_that_is_not_allowed(feature_store):
    restricted = _view(feature_store, "customer_profile")
    assert restricted.tags["finml.classification"] == "restricted"
    for user in (SERVING, OUTSIDER):
        with pytest.raises(FeastPermissionError, match="read-restricted-features"):
            _manager(feature_store, user).assert_permissions([restricted], AuthzedAction.READ_ONLINE)


def test_restricted_view_is_allowed_to_a_principal_that_is(feature_store):
    restricted = _view(feature_store, "customer_profile")
    for action in (AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE):
        assert _manager(feature_store, TRAINING).assert_permissions([restricted], action) == [restricted]


def test_lower_classifications_follow_their_own_reader_lists(feature_store):
    internal = _view(feature_store, "merchant_risk")
    confidential = _view(feature_store, "card_transactions_1h")
    for user in (TRAINING, SERVING):
        assert _manager(feature_store, user).assert_permissions([internal, confidential],
                                                                AuthzedAction.READ_ONLINE)
    with pytest.raises(FeastPermissionError):
        _manager(feature_store, OUTSIDER).assert_permissions([internal], AuthzedAction.READ_ONLINE)


def test_feature_service_carries_its_highest_classification(feature_store):
    service = feature_store.store.get_feature_service("fraud_detection")
    assert service.tags["finml.classification"] == "restricted"
    assert _manager(feature_store, TRAINING).assert_permissions([service], AuthzedAction.READ_ONLINE)
    with pytest.raises(FeastPermissionError):
        _manager(feature_store, SERVING).assert_permissions([service], AuthzedAction.READ_ONLINE)


def test_readers_cannot_write_or_change_definitions(feature_store):
    view = _view(feature_store, "merchant_risk")
    for action in (AuthzedAction.WRITE_ONLINE, AuthzedAction.UPDATE, AuthzedAction.DELETE):
        with pytest.raises(FeastPermissionError):
            _manager(feature_store, TRAINING).assert_permissions([view], action)
    admin = User("finml-data:materializer", roles=["finml-feature-admin"])
    assert _manager(feature_store, admin).assert_permissions([view], AuthzedAction.WRITE_ONLINE)


def test_unauthenticated_caller_is_refused(feature_store):
    manager = SecurityManager(project=feature_store.project, registry=feature_store.store.registry)
    with pytest.raises(FeastPermissionError):
        manager.assert_permissions([_view(feature_store, "merchant_risk")], AuthzedAction.READ_ONLINE)


def test_why_permissions_use_name_patterns_not_required_tags(feature_store):
    """Feast 0.67 matches `required_tags` against a `required_tags` attribute that feature views do not have, so a
    tag-keyed permission matches every view: a permission meant for internal views would grant restricted ones.
    If Feast fixes this, this test fails and the permissions can move to required_tags."""
    internal_only = Permission(name="internal-by-tag", types=[type(_view(feature_store, "merchant_risk"))],
                               required_tags={"finml.classification": "internal"},
                               policy=NamespaceBasedPolicy(namespaces=["finml-serving"]))
    assert internal_only.match_resource(_view(feature_store, "customer_profile"))
