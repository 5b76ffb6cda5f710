"""
Key material: the token signing key and the secret key that encrypts robot and
repository tokens at rest.

Keys the configuration does not name are generated into the data directory on
first start (mode 0600) and reused afterwards, so a fresh install needs no
hand-made secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.logger import Logger

_log = Logger()

#: Generated token signing key, relative to the data directory.
DEFAULT_SIGNING_KEY = Path("keys/token-signing.pem")
#: Generated secret key, relative to the data directory.
DEFAULT_SECRET_KEY = Path("keys/secret.key")


class KeyFileError(Exception):
    """A key file is unreadable or malformed."""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """
    A private key for signing registry bearer tokens.

    @ivar algorithm: The JWT algorithm (C{ES256} or C{RS256}).
    @ivar kid: Key id placed in the token header (derived from the public key).
    """

    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    algorithm: str
    kid: str

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The verification key."""
        return self.private_key.public_key()


def load_signing_key(path: Path, generate: bool) -> SigningKey:
    """
    Load a PEM private key (EC P-256 or RSA), generating an EC one if allowed and missing.
    """
    if not path.exists() and generate:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        _log.info("generated token signing key {path}", path=str(path))
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyFileError(f"cannot load token signing key {path}: {e}") from None
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        if not isinstance(loaded.curve, ec.SECP256R1):
            raise KeyFileError(f"token signing key {path} must use the P-256 curve")
        algorithm = "ES256"
    elif isinstance(loaded, rsa.RSAPrivateKey):
        if loaded.key_size < 2048:
            raise KeyFileError(f"token signing key {path} must have at least 2048 bits")
        algorithm = "RS256"
    else:
        raise KeyFileError(f"token signing key {path} must be an EC P-256 or RSA key")
    der = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = base64.b32encode(hashlib.sha256(der).digest()[:15]).decode()
    return SigningKey(loaded, algorithm, kid)


class SecretBox:
    """
    Encrypts secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256) and derives
    keyed lookup hashes, from one secret key.
    """

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._lookup_key = hmac.new(key, b"quayd token lookup", hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a secret for storage."""
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """
        Decrypt a stored secret.

        @raise KeyFileError: If it was not encrypted with this key.
        """
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise KeyFileError("stored secret cannot be decrypted with the configured secret key") from None

    def lookup(self, token: str) -> str:
        """A keyed hash of C{token} for finding its row without storing it in clear."""
        return hmac.new(self._lookup_key, token.encode(), hashlib.sha256).hexdigest()


def load_secret_box(path: Path, generate: bool) -> SecretBox:
    """Load the secret key file (a Fernet key), generating it if allowed and missing."""
    if not path.exists() and generate:
        _write_private(path, Fernet.generate_key() + b"\n")
        _log.info("generated secret key {path}", path=str(path))
    try:
        return SecretBox(path.read_bytes().strip())
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot load secret key {path}: {e}") from None


def new_token() -> str:
    """A new random robot or repository token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def same_secret(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())
