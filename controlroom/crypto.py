"""The control room's view of signatures: the shared rules plus what only it needs.

Verification, key ids and key parsing are :mod:`edge.common.signing`, the same code the unit
signs with; this module adds the fingerprint read aloud when a unit is registered and the JPEG
and video-clip sanity checks.
"""

from __future__ import annotations

import hashlib
from typing import Any

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
    "clip_problem",
    "evidence_problem",
    "fingerprint",
    "is_jpeg",
    "key_id",
    "parse_public_key",
    "public_pem",
    "raw_public_bytes",
    "signature_problem",
    "video_type",
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


EBML_MAGIC = b"\x1a\x45\xdf\xa3"
"""How a Matroska / WebM file starts."""


def video_type(data: bytes) -> str | None:
    """``video/webm`` for a Matroska/WebM container, ``video/x-msvideo`` for an AVI (``RIFF``
    then ``AVI `` at byte 8), else None: the container, not whether every frame decodes."""
    if data.startswith(EBML_MAGIC):
        return "video/webm"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    return None


def clip_problem(alert: dict[str, Any], clip: bytes) -> str | None:
    """Why ``clip`` is not the clip the signed alert names (``evidence.clip_sha256`` and
    ``clip_bytes``), or None if it is."""
    ev = alert.get("evidence") or {}
    if ev.get("clip_sha256") is None:
        return "the signed alert names no clip"
    if ev.get("clip_bytes") != len(clip):
        return f"the clip is {len(clip)} bytes; the signed alert says {ev.get('clip_bytes')}"
    if ev.get("clip_sha256") != hashlib.sha256(clip).hexdigest():
        return "the clip's SHA-256 is not the one in the signed alert"
    return None
