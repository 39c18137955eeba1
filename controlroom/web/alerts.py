"""The alert list and its live feed (server-sent events), the alert page, evidence, review and
the evidence bundle."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from controlroom import bundle, crypto, datasets, db, privacy, retention, users
from controlroom.web import thumbs
from controlroom.web.deps import (
    UNDO_WINDOW_S,
    State,
    User,
    flash,
    fmt_time,
    iso_time,
    parse_when,
    protected_router,
    remote,
    render,
    session_id,
)
from controlroom.web.errorpages import wants_html

log = logging.getLogger(__name__)

STATUSES = ("new", "confirmed", "rejected", "purged")
KEEPALIVE_S = 15.0

router = protected_router()
_a = db.alerts
SUMMARY_COLUMNS = (
    _a.c.id,
    _a.c.alert_id,
    _a.c.unit,
    _a.c.time,
    _a.c.time_s,
    _a.c.score,
    _a.c.status,
    _a.c.lat,
    _a.c.lon,
    _a.c.received_at,
    _a.c.frame_sha256,
    _a.c.evidence_deleted_at,
    _a.c.camera,
    _a.c.vehicle_track_id,
    _a.c.vehicle_label,
)


def alert_summary(r: Any) -> dict[str, Any]:
    """An alert as the list, the queue and the live feed show it (times already formatted, so
    the browser shows them exactly as the server-rendered rows)."""
    return {
        "id": r.id,
        "alert_id": r.alert_id,
        "unit": r.unit,
        "time": r.time,
        "time_s": r.time_s,
        "time_local": fmt_time(r.time_s),
        "time_iso": iso_time(r.time_s) if r.time_s is not None else "",
        "score": r.score,
        "status": r.status,
        "lat": r.lat,
        "lon": r.lon,
        "received_at": r.received_at,
        "received": fmt_time(r.received_at),
        "received_iso": iso_time(r.received_at),
        "has_evidence": _has_evidence(r),
        "camera": getattr(r, "camera", None),
        "vehicle": vehicle_words(
            getattr(r, "vehicle_track_id", None), getattr(r, "vehicle_label", None)
        ),
    }


def vehicle_words(track_id: int | None, label: str | None) -> str | None:
    """A tracked vehicle as the list and the box's caption name it: ``#42 car``."""
    if track_id is None:
        return None
    return f"#{track_id} {label}" if label else f"#{track_id}"


def _has_evidence(r: Any) -> bool:
    return (
        bool(getattr(r, "frame_sha256", None)) and getattr(r, "evidence_deleted_at", None) is None
    )


def query_alerts(
    conn: Connection,
    *,
    unit: str | None,
    status: str | None,
    since_s: float | None,
    until_s: float | None,
    after_id: int = 0,
    limit: int = 100,
    camera: str | None = None,
) -> list[Any]:
    a = db.alerts
    q = sa.select(*SUMMARY_COLUMNS)
    if unit:
        q = q.where(a.c.unit == unit)
    if camera:
        q = q.where(a.c.camera == camera)
    q = q.where(a.c.status == status) if status else q.where(a.c.status != "purged")
    if since_s is not None:
        q = q.where(a.c.time_s >= since_s)
    if until_s is not None:
        q = q.where(a.c.time_s <= until_s)
    # after_id: the live list's "what is new since", oldest first; else newest first
    q = q.where(a.c.id > after_id).order_by(a.c.id.asc()) if after_id else q.order_by(a.c.id.desc())
    return list(conn.execute(q.limit(limit)))


def load_alert(conn: Connection, alert_id: str) -> Any:
    row = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == alert_id)).first()
    if row is None:
        raise HTTPException(404, f"no alert {alert_id[:90]!r}")
    return row


def load_evidence(conn: Connection, row: Any) -> bytes | None:
    """The evidence frame whose SHA-256 matches the signed alert; None if there is none."""
    if row.frame_sha256 is None or row.evidence_deleted_at is not None:
        return None
    jpeg = conn.execute(
        sa.select(db.evidence.c.jpeg).where(
            db.evidence.c.alert_id == row.alert_id, db.evidence.c.sha256 == row.frame_sha256
        )
    ).scalar()
    return bytes(jpeg) if jpeg is not None else None


