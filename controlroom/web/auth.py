"""Log-in (throttled, audited) and log-out."""

from __future__ import annotations

import re
import secrets
import time

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection

from controlroom import db, users
from controlroom.web.deps import (
    State,
    User,
    csrf,
    protected_router,
    remote,
    render,
    session_id,
)

public = APIRouter()
router = protected_router()


# An attempt is recorded as "login_attempt" before its password is checked, and counted as a
# failure until it is settled as "login", "login_failed" or "login_throttled".
COUNTED_AS_FAILED = ("login_failed", "login_attempt")


def login_retry_after_s(
    conn: Connection,
    *,
    username: str,
    remote: str | None,
    now: float,
    max_per_user: int,
    max_per_ip: int,
    window_s: float,
    exclude_id: int | None = None,
) -> float:
    """Seconds until another log-in may be tried (0: now). A user name is refused after
    ``max_per_user`` failures within ``window_s`` since its last successful log-in; a client
    address after ``max_per_ip`` failures within ``window_s``. Counted from the audit log, so
    every dashboard process behind a load balancer sees the same failures; attempts still
    being checked count as failures, except the caller's own (``exclude_id``)."""
    a = db.audit
    since = now - window_s
    last_ok = conn.execute(
        sa.select(sa.func.max(a.c.at)).where(
            a.c.action == "login", a.c.username == username, a.c.at >= since
        )
    ).scalar()
    checks = [(a.c.username == username, max_per_user, max(since, last_ok or since))]
    if remote is not None:
        checks.append((a.c.remote == remote, max_per_ip, since))
    wait_s = 0.0
    for who, limit, after in checks:
        q = sa.select(a.c.at).where(a.c.action.in_(COUNTED_AS_FAILED), who, a.c.at > after)
        if exclude_id is not None:
            q = q.where(a.c.id != exclude_id)
        times = [r[0] for r in conn.execute(q.order_by(a.c.at.desc()).limit(limit))]
        if len(times) >= limit:  # refused until the oldest of the last `limit` leaves the window
            wait_s = max(wait_s, times[-1] + window_s - now)
    return wait_s


def _settle(conn: Connection, attempt_id: int, action: str, detail: str | None = None) -> None:
    conn.execute(
        db.audit.update().where(db.audit.c.id == attempt_id).values(action=action, detail=detail)
    )


@public.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=next if next.startswith("/") else "/", error=None)


@public.post("/login", response_model=None, dependencies=[Depends(csrf)])
def login(
    request: Request,
    st: State,
    username: str = Form(...),
    password: str = Form(...),
    next: str = Form("/"),
) -> Response:
    """Throttled without a race: the attempt is committed to the audit log *before* the
    throttle counts, so of any number of simultaneous attempts (in any process) the last to
    count sees all the others, and at most the limit get their password checked."""
    web = st.cfg.web
    name, ip, now = username[:64], remote(request), time.time()
    with st.engine.begin() as conn:
        attempt_id = int(
            conn.execute(
                db.audit.insert()
                .values(at=now, username=name, action="login_attempt", remote=ip)
                .returning(db.audit.c.id)
            ).scalar_one()
        )
    with st.engine.begin() as conn:
        wait_s = login_retry_after_s(
            conn,
            username=name,
            remote=ip,
            now=now,
            max_per_user=web.login_max_failures,
            max_per_ip=web.login_max_failures_per_ip,
            window_s=web.login_window_s,
            exclude_id=attempt_id,
        )
        if wait_s > 0:
            _settle(conn, attempt_id, "login_throttled", f"refused for {wait_s:.0f} s more")
    if wait_s > 0:
        minutes = max(1, int(wait_s // 60 + (wait_s % 60 > 0)))
        resp = render(
            request,
            "login.html",
            next=next,
            error=(
                "Too many failed log-ins for this user name or from this address. Try again "
                f"in {minutes} minute{'s' if minutes > 1 else ''}."
            ),
        )
        resp.status_code = 429
        resp.headers["Retry-After"] = str(int(wait_s) + 1)
        return resp
    ok = users.check_password(st.engine, username, password)
    with st.engine.begin() as conn:
        _settle(conn, attempt_id, "login" if ok else "login_failed")
        sid = (
            users.start_session(
                conn, username, now=time.time(), max_age_s=web.session_max_age_s, remote=ip
            )
            if ok
            else None
        )
    if sid is None:
        resp = render(request, "login.html", next=next, error="Wrong user name or password.")
        resp.status_code = 401
        return resp
    request.session.clear()
    request.session["sid"] = sid
    request.session["csrf"] = secrets.token_urlsafe(32)
    safe_next = next if re.fullmatch(r"/(?![/\\])[^\\]*", next) else "/"
    return RedirectResponse(safe_next, status_code=303)


@router.post("/logout")
def logout(request: Request, st: State, user: User) -> RedirectResponse:
    """Ends the session on the server too: a copy of the cookie no longer works."""
    sid = session_id(request)
    with st.engine.begin() as conn:
        if sid is not None:
            users.end_session(conn, sid)
        db.record_audit(conn, username=user, action="logout", remote=remote(request))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
