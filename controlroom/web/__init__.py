"""The review dashboard (FastAPI, server-rendered Jinja2 pages, a little JavaScript).

Every page needs a log-in (argon2 password hashes, a signed session cookie); every state change
is a POST carrying the session's CSRF token and is written to the audit log. The live list
follows new alerts over server-sent events by polling the database, so it sees alerts stored by
any receiver process.

One router per area (``auth``, ``alerts``, ``units``, ``models``, ``labels``, ``audit``); what
they share (config, engine, templates, receiver stats, command sink, model-signing keys) is on
``app.state.web``
(:class:`~controlroom.web.deps.WebState`), and the log-in and CSRF checks are dependencies of
the routers (:func:`~controlroom.web.deps.protected_router`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from controlroom import commands
from controlroom.config import Config
from controlroom.web import alerts, audit, auth, errorpages, labels, models, units
from controlroom.web.auth import login_retry_after_s
from controlroom.web.deps import NeedLogin, StatsFn, WebState, fmt_time, iso_time, local_zone, when
from controlroom.web.security import SecurityHeaders, content_security_policy, load_secret

__all__ = ["content_security_policy", "create_app", "load_secret", "login_retry_after_s"]

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # controlroom/: templates/, static/


def create_app(
    cfg: Config,
    engine: Engine,
    *,
    stats: StatsFn | None = None,
    commander: commands.CommandSink | None = None,
) -> FastAPI:
    app = FastAPI(title="phonewatch control room", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")
    templates.env.globals.update(
        fmt_time=fmt_time,
        when=when,
        local_zone=local_zone,
        iso_time=iso_time,
        describe_command=units.describe_command,
    )
    app.state.web = WebState(
        cfg=cfg,
        engine=engine,
        templates=templates,
        stats=stats,
        commander=commander,
        model_keys=models.load_keys(cfg.models),
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=load_secret(cfg.web.secret_key_file),
        session_cookie="phonewatch_session",
        max_age=cfg.web.session_max_age_s,
        same_site="strict",
        https_only=cfg.web.https_only,
    )
    app.add_middleware(
        SecurityHeaders,
        csp=content_security_policy(cfg.web.tile_url),
        https_only=cfg.web.https_only,
    )
    app.add_exception_handler(NeedLogin, errorpages.need_login)
    app.add_exception_handler(StarletteHTTPException, errorpages.http_error)
    app.add_exception_handler(RequestValidationError, errorpages.validation_error)
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
    for router in (
        auth.public,
        auth.router,
        alerts.router,
        units.router,
        models.router,
        audit.router,
        labels.router,
        audit.public,
    ):
        app.include_router(router)
    return app
