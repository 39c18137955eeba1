"""``phonewatch gps``: print one line per fix, so an installer can check the antenna on site."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import queue
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.adapters.gps import build_gps_source
from edge.adapters.gps_config import GpsConfig
from edge.core.errors import ConfigError, GpsError
from edge.core.gps import Fix

JSON_FIELDS = (
    "time",
    "lat",
    "lon",
    "alt_m",
    "speed_mps",
    "track_deg",
    "mode",
    "quality",
    "hdop",
    "sats",
)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "gps",
        help="print GPS fixes from a receiver, gpsd or a replayed log",
        description="Print one line per fix (epoch) from a GPS source. Examples: "
        "'phonewatch gps --source /dev/serial0', 'phonewatch gps --source gpsd://localhost', "
        "'phonewatch gps --source replay:drive.nmea --fast --json'.",
    )
    p.add_argument(
        "--source",
        help="pyserial URL or device (/dev/serial0, /dev/ttyACM0, "
        "socket://host:port, loop://), gpsd://host[:port], or replay:FILE; "
        "default: the [gps] table of --config",
    )
    p.add_argument("--config", type=Path, help="unit config file to take the [gps] table from")
    p.add_argument("--baud", type=int, help="serial speed (default 9600 or the config's)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="stop after N fixes (default: run until Ctrl-C or the log ends)",
    )
    p.add_argument("--fast", action="store_true", help="replay as fast as possible")
    p.add_argument(
        "--rollover-floor",
        type=dt.date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="dates before this are GPS week rollovers and move on 1024 weeks "
        "(default: the config's, or 1980-01-06 for a replay, shown as recorded)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=10.0,
        help="give up if no sentence arrives for this long (default 10)",
    )
    p.set_defaults(func=run_gps)


def _gps_config(args: argparse.Namespace) -> GpsConfig:
    base: dict[str, Any] = {}
    if args.config is not None:
        from edge.app.config import load_config

        cfg = load_config(args.config)
        if cfg.gps is None and not args.source:
            raise ConfigError(f"{args.config}: no [gps] table; give --source")
        if cfg.gps is not None:
            base = cfg.gps.model_dump()
    if args.source:
        base["source"] = args.source
    if "source" not in base:
        raise ConfigError(
            "give --source (e.g. /dev/serial0, gpsd://localhost, replay:FILE) or --config"
        )
    if args.baud is not None:
        base["baud"] = args.baud
    if args.fast:
        base["replay_speed"] = 0.0
    if args.rollover_floor is not None:
        base["rollover_floor"] = args.rollover_floor
    elif args.config is None and str(base["source"]).startswith("replay:"):
        base["rollover_floor"] = dt.date(1980, 1, 6)
    try:
        return GpsConfig.model_validate(base)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"gps: {msgs}") from None


def format_fix(fix: Fix, *, as_json: bool) -> str:
    d = fix.to_dict()
    if as_json:
        return json.dumps({k: d[k] for k in JSON_FIELDS}, separators=(",", ":"))
    pos = f"{d['lat']:.7f} {d['lon']:.7f}" if fix.has_position else "no position"
    parts = [d["time"] or "no-time", f"{d['mode']:>4}", pos]
    if d["alt_m"] is not None:
        parts.append(f"alt {d['alt_m']:.1f} m")
    if d["speed_mps"] is not None:
        parts.append(f"{d['speed_mps']:.2f} m/s")
    if d["track_deg"] is not None:
        parts.append(f"track {d['track_deg']:.1f}")
    parts.append(
        f"q {d['quality']} sats {d['sats'] if d['sats'] is not None else '-'} "
        f"hdop {d['hdop'] if d['hdop'] is not None else '-'}"
    )
    return "  ".join(parts)


def run_gps(args: argparse.Namespace) -> int:
    cfg = _gps_config(args)
    fixes: queue.Queue[Fix] = queue.Queue(maxsize=1000)

    def on_fix(fix: Fix) -> None:
        with contextlib.suppress(queue.Full):
            fixes.put(fix, timeout=5.0)  # a slow terminal paces a fast replay

    source = build_gps_source(cfg, on_fix=on_fix)
    printed = 0
    finished = getattr(source, "finished", None)
    last_progress = time.monotonic()
    try:
        source.start()
        while args.count <= 0 or printed < args.count:
            try:
                fix = fixes.get(timeout=0.2)
            except queue.Empty:
                if finished is not None and finished.is_set() and fixes.empty():
                    break
                if time.monotonic() - last_progress > args.timeout_s:
                    stats = source.stats
                    raise GpsError(
                        f"{cfg.source}: no fix epoch in {args.timeout_s:g} s "
                        f"(state {stats['state']}; "
                        f"{stats.get('last_error') or 'no error reported'})"
                    ) from None
                continue
            last_progress = time.monotonic()
            print(format_fix(fix, as_json=args.json), flush=True)
            printed += 1
    finally:
        stats = source.stats
        source.close()
    counts = ", ".join(
        f"{k} {stats[k]}"
        for k in (
            "sentences_ok",
            "bad_checksum",
            "no_checksum",
            "malformed",
            "reports_ok",
            "bad_json",
        )
        if k in stats
    )
    print(f"gps: {printed} fixes printed; state {stats['state']}; {counts}", file=sys.stderr)
    return 0
