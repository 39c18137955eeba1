"""Evidence bundles: one confirmed alert as a self-contained ZIP, and its offline check.

A bundle holds ``alert.json`` (the alert exactly as the unit signed and sent it),
``signature.txt`` (the Ed25519 signature, base64), ``evidence.jpg`` (the evidence frame),
``unit_public_key.pem``, ``review.json`` (who confirmed it, when, the note) and ``VERIFY.txt``,
a plain-language statement of how to check it; and, when the unit sent one, the alert's video
clip as it arrived (``clip.webm``, or ``clip.avi`` for Motion-JPEG), whose SHA-256 and size the
signed alert records too. ``VERIFY.txt`` names the camera and the tracked vehicle when the signed
alert carries them. :func:`verify_bundle` checks it without any network or database and reports
every check it made.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlroom import crypto
from controlroom.errors import BundleError
from edge.core import messages as m
from edge.core.errors import MessageError, SignatureError

MAX_MEMBER_BYTES = 64 * 1024 * 1024
FILES = (
    "alert.json",
    "signature.txt",
    "evidence.jpg",
    "unit_public_key.pem",
    "review.json",
    "VERIFY.txt",
)
CLIP_FILES = {"video/webm": "clip.webm", "video/x-msvideo": "clip.avi"}
"""The clip's name in a bundle, by the media type the signed alert gives it."""

VERIFY_TEXT = """\
phonewatch evidence bundle — alert {alert_id}

What this is
  Unit {unit} reported a driver holding a mobile phone at {time} (UTC, time source:
  {time_source}). Operator {reviewer} confirmed it on review at {reviewed} (UTC).
{scene_text}
What proves it
  alert.json is the alert exactly as the unit sent it. The unit signed it with its own
  Ed25519 private key, which never leaves the unit. signature.txt holds that signature.
  The signature covers every field of the alert except the signature itself, including the
  SHA-256 hash and size of the evidence image. So if the signature is valid, neither the
  alert nor evidence.jpg can have been changed since the unit made them.
{clip_text}
How to check it
  1. Run:  phonewatch verify {zipname}
     It checks, offline: the alert's format; the signature against unit_public_key.pem;
     that the key is the one the alert names (key id {key_id}); that evidence.jpg (and the
     clip, if there is one) has the size and SHA-256 the signed alert records; and that
     signature.txt matches alert.json.
  2. Independently confirm that unit_public_key.pem really is unit {unit}'s key: its
     SHA-256 fingerprint is
       {fingerprint}
     Compare it with the fingerprint recorded when the unit was provisioned. The tool
     cannot check this for you: anyone can make a key pair and sign a fake alert with it.
  3. Without phonewatch: the signed bytes are the text "phonewatch.alert.v1" and a newline,
     followed by the alert as JSON with the "signature" field removed, keys sorted, no
     spaces, UTF-8 (not ASCII-escaped). Any Ed25519 library can check the signature over
     them with the public key.

What it does not prove
  review.json records who confirmed the alert; it is not signed by the unit.
  The GPS position is what the unit's receiver reported, with its age and quality.
"""


def _scene_text(alert: dict[str, Any]) -> str:
    """Which camera saw it and which tracked vehicle it was, when the signed alert says so
    (both are inside the signed alert.json)."""
    lines = []
    if alert.get("camera"):
        lines.append(f"  It was seen by the unit's camera {alert['camera']!r}.\n")
    v = alert.get("vehicle")
    if isinstance(v, dict) and isinstance(v.get("box"), list):
        x, y, w, h = v["box"]
        lines.append(
            f"  The driver was in vehicle {v.get('label')} (track {v.get('track_id')}, seen in"
            f" {v.get('frames')} frames),\n  whose box in evidence.jpg is x {x}, y {y},"
            f" width {w}, height {h} pixels.\n"
        )
    return "".join(lines)


