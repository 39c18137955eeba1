"""The control room's own errors, under the one phonewatch root (``edge.core.errors``)."""

from __future__ import annotations

from edge.core.errors import PhonewatchError


class ControlRoomError(PhonewatchError, RuntimeError):
    """The control room cannot start or run: database, broker, config or user store."""


class BundleError(PhonewatchError, ValueError):
    """An evidence bundle is malformed, incomplete or fails verification."""