_CAMERA_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_filters(
    status: str, since: str, until: str, camera: str = ""
) -> tuple[float | None, float | None]:
    """The list's time bounds; HTTPException(400) saying what is wrong with a filter."""
    if status and status not in STATUSES:
        raise HTTPException(400, f"Status must be one of {', '.join(STATUSES)}.")
    if camera and not _CAMERA_ID.fullmatch(camera):
        raise HTTPException(400, "Camera must be a camera id: 1-32 letters, digits, '-' or '_'.")
    since_s, until_s = parse_when(since, "From"), parse_when(until, "To")
    if since_s is not None and until_s is not None and since_s > until_s:
        raise HTTPException(
            400,
            f"From ({since}) is after To ({until}): no alert can match. Swap them, or clear one.",
        )
    return since_s, until_s


def filter_choices(conn: Connection) -> tuple[list[str], list[str]]:
    """The units and the cameras (ids seen on stored alerts) the list's filters offer."""
    unit_ids = [
        r[0] for r in conn.execute(sa.select(db.units.c.unit_id).order_by(db.units.c.unit_id))
    ]
    cameras = [
        r[0]
        for r in conn.execute(
            sa.select(db.alerts.c.camera)
            .where(db.alerts.c.camera.is_not(None))
            .distinct()
            .order_by(db.alerts.c.camera)
        )
    ]
    return unit_ids, cameras


@router.get("/", response_class=HTMLResponse)
def alert_list(
    request: Request,
    st: State,
    unit: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    camera: str = "",
) -> HTMLResponse:
    f = {"unit": unit, "status": status, "since": since, "until": until, "camera": camera}
    try:
        since_s, until_s = parse_filters(status, since, until, camera)
    except HTTPException as e:
        if not wants_html(request):
            raise
        with st.engine.connect() as conn:
            unit_ids, cameras = filter_choices(conn)
        resp = render(
            request,
            "alerts.html",
            alerts=[],
            units=unit_ids,
            cameras=cameras,
            statuses=STATUSES,
            last_id=0,
            f=f,
            filter_error=e.detail,
        )
        resp.status_code = 400
        return resp
    with st.engine.connect() as conn:
        rows = query_alerts(
            conn,
            unit=unit or None,
            status=status or None,
            since_s=since_s,
            until_s=until_s,
            limit=st.cfg.web.page_size,
            camera=camera or None,
        )
        unit_ids, cameras = filter_choices(conn)
        last_id = max((r.id for r in rows), default=0)
        if not rows:
            last_id = int(conn.execute(sa.select(sa.func.max(db.alerts.c.id))).scalar() or 0)
    return render(
        request,
        "alerts.html",
        alerts=[alert_summary(r) for r in rows],
        units=unit_ids,
        cameras=cameras,
        statuses=STATUSES,
        last_id=last_id,
        f=f,
        filter_error=None,
    )


