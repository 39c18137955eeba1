"""The audit log page, and the health check (no log-in)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from controlroom import db
from controlroom.web.deps import State, protected_router, render

router = protected_router()
public = APIRouter()


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, st: State) -> HTMLResponse:
    with st.engine.connect() as conn:
        rows = list(conn.execute(sa.select(db.audit).order_by(db.audit.c.id.desc()).limit(500)))
    return render(request, "audit.html", rows=rows)


@public.get("/healthz")
def healthz(st: State) -> dict[str, Any]:
    with st.engine.connect() as conn:
        version = db.current_version(conn)
    return {"ok": True, "schema_version": version}
