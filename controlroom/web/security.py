"""The session-signing secret and the security headers."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlroom.errors import ControlRoomError

SECRET_MIN_BYTES = 32
HSTS = b"max-age=31536000"


def load_secret(path: Path) -> str:
    """The session-signing secret, at least :data:`SECRET_MIN_BYTES` long; made on first use
    (mode 0600, written whole or not at all)."""
    try:
        raw = path.read_bytes().strip()
    except FileNotFoundError:
        return _create_secret(path)
    except OSError as e:
        raise ControlRoomError(f"cannot read web.secret_key_file {path}: {e.strerror}") from None
    if len(raw) < SECRET_MIN_BYTES:
        raise ControlRoomError(
            f"web.secret_key_file {path} holds {len(raw)} bytes; the session secret needs at "
            f"least {SECRET_MIN_BYTES} bytes (delete the file and a new one is made at start)"
        )
    return raw.decode("latin-1")  # any bytes; the ones written here are ASCII


def _create_secret(path: Path) -> str:
    """Write a new secret to a temporary file in the same folder, fsync it, then link it into
    place: readers see the whole secret or no file (a crash never leaves an empty one), and
    a secret another process has just made is never replaced."""
    secret = secrets.token_urlsafe(48)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="ascii") as f:  # mkstemp makes it 0600
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_secret(path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise ControlRoomError(
            f"cannot create web.secret_key_file {path}: {e.strerror} (make its folder writable, "
            "e.g. the service's StateDirectory under ProtectSystem=strict)"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return secret


def content_security_policy(tile_url: str) -> str:
    """Scripts and everything else only from this server; map tiles from the tile host."""
    img = "'self' data:"
    if tile_url:
        parts = urlsplit(tile_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            host = re.sub(r"\{[a-z]+\}", "*", parts.netloc)
            img += f" {parts.scheme}://{host}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src {img}; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    )


def _secure(set_cookie: bytes) -> bytes:
    attributes = [a.strip().lower() for a in set_cookie.split(b";")[1:]]
    return set_cookie if b"secure" in attributes else set_cookie + b"; secure"


class SecurityHeaders:
    """Pure ASGI middleware (safe with streaming responses) adding CSP and friends. Over TLS
    (the request's scheme is https, or ``https_only`` says TLS ends at a proxy that does not
    tell) it also sends HSTS and marks every cookie ``Secure``."""

    def __init__(self, app: ASGIApp, *, csp: str, https_only: bool = False) -> None:
        self.app = app
        self.https_only = https_only
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        tls = self.https_only or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *self.headers]
                if tls:
                    headers = [
                        (k, _secure(v) if k.lower() == b"set-cookie" else v) for k, v in headers
                    ]
                    headers.append((b"strict-transport-security", HSTS))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
