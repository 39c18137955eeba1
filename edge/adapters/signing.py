"""Ed25519 alert signatures (``cryptography``): one key pair per unit.

The unit signs :func:`edge.core.messages.signing_bytes` of each alert; the control room calls
:func:`verify_alert` with the unit's public key. Private keys are PEM (PKCS#8, unencrypted,
mode 0600); public keys are PEM (SubjectPublicKeyInfo).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.core.errors import SignatureError
from edge.core.messages import signing_bytes

log = logging.getLogger(__name__)

ALG = "Ed25519"

__all__ = [
    "ALG", "Ed25519PrivateKey", "Ed25519PublicKey", "generate_key", "key_id", "load_private_key",
    "load_public_key", "save_private_key", "save_public_key", "sign_alert", "verify_alert",
    "verify_evidence", "write_key_pair",
]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key (PEM, mode 0600) atomically; refuses to overwrite an existing file."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_new(path, pem, mode=0o600)


def save_public_key(key: Ed25519PublicKey, path: Path) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(path, pem, mode=0o644)


def write_key_pair(unit: str, out_dir: Path) -> tuple[Path, Path, str]:
    """Generate ``<unit>.key`` and ``<unit>.pub`` in ``out_dir``; returns (key, pub, key id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    key_path, pub_path = out_dir / f"{unit}.key", out_dir / f"{unit}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise SignatureError(f"{p} already exists; refusing to overwrite a unit key")
    save_private_key(key, key_path)
    save_public_key(key.public_key(), pub_path)
    return key_path, pub_path, key_id(key.public_key())


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise SignatureError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as e:
        raise SignatureError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(
            f"signing key not found: {path} (make one with 'phonewatch keys generate --unit ID')"
        ) from None
    except OSError as e:
        raise SignatureError(f"cannot read signing key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(source: Path | bytes | str) -> Ed25519PublicKey:
    """A public key from a PEM file path, PEM bytes, or base64 of the raw 32 bytes."""
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as e:
            raise SignatureError(f"cannot read public key {source}: {e.strerror}") from None
    else:
        data = source.encode("ascii") if isinstance(source, str) else source
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as e:
        raise SignatureError(f"not an Ed25519 public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def sign_alert(alert: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``alert`` with its ``signature`` block (any old one is replaced)."""
    body = {k: v for k, v in alert.items() if k != "signature"}
    sig = key.sign(signing_bytes(body))
    body["signature"] = {"alg": ALG, "key_id": key_id(key.public_key()),
                         "value": base64.b64encode(sig).decode("ascii")}
    return body


def verify_alert(alert: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True only when ``alert`` carries a valid Ed25519 signature by ``public_key`` over its
    canonical encoding. Never raises for a malformed alert: it is simply not verified."""
    sig = alert.get("signature")
    if not isinstance(sig, Mapping) or sig.get("alg") != ALG:
        return False
    value = sig.get("value")
    if not isinstance(value, str):
        return False
    try:
        raw = base64.b64decode(value, validate=True)
        public_key.verify(raw, signing_bytes(alert))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    except Exception as e:  # canonical encoding of a hostile payload
        log.debug("alert not verifiable: %s", e)
        return False
    return True


def verify_evidence(alert: Mapping[str, Any], jpeg: bytes) -> bool:
    """True when ``jpeg`` is the evidence frame the alert names: same size and SHA-256."""
    ev = alert.get("evidence")
    if not isinstance(ev, Mapping):
        return False
    return (ev.get("frame_bytes") == len(jpeg)
            and ev.get("frame_sha256") == hashlib.sha256(jpeg).hexdigest())