def _clip_text(alert: dict[str, Any], clip: bytes | None) -> str:
    ev = alert.get("evidence") or {}
    if not ev.get("clip_sha256"):
        return ""
    name = CLIP_FILES.get(str(ev.get("clip_type")), "clip.webm")
    if clip is None:
        return (
            f"  The signed alert also records a video clip ({ev.get('clip_bytes')} bytes); the\n"
            "  control room did not hold it when this bundle was made, so it is not enclosed.\n"
        )
    return (
        f"  {name} is the unit's video clip of the event ({len(clip)} bytes); the signature\n"
        "  covers its SHA-256 hash and size in the same way.\n"
    )


def make_bundle(
    *,
    alert_payload: bytes,
    jpeg: bytes,
    public_key_pem: bytes,
    review: dict[str, Any],
    zipname: str = "bundle.zip",
    clip: bytes | None = None,
) -> bytes:
    """The bundle's bytes; ``clip`` is the alert's clip exactly as it arrived (its name comes
    from the signed alert's ``clip_type``)."""
    alert = json.loads(alert_payload)
    key = crypto.parse_public_key(public_key_pem)
    clip_type = (alert.get("evidence") or {}).get("clip_type")
    text = VERIFY_TEXT.format(
        clip_text=_clip_text(alert, clip),
        scene_text=_scene_text(alert),
        alert_id=alert["alert_id"],
        unit=alert["unit"],
        time=alert["time"],
        time_source=alert["time_source"],
        reviewer=review.get("reviewed_by"),
        reviewed=m.utc_iso(float(review.get("reviewed_at") or 0.0)),
        zipname=zipname,
        key_id=crypto.key_id(key),
        fingerprint=crypto.fingerprint(key),
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("alert.json", alert_payload)
        z.writestr("signature.txt", alert["signature"]["value"] + "\n")
        z.writestr("evidence.jpg", jpeg, compress_type=zipfile.ZIP_STORED)
        z.writestr("unit_public_key.pem", public_key_pem)
        if clip is not None:
            name = CLIP_FILES.get(str(clip_type), "clip.webm")
            z.writestr(name, clip, compress_type=zipfile.ZIP_STORED)
        z.writestr("review.json", json.dumps(review, indent=2, sort_keys=True) + "\n")
        z.writestr("VERIFY.txt", text)
    return buf.getvalue()


@dataclass
class Verification:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    alert: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    clip_name: str = ""
    """The enclosed clip whose hash was checked, if any."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append((name, ok, detail))
        return ok

    def report(self) -> str:
        lines = [
            f"{'PASS' if ok else 'FAIL'}  {name}: {detail}" for name, ok, detail in self.checks
        ]
        if self.ok:
            a = self.alert
            fix = a.get("fix") or {}
            pos = (
                f"{fix.get('lat')}, {fix.get('lon')} (fix {fix.get('mode')}, age "
                f"{fix.get('age_s')} s)"
                if fix.get("lat") is not None
                else "no GPS fix"
            )
            lines += [
                "",
                f"VERIFIED: alert {a['alert_id']} from unit {a['unit']} at {a['time']} "
                f"({a['time_source']} time), score {a['score']}, model {a['model']['name']} "
                f"{a['model']['version']}, position {pos}, and its evidence image"
                + (f" and video clip ({self.clip_name})" if self.clip_name else "")
                + ", are exactly as signed by the holder of the enclosed public key.",
                f"NOT VERIFIED HERE: that this key belongs to unit {a['unit']}. Compare its "
                f"fingerprint with the provisioning record:\n  {self.fingerprint}",
                "NOT SIGNED BY THE UNIT: review.json (who confirmed it).",
            ]
        else:
            lines += ["", "NOT VERIFIED: at least one check failed (see FAIL above)."]
        return "\n".join(lines)


def _read(z: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise BundleError(f"bundle has no {name}") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise BundleError(f"{name} is {info.file_size} bytes; too large for a bundle")
    return z.read(info)


def verify_bundle(path: Path) -> Verification:
    """Check a bundle offline. Raises :class:`BundleError` when it cannot be read at all;
    otherwise returns every check made, passed or failed."""
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"no such file: {path}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{path} is not a ZIP file: {e}") from None
    v = Verification()
    with z:
        payload = _read(z, "alert.json")
        sig_text = _read(z, "signature.txt").decode("ascii", "replace").strip()
        jpeg = _read(z, "evidence.jpg")
        pem = _read(z, "unit_public_key.pem")
        clips = {n: _read(z, n) for n in CLIP_FILES.values() if n in z.namelist()}
    try:
        alert = m.decode(payload)
        m.validate(alert, m.ALERT_SCHEMA)
    except MessageError as e:
        v.add("alert format", False, f"alert.json is not a valid phonewatch alert v1: {e}")
        return v
    v.alert = alert
    v.add("alert format", True, f"alert.json is a valid phonewatch alert v1 ({alert['alert_id']})")
    try:
        key = crypto.parse_public_key(pem)
    except SignatureError as e:
        v.add("public key", False, f"unit_public_key.pem: {e}")
        return v
    v.fingerprint = crypto.fingerprint(key)
    kid = crypto.key_id(key)
    v.add("public key", True, f"unit_public_key.pem is an Ed25519 key, key id {kid}")
    v.add(
        "key id",
        alert["signature"]["key_id"] == kid,
        f"the alert names key id {alert['signature']['key_id']}; the enclosed key is {kid}",
    )
    problem = crypto.signature_problem(alert, key)
    v.add(
        "signature",
        problem is None,
        problem or "Ed25519 signature over the alert (all fields but 'signature') is valid",
    )
    v.add(
        "signature.txt",
        sig_text == alert["signature"]["value"],
        "matches the signature inside alert.json"
        if sig_text == alert["signature"]["value"]
        else "differs from the signature inside alert.json",
    )
    ev_problem = crypto.evidence_problem(alert, jpeg)
    v.add(
        "evidence",
        ev_problem is None,
        ev_problem
        or f"evidence.jpg is {len(jpeg)} bytes with SHA-256 "
        f"{hashlib.sha256(jpeg).hexdigest()}, exactly as the signed alert records",
    )
    v.add(
        "evidence is JPEG",
        crypto.is_jpeg(jpeg),
        "evidence.jpg is a JPEG image" if crypto.is_jpeg(jpeg) else "evidence.jpg is not JPEG",
    )
    _check_clip(v, alert, clips)
    return v


def _check_clip(v: Verification, alert: dict[str, Any], clips: dict[str, bytes]) -> None:
    """The clip line: its SHA-256 and size against the signed alert. A bundle without a clip
    adds no line for an alert that has none, and says so for one whose clip was not held."""
    ev = alert.get("evidence") or {}
    want = CLIP_FILES.get(str(ev.get("clip_type")), "clip.webm")
    if not ev.get("clip_sha256"):
        if clips:
            v.add("clip", False, f"{', '.join(clips)}: the signed alert records no clip")
        return
    if not clips:
        v.add(
            "clip",
            True,
            f"the signed alert records a clip ({ev.get('clip_bytes')} bytes) that this bundle "
            "does not enclose; nothing to check",
        )
        return
    extra = sorted(set(clips) - {want})
    if extra:
        v.add("clip", False, f"{', '.join(extra)}: not the clip type the signed alert records")
        return
    data = clips[want]  # clips is non-empty and holds no other name
    problem = crypto.clip_problem(alert, data)
    v.clip_name = want
    v.add(
        "clip",
        problem is None,
        f"{want}: {problem}"
        if problem
        else f"{want} is {len(data)} bytes with SHA-256 {hashlib.sha256(data).hexdigest()}, "
        "exactly as the signed alert records",
    )
