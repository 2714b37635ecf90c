"""Pulumi passphrase-provider ciphertexts, so example stack files carry real `secure:` values (never plaintext).

Format (Pulumi's passphrase secrets manager): key = PBKDF2-HMAC-SHA256(passphrase, salt, 1,000,000 rounds, 32 bytes);
values are AES-256-GCM, written `v1:<base64 nonce>:<base64 ciphertext+tag>`; the stack's `encryptionsalt` is
`v1:<base64 salt>:` followed by the encryption of the word "pulumi", which lets the CLI check the passphrase.
The offline preview never decrypts: it only needs to know which keys are secret.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PBKDF2_ROUNDS = 1_000_000
SALT_BYTES = 8
NONCE_BYTES = 12
VERIFICATION_PLAINTEXT = "pulumi"


class SecretError(ValueError):
    """A ciphertext that cannot be opened: wrong key or passphrase, or altered."""


class WrongPassphrase(SecretError):
    """The passphrase does not open the stack's encryptionsalt."""


def derive_key(passphrase: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, PBKDF2_ROUNDS, dklen=32)


def encrypt(key: bytes, plaintext: str, nonce: bytes | None = None) -> str:
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"


def decrypt(key: bytes, ciphertext: str) -> str:
    """The plaintext; SecretError when the key is wrong or the ciphertext was altered (AES-GCM authenticates)."""
    parts = ciphertext.split(":")
    if len(parts) != 3 or parts[0] != "v1":
        raise SecretError(f"unsupported ciphertext format {parts[0]!r}; expected v1:<nonce>:<ciphertext>")
    _, nonce, sealed = parts
    try:
        return AESGCM(key).decrypt(base64.b64decode(nonce), base64.b64decode(sealed), None).decode()
    except InvalidTag:
        raise SecretError("ciphertext does not authenticate: wrong key, or the value was altered") from None


def new_encryption_salt(key_salt: bytes, key: bytes) -> str:
    return f"v1:{base64.b64encode(key_salt).decode()}:{encrypt(key, VERIFICATION_PLAINTEXT)}"


def key_from_encryption_salt(passphrase: str, encryption_salt: str) -> bytes:
    """The stack key, after checking the passphrase against the salt's verification value."""
    version, salt_b64, ciphertext = encryption_salt.split(":", 2)
    if version != "v1":
        raise ValueError(f"unsupported encryptionsalt version {version!r}")
    key = derive_key(passphrase, base64.b64decode(salt_b64))
    try:
        verified = decrypt(key, ciphertext) == VERIFICATION_PLAINTEXT
    except SecretError:
        verified = False
    if not verified:
        raise WrongPassphrase("passphrase does not match the stack's encryptionsalt")
    return key
