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

from controlroom import commands, db, rollout
from controlroom.web import models
from controlroom.web.deps import (
    State,
    User,
    flash,
    fmt_time,
    protected_router,
    remote,
    render,
)

LIMITS = {
    "count_max": commands.COLLECT_COUNT_MAX,
    "interval_min": commands.COLLECT_INTERVAL_MIN_S,
    "interval_max": commands.COLLECT_INTERVAL_MAX_S,
    "mute_max_min": commands.MUTE_MAX_S // 60,
}

router = protected_router()


def snapshot_times(conn: Connection) -> dict[str, float]:
    q = sa.select(db.snapshots.c.unit, db.snapshots.c.received_at)
    return {r.unit: r.received_at for r in conn.execute(q)}


def load_unit(conn: Connection, unit_id: str) -> Any:
    row = conn.execute(sa.select(db.units).where(db.units.c.unit_id == unit_id)).first()
    if row is None:
        raise HTTPException(404, f"no registered unit {unit_id[:64]!r}")
    return row


GPS_WORDS = {
    "fix_3d": "3D fix",
    "fix_2d": "2D fix",
    "3d-fix": "3D fix",
    "2d-fix": "2D fix",
    "fix": "fix",
    "stale": "fix too old",
    "no_fix": "no fix (receiver working)",
    "no_receiver": "no GPS receiver",
}
GPS_BAD = frozenset({"stale", "no_fix", "no_receiver"})
OUTBOX_WARN = 20  # alerts waiting on the unit before it counts as degraded
CPU_WARN_C, CPU_BAD_C = 70.0, 80.0
FPS_WARN = 2.0


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{round(s / 60)} min ago"
    if s < 172800:
        return f"{round(s / 3600)} h ago"
    return f"{round(s / 86400)} days ago"


def _liveness(r: Any, hb_age: float | None, offline_after_s: float) -> tuple[str, list[str]]:
    """online / degraded / offline from the status and the heartbeat's age, and why."""
    if r.status_state is None and r.heartbeat_received_at is None:
        return "offline", ["never heard from"]
    if r.status_state == "offline":
        why = f" ({r.status_reason})" if r.status_reason else ""
        return "offline", [f"it said it went offline{why}"]
    if hb_age is not None and hb_age > offline_after_s:
        return "offline", [f"no heartbeat for {_ago(hb_age).removesuffix(' ago')}"]
    if r.status_state == "degraded":
        return "degraded", [r.status_reason or "the unit reports itself degraded"]
    return "online", []


