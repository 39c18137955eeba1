"""The review dashboard (FastAPI, server-rendered Jinja2 pages, a little JavaScript).

Every page needs a log-in (argon2 password hashes, a signed session cookie); every state change
is a POST carrying the session's CSRF token and is written to the audit log. The live list
follows new alerts over server-sent events by polling the database, so it sees alerts stored by
any receiver process.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import re
import secrets
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Connection, Engine
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlroom import bundle, commands, crypto, db, users
from controlroom.config import Config
from controlroom.errors import ControlRoomError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATUSES = ("new", "confirmed", "rejected", "purged")
LABEL_CHOICES = ("phone", "no_phone", "skip")
LIMITS = {"count_max": commands.COLLECT_COUNT_MAX, "interval_min": commands.COLLECT_INTERVAL_MIN_S,
          "interval_max": commands.COLLECT_INTERVAL_MAX_S,
          "mute_max_min": commands.MUTE_MAX_S // 60}
StatsFn = Callable[[], dict[str, Any]]


class NeedLogin(Exception):
    pass


def load_secret(path: Path) -> str:
    """The session-signing secret; created (mode 0600) on first use."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ControlRoomError(f"cannot read web.secret_key_file {path}: {e.strerror}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_when(text: str | None) -> float | None:
    """``2026-11-26T10:20`` / ``...:30`` / ``...Z`` (taken as UTC) -> epoch seconds."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"bad time {text[:40]!r}: use YYYY-MM-DDTHH:MM (UTC)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _alert_summary(r: Any) -> dict[str, Any]:
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


def content_security_policy(tile_url: str) -> str:
    """Scripts and everything else only from this server; map tiles from the tile host."""
    img = "'self' data:"
    if tile_url:
        parts = urlsplit(tile_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            host = re.sub(r"\{[a-z]+\}", "*", parts.netloc)
            img += f" {parts.scheme}://{host}"
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src {img}; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
            "base-uri 'none'; object-src 'none'")


class SecurityHeaders:
    """Pure ASGI middleware (safe with streaming responses) adding CSP and friends."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = [(b"content-security-policy", csp.encode()),
                        (b"x-content-type-options", b"nosniff"),
                        (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"same-origin")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def login_retry_after_s(conn: Connection, *, username: str, remote: str | None, now: float,
                        max_per_user: int, max_per_ip: int, window_s: float) -> float:
    """Seconds until another log-in may be tried (0: now). A user name is refused after
    ``max_per_user`` failures within ``window_s`` since its last successful log-in; a client
    address after ``max_per_ip`` failures within ``window_s``. Counted from the audit log, so
    every dashboard process behind a load balancer sees the same failures."""
    a = db.audit
    since = now - window_s
    last_ok = conn.execute(sa.select(sa.func.max(a.c.at)).where(
        a.c.action == "login", a.c.username == username, a.c.at >= since)).scalar()
    checks = [(a.c.username == username, max_per_user, max(since, last_ok or since))]
    if remote is not None:
        checks.append((a.c.remote == remote, max_per_ip, since))
    wait_s = 0.0
    for who, limit, after in checks:
        times = [r[0] for r in conn.execute(
            sa.select(a.c.at).where(a.c.action == "login_failed", who, a.c.at > after)
            .order_by(a.c.at.desc()).limit(limit))]
        if len(times) >= limit:  # refused until the oldest of the last `limit` leaves the window
            wait_s = max(wait_s, times[-1] + window_s - now)
    return wait_s


