"""Operators: argon2id password hashes in the ``users`` table."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Engine

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
        exists = conn.execute(sa.select(db.users.c.username)
                              .where(db.users.c.username == username)).first() is not None
        if exists and not replace:
            raise ControlRoomError(f"user {username!r} exists (use --replace to set a new "
                                   "password)")
        if exists:
            conn.execute(db.users.update().where(db.users.c.username == username)
                         .values(password_hash=hashed, is_active=True))
        else:
            conn.execute(db.users.insert().values(username=username, password_hash=hashed,
                                                  created_at=time.time(), is_active=True))
        db.record_audit(conn, username="cli", action="user_set" if exists else "user_add",
                        target=username)


def check_password(engine: Engine, username: str, password: str) -> bool:
    """True for an active user with this password. Takes the same time for unknown users."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.users.c.password_hash, db.users.c.is_active)
                           .where(db.users.c.username == username)).first()
    hashed = row.password_hash if row is not None else _DUMMY_HASH
    ok: bool
    try:
        ok = _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if ok and row is not None and _hasher.check_needs_rehash(hashed):
        with engine.begin() as conn:
            conn.execute(db.users.update().where(db.users.c.username == username)
                         .values(password_hash=_hasher.hash(password)))
    return ok and row is not None and bool(row.is_active)


def set_active(engine: Engine, username: str, is_active: bool) -> None:
    """Enable or disable a user; a disabled user's open sessions stop working at once."""
    with engine.begin() as conn:
        res = conn.execute(db.users.update().where(db.users.c.username == username)
                           .values(is_active=is_active))
        if res.rowcount != 1:
            raise ControlRoomError(f"no user {username!r}")
        db.record_audit(conn, username="cli", action="user_enable" if is_active else
                        "user_disable", target=username)
