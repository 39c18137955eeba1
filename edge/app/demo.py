"""Scoring a run against a clip's ground truth (used by ``phonewatch demo`` and ``run``).

Ground truth (written by ``models.synth.demo_clip``)::

    {"fps": 25.0, "frames": 750, "rois": {"lane1": [x0, y0, x1, y1], ...},
     "events": [{"roi": "lane1", "start_frame": 40, "end_frame": 180, "phone": true}, ...]}

A hit *finds* a phone event when it is in the event's ROI and its best frame lies within the
event's frames (plus ``slack_frames``); each phone event counts once. A hit that finds no phone
event is *false*; a phone event no hit found is *missed*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.core.errors import PhonewatchError


class TruthError(PhonewatchError, ValueError):
    """A ground-truth file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Score:
    phone_events: int
    found: int
    missed: int
    false: int
    duplicate: int

    @property
    def recall(self) -> float:
        return self.found / self.phone_events if self.phone_events else 1.0

    @property
    def precision(self) -> float:
        n = self.found + self.false
        return self.found / n if n else 1.0


def load_truth(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TruthError(f"ground truth {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise TruthError(f"ground truth {path} cannot be read: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise TruthError(f"ground truth {path}: expected an object with an 'events' list")
    for i, ev in enumerate(data["events"]):
        for key in ("roi", "start_frame", "end_frame", "phone"):
            if key not in ev:
                raise TruthError(f"ground truth {path}: events[{i}] lacks {key!r}")
    return data


def score_hits(
    hits: list[tuple[str, int]], truth: dict[str, Any], *, slack_frames: int = 0
) -> Score:
    """``hits``: (roi id, best frame index) per alert."""
    events = [e for e in truth["events"] if e["phone"]]
    found_ids: set[int] = set()
    false = duplicate = 0
    for roi, frame in hits:
        match = None
        for i, e in enumerate(events):
            if e["roi"] == roi and e["start_frame"] <= frame <= e["end_frame"] + slack_frames:
                match = i
                break
        if match is None:
            false += 1
        elif match in found_ids:
            duplicate += 1
        else:
            found_ids.add(match)
    return Score(
        phone_events=len(events),
        found=len(found_ids),
        missed=len(events) - len(found_ids),
        false=false,
        duplicate=duplicate,
    )
