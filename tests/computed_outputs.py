"""What providers compute (random and tls values, an RDS instance's address), as the mock harnesses answer it in
update mode (in a preview these values are unknown, as the engine leaves them)."""

from __future__ import annotations

_COMPUTED = {"random:index/randomPassword:RandomPassword": ("result",),
             "tls:index/privateKey:PrivateKey": ("privateKeyPem",),
             "tls:index/selfSignedCert:SelfSignedCert": ("certPem",),
             "tls:index/certRequest:CertRequest": ("certRequestPem",),
             "tls:index/locallySignedCert:LocallySignedCert": ("certPem",),
             "aws:rds/instance:Instance": ("address", "endpoint")}


def computed_outputs(typ: str, name: str) -> dict[str, str]:
    """Stand-in values of the attributes provider `typ` computes for resource `name` (empty for other types)."""
    return {key: f"mock-{name}-{key}" for key in _COMPUTED.get(typ, ())}
