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
from controlroom.web.deps import State, User, csrf, protected_router, remote, render

public = APIRouter()
router = protected_router()


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


@public.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=next if next.startswith("/") else "/",
                  error=None)


@public.post("/login", response_model=None, dependencies=[Depends(csrf)])
def login(request: Request, st: State, username: str = Form(...), password: str = Form(...),
          next: str = Form("/")) -> Response:
    web = st.cfg.web
    now = time.time()
    with st.engine.begin() as conn:
        wait_s = login_retry_after_s(conn, username=username[:64], remote=remote(request),
                                     now=now, max_per_user=web.login_max_failures,
                                     max_per_ip=web.login_max_failures_per_ip,
                                     window_s=web.login_window_s)
        if wait_s > 0:
            db.record_audit(conn, username=username[:64], action="login_throttled",
                            detail=f"refused for {wait_s:.0f} s more", remote=remote(request))
    if wait_s > 0:
        minutes = max(1, int(wait_s // 60 + (wait_s % 60 > 0)))
        resp = render(request, "login.html", next=next, error=(
            "Too many failed log-ins for this user name or from this address. Try again "
            f"in {minutes} minute{'s' if minutes > 1 else ''}."))
        resp.status_code = 429
        resp.headers["Retry-After"] = str(int(wait_s) + 1)
        return resp
    ok = users.check_password(st.engine, username, password)
    with st.engine.begin() as conn:
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


@router.post("/logout")
def logout(request: Request, st: State, user: User) -> RedirectResponse:
    with st.engine.begin() as conn:
        db.record_audit(conn, username=user, action="logout", remote=remote(request))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