def create_app(cfg: Config, engine: Engine, *, stats: StatsFn | None = None,
               commander: commands.CommandSink | None = None) -> FastAPI:
    app = FastAPI(title="phonewatch control room", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=load_secret(cfg.web.secret_key_file),
                       session_cookie="phonewatch_session", max_age=cfg.web.session_max_age_s,
                       same_site="strict", https_only=cfg.web.https_only)
    app.add_middleware(SecurityHeaders, csp=content_security_policy(cfg.web.tile_url))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["fmt_time"] = fmt_time

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, exc: NeedLogin) -> Response:
        if request.method == "GET" and request.url.path != "/events":
            return RedirectResponse("/login?next=" + request.url.path, status_code=303)
        return JSONResponse({"detail": "log in first"}, status_code=401)

    def csrf_token(request: Request) -> str:
        tok = request.session.get("csrf")
        if not tok:
            tok = secrets.token_urlsafe(32)
            request.session["csrf"] = tok
        return str(tok)

    def check_csrf(request: Request, token: str) -> None:
        expected = request.session.get("csrf")
        if not expected or not hmac.compare_digest(str(expected), token or ""):
            raise HTTPException(403, "CSRF token missing or wrong; reload the page")

    def user_of(request: Request) -> str:
        """The logged-in operator; a user removed or disabled since logging in is logged out."""
        user = request.session.get("user")
        if not user:
            raise NeedLogin()
        with engine.connect() as conn:
            active = conn.execute(sa.select(db.users.c.is_active).where(
                db.users.c.username == str(user))).scalar()
        if not active:
            request.session.clear()
            raise NeedLogin()
        return str(user)

    def remote(request: Request) -> str | None:
        return request.client.host if request.client else None

    def render(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        ctx.update(user=request.session.get("user"), csrf=csrf_token(request),
                   flashes=request.session.pop("flash", []))
        return templates.TemplateResponse(request, name, ctx)

    def flash(request: Request, kind: str, text: str) -> None:
        request.session["flash"] = [*request.session.get("flash", []), [kind, text[:500]]]

    # ------------------------------------------------------------------ log in / out

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", next=next if next.startswith("/") else "/",
                      error=None)

    @app.post("/login", response_model=None)
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              csrf: str = Form(""), next: str = Form("/")) -> Response:
        check_csrf(request, csrf)
        now = time.time()
        with engine.begin() as conn:
            wait_s = login_retry_after_s(conn, username=username[:64], remote=remote(request),
                                         now=now, max_per_user=cfg.web.login_max_failures,
                                         max_per_ip=cfg.web.login_max_failures_per_ip,
                                         window_s=cfg.web.login_window_s)
            if wait_s > 0:
                db.record_audit(conn, username=username[:64], action="login_throttled",
                                detail=f"refused for {wait_s:.0f} s more",
                                remote=remote(request))
        if wait_s > 0:
            minutes = max(1, int(wait_s // 60 + (wait_s % 60 > 0)))
            resp = render(request, "login.html", next=next, error=(
                "Too many failed log-ins for this user name or from this address. Try again "
                f"in {minutes} minute{'s' if minutes > 1 else ''}."))
            resp.status_code = 429
            resp.headers["Retry-After"] = str(int(wait_s) + 1)
            return resp
        ok = users.check_password(engine, username, password)
        with engine.begin() as conn:
            db.record_audit(conn, username=username[:64], action="login" if ok else
                            "login_failed", remote=remote(request))
        if not ok:
            resp = render(request, "login.html", next=next, error="Wrong user name or password.")
            resp.status_code = 401
            return resp
        request.session.clear()
        request.session["user"] = username
        request.session["csrf"] = secrets.token_urlsafe(32)
        safe_next = next if re.fullmatch(r"/(?![/\\])[^\\]*", next) else "/"
        return RedirectResponse(safe_next, status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> RedirectResponse:
        user = user_of(request)
        check_csrf(request, csrf)
        with engine.begin() as conn:
            db.record_audit(conn, username=user, action="logout", remote=remote(request))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # ------------------------------------------------------------------ alerts

    @app.get("/", response_class=HTMLResponse)
    def alert_list(request: Request, unit: str = "", status: str = "", since: str = "",
                   until: str = "") -> HTMLResponse:
        user_of(request)
        if status and status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        with engine.connect() as conn:
            rows = query_alerts(conn, unit=unit or None, status=status or None,
                                since_s=parse_when(since), until_s=parse_when(until),
                                limit=cfg.web.page_size)
            unit_ids = [r[0] for r in conn.execute(sa.select(db.units.c.unit_id)
                                                   .order_by(db.units.c.unit_id))]
        last_id = max((r.id for r in rows), default=0)
        if not rows:
            with engine.connect() as conn:
                last_id = int(conn.execute(sa.select(sa.func.max(db.alerts.c.id))).scalar() or 0)
        return render(request, "alerts.html", alerts=[_alert_summary(r) for r in rows],
                      units=unit_ids, statuses=STATUSES, last_id=last_id,
                      f={"unit": unit, "status": status, "since": since, "until": until})

    @app.get("/events")
    async def events(request: Request, after: int = 0, unit: str = "", status: str = "",
                     since: str = "", until: str = "") -> StreamingResponse:
        user_of(request)
        since_s, until_s = parse_when(since), parse_when(until)

        def fetch(after_id: int) -> list[Any]:
            with engine.connect() as conn:
                return query_alerts(conn, unit=unit or None, status=status or None,
                                    since_s=since_s, until_s=until_s, after_id=after_id,
                                    limit=200)

        async def stream() -> AsyncIterator[str]:
            last = after
            quiet_s = 0.0
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                rows = await asyncio.to_thread(fetch, last)
                for r in rows:
                    last = max(last, r.id)
                    yield f"event: alert\nid: {r.id}\ndata: {json.dumps(_alert_summary(r))}\n\n"
                quiet_s = 0.0 if rows else quiet_s + cfg.web.live_poll_s
                if quiet_s >= 15.0:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(cfg.web.live_poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

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

    @app.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert_page(request: Request, alert_id: str) -> HTMLResponse:
        user_of(request)
        with engine.connect() as conn:
            row = load_alert(conn, alert_id)
            has_evidence = load_evidence(conn, row) is not None
            history = list(conn.execute(sa.select(db.audit).where(
                db.audit.c.target == alert_id).order_by(db.audit.c.at)))
        alert = json.loads(row.payload) if row.payload else None
        return render(request, "alert.html", row=row, alert=alert, has_evidence=has_evidence,
                      fix=(alert or {}).get("fix"), history=history,
                      tile_url=cfg.web.tile_url, tile_attribution=cfg.web.tile_attribution)

    @app.get("/alerts/{alert_id}/evidence.jpg")
    def evidence_jpg(request: Request, alert_id: str) -> Response:
        user = user_of(request)
        with engine.connect() as conn:
            row = load_alert(conn, alert_id)
            jpeg = load_evidence(conn, row)
        if jpeg is None:
            raise HTTPException(404, "no verified evidence for this alert (not received yet, "
                                "or deleted by retention)")
        log.debug("%s viewed evidence of %s", user, alert_id)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/alerts/{alert_id}/review")
    def review(request: Request, alert_id: str, action: str = Form(...), note: str = Form(""),
               csrf: str = Form("")) -> RedirectResponse:
        user = user_of(request)
        check_csrf(request, csrf)
        if action not in ("confirm", "reject"):
            raise HTTPException(400, "action must be confirm or reject")
        status = "confirmed" if action == "confirm" else "rejected"
        with engine.begin() as conn:
            res = conn.execute(db.alerts.update().where(
                db.alerts.c.alert_id == alert_id, db.alerts.c.status == "new").values(
                status=status, reviewed_by=user, reviewed_at=time.time(),
                review_note=note[:2000]))
            if res.rowcount != 1:
                row = load_alert(conn, alert_id)
                raise HTTPException(409, f"alert {alert_id} is already {row.status}")
            db.record_audit(conn, username=user, action=status, target=alert_id,
                            detail=note[:2000] or None, remote=remote(request))
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303)

    @app.get("/alerts/{alert_id}/bundle.zip")
    def export_bundle(request: Request, alert_id: str) -> Response:
        user = user_of(request)
        with engine.begin() as conn:
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

    # ------------------------------------------------------------------ units, audit

    @app.get("/units", response_class=HTMLResponse)
    def units_page(request: Request) -> HTMLResponse:
        user_of(request)
        now = time.time()
        with engine.connect() as conn:
            rows = list(conn.execute(sa.select(db.units).order_by(db.units.c.unit_id)))
            snaps = snapshot_times(conn)
        out = []
        for r in rows:
            hb = json.loads(r.heartbeat) if r.heartbeat else {}
            hb_age = now - r.heartbeat_received_at if r.heartbeat_received_at else None
            online = r.status_state in ("online", "degraded") and (
                hb_age is None or hb_age < cfg.web.offline_after_s)
            out.append({"unit": r.unit_id, "key_id": r.key_id, "state": r.status_state or
                        "unknown", "online": online, "status_time": r.status_time,
                        "reason": r.status_reason, "software": r.software,
                        "heartbeat_age_s": hb_age, "hb": hb,
                        "snapshot_at": snaps.get(r.unit_id)})
        return render(request, "units.html", units=out, limits=LIMITS,
                      broker_connected=commander is not None and commander.is_connected,
                      commands_enabled=commander is not None,
                      receiver=stats() if stats is not None else None)

    def snapshot_times(conn: Connection, unit: str | None = None) -> dict[str, float]:
        q = sa.select(db.snapshots.c.unit, db.snapshots.c.received_at)
        if unit is not None:
            q = q.where(db.snapshots.c.unit == unit)
        return {r.unit: r.received_at for r in conn.execute(q)}

    def load_unit(conn: Connection, unit_id: str) -> Any:
        row = conn.execute(sa.select(db.units).where(db.units.c.unit_id == unit_id)).first()
        if row is None:
            raise HTTPException(404, f"no registered unit {unit_id[:64]!r}")
        return row

    @app.get("/units/{unit_id}", response_class=HTMLResponse)
    def unit_page(request: Request, unit_id: str) -> HTMLResponse:
        user_of(request)
        with engine.connect() as conn:
            row = load_unit(conn, unit_id)
            snap = conn.execute(sa.select(db.snapshots.c.received_at, db.snapshots.c.size_bytes,
                                          db.snapshots.c.sha256, db.snapshots.c.request_id)
                                .where(db.snapshots.c.unit == unit_id)).first()
            history = list(conn.execute(sa.select(db.audit).where(
                db.audit.c.target == unit_id).order_by(db.audit.c.id.desc()).limit(20)))
        return render(request, "unit.html", u=row, snap=snap, history=history, limits=LIMITS,
                      broker_connected=commander is not None and commander.is_connected,
                      commands_enabled=commander is not None)

    @app.get("/units/{unit_id}/snapshot.jpg")
    def snapshot_jpg(request: Request, unit_id: str) -> Response:
        user_of(request)
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.snapshots.c.jpeg, db.snapshots.c.received_at)
                               .where(db.snapshots.c.unit == unit_id)).first()
        if row is None:
            raise HTTPException(404, f"no snapshot from {unit_id[:64]!r} yet")
        return Response(bytes(row.jpeg), media_type="image/jpeg", headers={
            "Cache-Control": "no-store",
            "Last-Modified": datetime.fromtimestamp(row.received_at, UTC).strftime(
                "%a, %d %b %Y %H:%M:%S GMT")})

    @app.post("/units/{unit_id}/cmd/{name}")
    def send_command(request: Request, unit_id: str, name: str, csrf: str = Form(""),
                     count: str = Form(""), interval_s: str = Form("2"),
                     minutes: str = Form(""), back: str = Form("")) -> RedirectResponse:
        user = user_of(request)
        check_csrf(request, csrf)
        if name not in commands.NAMES:
            raise HTTPException(404, f"no command {name[:40]!r}; known: "
                                f"{', '.join(commands.NAMES)}")
        with engine.connect() as conn:
            load_unit(conn, unit_id)
        try:
            if name == "snapshot":
                body = commands.snapshot(user=user)
            elif name == "collect":
                body = commands.collect(count=commands.parse_int(count, "count"),
                                        interval_s=commands.parse_float(interval_s,
                                                                        "interval"))
            else:
                mins = commands.parse_int(minutes, "minutes")
                if not 0 <= mins <= commands.MUTE_MAX_S // 60:
                    raise commands.CommandError(
                        f"minutes must be 0 (unmute) to {commands.MUTE_MAX_S // 60}")
                body = commands.mute(duration_s=mins * 60)
        except commands.CommandError as e:
            raise HTTPException(400, str(e)) from None
        if commander is None:
            sent = commands.Sent(False, "this dashboard has no MQTT connection; nothing was "
                                 "sent")
        else:
            sent = commander.publish_command(unit_id, name, body)
        with engine.begin() as conn:
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
        dest = f"/units/{unit_id}" if back == "unit" else "/units"
        return RedirectResponse(dest, status_code=303)

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> HTMLResponse:
        user_of(request)
        with engine.connect() as conn:
            rows = list(conn.execute(sa.select(db.audit).order_by(db.audit.c.id.desc())
                                     .limit(500)))
        return render(request, "audit.html", rows=rows)

    # ------------------------------------------------------------------ labelling queue

    @app.get("/labels", response_class=HTMLResponse)
    def labels_page(request: Request) -> HTMLResponse:
        user_of(request)
        lb = db.labels
        with engine.connect() as conn:
            queued = list(conn.execute(sa.select(lb.c.id, lb.c.unit, lb.c.name, lb.c.received_at)
                                       .where(lb.c.label.is_(None)).order_by(lb.c.id).limit(50)))
            by_label = sa.select(lb.c.label, sa.func.count()).group_by(lb.c.label)
            counts: dict[Any, int] = {r[0]: r[1] for r in conn.execute(by_label)}
        return render(request, "labels.html", queued=queued,
                      counts={str(k or "queued"): v for k, v in counts.items()},
                      choices=LABEL_CHOICES)

    @app.get("/labels/{label_id}.jpg")
    def label_jpg(request: Request, label_id: int) -> Response:
        user_of(request)
        with engine.connect() as conn:
            jpeg = conn.execute(sa.select(db.labels.c.jpeg).where(db.labels.c.id == label_id)
                                ).scalar()
        if jpeg is None:
            raise HTTPException(404, "no such crop")
        return Response(bytes(jpeg), media_type="image/jpeg")

    @app.post("/labels/{label_id}")
    def set_label(request: Request, label_id: int, label: str = Form(...),
                  csrf: str = Form("")) -> RedirectResponse:
        user = user_of(request)
        check_csrf(request, csrf)
        if label not in LABEL_CHOICES:
            raise HTTPException(400, f"label must be one of {', '.join(LABEL_CHOICES)}")
        with engine.begin() as conn:
            res = conn.execute(db.labels.update().where(db.labels.c.id == label_id).values(
                label=label, labelled_by=user, labelled_at=time.time()))
            if res.rowcount != 1:
                raise HTTPException(404, "no such crop")
            db.record_audit(conn, username=user, action="label", target=f"crop-{label_id}",
                            detail=label, remote=remote(request))
        return RedirectResponse("/labels", status_code=303)

    @app.get("/labels/export.zip")
    def export_labels(request: Request) -> Response:
        """The labelled crops as the image folder the training script reads:
        ``phone/*.jpg`` and ``no_phone/*.jpg``."""
        user = user_of(request)
        buf = io.BytesIO()
        n = 0
        with engine.begin() as conn, zipfile.ZipFile(buf, "w") as z:
            for r in conn.execute(sa.select(db.labels.c.unit, db.labels.c.sha256,
                                            db.labels.c.label, db.labels.c.jpeg).where(
                    db.labels.c.label.in_(("phone", "no_phone")))):
                z.writestr(f"{r.label}/{r.unit}-{r.sha256[:16]}.jpg", bytes(r.jpeg),
                           compress_type=zipfile.ZIP_STORED)
                n += 1
            db.record_audit(conn, username=user, action="labels_export", detail=f"{n} crops",
                            remote=remote(request))
        return Response(buf.getvalue(), media_type="application/zip", headers={
            "Content-Disposition": 'attachment; filename="phonewatch-crops.zip"'})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        with engine.connect() as conn:
            version = db.current_version(conn)
        return {"ok": True, "schema_version": version}

    return app
