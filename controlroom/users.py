"""Operators: argon2id password hashes in the ``users`` table, and their dashboard sessions.

A session is a row in ``web_sessions`` keyed by the SHA-256 of a random id that only the
signed cookie holds; a request is logged in only while that row exists, has not expired and
its user is active. Log-out deletes the row; a new password or ``disable-user`` deletes all
of that user's rows, so a copied cookie stops working at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection, Engine

from controlroom import db
from controlroom.errors import ControlRoomError

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_CHARS = 10

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("phonewatch-no-such-user")


def add_user(engine: Engine, username: str, password: str, *, replace: bool = False) -> None:
    if not _NAME_RE.match(username):
        raise ControlRoomError(f"bad user name {username!r}: letters, digits, '_.@-', 1-64")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ControlRoomError(f"password too short: at least {MIN_PASSWORD_CHARS} characters")
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        exists = (
            conn.execute(
                sa.select(db.users.c.username).where(db.users.c.username == username)
            ).first()
            is not None
        )
        if exists and not replace:
            raise ControlRoomError(
                f"user {username!r} exists (use --replace to set a new password)"
            )
        if exists:
            conn.execute(
                db.users.update()
                .where(db.users.c.username == username)
                .values(password_hash=hashed, is_active=True)
            )
            end_sessions(conn, username)  # a new password logs out every old session
        else:
            conn.execute(
                db.users.insert().values(
                    username=username, password_hash=hashed, created_at=time.time(), is_active=True
                )
            )
        db.record_audit(
            conn, username="cli", action="user_set" if exists else "user_add", target=username
        )


def check_password(engine: Engine, username: str, password: str) -> bool:
    """True for an active user with this password. Takes the same time for unknown users."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(db.users.c.password_hash, db.users.c.is_active).where(
                db.users.c.username == username
            )
        ).first()
    hashed = row.password_hash if row is not None else _DUMMY_HASH
    ok: bool
    try:
        ok = _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if ok and row is not None and _hasher.check_needs_rehash(hashed):
        with engine.begin() as conn:
            conn.execute(
                db.users.update()
                .where(db.users.c.username == username)
                .values(password_hash=_hasher.hash(password))
            )
    return ok and row is not None and bool(row.is_active)


def set_active(engine: Engine, username: str, is_active: bool) -> None:
    """Enable or disable a user; a disabled user's open sessions stop working at once."""
    with engine.begin() as conn:
        res = conn.execute(
            db.users.update().where(db.users.c.username == username).values(is_active=is_active)
        )
        if res.rowcount != 1:
            raise ControlRoomError(f"no user {username!r}")
        if not is_active:
            end_sessions(conn, username)
        db.record_audit(
            conn,
            username="cli",
            action="user_enable" if is_active else "user_disable",
            target=username,
        )


def _sid_key(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def start_session(
    conn: Connection, username: str, *, now: float, max_age_s: float, remote: str | None = None
) -> str:
    """A new session for ``username``; returns its id (for the cookie only: the table keeps
    its SHA-256). Expired sessions of anyone are deleted on the way."""
    conn.execute(db.web_sessions.delete().where(db.web_sessions.c.expires_at <= now))
    sid = secrets.token_urlsafe(32)
    conn.execute(
        db.web_sessions.insert().values(
            sid_sha256=_sid_key(sid),
            username=username,
            created_at=now,
            expires_at=now + max_age_s,
            remote=remote,
        )
    )
    return sid


def session_user(engine: Engine, sid: str, *, now: float) -> str | None:
    """The active user of session ``sid``; None if it was ended, has expired, or its user is
    disabled or gone."""
    s, u = db.web_sessions, db.users
    with engine.connect() as conn:
        user = conn.execute(
            sa.select(u.c.username)
            .select_from(s.join(u, s.c.username == u.c.username))
            .where(
                s.c.sid_sha256 == _sid_key(sid), s.c.expires_at > now, u.c.is_active == sa.true()
            )
        ).scalar()
    return None if user is None else str(user)


def end_session(conn: Connection, sid: str) -> None:
    conn.execute(db.web_sessions.delete().where(db.web_sessions.c.sid_sha256 == _sid_key(sid)))


def end_sessions(conn: Connection, username: str) -> int:
    """End every session of ``username``; how many there were."""
    res = conn.execute(db.web_sessions.delete().where(db.web_sessions.c.username == username))
    return int(res.rowcount)
