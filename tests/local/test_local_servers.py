"""The local CA and the private PostgreSQL: TLS verified against the CA, passwords required, plain TCP refused."""

from __future__ import annotations

import ssl
import stat

import psycopg
import pytest
from cryptography import x509

from finml.local.tls import LocalCA

pytestmark = pytest.mark.slow


def test_ca_issues_loopback_certificates_with_private_keys(tmp_path):
    ca = LocalCA(tmp_path)
    cert, key = ca.issue("server")
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ctx = ssl.create_default_context(cafile=str(ca.bundle))  # the bundle is a usable trust anchor
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert LocalCA(tmp_path).bundle.read_bytes() == ca.bundle.read_bytes(), "a second LocalCA reuses the CA"
    with pytest.raises(ValueError, match="letters, digits"):
        ca.issue("../escape")


def test_postgres_requires_tls_and_password(postgres):
    url = postgres.create_database("probe", owner="probe_owner", password="probe-password-1")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        assert conn.execute("SELECT current_user").fetchone() == ("probe_owner",)
    base = dict(host=postgres.host, port=postgres.port, dbname="probe", user="probe_owner")
    with pytest.raises(psycopg.OperationalError, match="no encryption|rejects connection"):
        psycopg.connect(**base, password="probe-password-1", sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**base, password="wrong", sslmode="require")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**base, sslmode="require")  # no password at all
