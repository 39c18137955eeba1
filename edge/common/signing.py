"""Ed25519 alert signatures (``cryptography``): one key pair per unit.

Shared by both sides: the unit signs :func:`edge.core.messages.signing_bytes` of each alert
(:func:`sign_alert`); the control room and ``phonewatch verify`` check it with
:func:`signature_problem` (a reason, or None) or :func:`verify_alert` (a bool over the same
rule). Private keys are PEM (PKCS#8, unencrypted,
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

from edge.core.errors import MessageError, SignatureError
from edge.core.messages import SIGNING_CONTEXT, canonical_json, signing_bytes

log = logging.getLogger(__name__)

ALG = "Ed25519"

__all__ = [
    "ALG",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "evidence_problem",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_name",
    "public_pem",
    "raw_public_bytes",
    "save_private_key",
    "save_public_key",
    "sign_alert",
    "signature_problem",
    "signing_key_name",
    "verify_alert",
    "verify_evidence",
    "write_key_pair",
]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key (the alert's key_id)."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key (PEM, mode 0600) atomically; refuses to overwrite an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(path, pem, mode=0o600)


def save_public_key(key: Ed25519PublicKey, path: Path) -> None:
    _write_new(path, public_pem(key), mode=0o644)


# One naming scheme for a unit's files, wherever they sit (secrets folder, /etc/phonewatch/keys):
#   <unit>.key, <unit>.crt            TLS client key and certificate (deploy/certs/make-certs.sh)
#   <unit>.sign.key, <unit>.sign.pub  Ed25519 alert-signing pair ('phonewatch keys generate')
# so both can share a folder.
def signing_key_name(unit: str) -> str:
    """File name of a unit's secret signing key: ``<unit>.sign.key``."""
    return f"{unit}.sign.key"


def public_key_name(unit: str) -> str:
    """File name of a unit's public signing key (the control room's copy): ``<unit>.sign.pub``."""
    return f"{unit}.sign.pub"


def write_key_pair(unit: str, out_dir: Path) -> tuple[Path, Path, str]:
    """Generate ``<unit>.sign.key`` and ``<unit>.sign.pub`` in ``out_dir``; returns (key, pub,
    key id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    key_path, pub_path = out_dir / signing_key_name(unit), out_dir / public_key_name(unit)
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
        data = source.encode("ascii", "replace") if isinstance(source, str) else source
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as e:
        raise SignatureError(f"not an Ed25519 public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def sign_alert(alert: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``alert`` with its ``signature`` block (any old one is replaced)."""
    body = {k: v for k, v in alert.items() if k != "signature"}
    sig = key.sign(signing_bytes(body))
    body["signature"] = {
        "alg": ALG,
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(sig).decode("ascii"),
    }
    return body


def signature_problem(
    alert: Mapping[str, Any],
    key: Ed25519PublicKey,
    *,
    payload: bytes | None = None,
    expected_key_id: str | None = None,
) -> str | None:
    """None when ``alert`` carries a valid signature by ``key``; otherwise what is wrong.

    The signature block must name ``key``'s key id, and its value must be the canonical
    base64 of the 64 signature bytes: a re-encoding (different unused low bits, padding or
    line breaks) is refused, so a replayed alert is byte for byte the same alert.

    ``payload``, the bytes ``alert`` was parsed from, saves re-encoding the alert: when they
    are the canonical encoding (as every unit sends), the signed bytes are the payload with
    the signature member cut out (see :func:`_signed_bytes_from_payload`); anything else falls
    back to re-encoding. ``expected_key_id`` is ``key_id(key)``, if the caller keeps it.
    Never raises for a malformed alert."""
    sig = alert.get("signature")
    if not isinstance(sig, Mapping) or sig.get("alg") != ALG:
        return "no Ed25519 signature block"
    kid = expected_key_id or key_id(key)
    if sig.get("key_id") != kid:
        return (
            f"signed with key id {str(sig.get('key_id'))[:16]!r}, but the unit's registered "
            f"key is {kid}"
        )
    value = sig.get("value")
    if not isinstance(value, str):
        return "signature value missing"
    try:
        raw_sig = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return "signature is not base64"
    if len(raw_sig) != 64 or base64.b64encode(raw_sig).decode("ascii") != value:
        return "signature is not the canonical base64 of 64 bytes"
    if payload is not None:
        cut = _signed_bytes_from_payload(payload, sig)
        if cut is not None:
            try:
                key.verify(raw_sig, cut)
                return None
            except (InvalidSignature, ValueError):
                pass  # not canonical on the wire, or a bad signature: the full check decides
    try:
        key.verify(raw_sig, signing_bytes(alert))
    except (InvalidSignature, ValueError):
        return "signature does not match the alert's content"
    except Exception as e:  # canonical encoding of a hostile payload
        log.debug("alert not verifiable: %s", e)
        return f"alert cannot be encoded for verification: {e}"
    return None


def _signed_bytes_from_payload(payload: bytes, sig: Mapping[str, Any]) -> bytes | None:
    """``SIGNING_CONTEXT`` + the payload without its ``"signature"`` member, if that member
    appears exactly once in its canonical form; else None.

    Why a signature that verifies over these bytes proves the same as the full check: a unit
    signs only ``signing_bytes(x)``, the canonical encoding of a dict without a "signature"
    key. If the cut payload is such an encoding, the payload is that object with one member
    added at the top level (a nested "signature" key fails the schema, so pass ``payload``
    only for an alert that passed it), so the parsed alert minus its signature is exactly
    ``x`` and ``signing_bytes(alert)`` is these bytes. If the cut payload is anything else
    (not canonical, duplicate keys, a second signature member), it is not something the unit
    signed, the verification fails, and the caller falls back to the full re-encoding."""
    try:
        member = b',"signature":' + canonical_json(dict(sig))
    except MessageError:
        return None
    at = payload.find(member)
    if at < 0 or payload.find(member, at + 1) >= 0:
        return None
    return SIGNING_CONTEXT + payload[:at] + payload[at + len(member) :]


def verify_alert(alert: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True only when ``alert`` carries a valid Ed25519 signature by ``public_key`` over its
    canonical encoding (see :func:`signature_problem`). Never raises."""
    return signature_problem(alert, public_key) is None


def evidence_problem(alert: Mapping[str, Any], jpeg: bytes) -> str | None:
    """None when ``jpeg`` is exactly the evidence frame the alert names (size and SHA-256)."""
    ev = alert.get("evidence")
    if not isinstance(ev, Mapping):
        return "alert names no evidence"
    if ev.get("frame_bytes") != len(jpeg):
        return f"evidence is {len(jpeg)} bytes, the alert says {ev.get('frame_bytes')}"
    if ev.get("frame_sha256") != hashlib.sha256(jpeg).hexdigest():
        return "evidence SHA-256 differs from the one in the signed alert"
    return None


def verify_evidence(alert: Mapping[str, Any], jpeg: bytes) -> bool:
    """True when ``jpeg`` is the evidence frame the alert names: same size and SHA-256."""
    return evidence_problem(alert, jpeg) is None
