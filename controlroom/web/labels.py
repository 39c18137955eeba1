"""The labelling queue: crops units sent (``collect`` requests, the background sampler,
``calibrate`` runs), grouped by session, labelled one at a time, in bulk or by time range, with
undo, and exported as the image folder the training script reads; the labelled examples (these
and every review, ``controlroom/datasets.py``), their dataset versions, and the reviewers'
precision per unit and per model.

The page works without JavaScript (every action is a form POST that comes back to the page);
``static/labels.js`` makes it fast by sending the same actions to the JSON routes under
``/labels/api/`` and updating the page in place. The logic is in ``controlroom/labelling.py``.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy.engine import Connection

from controlroom import datasets, db, labelling, quality, retention
from controlroom.errors import ControlRoomError
from controlroom.labelling import Batch, LabellingError, TimeRange
from controlroom.web.deps import (
    UNDO_WINDOW_S,
    State,
    User,
    flash,
    local_zone,
    parse_when,
    protected_router,
    remote,
    render,
)

LABEL_CHOICES = labelling.CHOICES
SHOW_MAX = 120
"""At most this many crops on the page at once (the oldest sessions first)."""
DUE_WITHIN_S = 7 * 86400.0

router = protected_router()
IdList = Annotated[list[int] | None, Form(alias="id")]


def _input_time(t: float) -> str:
    """``t`` as a ``datetime-local`` input value (local time, to the second)."""
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def _session_view(s: labelling.Session) -> dict[str, Any]:
    rng = {
        "unit": s.unit,
        "from": _input_time(math.floor(s.start)),
        "to": _input_time(math.ceil(s.end)),
    }
    return {
        "key": s.key,
        "title": s.title,
        "kind": s.kind,
        "unit": s.unit,
        "start": s.start,
        "end": s.end,
        "count": len(s.crops),
        "per_roi": s.per_roi,
        "range_query": urlencode(rng),
    }


def _range_from_query(
    unit: str, roi: str, t_from: str, t_to: str, upto: int | None = None
) -> TimeRange:
    a = parse_when(t_from, "From")
    b = parse_when(t_to, "To")
    if a is None or b is None:
        raise LabellingError("give both From and To")
    return TimeRange(unit.strip(), a, b, roi.strip() or None, upto).check()


def _preview(conn: Connection, unit: str, roi: str, t_from: str, t_to: str) -> dict[str, Any]:
    """The range form's values, and either what it would label or what is wrong."""
    out: dict[str, Any] = {"unit": unit, "roi": roi, "from": t_from, "to": t_to}
    if not (unit or t_from or t_to):
        return out
    try:
        rng = _range_from_query(unit, roi, t_from, t_to)
    except (LabellingError, HTTPException) as e:
        out["error"] = e.detail if isinstance(e, HTTPException) else str(e)
        return out
    upto = labelling.newest_id(conn)
    rng = TimeRange(rng.unit, rng.t_from, rng.t_to, rng.roi, upto)
    out.update(count=len(rng.crops(conn)), describe=rng.describe(), upto=upto)
    return out


def _queue(conn: Connection, session: str) -> dict[str, Any]:
    """The queue by session, the crops shown, and each unit's ROIs (for the range form)."""
    crops = labelling.queued(conn)
    all_sessions = labelling.sessions(crops)
    chosen = [s for s in all_sessions if not session or s.key == session]
    shown: list[dict[str, Any]] = []
    room = SHOW_MAX
    for s in chosen:
        if room <= 0:
            break
        part = s.crops[:room]
        room -= len(part)
        shown.append({**_session_view(s), "crops": part})
    return {
        "sessions": [_session_view(s) for s in all_sessions],
        "shown": shown,
        "n_queued": sum(len(s.crops) for s in all_sessions),
        "n_shown": SHOW_MAX - room,
        "session": session,
        "units_rois": labelling.rois_of(crops),
    }


