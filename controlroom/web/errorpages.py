"""Errors as pages: a browser gets the normal page (header, navigation) with a plain message and
a way back; a JSON client (``Accept: application/json``, or no HTML in ``Accept``, as with
``curl``, ``httpx`` or ``fetch``) keeps FastAPI's ``{"detail": ...}``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from controlroom import users
from controlroom.web.deps import render, session_id, web_state

TITLES = {
    400: "That request cannot be done",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Already done",
    413: "Too large",
    422: "Something is missing or wrong in the form",
    429: "Too many attempts",
}


def _quality(params: str) -> float:
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.strip() == "q":
            try:
                return float(v)
            except ValueError:
                return 0.0
    return 1.0


def wants_html(request: Request) -> bool:
    """True when the client prefers HTML to JSON: browsers navigating or posting a form send
    ``text/html``; API clients send ``application/json`` or ``*/*``."""
    q: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        mtype, _, params = part.partition(";")
        q[mtype.strip().lower()] = max(q.get(mtype.strip().lower(), 0.0), _quality(params))
    html = q.get("text/html", 0.0)
    return html > 0 and html >= q.get("application/json", 0.0)


def back_link(request: Request, status: int) -> tuple[str, str]:
    """Where the error page points: the alert or unit the request was about (unless that is
    what was not found), else the page the visitor came from, else the alert list."""
    parts = request.url.path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] in ("alerts", "units") and status != 404:
        label = "alert" if parts[0] == "alerts" else "unit"
        return f"Back to {label} {parts[1]}", f"/{parts[0]}/{parts[1]}"
    ref = urlsplit(request.headers.get("referer", ""))
    if (
        ref.netloc
        and ref.netloc == request.url.netloc
        and ref.path.startswith("/")
        and ref.path != request.url.path
        and not ref.path.startswith("/login")
    ):
        return "Back to the previous page", ref.path + (f"?{ref.query}" if ref.query else "")
    return "Back to the alert list", "/"


async def _user(request: Request) -> str | None:
    """The operator, if logged in (the header shows the navigation); routes that were never
    reached (an unknown address) did not look the session up."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return str(user)
    sid = session_id(request)
    if sid is None:
        return None
    engine = web_state(request).engine
    return await run_in_threadpool(users.session_user, engine, sid, now=time.time())


async def error_page(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    request.state.user = await _user(request)
    label, href = back_link(request, status)
    resp = render(
        request,
        "error.html",
        status=status,
        heading=TITLES.get(status, "Something went wrong"),
        message=message[:1].upper() + message[1:],
        back_label=label,
        back_href=href,
    )
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not wants_html(request):
        return await http_exception_handler(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"There is no page at {request.url.path[:200]}."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path[:200]}."
    return await error_page(request, exc.status_code, detail, headers=exc.headers)


async def need_login(request: Request, exc: Exception) -> Response:
    """No valid session: a page visit goes to the log-in form; a browser's form post (its
    session ended meanwhile) gets a page saying so; anything else a JSON 401."""
    if request.method == "GET" and request.url.path != "/events":
        return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)
    if wants_html(request):
        request.state.user = None
        ref = urlsplit(request.headers.get("referer", ""))
        nxt = ref.path if ref.netloc == request.url.netloc and ref.path.startswith("/") else "/"
        resp = render(
            request,
            "error.html",
            status=401,
            heading=TITLES[401],
            message="Your session has ended (logged out, expired or disabled), so "
            "nothing was changed. Log in again and repeat it.",
            back_label="Log in",
            back_href="/login?next=" + quote(nxt),
        )
        resp.status_code = 401
        return resp
    return JSONResponse({"detail": "log in first"}, status_code=401)


def _field_errors(errors: Any) -> str:
    out = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "form")]
        out.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(out)[:500]


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not wants_html(request):
        return await request_validation_exception_handler(request, exc)
    return await error_page(request, 422, _field_errors(exc.errors()))
