"""GPS configuration (the ``[gps]`` table). Owned by the GPS work; extend freely."""

from __future__ import annotations

from pydantic import Field

from edge.app.config_base import StrictModel


class GpsConfig(StrictModel):
    source: str = Field(
        description="Where fixes come from: a pyserial URL (/dev/serial0, loop://, socket://host:port),"
        " 'gpsd://host:port', or 'replay:FILE'.",
        min_length=1,
    )
