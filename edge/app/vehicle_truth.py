"""Score alerts against a synthetic clip's per-vehicle truth (``models.synth.patrol``).

Pure: no files, no clock. An alert names a frame (or a time, with the clip's fps) and a box on
that frame: the driver-window crop it scored or the vehicle's box. It belongs to the vehicle
whose driver window (truth ``window``) overlaps the box on that frame; where several do, the
one whose window and vehicle box the alert's box fits best (the larger sum of the two IoUs).

Each alert is counted once, in frame order:

- **found**: the first alert on the pass of a driver holding a phone;
- **repeat**: any later alert on a pass already alerted (more than one alert for one pass);
- **false**: the first alert on the pass of a driver without a phone (``false_no_phone``), or an
  alert whose box overlaps no driver window on its frame (``false_no_vehicle``).

**missed** counts the phone passes with no alert. A track id, where an alert has one, is only
reported (which tracks alerted on each vehicle), never used to match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.app.stats import grid

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Alert:
    frame: int
    box: Box
    """(x0, y0, x1, y1) in pixels of the clip's frame."""
    track_id: int | None = None

    def __post_init__(self) -> None:
        if self.frame < 0:
            raise ValueError(f"alert frame must be >= 0, got {self.frame}")
        x0, y0, x1, y1 = self.box
        if not all(math.isfinite(v) for v in self.box) or x1 <= x0 or y1 <= y0:
            raise ValueError(
                "alert box must be finite (x0, y0, x1, y1) with x1 > x0 and y1 > y0, "
                f"got {self.box}"
            )


def alerts_from(items: Iterable[Mapping[str, Any]], fps: float) -> list[Alert]:
    """Alerts from plain records: ``frame`` or ``t_s`` (seconds from the clip's start, turned
    into a frame with ``fps``), ``box`` or ``window`` (four numbers), optional ``track_id``."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_alert(item, fps))
        except (TypeError, ValueError) as e:
            raise ValueError(f"alert {i}: {e}") from None
    return out


def _alert(item: Mapping[str, Any], fps: float) -> Alert:
    box = item.get("box", item.get("window"))
    if box is None or len(box) != 4:
        raise ValueError(f"needs 'box' or 'window' as four numbers, got {box!r}")
    if "frame" in item:
        frame = int(item["frame"])
    elif "t_s" in item:
        frame = round(float(item["t_s"]) * fps)
    else:
        raise ValueError("needs 'frame' or 't_s'")
    track = item.get("track_id")
    b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return Alert(frame, b, None if track is None else int(track))


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _overlaps(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@dataclass(frozen=True, slots=True)
class _Seen:
    vehicle: int
    box: Box
    window: Box


def _index(truth: Mapping[str, Any]) -> dict[int, list[_Seen]]:
    """frame -> the vehicles on it that have a driver window in view."""
    by_frame: dict[int, list[_Seen]] = {}
    for veh in truth["vehicles"]:
        for row in veh["frames"]:
            if row.get("window") is None:
                continue
            box = tuple(float(v) for v in row["box"])
            win = tuple(float(v) for v in row["window"])
            by_frame.setdefault(int(row["frame"]), []).append(_Seen(int(veh["id"]), box, win))  # type: ignore[arg-type]
    return by_frame


def match(alert: Alert, on_frame: Sequence[_Seen]) -> int | None:
    """The vehicle an alert belongs to (see the module docstring), or None."""
    best: tuple[float, int] | None = None
    for seen in on_frame:
        if not _overlaps(alert.box, seen.window):
            continue
        fit = _iou(alert.box, seen.window) + _iou(alert.box, seen.box)
        if best is None or fit > best[0]:
            best = (fit, seen.vehicle)
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class PassResult:
    vehicle: int
    start_frame: int
    end_frame: int
    phone: bool
    alerts: tuple[int, ...]
    """Indices (into the scored alert list) of the alerts on this pass, in frame order."""
    track_ids: tuple[int, ...]

    @property
    def outcome(self) -> str:
        if not self.alerts:
            return "missed" if self.phone else "-"
        first = "found" if self.phone else "false"
        extra = len(self.alerts) - 1
        return first + (f" +{extra} repeat" if extra else "")


@dataclass(frozen=True, slots=True)
class Score:
    found: int
    missed: int
    false_no_phone: int
    false_no_vehicle: int
    repeats: int
    passes: tuple[PassResult, ...]
    matched: tuple[int | None, ...] = field(default=())
    """Per alert (in the order given): the vehicle it belongs to, or None."""

    @property
    def phone_passes(self) -> int:
        return sum(p.phone for p in self.passes)

    @property
    def false_alerts(self) -> int:
        return self.false_no_phone + self.false_no_vehicle


def score(truth: Mapping[str, Any], alerts: Sequence[Alert]) -> Score:
    """Found / missed / false / repeat counts of ``alerts`` against a clip's ``truth``."""
    by_frame = _index(truth)
    passes = [
        (int(p["vehicle"]), int(p["start_frame"]), int(p["end_frame"]), bool(p["phone"]))
        for p in truth["passes"]
    ]
    hits: dict[int, list[int]] = {k: [] for k in range(len(passes))}
    matched: list[int | None] = []
    no_vehicle = 0
    order = sorted(range(len(alerts)), key=lambda i: (alerts[i].frame, i))
    owner: dict[int, int | None] = {}
    for i in order:
        a = alerts[i]
        vid = match(a, by_frame.get(a.frame, []))
        k = next(
            (k for k, (v, s, e, _) in enumerate(passes) if v == vid and s <= a.frame <= e), None
        )
        owner[i] = vid if k is not None else None
        if k is None:
            no_vehicle += 1
        else:
            hits[k].append(i)
    matched = [owner[i] for i in range(len(alerts))]
    results = []
    found = missed = false_no_phone = repeats = 0
    for k, (vid, start, end, phone) in enumerate(passes):
        got = hits[k]
        tracks = sorted({t for t in (alerts[i].track_id for i in got) if t is not None})
        results.append(PassResult(vid, start, end, phone, tuple(got), tuple(tracks)))
        if not got:
            missed += phone
            continue
        found += phone
        false_no_phone += not phone
        repeats += len(got) - 1
    return Score(found, missed, false_no_phone, no_vehicle, repeats, tuple(results), tuple(matched))


def table(result: Score, title: str = "per-vehicle score (synthetic clip)") -> str:
    """The counts, then one row per pass that had a phone or an alert (house table style)."""
    counts = grid(
        [
            ("vehicle passes", str(len(result.passes))),
            ("drivers with a phone", str(result.phone_passes)),
            ("found", str(result.found)),
            ("missed", str(result.missed)),
            ("false alerts: no phone", str(result.false_no_phone)),
            ("false alerts: no vehicle", str(result.false_no_vehicle)),
            ("repeats", str(result.repeats)),
        ],
        title=title,
    )
    rows: list[tuple[str, ...]] = [
        (
            str(p.vehicle),
            f"{p.start_frame}-{p.end_frame}",
            "yes" if p.phone else "no",
            str(len(p.alerts)),
            ",".join(str(t) for t in p.track_ids) or "-",
            p.outcome,
        )
        for p in result.passes
        if p.phone or p.alerts
    ]
    if not rows:
        return counts
    detail = grid(
        rows, header=("vehicle", "frames", "phone", "alerts", "tracks", "outcome"), align="lrlrll"
    )
    return counts + "\n" + detail
