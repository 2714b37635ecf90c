"""SiteCA: one internal certificate authority per site (pulumi-tls), shared by the site's servers.

The model registry (its MLflow server and, on-prem, its PostgreSQL server) and the feature store (feature server,
online store) take their server certificates from it, so one CA bundle verifies every internal TLS endpoint of a
site — in particular the feature store verifies the registry's database, where its Feast registry lives. The CA and
every issued certificate are computed by a local tls provider of this component (default providers are disabled
stack-wide; tls places nothing anywhere); private keys are Pulumi secrets.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_tls as tls

from components.naming import child_name

TYPE_TOKEN = "finml:workloads:SiteCA"
CA_VALIDITY_HOURS = 24 * 365 * 5
CERT_VALIDITY_HOURS = 24 * 365
SERVER_USES = ("digital_signature", "key_encipherment", "key_agreement", "server_auth")


class SiteCA(pulumi.ComponentResource):
    """The site's CA: `cert_pem` is the bundle clients verify against; `issue()` signs a server certificate."""

    provider: tls.Provider
    cert_pem: pulumi.Output[str]

    def __init__(self, name: str, site: str, opts: pulumi.ResourceOptions | None = None, *,
                 validity_hours: int = CA_VALIDITY_HOURS) -> None:
        super().__init__(TYPE_TOKEN, name, {"site": site}, opts)
        self._name = name
        self.site = site
        self.provider = tls.Provider(child_name(name, "tls"), opts=pulumi.ResourceOptions(parent=self))
        self._key = tls.PrivateKey(child_name(name, "key"), algorithm="ECDSA", ecdsa_curve="P256",
                                   opts=self._opts(self, additional_secret_outputs=["privateKeyPem"]))
        self._cert = tls.SelfSignedCert(
            child_name(name, "cert"), private_key_pem=self._key.private_key_pem, is_ca_certificate=True,
            max_path_length=0, set_subject_key_id=True, validity_period_hours=validity_hours,
            early_renewal_hours=24 * 90, allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"finml site CA {site}", organization="finml"),
            opts=self._opts(self))
        self.cert_pem = self._cert.cert_pem
        self.register_outputs({"site": site, "certPem": self.cert_pem})

    def _opts(self, parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, **extra)

    def issue(self, name: str, dns_names: Sequence[str], parent: pulumi.Resource, *,
              validity_hours: int = CERT_VALIDITY_HOURS) -> tuple[tls.PrivateKey, tls.LocallySignedCert]:
        """An ECDSA P-256 server key and certificate for `dns_names` (the first is the common name), as children
        of `parent` (the component that serves with them) computed by this CA's provider."""
        key = tls.PrivateKey(child_name(name, "key"), algorithm="ECDSA", ecdsa_curve="P256",
                             opts=self._opts(parent, additional_secret_outputs=["privateKeyPem"]))
        request = tls.CertRequest(child_name(name, "csr"), private_key_pem=key.private_key_pem,
                                  dns_names=list(dns_names),
                                  subject=tls.CertRequestSubjectArgs(common_name=dns_names[0], organization="finml"),
                                  opts=self._opts(parent))
        cert = tls.LocallySignedCert(child_name(name, "cert"), cert_request_pem=request.cert_request_pem,
                                     ca_private_key_pem=self._key.private_key_pem, ca_cert_pem=self._cert.cert_pem,
                                     validity_period_hours=validity_hours, early_renewal_hours=24 * 30,
                                     allowed_uses=list(SERVER_USES), opts=self._opts(parent))
        return key, cert
