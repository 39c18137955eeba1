"""GPS configuration (the ``[gps]`` table).

``source`` picks the kind of receiver by its form, like pyserial picks a transport by URL:

* a pyserial URL or device: ``/dev/serial0``, ``/dev/ttyACM0``, ``loop://``,
  ``socket://host:port``, ``spy:///dev/ttyUSB0``;
* ``gpsd://host[:port]``: TPV reports from a gpsd (default port 2947);
* ``replay:FILE``: an NMEA log played back (``#`` lines are comments).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.common.config import StrictModel, Table, resolve_path_text

GPSD_DEFAULT_PORT = 2947


class GpsConfig(StrictModel):
    source: str = Field(
        description="Where fixes come from: a pyserial URL (/dev/serial0, loop://, socket://host:port),"
        " 'gpsd://host:port', or 'replay:FILE'.",
        min_length=1,
    )
    baud: int = Field(
        9600,
        description="Serial speed (baud) of the receiver; most modules start at 9600.",
        ge=1200,
        le=921600,
    )
    max_fix_age_s: float = Field(
        3.0,
        description="A fix older than this is 'stale': alerts still carry it with its age, "
        "but take their time from the system clock.",
        gt=0,
        le=3600,
    )
    silence_timeout_s: float = Field(
        5.0,
        description="No sentence for this long means the receiver is gone ('no_receiver').",
        gt=0,
        le=600,
    )
    allow_no_checksum: bool = Field(
        False, description="Accept sentences without a '*hh' checksum (some old receivers)."
    )
    reconnect_min_s: float = Field(
        1.0,
        description="First wait before reopening a lost port or gpsd connection (s).",
        gt=0,
        le=60,
    )
    reconnect_max_s: float = Field(
        30.0,
        description="Longest wait between reopen attempts (backoff doubles) (s).",
        gt=0,
        le=600,
    )
    rollover_floor: dt.date = Field(
        dt.date(2024, 1, 1),
        description="Receiver dates before this are GPS week-number "
        "rollovers and are moved forward by 1024 weeks.",
        ge=dt.date(1980, 1, 6),
        le=dt.date(2100, 1, 1),
    )
    replay_speed: float = Field(
        1.0,
        description="Replay pace: 1 = the log's own pace, 0 = as fast as possible.",
        ge=0,
        le=1000,
    )
    replay_loop: bool = Field(False, description="Start the replay again at the end.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        kind = source_kind(v)
        if kind == "replay" and not v[len("replay:") :].strip():
            raise ValueError("'replay:' needs a file, e.g. 'replay:demo/drive.nmea'")
        if kind == "gpsd":
            gpsd_address(v)  # raises ValueError with the reason
        is_device = v.startswith("/") or "://" in v or v.upper().startswith("COM")
        if kind == "serial" and not is_device:
            raise ValueError(
                f"{v!r} is not a serial device (/dev/...), a pyserial URL (loop://, socket://h:p),"
                " 'gpsd://host:port' or 'replay:FILE'"
            )
        return v

    @classmethod
    def resolve_extra_paths(cls, table: Table, base: Path) -> None:
        src = table.get("source")
        if isinstance(src, str) and src.startswith("replay:"):
            table["source"] = "replay:" + resolve_path_text(src[len("replay:") :], base)

    @model_validator(mode="after")
    def _backoff(self) -> GpsConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


def source_kind(source: str) -> Literal["serial", "gpsd", "replay"]:
    if source.startswith("replay:"):
        return "replay"
    if source.startswith("gpsd://"):
        return "gpsd"
    return "serial"


def gpsd_address(source: str) -> tuple[str, int]:
    """``gpsd://host[:port]`` -> (host, port)."""
    rest = source[len("gpsd://") :].strip("/")
    host, sep, port_s = rest.rpartition(":") if ":" in rest else (rest, "", "")
    host = host or "localhost"
    if not sep:
        return host, GPSD_DEFAULT_PORT
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"gpsd port {port_s!r} is not a number in 1..65535")
    return host.strip("[]"), int(port_s)
