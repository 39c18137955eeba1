"""Make valid NMEA epochs for tests (RMC + GGA + GSA with correct checksums)."""

from __future__ import annotations

import datetime as dt

from edge.core.nmea import with_checksum


def _coord(value: float, width: int, pos: str, neg: str) -> tuple[str, str]:
    hemi = pos if value >= 0 else neg
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60
    return f"{deg:0{width}d}{minutes:07.4f}", hemi


def epoch(
    t: dt.datetime,
    lat: float,
    lon: float,
    *,
    alt_m: float = 35.0,
    sats: int = 9,
    speed_kn: float = 12.5,
    track_deg: float = 90.0,
    valid: bool = True,
) -> list[str]:
    hms = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
    ddmmyy = t.strftime("%d%m%y")
    la, ns = _coord(lat, 2, "N", "S")
    lo, ew = _coord(lon, 3, "E", "W")
    status, quality, mode = ("A", 1, 3) if valid else ("V", 0, 1)
    return [
        with_checksum(
            f"GPRMC,{hms},{status},{la},{ns},{lo},{ew},{speed_kn:.2f},{track_deg:.1f},"
            f"{ddmmyy},,,{'A' if valid else 'N'}"
        ),
        with_checksum(
            f"GPGGA,{hms},{la},{ns},{lo},{ew},{quality},{sats if valid else 2:02d},0.9,"
            f"{alt_m:.1f},M,"
            "47.0,M,,"
        ),
        with_checksum(f"GPGSA,A,{mode},01,02,03,04,05,06,07,08,09,,,,1.6,0.9,1.3"),
    ]


def drive(
    start: dt.datetime, n: int, *, lat: float = 51.5, lon: float = -0.12, step_s: float = 1.0
) -> list[str]:
    lines: list[str] = []
    for i in range(n):
        lines += epoch(start + dt.timedelta(seconds=i * step_s), lat + i * 1e-5, lon)
    return lines