def _figures(hb: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The heartbeat's figures as (name, words, level), and the problems among them."""
    facts: list[tuple[str, str, str]] = []
    problems: list[str] = []
    fps = hb.get("fps")
    if fps is not None:
        facts.append(("Frame rate", f"{fps:.1f} frames/s", "warn" if fps < FPS_WARN else "good"))
        if fps < FPS_WARN:
            problems.append(f"only {fps:.1f} frames/s")
    dropped = hb.get("dropped_frames")
    if dropped is not None:
        facts.append(
            ("Dropped frames", f"{dropped} since start", "good" if dropped == 0 else "warn")
        )
    depth = hb.get("outbox_depth")
    if depth is not None:
        words = (
            "empty: everything sent"
            if depth == 0
            else f"{depth} alert{'s' if depth != 1 else ''} waiting to be sent"
        )
        facts.append(("Outbox", words, "warn" if depth >= OUTBOX_WARN else "good"))
        if depth >= OUTBOX_WARN:
            problems.append(f"{depth} alerts waiting to be sent")
    gps = hb.get("gps_state")
    if gps:
        facts.append(("GPS", GPS_WORDS.get(gps, str(gps)), "warn" if gps in GPS_BAD else "good"))
        if gps in GPS_BAD:
            problems.append(f"GPS: {GPS_WORDS[gps]}")
    temp = hb.get("cpu_temp_c")
    if temp is not None:
        level = "bad" if temp >= CPU_BAD_C else "warn" if temp >= CPU_WARN_C else "good"
        facts.append(
            ("CPU temperature", f"{temp:.1f} °C" + (" (hot)" if level != "good" else ""), level)
        )
        if level != "good":
            problems.append(f"CPU at {temp:.0f} °C")
    return facts, problems


CAMERA_LEVELS = {"running": "good", "starting": "warn", "degraded": "bad", "stopped": "bad"}


def camera_status(hb: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each camera of a multi-camera unit's last heartbeat (``cameras``, checked against the
    schema when it arrived) as a row for the Units page, and the problems among them (a
    degraded or stopped camera). Empty for single-camera and older units."""
    cams = hb.get("cameras")
    if not isinstance(cams, dict):
        return [], []
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for cam_id in sorted(cams):
        c = cams[cam_id] if isinstance(cams[cam_id], dict) else {}
        status = str(c.get("status") or "unknown")
        fps, error = c.get("fps"), c.get("last_error")
        level = CAMERA_LEVELS.get(status, "warn")
        rows.append(
            {
                "id": cam_id,
                "status": status,
                "level": level,
                "fps": f"{fps:.1f} frames/s" if isinstance(fps, int | float) else "—",
                "dropped": c.get("dropped", 0),
                "last_error": error or "",
            }
        )
        if level == "bad":
            problems.append(f"camera {cam_id} {status}" + (f": {error}" if error else ""))
    return rows, problems


def _vehicle_fact(hb: dict[str, Any]) -> list[tuple[str, str, str]]:
    v = hb.get("vehicles")
    if not isinstance(v, dict):
        return []
    rate = v.get("tracks_per_min")
    per_min = f"{rate:.1f} tracks/min" if isinstance(rate, int | float) else "no rate yet"
    return [("Vehicles", f"{v.get('active', 0)} tracked now, {per_min}", "good")]


def unit_health(r: Any, *, now: float, offline_after_s: float) -> dict[str, Any]:
    """A unit's health in plain words: ``state`` online / degraded / offline, why, and each
    figure of its last heartbeat with a level (good / warn / bad) for its colour. A unit that
    is up but whose last heartbeat shows a problem is degraded."""
    hb = json.loads(r.heartbeat) if r.heartbeat else {}
    hb_at = r.heartbeat_received_at
    hb_age = now - hb_at if hb_at else None
    state, reasons = _liveness(r, hb_age, offline_after_s)
    figures, problems = _figures(hb)
    figures += _vehicle_fact(hb)
    cameras, camera_problems = camera_status(hb)
    problems += camera_problems
    if state != "offline" and problems:
        state = "degraded"
        reasons += problems
    if state != "offline" and not reasons:
        reasons.append("working normally")
    last = (
        "Last heartbeat",
        f"{_ago(hb_age)} ({fmt_time(hb_at)})" if hb_age is not None else "never",
        "bad" if hb_age is None or hb_age > offline_after_s else "good",
    )
    why = "; ".join(reasons)
    return {
        "state": state,
        "why": why[:1].upper() + why[1:],
        "facts": [last, *figures],
        "cameras": cameras,
        "hb": hb,
        "heartbeat_age_s": hb_age,
        "heartbeat_at": hb_at,
    }


ROLLOUT_WORDS = {
    "offered": "offered",
    "unsent": "not sent",
    "receiving": "receiving",
    "received": "received, verifying",
    "refused": "refused",
    "installed": "installed",
    "shadow_started": "in shadow",
    "shadow_stopped": "shadow stopped",
    "promoted": "promoted",
    "rolled_back": "rolled back",
    "load_failed": "failed to load",
}


def _obj(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def model_facts(hb: dict[str, Any], ro: Any | None) -> dict[str, Any]:
    """The unit's models from its last heartbeat's ``model`` object (absent from older units)
    and its latest rollout (a ``rollouts`` row, or None), in words."""
    model = _obj(hb.get("model")) or {}
    live = _obj(model.get("live")) or {}
    shadow = _obj(model.get("shadow"))
    out: dict[str, Any] = {
        "live": f"{live.get('name', '')} {live.get('version', '')}".strip() or None,
        "state": model.get("state"),
        "shadow": None,
        "rollout": None,
    }
    if shadow is not None:
        agree = shadow.get("agreement")
        out["shadow"] = {
            "version": str(shadow.get("version", "?")),
            "sha256": str(shadow.get("sha256", "")),
            "agreement": None if agree is None else f"{100 * float(agree):.1f} %",
        }
    if ro is not None:
        progress = (
            f" ({ro.have}/{ro.chunk_count} chunks)"
            if ro.state == "receiving" and ro.have is not None
            else ""
        )
        out["rollout"] = {
            "version": ro.version,
            "mode": ro.mode,
            "state": ro.state,
            "words": ROLLOUT_WORDS.get(ro.state, ro.state) + progress,
            "detail": ro.detail or "",
            "at": ro.updated_at,
        }
    return out


COMMAND_WORDS = {"cmd_snapshot": "Snapshot", "cmd_collect": "Collect crops", "cmd_mute": "Mute"}


def describe_command(action: str, detail: str | None) -> dict[str, Any] | None:
    """An audited command in words: what was asked, whether the broker took it, and why not;
    None if ``action`` is not a command or its detail is not the JSON this module writes."""
    if action not in COMMAND_WORDS or not detail:
        return None
    try:
        d = json.loads(detail)
        body = d["payload"]
        what = COMMAND_WORDS[action]
        if action == "cmd_collect":
            what = f"Collect {body['count']} crops per ROI, one every {body['interval_s']:g} s"
        elif action == "cmd_mute":
            mins = int(body["duration_s"]) // 60
            what = "Unmute" if mins == 0 else f"Mute for {mins} min"
        return {
            "what": what,
            "sent": bool(d["sent"]),
            "result": str(d.get("result") or ""),
            "request_id": str(body.get("request_id", "")),
        }
    except (ValueError, KeyError, TypeError):
        return None


def _broker(st: State) -> dict[str, bool]:
    return {
        "broker_connected": st.commander is not None and st.commander.is_connected,
        "commands_enabled": st.commander is not None,
    }


@router.get("/units", response_class=HTMLResponse)
def units_page(request: Request, st: State) -> HTMLResponse:
    now = time.time()
    with st.engine.connect() as conn:
        rows = list(conn.execute(sa.select(db.units).order_by(db.units.c.unit_id)))
        snaps = snapshot_times(conn)
        rollouts = rollout.latest_by_unit(conn)
    out = []
    for r in rows:
        health = unit_health(r, now=now, offline_after_s=st.cfg.web.offline_after_s)
        out.append(
            {
                "unit": r.unit_id,
                "key_id": r.key_id,
                "software": r.software,
                "status_received_at": r.status_received_at,
                "snapshot_at": snaps.get(r.unit_id),
                "model": model_facts(health["hb"], rollouts.get(r.unit_id)),
                **health,
            }
        )
    counts = {k: sum(1 for u in out if u["state"] == k) for k in ("online", "degraded", "offline")}
    return render(
        request,
        "units.html",
        units=out,
        limits=LIMITS,
        **_broker(st),
        counts=counts,
        receiver=receiver_facts(st.stats() if st.stats else None),
    )


RECEIVER_WORDS = {
    "received": "Messages received",
    "stored": "Alerts stored",
    "duplicates": "Duplicate deliveries (ignored)",
    "status_updates": "Status updates",
    "heartbeats": "Heartbeats",
    "crops_queued": "Crops queued for labelling",
    "snapshots": "Snapshots",
    "backlog": "Waiting to be stored",
    "db_errors": "Database errors",
    "connects": "Connections to the broker",
    "subscriptions_refused": "Subscriptions refused by the broker",
    "model_status_rejected": "Model reports refused",
    "chunks_resent": "Model package chunks sent again",
}


def receiver_facts(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The receiver's counters in words: connected yes/no, each count, each reject reason."""
    if stats is None:
        return None
    rejected = stats.get("rejected") or {}
    facts = [
        (RECEIVER_WORDS.get(k, k.replace("_", " ").capitalize()), v)
        for k, v in stats.items()
        if k not in ("connected", "rejected", "rejected_total") and not isinstance(v, dict)
    ]
    return {
        "connected": bool(stats.get("connected")),
        "facts": facts,
        "rejected": sorted(rejected.items()),
        "rejected_total": int(stats.get("rejected_total") or 0),
    }


def rollout_rows(conn: Connection, unit_id: str) -> list[dict[str, Any]]:
    """The unit's rollouts, most recently updated first, in words."""
    out = []
    for r in rollout.list_rollouts(conn, unit=unit_id, limit=10):
        have = f"{r.have} of {r.chunk_count}" if r.have is not None else f"{r.chunk_count}"
        out.append(
            {
                "version": r.version,
                "sha256": r.package_sha256,
                "mode": r.mode,
                "state": r.state,
                "words": ROLLOUT_WORDS.get(r.state, r.state),
                "chunks": have,
                "detail": r.detail or "",
                "offered_by": r.offered_by,
                "offered_at": r.offered_at,
                "updated_at": r.updated_at,
            }
        )
    return out


@router.get("/units/{unit_id}", response_class=HTMLResponse)
def unit_page(request: Request, st: State, user: User, unit_id: str) -> HTMLResponse:
    with st.engine.connect() as conn:
        row = load_unit(conn, unit_id)
        health = unit_health(row, now=time.time(), offline_after_s=st.cfg.web.offline_after_s)
        ros = rollout.list_rollouts(conn, unit=unit_id, limit=1)
        model = model_facts(health["hb"], ros[0] if ros else None)
        rollouts = rollout_rows(conn, unit_id)
        offer = models.offer_context(st, user, conn, health["hb"])
        snap = conn.execute(
            sa.select(
                db.snapshots.c.received_at,
                db.snapshots.c.size_bytes,
                db.snapshots.c.sha256,
                db.snapshots.c.request_id,
            ).where(db.snapshots.c.unit == unit_id)
        ).first()
        history = list(
            conn.execute(
                sa.select(db.audit)
                .where(db.audit.c.target == unit_id)
                .order_by(db.audit.c.id.desc())
                .limit(20)
            )
        )
    return render(
        request,
        "unit.html",
        u=row,
        snap=snap,
        history=history,
        limits=LIMITS,
        health=health,
        model=model,
        rollouts=rollouts,
        offer=offer,
        **_broker(st),
    )


@router.get("/units/{unit_id}/snapshot.jpg")
def snapshot_jpg(st: State, unit_id: str) -> Response:
    with st.engine.connect() as conn:
        row = conn.execute(
            sa.select(db.snapshots.c.jpeg, db.snapshots.c.received_at).where(
                db.snapshots.c.unit == unit_id
            )
        ).first()
    if row is None:
        raise HTTPException(404, f"no snapshot from {unit_id[:64]!r} yet")
    return Response(
        bytes(row.jpeg),
        media_type="image/jpeg",
        headers={
            "Cache-Control": "no-store",
            "Last-Modified": datetime.fromtimestamp(row.received_at, UTC).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            ),
        },
    )


