"""The committed `secure:` values are real Pulumi passphrase-provider ciphertexts, not plaintext or placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finml import stack_secrets

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PASSPHRASE = "finml-example-passphrase"  # documented in the README; examples only


@pytest.mark.parametrize("stack, prefix, context", [("onprem-dc1", "fraDc1Rnd", "fra-dc1-rnd"),
                                                    ("hybrid-prod", "fraDc1", "fra-dc1")])
def test_example_secrets_decrypt_with_the_documented_passphrase(stack, prefix, context):
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    key = stack_secrets.key_from_encryption_salt(EXAMPLE_PASSPHRASE, doc["encryptionsalt"])
    kubeconfig = yaml.safe_load(stack_secrets.decrypt(key, doc["config"][f"finml:{prefix}Kubeconfig"]["secure"]))
    assert kubeconfig["kind"] == "Config" and kubeconfig["current-context"] == context
    node_secrets = yaml.safe_load(stack_secrets.decrypt(key, doc["config"][f"finml:{prefix}NodeSecrets"]["secure"]))
    assert len(node_secrets["disk_encryption_key"]) >= 32
    assert set(node_secrets) == {"disk_encryption_key", "kubernetes_node_join_token", "kubernetes_node_ca_cert_hashes"}


def test_wrong_passphrase_is_rejected():
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.onprem-dc1.yaml").read_text())
    with pytest.raises(stack_secrets.WrongPassphrase, match="passphrase does not match"):
        stack_secrets.key_from_encryption_salt("not-the-passphrase", doc["encryptionsalt"])


def test_round_trip_and_tamper_detection():
    key = stack_secrets.derive_key("p", b"12345678")
    sealed = stack_secrets.encrypt(key, "hello")
    assert sealed.startswith("v1:") and "hello" not in sealed
    assert stack_secrets.decrypt(key, sealed) == "hello"
    version, nonce, body = sealed.split(":")
    with pytest.raises(stack_secrets.SecretError, match="does not authenticate"):
        stack_secrets.decrypt(key, f"{version}:{nonce}:{body[:-4]}AAA=")
    with pytest.raises(stack_secrets.SecretError, match="does not authenticate"):
        stack_secrets.decrypt(stack_secrets.derive_key("other", b"12345678"), sealed)
