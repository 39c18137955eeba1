"""Model rollout from a unit's page: offer a signed package, promote the model in shadow.

``POST /units/{unit_id}/model/offer`` takes an uploaded package (multipart form: ``package``,
``mode`` shadow or live, ``csrf``) and hands it to :func:`controlroom.rollout.offer_package`
on the dashboard's own MQTT connection (the receiver's, or the ``CommandPublisher`` of a
dashboard run without one). ``POST /units/{unit_id}/model/promote`` sends ``model_promote``
for the model the unit reports in shadow, when the control room holds its package.

Only the users in ``[models] offer_users`` may do either (a 403 naming the setting for
anyone else). Before anything is recorded or sent, the dashboard refuses, with the reason on
the page: an upload over :data:`PACKAGE_MAX_BYTES`, a file that is not a package or is
truncated, a package that does not verify with the control room's own model-signing public
key(s) (``[models] trusted_keys``), an unknown unit, and a broker it is not connected to.
Every offer, promotion and refused attempt is written to the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse
from sqlalchemy.engine import Connection

from controlroom import commands, db, rollout
from controlroom.config import ModelsConfig
from controlroom.web.deps import (
    State,
    User,
    WebState,
    flash,
    protected_router,
    remote,
    web_state,
)
from edge.common import model_package as mp
from edge.common.signing import key_id, load_public_key
from edge.core.errors import ConfigError, SignatureError

PACKAGE_MAX_BYTES = mp.MAX_BYTES
"""The largest package the page takes (64 MiB, the unit's own limit)."""
FORM_OVERHEAD_BYTES = 64 * 1024
"""What a multipart form adds around the file (boundaries, headers, the other fields)."""
OFFER_SETTING = "[models] offer_users"
KEYS_SETTING = "[models] trusted_keys"


@runtime_checkable
class ModelSender(Protocol):
    """The dashboard's MQTT connection, when it can send packages (``Receiver`` and
    ``CommandPublisher`` both can)."""

    @property
    def is_connected(self) -> bool: ...

    def publish_command(self, unit: str, name: str, body: dict[str, Any]) -> commands.Sent: ...

    def publish_chunks(
        self, unit: str, package_sha256: str, chunks: Sequence[tuple[int, bytes]]
    ) -> commands.Sent: ...


def load_keys(cfg: ModelsConfig) -> tuple[Ed25519PublicKey, ...]:
    """The control room's model-signing public keys; a ConfigError names a key that cannot
    be read (checked when the dashboard starts)."""
    keys = []
    for path in cfg.trusted_keys:
        try:
            keys.append(load_public_key(path))
        except SignatureError as e:
            raise ConfigError(f"models.trusted_keys: {path}: {e}") from None
    return tuple(keys)


def _audit(request: Request, user: str, action: str, unit: str, detail: str) -> None:
    with web_state(request).engine.begin() as conn:
        db.record_audit(
            conn,
            username=user,
            action=action,
            target=unit[:64],
            detail=detail[:1000],
            remote=remote(request),
        )


def _gate(request: Request, user: str, unit_id: str, action: str) -> None:
    """403 for a user not in ``offer_users``, 404 for an unknown unit; both audited."""
    st = web_state(request)
    if not st.cfg.models.may_offer(user):
        why = f"{user} is not in {OFFER_SETTING} in the control room's config"
        _audit(request, user, f"{action}_refused", unit_id, why)
        raise HTTPException(403, f"Only the users in {OFFER_SETTING} may do this; {why}.")
    with st.engine.connect() as conn:
        known = db.unit_known(conn, unit_id)
    if not known:
        _audit(request, user, f"{action}_refused", unit_id, "no such registered unit")
        raise HTTPException(
            404, f"no registered unit {unit_id[:64]!r} ('controlroom add-unit'); nothing was sent"
        )


def upload_limit(request: Request) -> None:
    """Refuse (413, audited) a form declared larger than a package may be, before the CSRF
    check reads it: a big upload is never spooled to disk."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) <= PACKAGE_MAX_BYTES + FORM_OVERHEAD_BYTES:
        return
    why = (
        f"the upload is {int(declared)} bytes ({_mib(int(declared))}); a package may be at "
        f"most {PACKAGE_MAX_BYTES} bytes ({_mib(PACKAGE_MAX_BYTES)})"
    )
    user = str(getattr(request.state, "user", ""))
    _audit(request, user, "model_offer_refused", request.path_params.get("unit_id", ""), why)
    raise HTTPException(413, f"Package NOT offered: {why}.")


router = protected_router(upload_limit)


def _sender(st: WebState, nothing: str) -> tuple[ModelSender | None, str]:
    """The connection to send on, or None and why not (ending in ``nothing``)."""
    if st.commander is None:
        return None, f"this dashboard has no MQTT connection; {nothing}"
    if not isinstance(st.commander, ModelSender):
        return None, f"this dashboard's MQTT connection cannot send model packages; {nothing}"
    if not st.commander.is_connected:
        m = st.cfg.mqtt
        return None, f"cannot reach the broker {m.host}:{m.port}; {nothing}"
    return st.commander, ""


def _read_upload(package: UploadFile | None) -> tuple[bytes, str]:
    """The uploaded bytes (at most one over the limit) and their name."""
    if package is None:
        return b"", ""
    return package.file.read(PACKAGE_MAX_BYTES + 1), (package.filename or "")[:128]


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB"


def check_package(blob: bytes, mode: str, keys: Sequence[Ed25519PublicKey]) -> str | None:
    """Why ``blob`` must not be offered as ``mode``, or None when it may: it must be a whole
    package, signed by one of the control room's model-signing ``keys``, every file matching
    the signed manifest (the unit checks it all again against the keys it pins)."""
    if mode not in rollout.MODES:
        return f"mode must be shadow or live, not {mode[:20]!r}"
    if not blob:
        return "no package file was chosen, or it is empty"
    if len(blob) > PACKAGE_MAX_BYTES:
        return (
            f"the file is larger than {PACKAGE_MAX_BYTES} bytes ({_mib(PACKAGE_MAX_BYTES)}), "
            "the most a package may be"
        )
    if not keys:
        return (
            "the control room has no model-signing public key to check the package's "
            f"signature with; set {KEYS_SETTING} in its config"
        )
    try:
        signer = mp.inspect_package(blob)["key_id"]
        ours = sorted(key_id(k) for k in keys)
        if signer not in ours:
            return (
                f"the package is signed by key {signer[:16]!r}, not by the control room's "
                f"model-signing key ({', '.join(ours)}, {KEYS_SETTING})"
            )
        mp.verify_package(blob, keys)
    except mp.ModelPackageError as e:
        return str(e)
    return None


@router.post("/units/{unit_id}/model/offer")
def offer(
    request: Request,
    st: State,
    user: User,
    unit_id: str,
    mode: str = Form("shadow"),
    package: Annotated[UploadFile | None, File()] = None,
) -> RedirectResponse:
    _gate(request, user, unit_id, "model_offer")
    blob, filename = _read_upload(package)
    what = f"{filename or 'package'} ({len(blob)} bytes)"
    why = check_package(blob, mode, st.model_keys)
    sender, no_sender = _sender(st, "nothing was offered")
    if why is None and sender is None:
        why = no_sender
    if why is None and sender is not None:
        try:
            done, sent = rollout.offer_package(
                st.engine, sender, unit=unit_id, blob=blob, mode=mode, user=user
            )
        except rollout.RolloutError as e:
            why = str(e)
        else:
            _report(request, user, unit_id, done, sent)
            return RedirectResponse(f"/units/{unit_id}", status_code=303)
    _audit(request, user, "model_offer_refused", unit_id, f"{what} as {mode[:20]}: {why}")
    flash(request, "error", f"Package NOT offered to {unit_id}: {why}")
    return RedirectResponse(f"/units/{unit_id}", status_code=303)


def _report(
    request: Request, user: str, unit_id: str, done: rollout.Offer, sent: commands.Sent
) -> None:
    b = done.body
    what = f"{b['name']} {b['version']} ({done.sha256[:12]}) as {b['mode']}"
    if sent.ok:
        flash(
            request,
            "ok",
            f"Offered {what} to {unit_id}: {b['size']} bytes in {b['chunk_count']} chunk(s) "
            "published. The unit's progress shows under Rollouts (reload the page).",
        )
        return
    _audit(request, user, "model_offer_unsent", unit_id, f"{what}: {sent.detail}")
    flash(
        request,
        "error",
        f"Package {what} NOT sent to {unit_id}: {sent.detail} (its rollout says not sent)",
    )


def promotable(conn: Connection, hb: dict[str, Any]) -> dict[str, str] | None:
    """The unit's shadow model (from its last heartbeat) when the control room holds its
    package, so it can be promoted by hash; else None."""
    model = hb.get("model")
    shadow = model.get("shadow") if isinstance(model, dict) else None
    sha = shadow.get("sha256") if isinstance(shadow, dict) else None
    if not isinstance(sha, str) or not mp.HEX64_RE.match(sha):
        return None
    q = sa.select(db.model_packages.c.version).where(db.model_packages.c.sha256 == sha)
    version = conn.execute(q).scalar()
    if version is None:
        return None
    return {"sha256": sha, "version": str(version)}


def _shadow_of(conn: Connection, unit_id: str) -> dict[str, str] | None:
    text = conn.execute(
        sa.select(db.units.c.heartbeat).where(db.units.c.unit_id == unit_id)
    ).scalar()
    try:
        hb = json.loads(text) if text else None
    except ValueError:
        return None
    return promotable(conn, hb) if isinstance(hb, dict) else None


@router.post("/units/{unit_id}/model/promote")
def promote(
    request: Request,
    st: State,
    user: User,
    unit_id: str,
    package_sha256: str = Form(""),
) -> RedirectResponse:
    _gate(request, user, unit_id, "model_promote")
    with st.engine.connect() as conn:
        shadow = _shadow_of(conn, unit_id)
    sender, why = _sender(st, "nothing was sent")
    if shadow is None or shadow["sha256"] != package_sha256:
        sender, why = (
            None,
            (
                f"{package_sha256[:12] or 'that package'} is not the model {unit_id} last reported "
                "in shadow, or the control room does not hold its package"
            ),
        )
    if sender is None or shadow is None:
        _audit(request, user, "model_promote_refused", unit_id, why)
        flash(request, "error", f"Promotion NOT sent to {unit_id}: {why}")
        return RedirectResponse(f"/units/{unit_id}", status_code=303)
    body = {"request_id": commands.request_id(), "package_sha256": package_sha256}
    sent = sender.publish_command(unit_id, "model_promote", body)
    what = f"Promote {shadow['version']} ({package_sha256[:12]}) to live"
    result = "sent" if sent.ok else "NOT sent"
    _audit(request, user, "model_promote", unit_id, f"{what}: {result}; {sent.detail}")
    if sent.ok:
        flash(request, "ok", f"{what} sent to {unit_id} (request {body['request_id']}).")
    else:
        flash(request, "error", f"{what} NOT sent to {unit_id}: {sent.detail}")
    return RedirectResponse(f"/units/{unit_id}", status_code=303)


def offer_context(st: WebState, user: str, conn: Connection, hb: dict[str, Any]) -> dict[str, Any]:
    """What the unit page's Model section needs to show the offer and promote forms."""
    return {
        "may_offer": st.cfg.models.may_offer(user),
        "setting": OFFER_SETTING,
        "keys_setting": KEYS_SETTING,
        "has_keys": bool(st.model_keys),
        "max_size": _mib(PACKAGE_MAX_BYTES),
        "promote": promotable(conn, hb),
    }