@router.get("/events")
async def events(
    request: Request,
    st: State,
    after: int = 0,
    unit: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    camera: str = "",
) -> StreamingResponse:
    """New alerts as server-sent events, found by polling the database every
    ``web.live_poll_s``; the polls run in the thread pool, never on the event loop. Each poll
    also checks the session again: once it has ended (log-out elsewhere, new password,
    ``disable-user``, expiry) the stream sends ``event: logout`` and closes."""
    since_s, until_s = parse_filters(status, since, until, camera)
    poll_s = st.cfg.web.live_poll_s
    sid = session_id(request) or ""

    def poll(after_id: int) -> tuple[list[Any], int] | None:
        """New alerts and the unreviewed count, or None when the session is no longer
        valid."""
        if users.session_user(st.engine, sid, now=time.time()) is None:
            return None
        with st.engine.connect() as conn:
            rows = query_alerts(
                conn,
                unit=unit or None,
                status=status or None,
                since_s=since_s,
                until_s=until_s,
                after_id=after_id,
                limit=200,
                camera=camera or None,
            )
            n = conn.execute(
                sa.select(sa.func.count()).select_from(db.alerts).where(db.alerts.c.status == "new")
            ).scalar()
        return rows, int(n or 0)

    async def stream() -> AsyncIterator[str]:
        last = after
        quiet_s = 0.0
        count = -1
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            got = await run_in_threadpool(poll, last)
            if got is None:
                yield "event: logout\ndata: {}\n\n"
                return
            rows, n = got
            for r in rows:
                last = max(last, r.id)
                yield f"event: alert\nid: {r.id}\ndata: {json.dumps(alert_summary(r))}\n\n"
            if n != count:  # reviews by anyone, new alerts, retention
                count = n
                yield f"event: count\ndata: {n}\n\n"
                rows = rows or [None]
            quiet_s = 0.0 if rows else quiet_s + poll_s
            if quiet_s >= KEEPALIVE_S:
                quiet_s = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def queue_neighbours(
    conn: Connection, alert_db_id: int, unit: str | None
) -> tuple[str | None, str | None, int, int]:
    """(previous, next) unreviewed alert around ``alert_db_id`` in queue order (oldest first),
    this alert's place in the queue (1-based; 0 if it is not in it) and the queue's length."""
    a = db.alerts
    base = [a.c.status == "new"]
    if unit:
        base.append(a.c.unit == unit)
    prev = conn.execute(
        sa.select(a.c.alert_id).where(*base, a.c.id < alert_db_id).order_by(a.c.id.desc()).limit(1)
    ).scalar()
    nxt = conn.execute(
        sa.select(a.c.alert_id).where(*base, a.c.id > alert_db_id).order_by(a.c.id.asc()).limit(1)
    ).scalar()
    before = (
        conn.execute(
            sa.select(sa.func.count()).select_from(a).where(*base, a.c.id < alert_db_id)
        ).scalar()
        or 0
    )
    total = conn.execute(sa.select(sa.func.count()).select_from(a).where(*base)).scalar() or 0
    here = conn.execute(sa.select(a.c.id).where(*base, a.c.id == alert_db_id)).scalar()
    return prev, nxt, (before + 1 if here is not None else 0), int(total)


def next_in_queue(conn: Connection, alert_db_id: int, unit: str | None) -> str | None:
    """Where to go after deciding an alert: the next unreviewed one, else the nearest
    earlier one still waiting, else None (the queue is empty)."""
    prev, nxt, _, _ = queue_neighbours(conn, alert_db_id, unit)
    return nxt or prev


def roi_box(alert: dict[str, Any] | None) -> list[float] | None:
    """The ROI rectangle ``[x, y, w, h]`` in frame pixels if the alert carries one
    (``roi_box``); alerts today carry only the ROI's id, so usually None."""
    box = (alert or {}).get("roi_box")
    if (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and v >= 0 for v in box)
        and box[2] > 0
        and box[3] > 0
    ):
        return [float(v) for v in box]
    return None