def command_body(
    name: str, *, user: str, count: str, interval_s: str, minutes: str
) -> dict[str, Any]:
    """The payload of command ``name`` from the form's fields; CommandError if out of bounds."""
    if name == "snapshot":
        return commands.snapshot(user=user)
    if name == "collect":
        return commands.collect(
            count=commands.parse_int(count, "count"),
            interval_s=commands.parse_float(interval_s, "interval"),
        )
    mins = commands.parse_int(minutes, "minutes")
    if not 0 <= mins <= commands.MUTE_MAX_S // 60:
        raise commands.CommandError(f"minutes must be 0 (unmute) to {commands.MUTE_MAX_S // 60}")
    return commands.mute(duration_s=mins * 60)


@router.post("/units/{unit_id}/cmd/{name}")
def send_command(
    request: Request,
    st: State,
    user: User,
    unit_id: str,
    name: str,
    count: str = Form(""),
    interval_s: str = Form("2"),
    minutes: str = Form(""),
    back: str = Form(""),
) -> RedirectResponse:
    if name not in commands.NAMES:
        raise HTTPException(404, f"no command {name[:40]!r}; known: {', '.join(commands.NAMES)}")
    with st.engine.connect() as conn:
        health = unit_health(
            load_unit(conn, unit_id), now=time.time(), offline_after_s=st.cfg.web.offline_after_s
        )
    try:
        body = command_body(name, user=user, count=count, interval_s=interval_s, minutes=minutes)
    except commands.CommandError as e:
        raise HTTPException(400, str(e)) from None
    if st.commander is None:
        sent = commands.Sent(False, "this dashboard has no MQTT connection; nothing was sent")
    else:
        sent = st.commander.publish_command(unit_id, name, body)
    with st.engine.begin() as conn:
        db.record_audit(
            conn,
            username=user,
            action=f"cmd_{name}",
            target=unit_id,
            detail=json.dumps(
                {"payload": body, "sent": sent.ok, "result": sent.detail}, sort_keys=True
            ),
            remote=remote(request),
        )
    what = {
        "snapshot": "Snapshot request",
        "collect": f"Collect {body.get('count')} crops",
        "mute": ("Unmute" if body.get("duration_s") == 0 else f"Mute for {minutes.strip()} min"),
    }[name]
    if sent.ok and health["state"] == "offline":
        then = {
            "snapshot": "the snapshot then appears on its page",
            "collect": "its crops then arrive in the Labelling queue",
            "mute": "the mute then starts",
        }[name]
        flash(
            request,
            "info",
            f"{what} sent to {unit_id} (request {body['request_id']}) and "
            f"queued: {unit_id} is offline ({health['why']}), so the broker keeps it and "
            f"delivers it when the unit reconnects; {then}.",
        )
    elif sent.ok:
        flash(request, "ok", f"{what} sent to {unit_id} (request {body['request_id']}).")
    else:
        flash(request, "error", f"{what} NOT sent to {unit_id}: {sent.detail}")
    return RedirectResponse(f"/units/{unit_id}" if back == "unit" else "/units", status_code=303)
