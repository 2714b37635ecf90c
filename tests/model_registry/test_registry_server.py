"""The real server: basic-auth + TLS + PostgreSQL; lineage resolved through the real MLflow client."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from registry_helpers import as_user, log_model

from finml.model_registry.gate import residency_decision
from finml.model_registry.lineage import resolve_alias, resolve_lineage

pytestmark = pytest.mark.slow
HYBRID = {"confidential": ["onprem:*", "aws:eu-central-1"], "restricted": ["onprem:fra-dc1"]}


def test_lineage_of_a_registered_model_through_the_real_registry(registry):
    import mlflow

    version = log_model(registry, "lineage-demo", [("card-transactions", "confidential", "aws:eu-central-1"),
                                                   ("customer-kyc", "restricted", "onprem:fra-dc1")])
    with as_user(registry, registry.reader):
        client = mlflow.MlflowClient(registry.tracking_uri)
        lin = resolve_lineage(client, "lineage-demo", version)
    assert lin.classification == "restricted" and lin.offending_dataset.name == "customer-kyc"
    assert {d.name: d.classification for d in lin.datasets} == {"card-transactions": "confidential",
                                                                "customer-kyc": "restricted"}
    assert lin.logged_model_id and lin.source_run_id
    assert not residency_decision(lin, "aws:eu-central-1", HYBRID).allowed
    assert residency_decision(lin, "onprem:fra-dc1", HYBRID).allowed
    with as_user(registry, registry.writer):
        client = mlflow.MlflowClient(registry.tracking_uri)
        client.set_registered_model_alias("lineage-demo", "candidate", version)
        assert resolve_alias(client, "lineage-demo", "candidate") == version


def test_unauthenticated_and_wrong_password_are_refused(registry):
    ctx = ssl.create_default_context(cafile=str(registry.ca_bundle))
    url = f"{registry.tracking_uri}/api/2.0/mlflow/registered-models/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, context=ctx, timeout=10)
    assert err.value.code == 401
    import mlflow
    from mlflow.exceptions import MlflowException

    with as_user(registry, None):
        with pytest.raises(MlflowException):
            mlflow.MlflowClient(registry.tracking_uri).search_registered_models()
    bad = type(registry.reader)(registry.reader.username, "not-the-password")
    with as_user(registry, bad):
        with pytest.raises(MlflowException):
            mlflow.MlflowClient(registry.tracking_uri).search_registered_models()


def test_reader_cannot_change_what_training_registered(registry):
    """The serving user reads; it cannot move an alias or delete a version the training user registered.
    (MLflow lets any authenticated user create new experiments and models; it gets MANAGE on those only.)"""
    import mlflow
    from mlflow.exceptions import MlflowException

    version = log_model(registry, "reader-guard", [("card-transactions", "confidential", "aws:eu-central-1")])
    with as_user(registry, registry.reader):
        client = mlflow.MlflowClient(registry.tracking_uri)
        assert client.get_model_version("reader-guard", version).version == version
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            client.set_registered_model_alias("reader-guard", "champion", version)
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            client.delete_model_version("reader-guard", version)


def test_plain_http_and_untrusted_tls_are_refused(registry):
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{registry.plain_http_uri}/health", timeout=10).read()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{registry.tracking_uri}/health", context=ssl.create_default_context(), timeout=10)
