"""The labelling queue: crops a unit sent after a ``collect`` command, labelled and exported
as the image folder the training script reads; the labelled examples (these and every review,
``controlroom/datasets.py``), their dataset versions, and the reviewers' precision per unit and
per model."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import sqlalchemy as sa
from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from controlroom import datasets, db
from controlroom.errors import ControlRoomError
from controlroom.web.deps import State, User, flash, protected_router, remote, render

LABEL_CHOICES = ("phone", "no_phone", "skip")

router = protected_router()


@router.get("/labels", response_class=HTMLResponse)
def labels_page(request: Request, st: State) -> HTMLResponse:
    lb = db.labels
    with st.engine.connect() as conn:
        queued = list(
            conn.execute(
                sa.select(lb.c.id, lb.c.unit, lb.c.name, lb.c.received_at)
                .where(lb.c.label.is_(None))
                .order_by(lb.c.id)
                .limit(50)
            )
        )
        by_label = (
            sa.select(lb.c.label, sa.func.count())
            .where(lb.c.source == "collect")
            .group_by(lb.c.label)
        )
        counts: dict[Any, int] = {r[0]: r[1] for r in conn.execute(by_label)}
        by_review = (
            sa.select(lb.c.label, sa.func.count())
            .where(lb.c.source == "review")
            .group_by(lb.c.label)
        )
        reviewed: dict[str, int] = {str(r[0]): r[1] for r in conn.execute(by_review)}
        versions = datasets.list_datasets(conn)
        per_unit = datasets.precision_by(conn, "unit")
        per_model = datasets.precision_by(conn, "model")
    return render(
        request,
        "labels.html",
        queued=queued,
        counts={str(k or "queued"): v for k, v in counts.items()},
        reviewed=reviewed,
        choices=LABEL_CHOICES,
        versions=versions,
        per_unit=per_unit,
        per_model=per_model,
    )


@router.post("/labels/datasets")
def create_dataset(
    request: Request, st: State, user: User, note: str = Form("")
) -> RedirectResponse:
    """Snapshot every labelled example into a dataset version (the same id again when
    nothing changed); ``phonewatch controlroom dataset export ID`` writes it out."""
    try:
        made = datasets.create_dataset(st.engine, user=user, note=note.strip()[:500] or None)
    except ControlRoomError as e:
        flash(request, "error", str(e))
        return RedirectResponse("/labels", status_code=303)
    c = made.manifest["counts"]
    flash(
        request,
        "ok",
        ("Created" if made.new else "Nothing changed since")
        + f" dataset {made.id[:12]}: train {sum(c['train'].values())}, held-out "
        f"{sum(c['heldout'].values())} examples. Export it with 'phonewatch controlroom "
        f"dataset export {made.id[:12]} --out DIR'.",
    )
    return RedirectResponse("/labels", status_code=303)


@router.get("/labels/{label_id}.jpg")
def label_jpg(st: State, label_id: int) -> Response:
    with st.engine.connect() as conn:
        jpeg = conn.execute(sa.select(db.labels.c.jpeg).where(db.labels.c.id == label_id)).scalar()
    if jpeg is None:
        raise HTTPException(404, "no such crop")
    return Response(bytes(jpeg), media_type="image/jpeg")


@router.post("/labels/{label_id}")
def set_label(
    request: Request, st: State, user: User, label_id: int, label: str = Form(...)
) -> RedirectResponse:
    if label not in LABEL_CHOICES:
        raise HTTPException(400, f"label must be one of {', '.join(LABEL_CHOICES)}")
    with st.engine.begin() as conn:
        res = conn.execute(
            db.labels.update()
            .where(db.labels.c.id == label_id)
            .values(label=label, labelled_by=user, labelled_at=time.time())
        )
        if res.rowcount != 1:
            raise HTTPException(404, "no such crop")
        db.record_audit(
            conn,
            username=user,
            action="label",
            target=f"crop-{label_id}",
            detail=label,
            remote=remote(request),
        )
    return RedirectResponse("/labels", status_code=303)


@router.get("/labels/export.zip")
def export_labels(request: Request, st: State, user: User) -> Response:
    """The hand-labelled collected crops as the image folder the training script reads:
    ``phone/*.jpg`` and ``no_phone/*.jpg``. Review labels are not in it: they leave the
    control room only in a dataset version (``phonewatch controlroom dataset export``)."""
    buf = io.BytesIO()
    n = 0
    with st.engine.begin() as conn, zipfile.ZipFile(buf, "w") as z:
        for r in conn.execute(
            sa.select(
                db.labels.c.unit, db.labels.c.sha256, db.labels.c.label, db.labels.c.jpeg
            ).where(db.labels.c.label.in_(("phone", "no_phone")), db.labels.c.source == "collect")
        ):
            z.writestr(
                f"{r.label}/{r.unit}-{r.sha256[:16]}.jpg",
                bytes(r.jpeg),
                compress_type=zipfile.ZIP_STORED,
            )
            n += 1
        db.record_audit(
            conn, username=user, action="labels_export", detail=f"{n} crops", remote=remote(request)
        )
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="phonewatch-crops.zip"'},
    )
