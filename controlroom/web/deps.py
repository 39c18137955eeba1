"""What every dashboard route shares: the app-wide state, the log-in and CSRF dependencies,
page rendering and small helpers.

Routers that need a log-in are built with :func:`protected_router`, which puts
``Depends(current_user)`` and ``Depends(csrf)`` on every route they hold, so a new route cannot
forget either. ``csrf`` checks only state-changing methods (POST and friends).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from controlroom import users
from controlroom.commands import CommandSink
from controlroom.config import Config

StatsFn = Callable[[], dict[str, Any]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class WebState:
    """Everything the routes need, kept on ``app.state.web`` (no closures)."""

    cfg: Config
    engine: sa.Engine
    templates: Jinja2Templates
    stats: StatsFn | None = None
    commander: CommandSink | None = None


class NeedLogin(Exception):
    """Raised by :func:`current_user`; pages redirect to the log-in form, the rest get 401."""


async def need_login_handler(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and request.url.path != "/events":
        return RedirectResponse("/login?next=" + request.url.path, status_code=303)
    return JSONResponse({"detail": "log in first"}, status_code=401)


def web_state(request: Request) -> WebState:
    st = request.app.state.web
    assert isinstance(st, WebState)
    return st


def session_id(request: Request) -> str | None:
    sid = request.session.get("sid")
    return sid if isinstance(sid, str) and sid else None


def current_user(request: Request) -> str:
    """The logged-in operator: the cookie's session must still exist on the server (not
    logged out, not expired, password unchanged) and its user be active; otherwise the
    session is cleared and the visitor must log in. A plain ``def``: FastAPI runs it in the
    thread pool, so its database lookup never blocks the event loop (``/events`` is async)."""
    sid = session_id(request)
    user = None if sid is None else users.session_user(web_state(request).engine, sid,
                                                       now=time.time())
    if user is None:
        request.session.clear()
        raise NeedLogin()
    request.state.user = user
    return user


async def csrf(request: Request) -> None:
    """A state-changing request must carry the session's CSRF token as the form field
    ``csrf``; a wrong or missing one is a 403 and changes nothing."""
    if request.method in SAFE_METHODS:
        return
    token = (await request.form()).get("csrf")
    expected = request.session.get("csrf")
    if not expected or not isinstance(token, str) or not hmac.compare_digest(
            str(expected).encode(), token.encode()):
        raise HTTPException(403, "CSRF token missing or wrong; reload the page")


State = Annotated[WebState, Depends(web_state)]
User = Annotated[str, Depends(current_user)]


def protected_router() -> APIRouter:
    """A router whose every route needs a log-in, and a CSRF token if it changes state."""
    return APIRouter(dependencies=[Depends(current_user), Depends(csrf)])


def csrf_token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        request.session["csrf"] = tok
    return str(tok)


def remote(request: Request) -> str | None:
    return request.client.host if request.client else None


def render(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    ctx.update(user=getattr(request.state, "user", None), csrf=csrf_token(request),
               flashes=request.session.pop("flash", []))
    return web_state(request).templates.TemplateResponse(request, name, ctx)


def flash(request: Request, kind: str, text: str) -> None:
    request.session["flash"] = [*request.session.get("flash", []), [kind, text[:500]]]


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
