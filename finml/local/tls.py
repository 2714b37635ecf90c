"""A per-run internal CA for local servers, the local stand-in for the per-site CA that the stacks create with
pulumi-tls.

    ca = LocalCA(Path("build/local/ca"))         # creates ca.pem / ca.key once, reuses them afterwards
    cert, key = ca.issue("mlflow")               # server cert for 127.0.0.1 and localhost, signed by the CA
    ca.bundle                                    # path of the CA certificate clients trust

Private keys are written 0600, atomically; nothing is fetched from outside.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finml.local.files import write_file

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALIDITY = dt.timedelta(days=30)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: tuple[str, ...] | list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class LocalCA:
    """An ECDSA P-256 CA kept in `directory`; `issue()` signs server certificates for loopback names."""

    def __init__(self, directory: Path, name: str = "finml local CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bundle = self.directory / "ca.pem"
        self._key_path = self.directory / "ca.key"
        if self.bundle.exists() and self._key_path.exists():
            self._key = serialization.load_pem_private_key(self._key_path.read_bytes(), password=None)
            self._cert = x509.load_pem_x509_certificate(self.bundle.read_bytes())
            return
        now = dt.datetime.now(dt.timezone.utc)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "finml")])
        self._cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        write_file(self._key_path, _key_pem(self._key), 0o600)
        write_file(self.bundle, self._cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def issue(self, name: str, hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS,
              directory: Path | None = None) -> tuple[Path, Path]:
        """Write `<name>.pem` (leaf certificate) and `<name>.key` (0600) and return their paths.

        `name` is a file stem: letters, digits, '-' and '_' only.
        """
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"certificate name {name!r}: use letters, digits, '-' and '_' only")
        out = Path(directory) if directory else self.directory
        out.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hosts[0]))]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
        write_file(key_path, _key_pem(key), 0o600)
        write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert_path, key_path
