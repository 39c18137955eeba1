"""What every dashboard route shares: the app-wide state, the log-in and CSRF dependencies,
page rendering and small helpers.

Routers that need a log-in are built with :func:`protected_router`, which puts
``Depends(current_user)`` and ``Depends(csrf)`` on every route they hold, so a new route cannot
forget either. ``csrf`` checks only state-changing methods (POST and friends). Checks that
must run before the form is read (an upload's declared size) go between the two.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from controlroom import db, users
from controlroom.commands import CommandSink
from controlroom.config import Config
from controlroom.web.thumbs import ThumbCache

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
    thumbs: ThumbCache = field(default_factory=ThumbCache)
    redacted: ThumbCache = field(default_factory=lambda: ThumbCache(max_items=200))
    """Redacted evidence frames by the frame's SHA-256 (see :mod:`controlroom.privacy`)."""
    redacted_clips: ThumbCache = field(default_factory=lambda: ThumbCache(max_items=16))
    """Redacted clips by the clip's SHA-256: a few, since a clip is megabytes, not kilobytes."""
    model_keys: tuple[Ed25519PublicKey, ...] = ()
    """The control room's model-signing public keys (``[models] trusted_keys``): the unit
    page offers only packages that verify with one of them."""


class NeedLogin(Exception):
    """Raised by :func:`current_user`; pages redirect to the log-in form, the rest get 401."""


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
    user = (
        None if sid is None else users.session_user(web_state(request).engine, sid, now=time.time())
    )
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
    if (
        not expected
        or not isinstance(token, str)
        or not hmac.compare_digest(str(expected).encode(), token.encode())
    ):
        raise HTTPException(403, "CSRF token missing or wrong; reload the page")


State = Annotated[WebState, Depends(web_state)]
User = Annotated[str, Depends(current_user)]


def protected_router(*before_csrf: Callable[..., Any]) -> APIRouter:
    """A router whose every route needs a log-in, and a CSRF token if it changes state;
    ``before_csrf`` run after the log-in check and before the form is read."""
    checks = [Depends(d) for d in before_csrf]
    return APIRouter(dependencies=[Depends(current_user), *checks, Depends(csrf)])


def csrf_token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        request.session["csrf"] = tok
    return str(tok)


def remote(request: Request) -> str | None:
    return request.client.host if request.client else None


UNDO_WINDOW_S = 10.0  # a decision can be undone by its operator this long after it


def queue_counts(engine: sa.Engine) -> tuple[int, int]:
    """(unreviewed alerts, newest alert id): the tab title's count and where the live feed
    of every page starts."""
    a = db.alerts
    with engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).select_from(a).where(a.c.status == "new")
        ).scalar()
        last = conn.execute(sa.select(sa.func.max(a.c.id))).scalar()
    return int(n or 0), int(last or 0)


def pending_undo(request: Request, now: float | None = None) -> dict[str, Any] | None:
    """The operator's last decision while it can still be undone (kept in the session)."""
    undo = request.session.get("undo")
    if not isinstance(undo, dict):
        return None
    if float(undo.get("until", 0)) < (time.time() if now is None else now):
        request.session.pop("undo", None)
        return None
    return undo


def render(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    ctx.update(
        user=user,
        csrf=csrf_token(request),
        flashes=request.session.pop("flash", []),
        undo_window_s=UNDO_WINDOW_S,
        now=time.time(),
    )
    if user is not None:
        ctx.setdefault("undo", pending_undo(request))
        ctx["unreviewed"], ctx["last_alert_id"] = queue_counts(web_state(request).engine)
    return web_state(request).templates.TemplateResponse(request, name, ctx)


def flash(request: Request, kind: str, text: str) -> None:
    request.session["flash"] = [*request.session.get("flash", []), [kind, text[:500]]]


def fmt_time(t: float | None) -> str:
    """The one time format of the dashboard: the control room's local time with its zone
    (the process's ``TZ``), e.g. ``2026-05-01 11:20:30 BST``."""
    if t is None:
        return "—"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def iso_time(t: float) -> str:
    """UTC ISO 8601 to the second, e.g. ``2026-05-01T10:20:30Z`` (shown on hover)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(t: float | None, exact: str | None = None) -> Markup:
    """``fmt_time`` in a ``<time>`` element whose hover (and ``datetime``) is the UTC ISO
    time; ``exact`` (e.g. the unit's own signed time string) replaces the hover text."""
    if t is None:
        return Markup("—")
    iso = iso_time(t)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, exact or iso, fmt_time(t))


def local_zone() -> str:
    """The abbreviation of the local zone now (the filters' times are in it)."""
    return datetime.now().astimezone().strftime("%Z")


def parse_when(text: str | None, what: str = "time") -> float | None:
    """``2026-11-26T10:20`` / ``...:30`` (local time, as shown everywhere) or with a zone
    (``...Z``, ``...+01:00``) -> epoch seconds."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            400,
            f"{what}: {text[:40]!r} is not a date and time; use YYYY-MM-DDTHH:MM ({local_zone()})",
        ) from None
    return (dt.astimezone() if dt.tzinfo is None else dt).timestamp()
