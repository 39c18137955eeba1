"""Uplink messages: alert, status, heartbeat and command payloads, their canonical encoding and
their validation. Pure (stdlib only), so the control room can import it without the unit.

The schemas are committed JSON Schema files in ``edge/core/schemas/``; :func:`validate` checks a
document against them with a small built-in validator covering the keywords those files use
(the tests cross-check it against the ``jsonschema`` package). Signing lives in
``edge.common.signing`` because it needs the ``cryptography`` package; this module only defines
*what* is signed: :func:`signing_bytes`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

from edge.core.errors import MessageError
from edge.core.ports import Detection, VehicleInfo

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ALERT_SCHEMA = "alert.v1"
STATUS_SCHEMA = "status.v1"
HEARTBEAT_SCHEMA = "heartbeat.v1"
COMMAND_SCHEMA = "command.v1"
RECEIPT_SCHEMA = "receipt.v1"
MODEL_STATUS_SCHEMA = "model_status.v1"

COMMANDS = (
    "snapshot",
    "mute",
    "reload",
    "collect",
    "calibrate",
    "model_offer",
    "model_promote",
    "model_rollback",
    "model_shadow_stop",
)
"""Command names the control room may send; anything else is rejected."""

SIGNING_CONTEXT = b"phonewatch.alert.v1\n"
"""Domain-separation prefix: an alert signature can never be replayed as some other message."""

FIX_KEYS = (
    "time",
    "lat",
    "lon",
    "alt_m",
    "speed_mps",
    "track_deg",
    "mode",
    "quality",
    "hdop",
    "sats",
    "age_s",
)

_UNIT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CAMERA_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
"""A camera id: the same rule as an ROI id (letters, digits, ``-``, ``_``; 1-32)."""
_VEHICLE_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,31}$")
FRAME_MAX_PX = 100000
"""The largest frame coordinate any box in an alert may reach (as the schema bounds it)."""
CAMERA_STATUSES = ("starting", "running", "degraded", "stopped")
"""What a heartbeat's ``cameras.<id>.status`` may say (the pipeline's own statuses)."""
_TOPIC_ROOT_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_COLLECT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SAMPLE_NAME_RE = re.compile(
    r"^(rnd|unc|cal(\d{1,15}))-(\d{1,15})-(\d{1,5})-([A-Za-z0-9_]{1,24})-([A-Za-z0-9_-]{1,65})$"
)
SAMPLE_REASONS = {"random": "rnd", "uncertain": "unc", "calibration": "cal"}
"""Why a sampled crop was taken, and its tag in the crop's name (:func:`sample_name`)."""


# ---------------------------------------------------------------- names and times


def alert_id(unit: str, seq: int) -> str:
    return f"{unit}-{seq}"


def collect_name(roi_id: str, t_wall_s: float) -> str:
    """The name of a collected crop: ``<roi_id>-<frame wall time in integer ms>``."""
    return _checked_collect_name(f"{roi_id}-{int(t_wall_s * 1000)}")


@dataclasses.dataclass(frozen=True, slots=True)
class SampleName:
    """The provenance a sampled crop's name carries (the unit is the topic's, which the
    broker's ACL vouches for)."""

    reason: Literal["random", "uncertain", "calibration"]
    t_wall_ms: int
    """The frame's wall-clock time, integer milliseconds."""
    score: float
    """The crop's score, to 4 decimals."""
    model: str
    """The model version, each character other than a letter or digit as ``_``."""
    roi: str
    run_ms: int | None = None
    """Calibration only: the run's start (wall clock, ms); one run's crops share it."""


def model_tag(model_version: str) -> str:
    """A model version as a sample's name carries it: each character other than a letter or
    digit as ``_``, at most 24."""
    return re.sub(r"[^A-Za-z0-9]", "_", model_version)[:24] or "_"