def vehicle_view(alert: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tracked vehicle the alert carries (``vehicle``), for the alert page: its box in
    frame pixels, track id, label, frames and the caption ``#42 car``; None without one."""
    v = (alert or {}).get("vehicle")
    if not isinstance(v, dict):
        return None
    box = roi_box({"roi_box": v.get("box")})
    track_id = v.get("track_id")
    if box is None or not isinstance(track_id, int):
        return None
    label = str(v.get("label") or "")
    return {
        "box": box,
        "track_id": track_id,
        "label": label,
        "frames": v.get("frames"),
        "words": vehicle_words(track_id, label),
    }


def load_crop(conn: Connection, row: Any) -> bytes | None:
    """The driver-window crop the unit sent with this alert (``crops`` table), if it is the
    one the signed alert names (its ``crop_sha256``); None until it has arrived."""
    alert = json.loads(row.payload) if row.payload else {}
    want = (alert.get("evidence") or {}).get("crop_sha256")
    if not want:
        return None
    c = db.crops
    jpeg = conn.execute(
        sa.select(c.c.jpeg).where(c.c.alert_id == row.alert_id, c.c.sha256 == want).limit(1)
    ).scalar()
    return bytes(jpeg) if jpeg is not None else None


def clip_type(row: Any) -> str | None:
    """The clip's media type as the signed alert names it (``video/webm`` or
    ``video/x-msvideo``); None if the alert has no clip."""
    alert = json.loads(row.payload) if row.payload else {}
    ev = alert.get("evidence") or {}
    return str(ev.get("clip_type") or "video/webm") if ev.get("clip_sha256") else None


def _clip_query(row: Any, column: Any) -> Any:
    """``column`` of the clip the signed alert names (its ``clip_sha256``), unless the alert
    has none or retention deleted its evidence (None then)."""
    if row.evidence_deleted_at is not None or not row.payload:
        return None
    want = (json.loads(row.payload).get("evidence") or {}).get("clip_sha256")
    if not want:
        return None
    c = db.clips
    return sa.select(column).where(c.c.alert_id == row.alert_id, c.c.sha256 == want).limit(1)


def load_clip(conn: Connection, row: Any) -> bytes | None:
    """The video clip the unit sent with this alert (``clips`` table), if it is the one the
    signed alert names and retention has not deleted the evidence; None otherwise."""
    q = _clip_query(row, db.clips.c.jpeg)
    data = conn.execute(q).scalar() if q is not None else None
    return bytes(data) if data is not None else None


def has_clip(conn: Connection, row: Any) -> bool:
    """Whether :func:`load_clip` would find the clip (without reading its megabytes)."""
    q = _clip_query(row, db.clips.c.id)
    return q is not None and conn.execute(q).first() is not None


def threshold_text(t: Any) -> str:
    """The threshold as an operator reads it: 0.453125 -> 0.45."""
    return f"{float(t):.2f}" if isinstance(t, int | float) else "—"


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request, st: State, unit: str = "") -> HTMLResponse:
    """Unreviewed alerts, oldest first, as a grid of thumbnails."""
    a = db.alerts
    with st.engine.connect() as conn:
        q = sa.select(*SUMMARY_COLUMNS).where(a.c.status == "new")
        if unit:
            q = q.where(a.c.unit == unit)
        rows = list(conn.execute(q.order_by(a.c.id.asc()).limit(st.cfg.web.page_size)))
        unit_ids = [
            r[0] for r in conn.execute(sa.select(db.units.c.unit_id).order_by(db.units.c.unit_id))
        ]
    return render(
        request,
        "queue.html",
        alerts=[alert_summary(r) for r in rows],
        units=unit_ids,
        unit=unit,
        page_size=st.cfg.web.page_size,
    )


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, st: State, alert_id: str, unit: str = "") -> HTMLResponse:
    return _alert_page(request, st, alert_id, unit=unit)


def _alert_page(
    request: Request,
    st: State,
    alert_id: str,
    *,
    unit: str,
    confirm_step: bool = False,
    note: str = "",
) -> HTMLResponse:
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        has_evidence = load_evidence(conn, row) is not None
        has_crop = load_crop(conn, row) is not None
        clip_here = has_clip(conn, row)
        prev, nxt, place, total = queue_neighbours(conn, row.id, unit or None)
        history = list(
            conn.execute(
                sa.select(db.audit).where(db.audit.c.target == alert_id).order_by(db.audit.c.at)
            )
        )
    alert = json.loads(row.payload) if row.payload else None
    fix = (alert or {}).get("fix")
    return render(
        request,
        "alert.html",
        row=row,
        alert=alert,
        has_evidence=has_evidence,
        has_crop=has_crop,
        has_clip=clip_here,
        clip_type=clip_type(row),
        fix=fix,
        history=history,
        roi_box=roi_box(alert),
        vehicle=vehicle_view(alert),
        camera=(alert or {}).get("camera"),
        threshold=threshold_text((alert or {}).get("threshold")),
        prev=prev,
        next=nxt,
        place=place,
        total=total,
        unit=unit,
        qs=_unit_qs(unit),
        confirm_step=confirm_step,
        note=note,
        tile_url=st.cfg.web.tile_url,
        tile_attribution=st.cfg.web.tile_attribution,
        blurred=st.cfg.privacy.blur != "off",
        due=retention.alert_due(row, st.cfg.retention),
        may_see_original=st.cfg.privacy.may_see_original(
            getattr(request.state, "user", None) or ""
        ),
    )