@router.get("/labels", response_class=HTMLResponse)
def labels_page(
    request: Request,
    st: State,
    user: User,
    session: str = "",
    unit: str = "",
    roi: str = "",
    t_from: Annotated[str, Query(alias="from")] = "",
    t_to: Annotated[str, Query(alias="to")] = "",
) -> HTMLResponse:
    lb = db.labels
    now = time.time()
    with st.engine.connect() as conn:
        queue = _queue(conn, session)
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
        due, first_due = retention.label_crops_due(
            conn, st.cfg.retention, now=now, within_s=DUE_WITHIN_S
        )
        ctx = {
            "range": _preview(conn, unit, roi, t_from, t_to),
            "recent": labelling.recent_actions(conn, user, now=now),
            "versions": datasets.list_datasets(conn),
            "per_unit": datasets.precision_by(conn, "unit"),
            "per_model": datasets.precision_by(conn, "model"),
            **quality.quality_context(conn),
        }
        ctx["trend_svg"] = Markup(ctx["trend_svg"])  # built from numbers and week names only
    return render(
        request,
        "labels.html",
        **queue,
        **ctx,
        counts={str(k or "queued"): v for k, v in counts.items()},
        exportable=counts.get("phone", 0) + counts.get("no_phone", 0),
        reviewed=reviewed,
        choices=LABEL_CHOICES,
        zone=local_zone(),
        keep_days=f"{st.cfg.retention.label_crops_days:g}",
        confirmed_days=f"{st.cfg.retention.confirmed_days:g}",
        due=due,
        first_due=first_due,
        undo_label_s=UNDO_WINDOW_S,
        undo_batch_s=labelling.UNDO_WINDOW_S,
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
    return RedirectResponse("/labels#datasets", status_code=303)


@router.post("/labels/datasets/delete")
def delete_dataset(
    request: Request, st: State, user: User, dataset_id: str = Form(""), sure: str = Form("")
) -> RedirectResponse:
    """Delete a dataset version (asks first: ``sure=yes``); its crops then follow retention."""
    if sure != "yes":
        raise HTTPException(400, "tick 'delete this version' to confirm; nothing was deleted")
    try:
        did = datasets.delete_dataset(st.engine, dataset_id, user=user, remote=remote(request))
    except ControlRoomError as e:
        raise HTTPException(404, str(e)) from None
    flash(
        request,
        "ok",
        f"Deleted dataset {did[:12]}. Its crops now follow the retention rule: each one no "
        "other version holds is deleted at the next sweep once it is past its time.",
    )
    return RedirectResponse("/labels#datasets", status_code=303)


@router.get("/labels/{label_id}.jpg")
def label_jpg(st: State, label_id: int) -> Response:
    with st.engine.connect() as conn:
        jpeg = conn.execute(sa.select(db.labels.c.jpeg).where(db.labels.c.id == label_id)).scalar()
    if jpeg is None:
        raise HTTPException(404, "no such crop (retention may have deleted it)")
    return Response(bytes(jpeg), media_type="image/jpeg")


# -- labelling: one, bulk, range, undo --------------------------------------------------------


def _label_ids(
    request: Request, st: State, user: User, ids: list[int], label: str
) -> tuple[Batch, list[int], list[int]]:
    """Label the queued crops among ``ids``; (batch, labelled, not queued any more)."""
    if not ids:
        raise HTTPException(400, "select at least one crop")
    if len(ids) > labelling.MAX_BULK:
        raise HTTPException(400, f"at most {labelling.MAX_BULK} crops at a time")
    try:
        labelling.check_label(label)
    except LabellingError as e:
        raise HTTPException(400, str(e)) from None
    with st.engine.begin() as conn:
        crops = labelling.crops_by_id(conn, ids)
        if not crops:
            raise HTTPException(404, "no such crop (retention may have deleted it)")
        batch, done = labelling.label_crops(conn, crops, label, user=user)
        if done:
            labelling.audit_label(
                conn,
                action="label" if len(ids) == 1 else "label_bulk",
                batch=batch,
                detail=labelling.summary(done, label),
                remote=remote(request),
            )
    return batch, done, [i for i in ids if i not in set(done)]


def _labelled_by(st: State, label_id: int) -> str:
    with st.engine.connect() as conn:
        r = conn.execute(
            sa.select(db.labels.c.label, db.labels.c.labelled_by).where(db.labels.c.id == label_id)
        ).first()
    return f"already labelled {r.label} by {r.labelled_by or 'someone'}" if r else "no such crop"


@router.post("/labels/api/label")
def api_label(
    request: Request, st: State, user: User, ids: IdList = None, label: str = Form("")
) -> JSONResponse:
    """Label queued crops (one or a bulk selection); JSON for the page's script: the ids
    labelled, the ids that were not queued any more, and the batch token undo takes."""
    batch, done, gone = _label_ids(request, st, user, ids or [], label)
    return JSONResponse(
        {
            "batch": batch.token,
            "label": label,
            "labelled": done,
            "not_queued": gone,
            "undo_s": UNDO_WINDOW_S,
        }
    )


@router.post("/labels/api/undo")
def api_undo(request: Request, st: State, user: User, batch: str = Form("")) -> JSONResponse:
    """Undo one of the operator's own labelling actions; the ids back in the queue."""
    ids = _undo(request, st, user, batch)
    return JSONResponse({"undone": ids})


@router.post("/labels/bulk")
def bulk_label(
    request: Request, st: State, user: User, ids: IdList = None, label: str = Form("")
) -> RedirectResponse:
    """The bulk form without JavaScript: label the ticked crops, back to the page."""
    _, done, gone = _label_ids(request, st, user, ids or [], label)
    flash(
        request,
        "ok",
        f"Labelled {labelling.summary(done, label)}."
        + (f" {len(gone)} were no longer in the queue." if gone else "")
        + " Undo it under 'Your recent labelling'.",
    )
    return RedirectResponse("/labels", status_code=303)


@router.post("/labels/range")
def range_label(
    request: Request,
    st: State,
    user: User,
    unit: str = Form(""),
    roi: str = Form(""),
    t_from: str = Form("", alias="from"),
    t_to: str = Form("", alias="to"),
    label: str = Form(""),
    upto: int = Form(..., ge=0),
    expect: int = Form(0, ge=0),
) -> RedirectResponse:
    """Label every queued crop of a unit (and ROI) in a time range, among the crops there
    were when the operator saw the preview (``upto``: newer ones are left for a new look)."""
    try:
        labelling.check_label(label, labelling.RANGE_CHOICES)
        rng = _range_from_query(unit, roi, t_from, t_to, upto)
    except LabellingError as e:
        raise HTTPException(400, str(e)) from None
    with st.engine.begin() as conn:
        crops = rng.crops(conn)
        if not crops:
            raise HTTPException(
                404, f"no unlabelled crop from {rng.describe()} (any more); nothing was labelled"
            )
        batch, done = labelling.label_crops(conn, crops, label, user=user)
        labelling.audit_label(
            conn,
            action="label_range",
            batch=batch,
            detail=f"{len(done)} crops from {rng.describe()} as {label}",
            remote=remote(request),
        )
    short = expect - len(done)
    flash(
        request,
        "ok",
        f"Labelled {len(done)} crops from {rng.describe()} as {label}."
        + (f" {short} of the {expect} previewed were labelled meanwhile." if short > 0 else "")
        + " Undo it under 'Your recent labelling'.",
    )
    return RedirectResponse("/labels", status_code=303)


def _undo(request: Request, st: State, user: str, token: str) -> list[int]:
    try:
        batch = Batch.parse(user, token)
        with st.engine.begin() as conn:
            ids = labelling.undo(conn, batch)
            if not ids:
                raise HTTPException(
                    409, "nothing to undo: that labelling was undone already, or is not yours"
                )
            db.record_audit(
                conn,
                username=user,
                action="label_undo",
                target=f"labels@{batch.token}",
                detail=f"{len(ids)} crops back in the queue, "
                f"{time.time() - batch.at:.1f} s after labelling",
                remote=remote(request),
            )
    except LabellingError as e:
        raise HTTPException(400, str(e)) from None
    return ids


@router.post("/labels/undo")
def undo_label(request: Request, st: State, user: User, batch: str = Form("")) -> RedirectResponse:
    ids = _undo(request, st, user, batch)
    flash(
        request, "ok", f"Undone: {len(ids)} crop{'s' if len(ids) != 1 else ''} back in the queue."
    )
    return RedirectResponse("/labels", status_code=303)


@router.get("/labels/export.zip")
def export_labels(request: Request, st: State, user: User) -> Response:
    """The hand-labelled collected crops as the image folder the training script reads:
    ``phone/*.jpg`` and ``no_phone/*.jpg``. Review labels are not in it: they leave the
    control room only in a dataset version (``phonewatch controlroom dataset export``).
    With nothing labelled it says so (no empty ZIP)."""
    lb = db.labels
    wanted = sa.and_(lb.c.label.in_(("phone", "no_phone")), lb.c.source == "collect")
    with st.engine.connect() as conn:
        n_labelled = conn.execute(sa.select(sa.func.count()).where(wanted)).scalar()
    if not n_labelled:
        raise HTTPException(
            404,
            "nothing to export: no collected crop is labelled phone or no phone yet "
            "(label some in the queue first); no file was written",
        )
    buf = io.BytesIO()
    n = 0
    with st.engine.begin() as conn, zipfile.ZipFile(buf, "w") as z:
        for r in conn.execute(
            sa.select(lb.c.unit, lb.c.sha256, lb.c.label, lb.c.jpeg).where(wanted)
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


@router.post("/labels/{label_id}")
def set_label(
    request: Request, st: State, user: User, label_id: int, label: str = Form(...)
) -> RedirectResponse:
    """One crop's label, without JavaScript (the page's script uses ``/labels/api/label``)."""
    _, done, _ = _label_ids(request, st, user, [label_id], label)
    if not done:
        raise HTTPException(409, f"crop {label_id}: {_labelled_by(st, label_id)}")
    return RedirectResponse(f"/labels#crop-{label_id}", status_code=303)