def sample_name(
    reason: str,
    roi_id: str,
    t_wall_s: float,
    score: float,
    model_version: str,
    *,
    run_ms: int | None = None,
) -> str:
    """The name of a crop the sampler took: ``<tag>-<ms>-<score>-<model>-<roi_id>``.

    ``tag`` is ``rnd`` (random), ``unc`` (uncertain) or ``cal<run start ms>`` (a calibration
    run); ``ms`` the frame's wall-clock time in integer ms; ``score`` the score x 10^4 as an
    integer (0..10000); ``model`` the model version with every character other than a letter
    or digit replaced by ``_`` (at most 24). Parsed back by :func:`parse_sample_name`."""
    if reason not in SAMPLE_REASONS:
        raise MessageError(f"unknown sample reason {reason!r}")
    tag = SAMPLE_REASONS[reason]
    if reason == "calibration":
        if run_ms is None:
            raise MessageError("a calibration crop needs its run's start time")
        tag += str(int(run_ms))
    if not math.isfinite(score):
        raise MessageError(f"sample score {score!r} is not a number")
    myriads = min(10000, max(0, round(score * 10000)))
    name = f"{tag}-{int(t_wall_s * 1000)}-{myriads}-{model_tag(model_version)}-{roi_id}"
    if not _SAMPLE_NAME_RE.match(name):
        raise MessageError(f"bad sample name {name[:140]!r}")
    return _checked_collect_name(name)


def parse_sample_name(name: str) -> SampleName | None:
    """What :func:`sample_name` put in ``name``; None for any other name (a ``collect``
    crop's ``<roi_id>-<ms>``)."""
    mt = _SAMPLE_NAME_RE.match(name)
    if mt is None or len(name) > 128:
        return None
    tag, run, ms, myriads, model, roi = mt.groups()
    reason: Literal["random", "uncertain", "calibration"] = (
        "random" if tag == "rnd" else "uncertain" if tag == "unc" else "calibration"
    )
    if int(myriads) > 10000:
        return None
    return SampleName(
        reason=reason,
        t_wall_ms=int(ms),
        score=int(myriads) / 10000,
        model=model,
        roi=roi,
        run_ms=int(run) if run is not None else None,
    )


def _checked_collect_name(name: str) -> str:
    if not _COLLECT_NAME_RE.match(name):
        raise MessageError(f"bad collect name {name[:140]!r}: 1-128 letters, digits, '-', '_'")
    return name


