"""The loopback OIDC issuer on its own: HTTPS only, documents a verifier can use, tokens that verify against the
published key set, and a clear error for an unusable key file."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from finml.local.oidc import AUDIENCE, LocalOidcIssuer, OidcIssuerError
from finml.local.tls import LocalCA


@pytest.fixture
def issuer(tmp_path):
    with LocalOidcIssuer(tmp_path / "oidc", LocalCA(tmp_path / "ca")) as running:
        yield running


def _get(issuer, path):
    ctx = ssl.create_default_context(cafile=str(issuer.ca.bundle))
    with urllib.request.urlopen(f"{issuer.url}{path}", context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


def test_tokens_verify_against_the_published_keys(issuer):
    discovery = _get(issuer, "/.well-known/openid-configuration")
    assert discovery["issuer"] == issuer.url and discovery["jwks_uri"] == f"{issuer.url}/jwks"
    keys = jwt.PyJWKSet.from_dict(_get(issuer, "/jwks"))
    token = issuer.service_account_token("finml-training", "trainer")
    key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=issuer.url)
    assert claims["sub"] == claims["preferred_username"] == "system:serviceaccount:finml-training:trainer"
    assert "system:serviceaccounts:finml-training" in claims["groups"]
    assert (issuer.directory / "signing.key").stat().st_mode & 0o077 == 0


def test_plain_http_and_an_untrusted_ca_are_refused(issuer):
    host, port = issuer.url.removeprefix("https://").split(":")
    idle = socket.create_connection((host, int(port)))  # never says hello: must not block anyone else
    try:
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(issuer.url.replace("https://", "http://") + "/jwks", timeout=10).read()
        assert _get(issuer, "/jwks")["keys"][0]["kid"] == issuer.jwk["kid"]
    finally:
        idle.close()
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{issuer.url}/jwks", context=ssl.create_default_context(), timeout=10)


def test_the_key_survives_a_restart(tmp_path):
    ca = LocalCA(tmp_path / "ca")
    first = LocalOidcIssuer(tmp_path / "oidc", ca).jwk["kid"]
    assert LocalOidcIssuer(tmp_path / "oidc", ca).jwk["kid"] == first


@pytest.mark.parametrize("content, needle", [
    (b"not a key", "not an unencrypted PEM private key"),
    (ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
     "not an RSA private key"),
])
def test_an_unusable_key_file_is_a_clear_error(tmp_path, content, needle):
    (tmp_path / "oidc").mkdir()
    (tmp_path / "oidc" / "signing.key").write_bytes(content)
    with pytest.raises(OidcIssuerError, match=needle) as err:
        LocalOidcIssuer(tmp_path / "oidc", LocalCA(tmp_path / "ca"))
    assert "signing.key" in str(err.value) and "delete it" in str(err.value)


def test_token_lifetime_is_bounded(issuer):
    for ttl in (0, 25 * 3600):
        with pytest.raises(ValueError, match="allowed 1..86400"):
            issuer.token("x", ttl_s=ttl)
