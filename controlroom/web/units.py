"""Units: their state and heartbeats, snapshots, and commands sent to them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection

from controlroom import commands, db
from controlroom.web.deps import State, User, flash, protected_router, remote, render

LIMITS = {"count_max": commands.COLLECT_COUNT_MAX, "interval_min": commands.COLLECT_INTERVAL_MIN_S,
          "interval_max": commands.COLLECT_INTERVAL_MAX_S,
          "mute_max_min": commands.MUTE_MAX_S // 60}

router = protected_router()


def snapshot_times(conn: Connection) -> dict[str, float]:
    q = sa.select(db.snapshots.c.unit, db.snapshots.c.received_at)
    return {r.unit: r.received_at for r in conn.execute(q)}


def load_unit(conn: Connection, unit_id: str) -> Any:
    row = conn.execute(sa.select(db.units).where(db.units.c.unit_id == unit_id)).first()
    if row is None:
        raise HTTPException(404, f"no registered unit {unit_id[:64]!r}")
    return row


def _broker(st: State) -> dict[str, bool]:
    return {"broker_connected": st.commander is not None and st.commander.is_connected,
            "commands_enabled": st.commander is not None}


@router.get("/units", response_class=HTMLResponse)
def units_page(request: Request, st: State) -> HTMLResponse:
    now = time.time()
    with st.engine.connect() as conn:
        rows = list(conn.execute(sa.select(db.units).order_by(db.units.c.unit_id)))
        snaps = snapshot_times(conn)
    out = []
    for r in rows:
        hb = json.loads(r.heartbeat) if r.heartbeat else {}
        hb_age = now - r.heartbeat_received_at if r.heartbeat_received_at else None
        online = r.status_state in ("online", "degraded") and (
            hb_age is None or hb_age < st.cfg.web.offline_after_s)
        out.append({"unit": r.unit_id, "key_id": r.key_id, "state": r.status_state or
                    "unknown", "online": online, "status_time": r.status_time,
                    "reason": r.status_reason, "software": r.software,
                    "heartbeat_age_s": hb_age, "hb": hb, "snapshot_at": snaps.get(r.unit_id)})
    return render(request, "units.html", units=out, limits=LIMITS, **_broker(st),
                  receiver=st.stats() if st.stats is not None else None)


@router.get("/units/{unit_id}", response_class=HTMLResponse)
def unit_page(request: Request, st: State, unit_id: str) -> HTMLResponse:
    with st.engine.connect() as conn:
        row = load_unit(conn, unit_id)
        snap = conn.execute(sa.select(db.snapshots.c.received_at, db.snapshots.c.size_bytes,
                                      db.snapshots.c.sha256, db.snapshots.c.request_id)
                            .where(db.snapshots.c.unit == unit_id)).first()
        history = list(conn.execute(sa.select(db.audit).where(
            db.audit.c.target == unit_id).order_by(db.audit.c.id.desc()).limit(20)))
    return render(request, "unit.html", u=row, snap=snap, history=history, limits=LIMITS,
                  **_broker(st))


@router.get("/units/{unit_id}/snapshot.jpg")
def snapshot_jpg(st: State, unit_id: str) -> Response:
    with st.engine.connect() as conn:
        row = conn.execute(sa.select(db.snapshots.c.jpeg, db.snapshots.c.received_at)
                           .where(db.snapshots.c.unit == unit_id)).first()
    if row is None:
        raise HTTPException(404, f"no snapshot from {unit_id[:64]!r} yet")
    return Response(bytes(row.jpeg), media_type="image/jpeg", headers={
        "Cache-Control": "no-store",
        "Last-Modified": datetime.fromtimestamp(row.received_at, UTC).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")})


def command_body(name: str, *, user: str, count: str, interval_s: str,
                 minutes: str) -> dict[str, Any]:
    """The payload of command ``name`` from the form's fields; CommandError if out of bounds."""
    if name == "snapshot":
        return commands.snapshot(user=user)
    if name == "collect":
        return commands.collect(count=commands.parse_int(count, "count"),
                                interval_s=commands.parse_float(interval_s, "interval"))
    mins = commands.parse_int(minutes, "minutes")
    if not 0 <= mins <= commands.MUTE_MAX_S // 60:
        raise commands.CommandError(f"minutes must be 0 (unmute) to {commands.MUTE_MAX_S // 60}")
    return commands.mute(duration_s=mins * 60)


@router.post("/units/{unit_id}/cmd/{name}")
def send_command(request: Request, st: State, user: User, unit_id: str, name: str,
                 count: str = Form(""), interval_s: str = Form("2"), minutes: str = Form(""),
                 back: str = Form("")) -> RedirectResponse:
    if name not in commands.NAMES:
        raise HTTPException(404, f"no command {name[:40]!r}; known: {', '.join(commands.NAMES)}")
    with st.engine.connect() as conn:
        load_unit(conn, unit_id)
    try:
        body = command_body(name, user=user, count=count, interval_s=interval_s,
                            minutes=minutes)
    except commands.CommandError as e:
        raise HTTPException(400, str(e)) from None
    if st.commander is None:
        sent = commands.Sent(False, "this dashboard has no MQTT connection; nothing was sent")
    else:
        sent = st.commander.publish_command(unit_id, name, body)
    with st.engine.begin() as conn:
        db.record_audit(conn, username=user, action=f"cmd_{name}", target=unit_id,
                        detail=json.dumps({"payload": body, "sent": sent.ok,
                                           "result": sent.detail}, sort_keys=True),
                        remote=remote(request))
    what = {"snapshot": "Snapshot request", "collect": f"Collect {body.get('count')} crops",
            "mute": ("Unmute" if body.get("duration_s") == 0 else
                     f"Mute for {minutes.strip()} min")}[name]
    if sent.ok:
        flash(request, "ok", f"{what} sent to {unit_id} (request {body['request_id']}).")
    else:
        flash(request, "error", f"{what} NOT sent to {unit_id}: {sent.detail}")
    return RedirectResponse(f"/units/{unit_id}" if back == "unit" else "/units", status_code=303)
