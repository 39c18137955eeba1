"""Ed25519 checks for the control room: unit public keys, alert signatures, evidence hashes.

Deliberately separate from ``edge.adapters.signing`` (the unit side): the control room imports
only the message contract from ``edge.core`` (what is signed: ``signing_bytes``), and does its
own verification here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.core.errors import MessageError, SignatureError
from edge.core.messages import SIGNING_CONTEXT, canonical_json, signing_bytes

ALG = "Ed25519"
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte key (as in the alert's key_id)."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:16]


def fingerprint(key: Ed25519PublicKey) -> str:
    """Full SHA-256 of the raw key, grouped for reading aloud over a phone."""
    h = hashlib.sha256(raw_public_bytes(key)).hexdigest()
    return ":".join(h[i:i + 4] for i in range(0, 64, 4))


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or base64 of the raw 32 bytes."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw.strip(), validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as e:
        raise SignatureError(f"not an Ed25519 public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def signature_problem(alert: Mapping[str, Any], key: Ed25519PublicKey, *,
                      payload: bytes | None = None, expected_key_id: str | None = None
                      ) -> str | None:
    """None when ``alert`` carries a valid signature by ``key``; otherwise what is wrong.

    ``payload``, the bytes ``alert`` was parsed from, saves re-encoding the alert: when they
    are the canonical encoding (as every unit sends), the signed bytes are the payload with
    the signature member cut out (see :func:`_signed_bytes_from_payload`); anything else falls
    back to re-encoding. ``expected_key_id`` is ``key_id(key)``, if the caller keeps it."""
    sig = alert.get("signature")
    if not isinstance(sig, Mapping) or sig.get("alg") != ALG:
        return "no Ed25519 signature block"
    kid = expected_key_id or key_id(key)
    if sig.get("key_id") != kid:
        return (f"signed with key id {str(sig.get('key_id'))[:16]!r}, but the unit's registered "
                f"key is {kid}")
    value = sig.get("value")
    if not isinstance(value, str):
        return "signature value missing"
    try:
        raw_sig = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return "signature does not match the alert's content"
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
        return f"alert cannot be encoded for verification: {e}"
    return None


def _signed_bytes_from_payload(payload: bytes, sig: Mapping[str, Any]) -> bytes | None:
    """``SIGNING_CONTEXT`` + the payload without its ``"signature"`` member, if that member
    appears exactly once in its canonical form; else None.

    Why a signature that verifies over these bytes proves the same as the full check: a unit
    signs only ``signing_bytes(x)``, the canonical encoding of a dict without a "signature"
    key. If the cut payload is such an encoding, the payload is that object with one member
    added at the top level (a nested "signature" key fails the schema, so pass ``payload``
    only for an alert that passed it), so the parsed
    alert minus its signature is exactly ``x`` and ``signing_bytes(alert)`` is these bytes.
    If the cut payload is anything else (not canonical, duplicate keys, a second signature
    member), it is not something the unit signed, the verification fails, and the caller
    falls back to the full re-encoding."""
    try:
        member = b',"signature":' + canonical_json(dict(sig))
    except MessageError:
        return None
    at = payload.find(member)
    if at < 0 or payload.find(member, at + 1) >= 0:
        return None
    return SIGNING_CONTEXT + payload[:at] + payload[at + len(member):]


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


def is_jpeg(data: bytes) -> bool:
    """A JPEG starts with SOI + a marker and ends with EOI (trailing zero padding tolerated)."""
    return data.startswith(JPEG_MAGIC) and data.rstrip(b"\x00").endswith(JPEG_END)