NO_EVIDENCE = "no verified evidence for this alert (not received yet, or deleted by retention)"


def shown_frame(st: Any, row: Any, jpeg: bytes) -> bytes | None:
    """The evidence frame as the dashboard shows it: redacted unless ``[privacy] blur`` is
    off (cached by the frame's SHA-256); None if it does not decode."""
    if st.cfg.privacy.blur == "off":
        return jpeg
    shown: bytes | None = st.redacted.get(row.frame_sha256)
    if shown is None:
        box = roi_box(json.loads(row.payload) if row.payload else None)
        shown = privacy.redact_jpeg(jpeg, box)
        if shown is not None:
            st.redacted.put(row.frame_sha256, shown)
    return shown


@router.get("/alerts/{alert_id}/evidence.jpg")
def evidence_jpg(st: State, user: User, alert_id: str) -> Response:
    """The frame as every user sees it (see :func:`shown_frame`)."""
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        jpeg = load_evidence(conn, row)
    if jpeg is None:
        raise HTTPException(404, NO_EVIDENCE)
    shown = shown_frame(st, row, jpeg)
    if shown is None:
        raise HTTPException(404, "the evidence frame does not decode")
    return Response(shown, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def need_original_viewer(st: Any, user: str, what: str) -> None:
    """403 unless ``user`` may see originals (``[privacy] original_viewers``, or blur off)."""
    if not st.cfg.privacy.may_see_original(user):
        raise HTTPException(
            403,
            f"{what} for the users named in [privacy] original_viewers; ask one of them "
            "(each view and export is audited)",
        )


@router.get("/alerts/{alert_id}/original.jpg")
def original_jpg(request: Request, st: State, user: User, alert_id: str) -> Response:
    """The frame exactly as the unit signed it, for ``[privacy] original_viewers``; audited."""
    need_original_viewer(st, user, "the unblurred frame is")
    with st.engine.begin() as conn:
        row = load_alert(conn, alert_id)
        jpeg = load_evidence(conn, row)
        if jpeg is None:
            raise HTTPException(404, NO_EVIDENCE)
        db.record_audit(
            conn, username=user, action="view_original", target=alert_id, remote=remote(request)
        )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


NO_CLIP = "no clip for this alert (the unit has not sent it, or retention deleted it)"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(request: Request, size: int) -> tuple[int, int] | None:
    """The one byte range ``(start, end)`` (inclusive) a ``Range`` header asks for, clamped to
    ``size``; None without one (or for forms this server ignores: several ranges, other
    units), which means the whole body. Raises 416 for a range outside the body."""
    found = _RANGE.fullmatch(request.headers.get("range", "").strip())
    if found is None or found[1] == found[2] == "":
        return None
    if found[1] == "":  # the last N bytes
        start, end = max(0, size - int(found[2])), size - 1
    else:
        start = int(found[1])
        end = min(size - 1, int(found[2])) if found[2] else size - 1
    if start >= size or start > end:
        raise HTTPException(416, f"the clip is {size} bytes; that range is outside it")
    return start, end


def media_response(request: Request, data: bytes, media_type: str, **headers: str) -> Response:
    """``data`` whole, or the part a ``Range`` header asks for (206): browsers fetch video in
    ranges to seek."""
    headers = {"Cache-Control": "no-store", "Accept-Ranges": "bytes", **headers}
    part = byte_range(request, len(data))
    if part is None:
        return Response(data, media_type=media_type, headers=headers)
    start, end = part
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(data[start : end + 1], status_code=206, media_type=media_type, headers=headers)


def shown_clip(st: Any, row: Any, clip: bytes, frame: bytes | None) -> tuple[bytes, str] | None:
    """The clip as the dashboard shows it and its media type: redacted and re-encoded as WebM
    unless ``[privacy] blur`` is off (cached by the clip's SHA-256); None if it does not
    decode."""
    if st.cfg.privacy.blur == "off":
        return clip, clip_type(row) or "video/webm"
    key = hashlib.sha256(clip).hexdigest()
    shown: bytes | None = st.redacted_clips.get(key)
    if shown is None:
        box = roi_box(json.loads(row.payload) if row.payload else None)
        size = privacy.jpeg_size(frame) if frame is not None else None
        shown = privacy.redact_clip(clip, box, size)
        if shown is None:
            return None
        st.redacted_clips.put(key, shown)
    return shown, "video/webm"


@router.get("/alerts/{alert_id}/clip")
def clip_video(request: Request, st: State, user: User, alert_id: str) -> Response:
    """The clip as every user sees it (see :func:`shown_clip`)."""
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        clip = load_clip(conn, row)
        frame = load_evidence(conn, row) if clip is not None else None
    if clip is None:
        raise HTTPException(404, NO_CLIP)
    shown = shown_clip(st, row, clip, frame)
    if shown is None:
        raise HTTPException(404, "the clip does not decode")
    return media_response(request, shown[0], shown[1])


@router.get("/alerts/{alert_id}/original-clip")
def original_clip(request: Request, st: State, user: User, alert_id: str) -> Response:
    """The clip exactly as the unit signed it, for ``[privacy] original_viewers``; audited."""
    need_original_viewer(st, user, "the unblurred clip is")
    with st.engine.begin() as conn:
        row = load_alert(conn, alert_id)
        clip = load_clip(conn, row)
        if clip is None:
            raise HTTPException(404, NO_CLIP)
        part = byte_range(request, len(clip))
        if part is None or part[0] == 0:  # one view, however many ranges the player fetches
            db.record_audit(
                conn,
                username=user,
                action="view_original_clip",
                target=alert_id,
                remote=remote(request),
            )
    ext = "avi" if clip_type(row) == "video/x-msvideo" else "webm"
    return media_response(
        request,
        clip,
        clip_type(row) or "video/webm",
        **{"Content-Disposition": f'inline; filename="{row.alert_id}.{ext}"'},
    )


@router.get("/alerts/{alert_id}/thumb.jpg")
def thumb_jpg(request: Request, st: State, alert_id: str) -> Response:
    """The evidence frame scaled down for the queue. Scaled once per process (LRU by the
    frame's SHA-256); the browser revalidates each time (ETag), so a frame that retention
    deleted is never shown from a cache."""
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        present = (
            row.frame_sha256 is not None
            and row.evidence_deleted_at is None
            and conn.execute(
                sa.select(db.evidence.c.id).where(
                    db.evidence.c.alert_id == row.alert_id, db.evidence.c.sha256 == row.frame_sha256
                )
            ).first()
            is not None
        )
        if not present:
            raise HTTPException(404, NO_EVIDENCE)
        etag = f'"{row.frame_sha256[:32]}-{thumbs.WIDTH}"'
        headers = {"Cache-Control": "private, no-cache", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        small = st.thumbs.get(row.frame_sha256)
        if small is None:
            jpeg = load_evidence(conn, row)
            shown = shown_frame(st, row, jpeg) if jpeg is not None else None
            small = thumbs.scale_jpeg(shown) if shown is not None else None
            if small is None:
                raise HTTPException(404, "the evidence frame does not decode")
            st.thumbs.put(row.frame_sha256, small)
    return Response(small, media_type="image/jpeg", headers=headers)


@router.get("/alerts/{alert_id}/crop.jpg")
def crop_jpg(st: State, alert_id: str) -> Response:
    """The ROI crop, once units send it (see :func:`load_crop`); until then always 404."""
    with st.engine.connect() as conn:
        jpeg = load_crop(conn, load_alert(conn, alert_id))
    if jpeg is None:
        raise HTTPException(
            404, "no crop for this alert: the unit keeps the crop and has not sent it"
        )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _after_decision(request: Request, conn: Connection, row: Any, unit: str) -> str:
    nxt = next_in_queue(conn, row.id, unit or None)
    qs = _unit_qs(unit)
    return f"/alerts/{nxt}{qs}" if nxt else f"/queue{qs}"


def _unit_qs(unit: str) -> str:
    return f"?{urlencode({'unit': unit})}" if unit else ""


def remember_undo(request: Request, ids: list[str], text: str) -> None:
    request.session["undo"] = {
        "ids": ids[:UNDO_MAX],
        "text": text[:300],
        "until": time.time() + UNDO_WINDOW_S,
    }


@router.post("/alerts/{alert_id}/review", response_model=None)
def review(
    request: Request,
    st: State,
    user: User,
    alert_id: str,
    action: str = Form(...),
    note: str = Form(""),
    sure: str = Form(""),
    unit: str = Form(""),
) -> Response:
    """Confirm (it starts a prosecution, so it needs the second step: ``sure=yes``) or
    reject a new alert; then on to the next unreviewed one. The decision can be undone by
    its operator for :data:`UNDO_WINDOW_S` seconds (``/review/undo``)."""
    if action not in ("confirm", "reject"):
        raise HTTPException(400, "action must be confirm or reject")
    if action == "confirm" and sure != "yes":
        if not wants_html(request):
            raise HTTPException(400, "confirming starts a prosecution: repeat with sure=yes")
        return _alert_page(request, st, alert_id, unit=unit, confirm_step=True, note=note)
    status = "confirmed" if action == "confirm" else "rejected"
    with st.engine.begin() as conn:
        res = conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == alert_id, db.alerts.c.status == "new")
            .values(
                status=status, reviewed_by=user, reviewed_at=time.time(), review_note=note[:2000]
            )
        )
        row = load_alert(conn, alert_id)
        if res.rowcount != 1:
            by = f" by {row.reviewed_by} at {fmt_time(row.reviewed_at)}" if row.reviewed_by else ""
            raise HTTPException(
                409, f"alert {alert_id} is already {row.status}{by}; nothing was changed"
            )
        db.record_audit(
            conn,
            username=user,
            action=status,
            target=alert_id,
            detail=note[:2000] or None,
            remote=remote(request),
        )
        datasets.label_review(conn, alert_id)  # the review is a label (issue 18)
        go = _after_decision(request, conn, row, unit)
    remember_undo(request, [alert_id], f"{status.capitalize()} {alert_id}.")
    return RedirectResponse(go, status_code=303)


