"""Commands from the control room to a unit: the payloads, their bounds, and the port the
dashboard publishes them through.

A command goes out on ``<root>/<unit>/cmd/<name>``, QoS 1, never retained (a retained command
would replay on every reconnect of the unit). The payloads follow ``edge/core/schemas/
command.v1.json``; every one carries a short ``request_id`` so the audit log, the unit's log and
(for ``snapshot``) the answer can be matched up.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from edge.core.errors import PhonewatchError

NAMES = ("snapshot", "collect", "mute")
COLLECT_COUNT_MAX = 500
COLLECT_INTERVAL_MIN_S = 0.2
COLLECT_INTERVAL_MAX_S = 3600.0
MUTE_MAX_S = 86400


class CommandError(PhonewatchError, ValueError):
    """A command's arguments are out of bounds (the dashboard answers 400)."""


@dataclass(frozen=True)
class Sent:
    """What became of a publish: ``ok`` only when the broker acknowledged it (PUBACK, success)."""

    ok: bool
    detail: str


class CommandSink(Protocol):
    """Publishes one command; never raises for a broker problem (``Sent.ok`` is False)."""

    @property
    def is_connected(self) -> bool: ...

    def publish_command(self, unit: str, name: str, body: dict[str, Any]) -> Sent: ...


def request_id() -> str:
    return secrets.token_hex(6)


def topic(root: str, unit: str, name: str) -> str:
    return f"{root.rstrip('/')}/{unit}/cmd/{name}"


def snapshot(*, user: str) -> dict[str, Any]:
    return {"request_id": request_id(), "reason": f"requested by {user}"[:256]}


def collect(*, count: int, interval_s: float) -> dict[str, Any]:
    if (
        isinstance(count, bool)
        or not isinstance(count, int)
        or not (1 <= count <= COLLECT_COUNT_MAX)
    ):
        raise CommandError(f"count must be a whole number from 1 to {COLLECT_COUNT_MAX}")
    if not (
        isinstance(interval_s, int | float)
        and math.isfinite(interval_s)
        and COLLECT_INTERVAL_MIN_S <= interval_s <= COLLECT_INTERVAL_MAX_S
    ):
        raise CommandError(
            f"interval must be {COLLECT_INTERVAL_MIN_S} to {COLLECT_INTERVAL_MAX_S:.0f} seconds"
        )
    interval: int | float = int(interval_s) if float(interval_s).is_integer() else interval_s
    return {"request_id": request_id(), "count": count, "interval_s": interval}


def mute(*, duration_s: int) -> dict[str, Any]:
    if (
        isinstance(duration_s, bool)
        or not isinstance(duration_s, int)
        or not (0 <= duration_s <= MUTE_MAX_S)
    ):
        raise CommandError(
            f"mute duration must be 0 to {MUTE_MAX_S} seconds ({MUTE_MAX_S // 60} minutes)"
        )
    return {"request_id": request_id(), "duration_s": duration_s}


def parse_int(text: str, what: str) -> int:
    try:
        return int(text.strip(), 10)
    except (ValueError, AttributeError):
        raise CommandError(f"{what} must be a whole number, not {text[:20]!r}") from None


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        raise CommandError(f"{what} must be a number, not {text[:20]!r}") from None
    if not math.isfinite(value):
        raise CommandError(f"{what} must be a finite number")
    return value
