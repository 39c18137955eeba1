"""The alert list and its live feed (server-sent events), the alert page, evidence, review and
the evidence bundle."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from controlroom import bundle, crypto, db, users
from controlroom.web.deps import (
    State,
    User,
    fmt_time,
    parse_when,
    protected_router,
    remote,
    render,
    session_id,
)

log = logging.getLogger(__name__)

STATUSES = ("new", "confirmed", "rejected", "purged")
KEEPALIVE_S = 15.0

router = protected_router()


def alert_summary(r: Any) -> dict[str, Any]:
    return {"id": r.id, "alert_id": r.alert_id, "unit": r.unit, "time": r.time,
            "score": r.score, "status": r.status, "lat": r.lat, "lon": r.lon,
            "received": fmt_time(r.received_at)}


def query_alerts(conn: Connection, *, unit: str | None, status: str | None,
                 since_s: float | None, until_s: float | None, after_id: int = 0,
                 limit: int = 100) -> list[Any]:
    a = db.alerts
    q = sa.select(a.c.id, a.c.alert_id, a.c.unit, a.c.time, a.c.score, a.c.status, a.c.lat,
                  a.c.lon, a.c.received_at)
    if unit:
        q = q.where(a.c.unit == unit)
    q = q.where(a.c.status == status) if status else q.where(a.c.status != "purged")
    if since_s is not None:
        q = q.where(a.c.time_s >= since_s)
    if until_s is not None:
        q = q.where(a.c.time_s <= until_s)
    # after_id: the live list's "what is new since", oldest first; else newest first
    q = q.where(a.c.id > after_id).order_by(a.c.id.asc()) if after_id else q.order_by(
        a.c.id.desc())
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
    jpeg = conn.execute(sa.select(db.evidence.c.jpeg).where(
        db.evidence.c.alert_id == row.alert_id,
        db.evidence.c.sha256 == row.frame_sha256)).scalar()
    return bytes(jpeg) if jpeg is not None else None


@router.get("/", response_class=HTMLResponse)
def alert_list(request: Request, st: State, unit: str = "", status: str = "", since: str = "",
               until: str = "") -> HTMLResponse:
    if status and status not in STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
    with st.engine.connect() as conn:
        rows = query_alerts(conn, unit=unit or None, status=status or None,
                            since_s=parse_when(since), until_s=parse_when(until),
                            limit=st.cfg.web.page_size)
        unit_ids = [r[0] for r in conn.execute(sa.select(db.units.c.unit_id)
                                               .order_by(db.units.c.unit_id))]
        last_id = max((r.id for r in rows), default=0)
        if not rows:
            last_id = int(conn.execute(sa.select(sa.func.max(db.alerts.c.id))).scalar() or 0)
    return render(request, "alerts.html", alerts=[alert_summary(r) for r in rows],
                  units=unit_ids, statuses=STATUSES, last_id=last_id,
                  f={"unit": unit, "status": status, "since": since, "until": until})


@router.get("/events")
async def events(request: Request, st: State, after: int = 0, unit: str = "", status: str = "",
                 since: str = "", until: str = "") -> StreamingResponse:
    """New alerts as server-sent events, found by polling the database every
    ``web.live_poll_s``; the polls run in the thread pool, never on the event loop. Each poll
    also checks the session again: once it has ended (log-out elsewhere, new password,
    ``disable-user``, expiry) the stream sends ``event: logout`` and closes."""
    since_s, until_s = parse_when(since), parse_when(until)
    poll_s = st.cfg.web.live_poll_s
    sid = session_id(request) or ""

    def poll(after_id: int) -> list[Any] | None:
        """New alerts, or None when the session is no longer valid."""
        if users.session_user(st.engine, sid, now=time.time()) is None:
            return None
        with st.engine.connect() as conn:
            return query_alerts(conn, unit=unit or None, status=status or None,
                                since_s=since_s, until_s=until_s, after_id=after_id, limit=200)

    async def stream() -> AsyncIterator[str]:
        last = after
        quiet_s = 0.0
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            rows = await run_in_threadpool(poll, last)
            if rows is None:
                yield "event: logout\ndata: {}\n\n"
                return
            for r in rows:
                last = max(last, r.id)
                yield f"event: alert\nid: {r.id}\ndata: {json.dumps(alert_summary(r))}\n\n"
            quiet_s = 0.0 if rows else quiet_s + poll_s
            if quiet_s >= KEEPALIVE_S:
                quiet_s = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, st: State, alert_id: str) -> HTMLResponse:
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        has_evidence = load_evidence(conn, row) is not None
        history = list(conn.execute(sa.select(db.audit).where(
            db.audit.c.target == alert_id).order_by(db.audit.c.at)))
    alert = json.loads(row.payload) if row.payload else None
    return render(request, "alert.html", row=row, alert=alert, has_evidence=has_evidence,
                  fix=(alert or {}).get("fix"), history=history,
                  tile_url=st.cfg.web.tile_url, tile_attribution=st.cfg.web.tile_attribution)


@router.get("/alerts/{alert_id}/evidence.jpg")
def evidence_jpg(st: State, user: User, alert_id: str) -> Response:
    with st.engine.connect() as conn:
        row = load_alert(conn, alert_id)
        jpeg = load_evidence(conn, row)
    if jpeg is None:
        raise HTTPException(404, "no verified evidence for this alert (not received yet, "
                            "or deleted by retention)")
    log.debug("%s viewed evidence of %s", user, alert_id)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/alerts/{alert_id}/review")
def review(request: Request, st: State, user: User, alert_id: str, action: str = Form(...),
           note: str = Form("")) -> RedirectResponse:
    if action not in ("confirm", "reject"):
        raise HTTPException(400, "action must be confirm or reject")
    status = "confirmed" if action == "confirm" else "rejected"
    with st.engine.begin() as conn:
        res = conn.execute(db.alerts.update().where(
            db.alerts.c.alert_id == alert_id, db.alerts.c.status == "new").values(
            status=status, reviewed_by=user, reviewed_at=time.time(), review_note=note[:2000]))
        if res.rowcount != 1:
            row = load_alert(conn, alert_id)
            raise HTTPException(409, f"alert {alert_id} is already {row.status}")
        db.record_audit(conn, username=user, action=status, target=alert_id,
                        detail=note[:2000] or None, remote=remote(request))
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


@router.get("/alerts/{alert_id}/bundle.zip")
def export_bundle(request: Request, st: State, user: User, alert_id: str) -> Response:
    with st.engine.begin() as conn:
        row = load_alert(conn, alert_id)
        if row.status != "confirmed":
            raise HTTPException(409, "only a confirmed alert can be exported")
        jpeg = load_evidence(conn, row)
        if jpeg is None or row.payload is None:
            raise HTTPException(409, "this alert has no verified evidence to export")
        key_b64 = conn.execute(sa.select(db.units.c.public_key).where(
            db.units.c.unit_id == row.unit)).scalar()
        if key_b64 is None:
            raise HTTPException(409, f"unit {row.unit} is no longer registered")
        db.record_audit(conn, username=user, action="export", target=alert_id,
                        remote=remote(request))
    name = f"phonewatch-{alert_id}.zip"
    data = bundle.make_bundle(
        alert_payload=row.payload.encode("utf-8"), jpeg=jpeg,
        public_key_pem=crypto.public_pem(crypto.parse_public_key(key_b64)),
        review={"alert_id": alert_id, "status": row.status, "reviewed_by": row.reviewed_by,
                "reviewed_at": row.reviewed_at, "note": row.review_note,
                "received_at": row.received_at, "exported_by": user,
                "exported_at": time.time()},
        zipname=name)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
