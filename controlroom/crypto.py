"""The control room's view of signatures: the shared rules plus what only it needs.

Verification, key ids and key parsing are :mod:`edge.common.signing`, the same code the unit
signs with; this module adds the fingerprint read aloud when a unit is registered and the JPEG
sanity check.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.common.signing import (
    evidence_problem,
    key_id,
    public_pem,
    raw_public_bytes,
    signature_problem,
)
from edge.common.signing import load_public_key as parse_public_key

__all__ = [
    "evidence_problem",
    "fingerprint",
    "is_jpeg",
    "key_id",
    "parse_public_key",
    "public_pem",
    "raw_public_bytes",
    "signature_problem",
]

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"


def fingerprint(key: Ed25519PublicKey) -> str:
    """Full SHA-256 of the raw key, grouped for reading aloud over a phone."""
    h = hashlib.sha256(raw_public_bytes(key)).hexdigest()
    return ":".join(h[i : i + 4] for i in range(0, 64, 4))


def is_jpeg(data: bytes) -> bool:
    """A JPEG starts with SOI + a marker and ends with EOI (trailing zero padding tolerated)."""
    return data.startswith(JPEG_MAGIC) and data.rstrip(b"\x00").endswith(JPEG_END)