UNDO_MAX = 100  # most alerts one bulk decision (and so one undo) covers


@router.post("/queue/reject")
def bulk_reject(
    request: Request,
    st: State,
    user: User,
    alert_id: Annotated[list[str] | None, Form()] = None,
    note: str = Form(""),
    unit: str = Form(""),
) -> RedirectResponse:
    """Reject the selected alerts (those still new) in one go; each is audited."""
    ids = list(dict.fromkeys(alert_id or []))
    if not ids:
        raise HTTPException(400, "select at least one alert to reject")
    if len(ids) > UNDO_MAX:
        raise HTTPException(400, f"at most {UNDO_MAX} alerts at a time")
    now, done = time.time(), []
    with st.engine.begin() as conn:
        for aid in ids:
            res = conn.execute(
                db.alerts.update()
                .where(db.alerts.c.alert_id == aid, db.alerts.c.status == "new")
                .values(
                    status="rejected",
                    reviewed_by=user,
                    reviewed_at=now,
                    review_note=note[:2000] or None,
                )
            )
            if res.rowcount == 1:
                done.append(aid)
                datasets.label_review(conn, aid)
                db.record_audit(
                    conn,
                    username=user,
                    action="rejected",
                    target=aid,
                    detail=f"bulk reject of {len(ids)}" + (f": {note[:2000]}" if note else ""),
                    remote=remote(request),
                )
    skipped = len(ids) - len(done)
    if done:
        remember_undo(
            request,
            done,
            f"Rejected {len(done)} alert{'s' if len(done) > 1 else ''}"
            + (f" ({skipped} no longer new: reviewed meanwhile)." if skipped else "."),
        )
    else:
        flash(request, "error", "None rejected: none of them is new any more.")
    return RedirectResponse(f"/queue{_unit_qs(unit)}", status_code=303)