def utc_iso(t_wall_s: float) -> str:
    """Seconds since the epoch -> ``2026-11-26T00:00:00.123456Z``."""
    return datetime.fromtimestamp(t_wall_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_iso(text: str) -> float:
    """ISO 8601 UTC (``...Z`` or ``+00:00``) -> seconds since the epoch."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise MessageError(f"not an ISO 8601 time: {text!r}") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Topics:
    """The MQTT topic names of one unit (see docs/uplink.md)."""

    def __init__(self, root: str, unit: str) -> None:
        if not _TOPIC_ROOT_RE.match(root):
            raise MessageError(f"bad topic root {root!r}: letters, digits, '-', '_' and '/'")
        if not _UNIT_RE.match(unit):
            raise MessageError(f"bad unit id {unit!r}: letters, digits, '-' and '_'")
        self.root = root
        self.unit = unit
        base = f"{root}/{unit}"
        self.alert = f"{base}/alert"
        self.status = f"{base}/status"
        self.heartbeat = f"{base}/heartbeat"
        self.snapshot = f"{base}/snapshot"
        self.cmd_prefix = f"{base}/cmd/"
        self.cmd_filter = f"{base}/cmd/+"
        self.ack = f"{base}/ack"
        """Control room -> unit: delivery receipts (:func:`build_receipt`)."""
        self.model_status = f"{base}/model/status"
        """Unit -> control room: model package events (``model_status.v1``)."""
        self.model_chunk_prefix = f"{base}/model/chunk/"
        self.model_chunk_filter = f"{base}/model/chunk/#"
        """Control room -> unit: ``model/chunk/<package_sha256>/<index>``, raw bytes."""

    def evidence(self, alert_id_: str) -> str:
        return f"{self.root}/{self.unit}/evidence/{alert_id_}"

    def crop(self, alert_id_: str) -> str:
        """The driver-window crop of an alert (JPEG; SHA-256 and size in the signed alert)."""
        return f"{self.root}/{self.unit}/crop/{alert_id_}"

    def clip(self, alert_id_: str) -> str:
        """The clip around an alert (WebM or AVI; SHA-256, size and type in the signed alert)."""
        return f"{self.root}/{self.unit}/clip/{alert_id_}"

    def collect(self, name: str) -> str:
        """Topic of one collected crop; ``name`` as made by :func:`collect_name`."""
        return f"{self.root}/{self.unit}/collect/{_checked_collect_name(name)}"

    def cmd(self, name: str) -> str:
        return self.cmd_prefix + name


# ---------------------------------------------------------------- canonical encoding


def canonical_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no spaces, no NaN/Infinity."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise MessageError(f"cannot encode message: {e}") from e


def signing_bytes(alert: Mapping[str, Any]) -> bytes:
    """The bytes an alert signature covers: a context prefix and the canonical JSON of every
    field except ``signature`` (so the evidence SHA-256 and size are bound to the signature)."""
    body = {k: v for k, v in alert.items() if k != "signature"}
    return SIGNING_CONTEXT + canonical_json(body)


def encode(message: Mapping[str, Any]) -> bytes:
    """Wire encoding of any message (canonical JSON, so a receiver may re-verify byte-exactly)."""
    return canonical_json(dict(message))


def decode(payload: bytes, *, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """Parse a JSON object payload; raises :class:`MessageError` on anything else."""
    if len(payload) > max_bytes:
        raise MessageError(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MessageError(f"payload is not JSON: {e}") from None
    except MessageError:  # NaN / Infinity, from _reject_constant
        raise
    except ValueError as e:  # e.g. an integer longer than Python's 4,300-digit limit
        raise MessageError(f"payload is not acceptable JSON: {str(e)[:120]}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"payload must be a JSON object, not {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> Any:
    raise MessageError(f"{name} is not allowed in a message")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: ``json.loads`` with an argument builds a new decoder for every message."""


# ---------------------------------------------------------------- builders


def fix_dict(fix: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Keep exactly the documented fix fields (missing ones become null); None stays None."""
    if fix is None:
        return None
    out = {k: fix.get(k) for k in FIX_KEYS}
    if out["mode"] not in ("none", "2d", "3d"):
        out["mode"] = "none"
    return out


def is_fix_fresh(fix: Mapping[str, Any] | None, *, max_age_s: float) -> bool:
    """A fix usable as a time source: a 2D/3D position, a time, and not older than max_age_s."""
    if fix is None or fix.get("mode") not in ("2d", "3d") or not fix.get("time"):
        return False
    age = fix.get("age_s")
    return isinstance(age, int | float) and 0 <= age <= max_age_s


def alert_time(
    fix: Mapping[str, Any] | None, *, t_wall_s: float, max_age_s: float
) -> tuple[str, str]:
    """The one rule for an alert's time: ``(UTC ISO text, "gps" | "system")``.

    The fix's UTC moved on by its age when it is a valid 2D/3D fix no older than
    ``max_age_s`` (``gps.max_fix_age_s``, the same age past which the GPS state is ``stale``);
    otherwise the system wall clock at the hit."""
    fixd = fix_dict(fix)
    if fixd is not None and is_fix_fresh(fixd, max_age_s=max_age_s):
        try:
            # The fix was taken age_s before it was read: advance it to "now" (the hit).
            return (
                utc_iso(parse_utc_iso(str(fixd["time"])) + float(fixd.get("age_s") or 0)),
                "gps",
            )
        except (MessageError, OverflowError, ValueError):
            pass
    return utc_iso(t_wall_s), "system"


def stamp_detection(
    detection: Detection,
    *,
    fix: Mapping[str, Any] | None,
    gps_state: str | None,
    max_fix_age_s: float,
) -> Detection:
    """``detection`` with its position (the fix as :func:`fix_dict` keeps it, and the GPS
    state) and its alert time by :func:`alert_time`."""
    fixd = fix_dict(fix)
    time_utc, source = alert_time(fixd, t_wall_s=detection.t_wall_s, max_age_s=max_fix_age_s)
    return dataclasses.replace(
        detection, fix=fixd, gps_state=gps_state, time_utc=time_utc, time_source=source
    )


def build_alert(detection: Detection, *, unit: str, seq: int) -> dict[str, Any]:
    """The unsigned alert for ``detection`` (add ``signature`` with the signing adapter).

    Time, fix and GPS state are the ones the app stamped on the detection; the fix is carried
    as given (with its age), or null: never made up.
    """
    if detection.time_utc is not None:
        time_text, source = detection.time_utc, detection.time_source
    else:
        time_text, source = utc_iso(detection.t_wall_s), "system"
    fixd = fix_dict(detection.fix)
    gps_state = detection.gps_state
    ev = detection.evidence
    doc: dict[str, Any] = {
        "schema": "phonewatch.alert",
        "v": 1,
        "alert_id": alert_id(unit, seq),
        "unit": unit,
        "seq": seq,
        "time": time_text,
        "time_source": source,
        "fix": fixd,
        "gps_state": gps_state,
        "roi": detection.roi_id,
        "score": round(float(detection.score), 6),
        "frames_over": int(detection.frames_over),
        "window": int(detection.window),
        "threshold": round(float(detection.threshold), 6),
        "frame_index": int(detection.frame_index),
        "model": {
            "name": detection.model_name,
            "version": detection.model_version,
            "sha256": detection.model_sha256,
        },
        "evidence": {
            "frame_sha256": ev.frame_sha256,
            "frame_bytes": int(ev.frame_bytes),
            "crop_sha256": ev.crop_sha256,
            "crop_bytes": int(ev.crop_bytes),
        },
    }
    if detection.roi_box is not None:
        doc["roi_box"] = [int(v) for v in detection.roi_box]
    _add_camera_and_vehicle(doc, detection)
    if ev.clip_sha256 is not None and ev.clip_bytes and ev.clip_type is not None:
        doc["evidence"].update(
            clip_sha256=ev.clip_sha256, clip_bytes=int(ev.clip_bytes), clip_type=ev.clip_type
        )
    return doc


def _add_camera_and_vehicle(doc: dict[str, Any], detection: Detection) -> None:
    """The optional ``camera``, ``frame_size`` and ``vehicle`` fields (left out when unknown, so
    a single-camera, fixed-ROI unit sends what it always did). A bad camera id or frame size
    raises (like a bad ROI id, a configuration fault); a vehicle :func:`vehicle_doc` refuses is
    left out with a warning, and the alert still goes."""
    if detection.camera_id is not None:
        if not isinstance(detection.camera_id, str) or not _CAMERA_RE.match(detection.camera_id):
            raise MessageError(
                f"bad camera id {str(detection.camera_id)[:40]!r}: 1-32 letters, digits, '-', '_'"
            )
        doc["camera"] = detection.camera_id
    size = detection.frame_size
    if size is not None:
        if len(size) != 2 or not all(1 <= int(v) <= FRAME_MAX_PX for v in size):
            raise MessageError(f"bad frame size {size!r}: (width, height), 1..{FRAME_MAX_PX}")
        doc["frame_size"] = [int(size[0]), int(size[1])]
    if detection.vehicle is not None:
        try:
            doc["vehicle"] = vehicle_doc(detection.vehicle, frame_size=size)
        except MessageError as e:  # the hit is what matters: never lose it for its box
            log.warning("alert %s goes without its vehicle: %s", doc["alert_id"], e)


def vehicle_doc(
    vehicle: VehicleInfo, *, frame_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The alert's ``vehicle`` object. The box is clipped to the frame (as ``roi_box`` is) when
    the frame's size is known; a box with no area left, a negative track id or a bad label
    raises :class:`MessageError` naming the field."""
    if int(vehicle.track_id) < 0:
        raise MessageError(f"vehicle.track_id {vehicle.track_id} is negative")
    if not _VEHICLE_LABEL_RE.match(str(vehicle.label)):
        raise MessageError(
            f"vehicle.label {str(vehicle.label)[:40]!r}: 1-32 letters, digits, ' ', '-', '_'"
        )
    if int(vehicle.frames) < 1:
        raise MessageError(f"vehicle.frames {vehicle.frames} must be at least 1")
    x, y, w, h = (int(v) for v in vehicle.box)
    width, height = frame_size if frame_size is not None else (FRAME_MAX_PX, FRAME_MAX_PX)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, int(width)), min(y + h, int(height))
    if x1 <= x0 or y1 <= y0:
        raise MessageError(
            f"vehicle.box {[x, y, w, h]} has no area inside the {width}x{height} frame"
        )
    return {
        "track_id": int(vehicle.track_id),
        "box": [x0, y0, x1 - x0, y1 - y0],
        "label": str(vehicle.label),
        "frames": int(vehicle.frames),
    }


def alert_problems(alert: Mapping[str, Any]) -> list[str]:
    """What a schema cannot say about an alert that passed it: a box with no area, or one
    reaching past the evidence frame (``frame_size`` when the alert carries it). Empty when
    the alert is sound. Each problem names the field."""
    size = alert.get("frame_size")
    width, height = size if isinstance(size, list) and len(size) == 2 else (None, None)
    problems: list[str] = []
    boxes = [("roi_box", alert.get("roi_box"))]
    vehicle = alert.get("vehicle")
    if isinstance(vehicle, Mapping):
        boxes.append(("vehicle.box", vehicle.get("box")))
    for name, box in boxes:
        if not isinstance(box, list) or len(box) != 4:
            continue
        x, y, w, h = box
        if name == "vehicle.box" and (w < 1 or h < 1):
            problems.append(f"{name}: {box} has no area")
        elif width is not None and height is not None and (x + w > width or y + h > height):
            problems.append(f"{name}: {box} reaches outside the {width}x{height} evidence frame")
        elif x + w > FRAME_MAX_PX or y + h > FRAME_MAX_PX:
            problems.append(f"{name}: {box} reaches past {FRAME_MAX_PX} pixels")
    return problems


def build_status(
    unit: str, state: str, *, t_wall_s: float, software: str, reason: str | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema": "phonewatch.status",
        "v": 1,
        "unit": unit,
        "state": state,
        "time": utc_iso(t_wall_s),
        "software": software,
    }
    if reason:
        msg["reason"] = reason[:256]
    return msg


_HEARTBEAT_PIPELINE_KEYS = ("fps", "dropped_frames", "invoke_ms_p50", "invoke_ms_p99")


def build_heartbeat(
    unit: str,
    *,
    t_wall_s: float,
    uptime_s: float,
    pipeline: Mapping[str, Any] | None,
    outbox_depth: int,
    evidence_pruned: int,
    alerts_pruned: int,
    gps_state: str | None,
    cpu_temp_c: float | None,
    fix: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    cameras: Mapping[str, Mapping[str, Any]] | None = None,
    vehicles: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``model``: the unit's models (``ModelManager.heartbeat``); ``cameras``: per camera id,
    its figures (:func:`heartbeat_cameras`); ``vehicles``: the vehicle stage's figures
    (:func:`heartbeat_vehicles`). Each is left out when None."""
    stats = dict(pipeline or {})
    msg: dict[str, Any] = {
        "schema": "phonewatch.heartbeat",
        "v": 1,
        "unit": unit,
        "time": utc_iso(t_wall_s),
        "uptime_s": round(max(uptime_s, 0.0), 3),
    }
    for key in _HEARTBEAT_PIPELINE_KEYS:
        val = stats.pop(key, None)
        if key == "dropped_frames":
            msg[key] = int(val) if _finite(val) and val >= 0 else None
        else:
            msg[key] = float(val) if _finite(val) and val >= 0 else None
    msg.update(
        outbox_depth=int(outbox_depth),
        outbox_evidence_pruned=int(evidence_pruned),
        outbox_alerts_pruned=int(alerts_pruned),
        gps_state=gps_state,
        fix=fix_dict(fix),
        cpu_temp_c=cpu_temp_c,
    )
    msg["pipeline"] = {k: v for k, v in stats.items() if _json_safe(v)}
    if model is not None:
        msg["model"] = dict(model)
    if cameras is not None:
        msg["cameras"] = heartbeat_cameras(cameras)
    if vehicles is not None:
        msg["vehicles"] = heartbeat_vehicles(vehicles)
    return msg


MAX_CAMERAS = 32
"""The most cameras a heartbeat reports (the schema's ``maxProperties``)."""


def heartbeat_cameras(cameras: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The heartbeat's ``cameras`` object: for each camera id, ``status`` (one of
    :data:`CAMERA_STATUSES`), ``fps`` (None when unknown), ``dropped`` (frames lost since
    start) and ``last_error`` (None, or cut to 256 characters). Raises :class:`MessageError`
    naming the camera and the field for anything the schema would refuse."""
    if len(cameras) > MAX_CAMERAS:
        raise MessageError(f"cameras: {len(cameras)} cameras, at most {MAX_CAMERAS}")
    schema = load_schema(HEARTBEAT_SCHEMA)
    out: dict[str, dict[str, Any]] = {}
    for cam_id, figures in cameras.items():
        if not isinstance(cam_id, str) or not _CAMERA_RE.match(cam_id):
            raise MessageError(f"cameras: bad camera id {str(cam_id)[:40]!r}")
        fps, dropped, error = figures.get("fps"), figures.get("dropped"), figures.get("last_error")
        doc = {
            "status": figures.get("status"),
            "fps": round(float(fps), 3) if _finite(fps) else None,
            "dropped": int(dropped) if _finite(dropped) else 0,
            "last_error": str(error)[:256] if error else None,
        }
        errors = _check(doc, schema["$defs"]["camera"], schema, f"cameras.{cam_id}")
        if errors:
            raise MessageError("; ".join(errors[:3]))
        out[cam_id] = doc
    return out


def heartbeat_vehicles(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The heartbeat's ``vehicles`` object: ``tracks_per_min`` (None before the first minute)
    and ``active`` (tracks alive now); raises :class:`MessageError` naming a bad field."""
    rate, active = figures.get("tracks_per_min"), figures.get("active")
    doc = {
        "tracks_per_min": round(float(rate), 3) if _finite(rate) else None,
        "active": active if isinstance(active, int) and not isinstance(active, bool) else -1,
    }
    schema = load_schema(HEARTBEAT_SCHEMA)
    errors = _check(doc, schema["properties"]["vehicles"], schema, "vehicles")
    if errors:
        raise MessageError("; ".join(errors[:3]))
    return doc


def _finite(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _json_safe(v: Any) -> bool:
    try:
        canonical_json(v)
    except MessageError:
        return False
    return True


# ---------------------------------------------------------------- commands


def parse_command(
    topic: str, payload: bytes, *, topics: Topics, max_bytes: int = 4096
) -> tuple[str, dict[str, Any]]:
    """Validate a control-room command; returns ``(name, payload)`` or raises MessageError."""
    if not topic.startswith(topics.cmd_prefix):
        raise MessageError(f"not a command topic for this unit: {topic!r}")
    name = topic[len(topics.cmd_prefix) :]
    if name not in COMMANDS:
        raise MessageError(f"unknown command {name[:40]!r}; known: {', '.join(COMMANDS)}")
    if len(payload) > max_bytes:
        raise MessageError(f"command {name}: payload of {len(payload)} bytes exceeds {max_bytes}")
    body = {} if not payload.strip() else decode(payload, max_bytes=max_bytes)
    schema = load_schema(COMMAND_SCHEMA)
    errors = _check(body, schema["$defs"][name], schema, "")
    if errors:
        raise MessageError(f"command {name}: " + "; ".join(errors[:5]))
    return name, body


MODEL_EVENTS = (
    "receiving",
    "received",
    "refused",
    "installed",
    "shadow_started",
    "shadow_stopped",
    "promoted",
    "rolled_back",
    "load_failed",
)
"""What ``model_status.v1`` may report about a model package on a unit."""


def build_model_status(
    unit: str,
    *,
    t_wall_s: float,
    package_sha256: str,
    version: str,
    event: str,
    detail: str | None = None,
    have: int | None = None,
    missing: list[int] | None = None,
) -> dict[str, Any]:
    """A unit's model event (``<root>/<unit>/model/status``): ``missing`` asks the control
    room to send those chunks of the offered package again."""
    doc: dict[str, Any] = {
        "schema": "phonewatch.model_status",
        "v": 1,
        "unit": unit,
        "time": utc_iso(t_wall_s),
        "package_sha256": package_sha256,
        "version": version[:64],
        "event": event,
    }
    if detail is not None:
        doc["detail"] = detail[:1000]
    if have is not None:
        doc["have"] = have
    if missing is not None:
        doc["missing"] = missing
    return doc


def build_receipt(
    unit: str,
    *,
    alerts: Iterable[int],
    evidence: Iterable[int],
    t_wall_s: float,
    crops: Iterable[int] = (),
    clips: Iterable[int] = (),
) -> dict[str, Any]:
    """The control room's receipt: these sequence numbers' alerts / evidence / crops / clips
    are stored."""
    doc: dict[str, Any] = {
        "schema": "phonewatch.receipt",
        "v": 1,
        "unit": unit,
        "alerts": sorted(set(alerts)),
        "evidence": sorted(set(evidence)),
        "time": utc_iso(t_wall_s),
    }
    crop_seqs = sorted(set(crops))
    if crop_seqs:
        doc["crops"] = crop_seqs
    clip_seqs = sorted(set(clips))
    if clip_seqs:
        doc["clips"] = clip_seqs
    return doc


def parse_receipt(
    topic: str, payload: bytes, *, topics: Topics, max_bytes: int = 1 << 20
) -> list[tuple[int, Literal["alert", "evidence", "crop", "clip"]]]:
    """Validate a receipt for this unit; returns the ``(seq, part)`` pairs it acknowledges
    (part ``alert``, ``evidence``, ``crop`` or ``clip``) or raises MessageError."""
    if topic != topics.ack:
        raise MessageError(f"not this unit's receipt topic: {topic[:200]!r}")
    doc = validate(decode(payload, max_bytes=max_bytes), RECEIPT_SCHEMA)
    if doc["unit"] != topics.unit:
        raise MessageError(f"receipt for unit {str(doc['unit'])[:64]!r} on {topics.unit}'s topic")
    parts: list[tuple[int, Literal["alert", "evidence", "crop", "clip"]]] = [
        (int(s), "alert") for s in doc["alerts"]
    ]
    parts += [(int(s), "evidence") for s in doc["evidence"]]
    parts += [(int(s), "crop") for s in doc.get("crops", [])]
    return parts + [(int(s), "clip") for s in doc.get("clips", [])]


# ---------------------------------------------------------------- validation


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A committed schema by name: ``alert.v1``, ``status.v1``, ``heartbeat.v1``, ``command.v1``."""
    path = SCHEMA_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise MessageError(f"no such schema: {path}") from None


def schema_errors(doc: Any, schema_name: str) -> list[str]:
    """Every way ``doc`` breaks the named schema (empty when it is valid)."""
    schema = load_schema(schema_name)
    return _check(doc, schema, schema, "")


def validate(doc: Any, schema_name: str) -> dict[str, Any]:
    """Return ``doc`` if it satisfies the named schema, else raise MessageError naming the field."""
    errors = schema_errors(doc, schema_name)
    if errors:
        raise MessageError(f"{schema_name}: " + "; ".join(errors[:5]))
    return doc  # type: ignore[no-any-return]


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def resolve_ref(ref: str, root: Mapping[str, Any]) -> Any:
    """The sub-schema a local ``$ref`` (``#/$defs/...``) points at inside ``root``."""
    if not ref.startswith("#/"):
        raise MessageError(f"unsupported $ref {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def _check(v: Any, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> list[str]:
    """A JSON Schema subset: $ref (local), type, const, enum, oneOf, properties, required,
    additionalProperties (bool or a schema), propertyNames, maxProperties, items,
    minItems/maxItems, minimum/maximum, minLength/maxLength, pattern.

    The keywords in :data:`_GATES` are checked first, in order, and the first one ``v`` fails
    is the only error; otherwise the keywords for ``v``'s kind (:data:`_KIND_CHECKS`) each add
    theirs."""
    if "$ref" in s:
        return _check(v, resolve_ref(s["$ref"], root), root, at)
    for key, gate in _GATES:
        if key in s:
            error = gate(v, s, root, at)
            if error is not None:
                return [f"{at or '(message)'}: {error}"]
    for is_kind, check_kind in _KIND_CHECKS:
        if is_kind(v):
            return check_kind(v, s, root, at)
    return []


_Gate = Callable[[Any, Mapping[str, Any], Mapping[str, Any], str], str | None]
"""``(value, schema, root, at) -> the error (without its location), or None``."""
_KindCheck = Callable[[Any, Mapping[str, Any], Mapping[str, Any], str], list[str]]


def _gate_one_of(v: Any, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> str | None:
    matches = sum(1 for sub in s["oneOf"] if not _check(v, sub, root, at))
    return None if matches == 1 else f"matches {matches} of the allowed forms, not exactly one"


def _gate_const(v: Any, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> str | None:
    const = s["const"]
    return None if v == const and type(v) is type(const) else f"must be {const!r}"


def _gate_enum(v: Any, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> str | None:
    return None if v in s["enum"] else f"must be one of {s['enum']}"


def _gate_type(v: Any, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> str | None:
    types = s["type"] if isinstance(s["type"], list) else [s["type"]]
    if any(_TYPES[t](v) for t in types):
        return None
    return f"must be {' or '.join(types)}, not {_json_type(v)}"


_GATES: tuple[tuple[str, _Gate], ...] = (
    ("oneOf", _gate_one_of),
    ("const", _gate_const),
    ("enum", _gate_enum),
    ("type", _gate_type),
)
"""Keywords whose failure is the only error reported for a value, checked in this order."""

_Bound = tuple[str, Callable[[Any, Any], bool], str]
"""``(keyword, fails(value, keyword's value), message with {} for the keyword's value)``."""

_ARRAY_BOUNDS: tuple[_Bound, ...] = (
    ("minItems", lambda v, n: len(v) < n, "fewer than {} items"),
    ("maxItems", lambda v, n: len(v) > n, "more than {} items"),
)
_NUMBER_BOUNDS: tuple[_Bound, ...] = (
    ("minimum", lambda v, n: v < n, "must be >= {}"),
    ("maximum", lambda v, n: v > n, "must be <= {}"),
)
_STRING_BOUNDS: tuple[_Bound, ...] = (
    ("minLength", lambda v, n: len(v) < n, "shorter than {}"),
    ("maxLength", lambda v, n: len(v) > n, "longer than {}"),
    ("pattern", lambda v, p: not re.search(p, v), "does not match {}"),
)


def _bound_errors(v: Any, s: Mapping[str, Any], at: str, bounds: tuple[_Bound, ...]) -> list[str]:
    where = at or "(message)"
    return [
        f"{where}: {message.format(s[key])}"
        for key, fails, message in bounds
        if key in s and fails(v, s[key])
    ]


def _check_object(
    v: dict[Any, Any], s: Mapping[str, Any], root: Mapping[str, Any], at: str
) -> list[str]:
    props = s.get("properties", {})
    extra = s.get("additionalProperties", True)
    names = s.get("propertyNames")
    errors = [
        f"{at + '.' if at else ''}{key}: required" for key in s.get("required", []) if key not in v
    ]
    if "maxProperties" in s and len(v) > s["maxProperties"]:
        errors.append(f"{at or '(message)'}: more than {s['maxProperties']} fields")
    for key, val in v.items():
        sub_at = f"{at}.{str(key)[:64]}" if at else str(key)[:64]
        if names is not None:
            errors.extend(_check(key, names, root, f"{sub_at} (name)"))
        if key in props:
            errors.extend(_check(val, props[key], root, sub_at))
        elif extra is False:
            errors.append(f"{sub_at}: unknown field")
        elif isinstance(extra, Mapping):
            errors.extend(_check(val, extra, root, sub_at))
    return errors


def _check_array(v: list[Any], s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> list[str]:
    errors = _bound_errors(v, s, at, _ARRAY_BOUNDS)
    if "items" in s:
        for i, item in enumerate(v):
            errors.extend(_check(item, s["items"], root, f"{at}[{i}]"))
    return errors


def _check_number(
    v: int | float, s: Mapping[str, Any], root: Mapping[str, Any], at: str
) -> list[str]:
    where = at or "(message)"
    if isinstance(v, int) and not _fits_float(v):
        return [f"{where}: number too large"]  # no field needs one; refuse, never crash
    errors = [] if math.isfinite(v) else [f"{where}: must be finite"]
    return errors + _bound_errors(v, s, at, _NUMBER_BOUNDS)


def _check_string(v: str, s: Mapping[str, Any], root: Mapping[str, Any], at: str) -> list[str]:
    return _bound_errors(v, s, at, _STRING_BOUNDS)


_KIND_CHECKS: tuple[tuple[Callable[[Any], bool], _KindCheck], ...] = (
    (_TYPES["object"], _check_object),
    (_TYPES["array"], _check_array),
    (_TYPES["number"], _check_number),
    (_TYPES["string"], _check_string),
)
"""The keywords that apply to a value of each kind (none for booleans and null)."""


def _fits_float(v: int) -> bool:
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _json_type(v: Any) -> str:
    for name, test in _TYPES.items():
        if name != "number" and test(v):
            return name
    return "number" if _TYPES["number"](v) else type(v).__name__
