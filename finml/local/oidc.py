"""A minimal OpenID Connect issuer on loopback, over HTTPS: the local stand-in for the identity that the cluster's
API server vouches for (TokenReview), so that the local `feast serve` authenticates callers with Feast's real OIDC
verification and enforces the registry's permissions on every request.

    issuer = LocalOidcIssuer(Path("build/local/oidc"), ca).start()
    issuer.feast_auth_config()               # the `auth:` block of feature_store.yaml (type oidc)
    issuer.service_account_token("finml-training", "trainer")   # RS256 JWT, groups as Kubernetes reports them

It serves only what a verifier needs: `/.well-known/openid-configuration` and the signing key set (`/jwks`). Tokens
are minted in-process with the RSA key kept in `directory` (0600); there is no login or token endpoint (the
discovery document names `/authorize` and `/token` because Feast requires them to exist; both answer 400).

Claims follow the Kubernetes service-account identity: `sub` and `preferred_username` are
`system:serviceaccount:<namespace>:<name>`, `groups` carries `system:serviceaccounts`,
`system:serviceaccounts:<namespace>` and `system:authenticated` — exactly the groups a TokenReview reports for that
service account — so the same Feast permissions decide in both modes (workloads/feature_repo/definitions.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from finml.local.files import write_file
from finml.local.tls import LocalCA
from workloads.feature_repo.catalog import service_account_group

#: The `aud` of every token and what the feature server requires.
AUDIENCE = "finml-feature-server"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 24 * 3600


class OidcIssuerError(RuntimeError):
    """The issuer's key file is unusable; the message names the file."""


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey) -> dict:
    """The public half as a JWK, `kid` = its RFC 7638 thumbprint."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def service_account_groups(namespace: str) -> list[str]:
    """The groups Kubernetes puts a service account of `namespace` in (what a TokenReview reports)."""
    return ["system:serviceaccounts", service_account_group(namespace), "system:authenticated"]


def sign_token(key: rsa.RSAPrivateKey, *, issuer: str, subject: str, groups: Iterable[str] = (),
               roles: Iterable[str] = (), audience: str = AUDIENCE, ttl_s: int = DEFAULT_TTL_S,
               kid: str | None = None, extra: dict | None = None) -> str:
    """An RS256 JWT. Exposed separately so tests can sign with a key the issuer does not publish."""
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now, "exp": now + int(ttl_s),
              "preferred_username": subject, "groups": list(groups), "roles": list(roles), **(extra or {})}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid or public_jwk(key)["kid"]})


class LocalOidcIssuer:
    """Signing key in `directory` (created once, reused), HTTPS on a free loopback port with a `ca`-signed cert."""

    def __init__(self, directory: Path, ca: LocalCA, *, audience: str = AUDIENCE) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.audience = audience
        key_path = self.directory / "signing.key"
        if key_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise OidcIssuerError(f"{key_path}: not an unencrypted PEM private key ({exc}); "
                                      f"delete it to create a new one") from None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise OidcIssuerError(f"{key_path}: not an RSA private key; delete it to create a new one")
            self._key = key
        else:
            self._key = new_signing_key()
            write_file(key_path, self._key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        self.jwk = public_jwk(self._key)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    # ------------------------------------------------------------------------------------------- server

    def _documents(self) -> dict[str, bytes]:
        assert self.url is not None
        discovery = {
            "issuer": self.url, "jwks_uri": f"{self.url}/jwks",
            "authorization_endpoint": f"{self.url}/authorize", "token_endpoint": f"{self.url}/token",
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "preferred_username", "groups", "roles"],
        }
        return {"/.well-known/openid-configuration": json.dumps(discovery).encode(),
                "/jwks": json.dumps({"keys": [self.jwk]}).encode()}

    def start(self) -> "LocalOidcIssuer":
        if self._server is not None:
            return self
        cert, key = self.ca.issue("oidc-issuer", directory=self.directory / "tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "finml-oidc"
            sys_version = ""
            timeout = 10  # idle or half-open connections are dropped

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = issuer._documents().get(self.path.split("?", 1)[0])
                if body is None:
                    self._answer(404, {"error": "not_found"})
                    return
                self._answer(200, body)

            def do_POST(self) -> None:  # noqa: N802
                self._answer(400, {"error": "unsupported_grant_type",
                                   "error_description": "tokens are minted locally (finml features local up)"})

            def _answer(self, code: int, body: dict | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)  # a failed handshake is the client's problem

        server = Server(("127.0.0.1", 0), Handler)
        # the handshake happens in each request's thread, so a client that never sends one blocks nobody
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, name="finml-oidc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self.url = None

    def __enter__(self) -> "LocalOidcIssuer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- tokens

    def feast_auth_config(self) -> dict:
        """Feast's server-side OIDC settings: verified TLS to this issuer, `aud` and `iss` checked."""
        if self.url is None:
            raise RuntimeError("the OIDC issuer is not started")
        return {"type": "oidc", "auth_discovery_url": f"{self.url}/.well-known/openid-configuration",
                "verify_ssl": True, "ca_cert_path": str(self.ca.bundle), "audience": self.audience,
                "issuer": self.url, "jwks_cache_lifespan_seconds": 60, "jwks_request_timeout_seconds": 5}

    def token(self, subject: str, *, groups: Iterable[str] = (), roles: Iterable[str] = (),
              ttl_s: int = DEFAULT_TTL_S) -> str:
        if self.url is None:
            raise RuntimeError("the OIDC issuer is not started")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"token lifetime {ttl_s}s: allowed 1..{MAX_TTL_S}")
        return sign_token(self._key, issuer=self.url, subject=subject, groups=groups, roles=roles,
                          audience=self.audience, ttl_s=ttl_s, kid=self.jwk["kid"])

    def service_account_token(self, namespace: str, name: str, *, roles: Iterable[str] = (),
                              ttl_s: int = DEFAULT_TTL_S) -> str:
        """A token for service account `name` of `namespace`, with the groups Kubernetes gives it."""
        return self.token(f"system:serviceaccount:{namespace}:{name}", groups=service_account_groups(namespace),
                          roles=roles, ttl_s=ttl_s)