@router.post("/review/undo")
def undo(
    request: Request, st: State, user: User, alert_id: Annotated[list[str] | None, Form()] = None
) -> RedirectResponse:
    """Undo one's own decision(s) within :data:`UNDO_WINDOW_S` of making them: the alert is
    new again, and the audit log records the undo (the decision's own entry stays). Not
    after an evidence bundle was exported, and not someone else's decision."""
    ids = list(dict.fromkeys(alert_id or []))[:UNDO_MAX]
    if not ids:
        raise HTTPException(400, "nothing to undo")
    now, undone, refused = time.time(), [], []
    a = db.alerts
    with st.engine.begin() as conn:
        for aid in ids:
            row = load_alert(conn, aid)
            exported = (
                conn.execute(
                    sa.select(db.audit.c.id).where(
                        db.audit.c.action == "export",
                        db.audit.c.target == aid,
                        db.audit.c.at >= (row.reviewed_at or 0),
                    )
                ).first()
                is not None
            )
            res = (
                None
                if exported
                else conn.execute(
                    a.update()
                    .where(
                        a.c.alert_id == aid,
                        a.c.status.in_(("confirmed", "rejected")),
                        a.c.reviewed_by == user,
                        a.c.reviewed_at >= now - UNDO_WINDOW_S,
                        a.c.evidence_deleted_at.is_(None),
                    )
                    .values(status="new", reviewed_by=None, reviewed_at=None, review_note=None)
                )
            )
            if res is not None and res.rowcount == 1:
                undone.append(aid)
                datasets.unlabel_review(conn, aid)  # and so is its undo
                db.record_audit(
                    conn,
                    username=user,
                    action="undo",
                    target=aid,
                    detail=f"{row.status} by {row.reviewed_by} undone "
                    f"{now - (row.reviewed_at or now):.1f} s after; new again",
                    remote=remote(request),
                )
            else:
                refused.append(aid)
    request.session.pop("undo", None)
    if refused and not undone:
        raise HTTPException(
            409,
            f"cannot undo {', '.join(refused[:5])}: only your own "
            f"decision, within {UNDO_WINDOW_S:.0f} s, before any export",
        )
    flash(
        request,
        "ok",
        f"Undone: {', '.join(undone[:5])}"
        + (f" and {len(undone) - 5} more" if len(undone) > 5 else "")
        + (" is" if len(undone) == 1 else " are")
        + " unreviewed again."
        + (f" Could not undo {len(refused)} (too late or not yours)." if refused else ""),
    )
    return RedirectResponse(
        f"/alerts/{undone[0]}" if len(undone) == 1 else "/queue", status_code=303
    )


