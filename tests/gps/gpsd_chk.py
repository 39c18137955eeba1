"""Read gpsd regression files (``*.log.chk``) and compare our fixes with gpsd's TPV reports.

Each TPV gpsd printed is matched with our fix for the epoch as it stood after the same input
sentence. Where we differ on purpose, :func:`classify` names the reason and checks it:

* ``carried``: gpsd keeps the previous epoch's mode / speed / track until the new epoch's
  sentence for it arrives; we report only what *this* epoch has said so far. Checked: gpsd's
  value equals our previous epoch's.
* ``receiver_said_invalid``: a sentence in the epoch said "no fix" (RMC/GLL status V, GGA
  quality 0, GNS mode N, FAA mode N) and we refuse the position another sentence gave; gpsd
  takes the last sentence's word. We never invent a position.
* ``gsa_says_2d``: the receiver's GSA says 2D (or its GGA height comes from < 4 satellites) and
  we say 2d; gpsd raises the mode to 3D from any GGA altitude it saw in the cycle.
* ``gsa_says_no_fix``: the receiver's GSA says "no fix"; gpsd lets RMC/GGA override it.
* ``computed_by_gpsd``: the epoch so far has no speed/track sentence (no RMC or VTG); gpsd
  fills speed and track in from successive positions. We report only what the receiver measured.
* ``gga_few_sats``: a GGA with fewer than 3 satellites (SiRFstarV and Telit send one GGA per
  constellation; some receivers say quality 1 with 0 satellites). We never take a position from
  it; gpsd takes the last GGA's word.
* ``gpsd_mode_without_position``: gpsd reports a mode from a GSA before any position arrived;
  a mode without a position is nothing we could put in an alert.
* ``rollover``: gpsd moved the date 1024 weeks (its build-date pivot); we only correct a date
  older than our configured floor, and a 2015 capture is genuinely from 2015.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.gps import Fix, FixAssembler, format_utc

REASONS = (
    "carried",
    "computed_by_gpsd",
    "gga_few_sats",
    "gpsd_mode_without_position",
    "receiver_said_invalid",
    "gsa_says_2d",
    "gsa_says_no_fix",
    "rollover",
)
_INVALID_NOTES = {"rmc_invalid", "gll_invalid", "gga_no_fix", "gns_invalid"}


@dataclass
class Report:
    log: str
    line_no: int
    sentence: str
    tpv: dict[str, Any]
    ours: Fix | None
    previous: Fix | None
    notes: frozenset[str] = field(default_factory=frozenset)


def walk(chk: Path, *, rollover_floor: dt.date) -> tuple[list[Report], FixAssembler]:
    """Feed every input sentence; at each gpsd TPV take our epoch as it stands then."""
    asm = FixAssembler(rollover_floor=rollover_floor, clock=lambda: 0.0)
    reports: list[Report] = []
    last = ""
    for no, raw in enumerate(chk.read_bytes().decode("latin-1").splitlines(), 1):
        if raw.startswith(("$", "!")):
            asm.feed(raw, 0.0)
            last = raw
        elif raw.startswith("{"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("class") == "TPV":
                reports.append(
                    Report(
                        chk.name,
                        no,
                        last,
                        obj,
                        asm.current(),
                        asm.last_closed(),
                        asm.current_notes(),
                    )
                )
    return reports, asm


def _mode(tpv: dict[str, Any]) -> str:
    return {0: "none", 1: "none", 2: "2d", 3: "3d"}[int(tpv.get("mode", 0))]


def compare(r: Report) -> dict[str, str]:
    """Differences between gpsd's TPV and our fix, keyed by field (empty: agree)."""
    tpv, ours = r.tpv, r.ours
    diffs: dict[str, str] = {}
    gpsd_mode = _mode(tpv)
    our_mode = ours.mode if ours is not None else "none"
    if gpsd_mode != our_mode:
        diffs["mode"] = f"gpsd={gpsd_mode} ours={our_mode}"
    if gpsd_mode == "none" or our_mode == "none" or ours is None:
        return diffs
    if "time" in tpv:
        ours_t = format_utc(ours.time) if ours.time else None
        if ours_t != tpv["time"]:
            diffs["time"] = f"gpsd={tpv['time']} ours={ours_t}"
    for key, mine in (("lat", ours.lat), ("lon", ours.lon)):
        if key in tpv and (mine is None or abs(mine - tpv[key]) > 1e-6):
            diffs[key] = f"gpsd={tpv[key]} ours={mine}"
    if "speed" in tpv and (ours.speed_mps is None or abs(ours.speed_mps - tpv["speed"]) > 1e-3):
        diffs["speed"] = f"gpsd={tpv['speed']} ours={ours.speed_mps}"
    if "track" in tpv and (ours.track_deg is None or abs(ours.track_deg - tpv["track"]) > 1e-3):
        diffs["track"] = f"gpsd={tpv['track']} ours={ours.track_deg}"
    return diffs


def classify(r: Report, key: str) -> str | None:
    """The documented reason for one difference, verified; None if unexplained."""
    if key in ("speed", "track"):
        return _classify_motion(r, key)
    if key == "time":
        return _classify_time(r)
    if key == "mode":
        return _classify_mode(r)
    return None


_MOTION_ATTRS = {"speed": "speed_mps", "track": "track_deg"}


def _classify_motion(r: Report, key: str) -> str | None:
    """Speed or track that gpsd has and we do not: ``carried`` or ``computed_by_gpsd``."""
    attr = _MOTION_ATTRS[key]
    if r.ours is None or getattr(r.ours, attr) is not None:
        return None
    was = getattr(r.previous, attr) if r.previous is not None else None
    if was is not None and abs(was - r.tpv[key]) <= 1e-3:
        return "carried"
    return "computed_by_gpsd"


def _classify_time(r: Report) -> str | None:
    """A time 1024 weeks (one GPS week rollover) from gpsd's: ``rollover``."""
    ours = r.ours
    if ours is None or ours.time is None or "time" not in r.tpv:
        return None
    gpsd_t = dt.datetime.fromisoformat(r.tpv["time"].replace("Z", "+00:00"))
    weeks = (gpsd_t - ours.time) / dt.timedelta(weeks=1)
    return "rollover" if abs(abs(weeks) - 1024) <= 1 / 7 + 1e-9 else None


def _classify_mode(r: Report) -> str | None:
    """A different fix mode: the first of the mode reasons whose condition holds."""
    gpsd_mode = _mode(r.tpv)
    our_mode = r.ours.mode if r.ours is not None else "none"
    notes = r.notes
    if our_mode == "none" and notes & _INVALID_NOTES:
        return "receiver_said_invalid"
    if our_mode == "none" and "gsa_mode_1" in notes and not ({"gsa_mode_2", "gsa_mode_3"} & notes):
        return "gsa_says_no_fix"
    if our_mode == "2d" and gpsd_mode == "3d" and ({"gsa_mode_2", "gga_alt_few_sats"} & notes):
        return "gsa_says_2d"
    if gpsd_mode != "none" and "lat" not in r.tpv:
        return "gpsd_mode_without_position"
    if "gga_few_sats" in notes:
        return "gga_few_sats"
    if r.previous is not None and r.previous.mode == gpsd_mode:
        return "carried"
    return None
