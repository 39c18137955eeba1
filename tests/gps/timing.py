"""The alert-time rule as the app applies it, for tests that hold a :class:`Fix`.

There is one rule, :func:`edge.core.messages.alert_time`, over the fix as the alert carries it
(``Fix.to_dict()``); this wrapper gives its answer as a ``datetime`` for readable assertions.
"""

from __future__ import annotations

import datetime as dt

from edge.core import messages as m
from edge.core.gps import Fix


def alert_time(fix: Fix | None, now_wall_s: float, max_age_s: float) -> tuple[dt.datetime, str]:
    text, source = m.alert_time(
        fix.to_dict() if fix is not None else None, t_wall_s=now_wall_s, max_age_s=max_age_s
    )
    return dt.datetime.fromtimestamp(m.parse_utc_iso(text), tz=dt.UTC), source