@router.get("/alerts/{alert_id}/bundle.zip")
def export_bundle(request: Request, st: State, user: User, alert_id: str) -> Response:
    need_original_viewer(st, user, "the court bundle holds the unblurred frame: it is")
    with st.engine.begin() as conn:
        row = load_alert(conn, alert_id)
        if row.status != "confirmed":
            raise HTTPException(409, "only a confirmed alert can be exported")
        jpeg = load_evidence(conn, row)
        if jpeg is None or row.payload is None:
            raise HTTPException(409, "this alert has no verified evidence to export")
        clip = load_clip(conn, row)
        key_b64 = conn.execute(
            sa.select(db.units.c.public_key).where(db.units.c.unit_id == row.unit)
        ).scalar()
        if key_b64 is None:
            raise HTTPException(409, f"unit {row.unit} is no longer registered")
        db.record_audit(
            conn, username=user, action="export", target=alert_id, remote=remote(request)
        )
    name = f"phonewatch-{alert_id}.zip"
    data = bundle.make_bundle(
        alert_payload=row.payload.encode("utf-8"),
        jpeg=jpeg,
        public_key_pem=crypto.public_pem(crypto.parse_public_key(key_b64)),
        review={
            "alert_id": alert_id,
            "status": row.status,
            "reviewed_by": row.reviewed_by,
            "reviewed_at": row.reviewed_at,
            "note": row.review_note,
            "received_at": row.received_at,
            "exported_by": user,
            "exported_at": time.time(),
        },
        zipname=name,
        clip=clip,
    )
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
