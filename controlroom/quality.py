"""Live quality: what the labels say about the units' models in the field.

* **Recall and false-positive rate from random samples.** The unit's background sampler sends
  ROI crops taken at random (``rnd-…`` names, ``edge/app/sampler.py``), each with the score
  the live model gave it and the model's version. Once an operator labels them, the crops
  labelled ``phone`` estimate recall (the share scoring at or over the alert threshold) and
  those labelled ``no_phone`` the false-positive rate, per unit and model version, with Wilson
  95 % intervals. The threshold is the one the unit's alerts with that model version carried
  (the newest); without such an alert the model's rates cannot be computed and are not shown.
  These are rates per crop at the threshold: an alert also needs ``min_frames`` hits within
  the decider's window, so a car with a phone is more likely to be caught than one crop, and a
  phone-free crop over the threshold is not yet a false alert. Uncertain-band and calibration
  crops are left out: they are not a random sample.
* **Precision over time.** Reviewers' verdicts per ISO week of the review, with intervals,
  drawn as a small SVG chart on ``/labels``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlroom import db
from controlroom.datasets import wilson
from edge.core.messages import model_tag, parse_sample_name

ALERTS_SCANNED = 2000
"""Newest alerts read to find each model version's threshold."""


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.n)


@dataclass(frozen=True)
class SampleEstimate:
    """Recall and FPR of one unit's model version from its labelled random samples."""

    unit: str
    model: str
    """The version as the samples name it (``model_tag``)."""
    threshold: float | None
    recall: Rate
    fpr: Rate


def _thresholds(conn: Connection) -> dict[tuple[str, str], float]:
    """(unit, model tag) -> the alert threshold of the newest alert with that model."""
    a = db.alerts
    rows = conn.execute(
        sa.select(a.c.unit, a.c.payload)
        .where(a.c.payload.is_not(None))
        .order_by(a.c.id.desc())
        .limit(ALERTS_SCANNED)
    )
    out: dict[tuple[str, str], float] = {}
    for unit, payload in rows:
        try:
            doc = json.loads(payload)
            key = (str(unit), model_tag(str(doc["model"]["version"])))
            thr = float(doc["threshold"])
        except (ValueError, KeyError, TypeError):
            continue
        out.setdefault(key, thr)
    return out


def sample_estimates(conn: Connection) -> list[SampleEstimate]:
    """Per (unit, model version): recall and FPR at the alert threshold, from labelled random
    samples (see the module docstring), sorted by unit and model."""
    lb = db.labels
    rows = conn.execute(
        sa.select(lb.c.unit, lb.c.name, lb.c.label).where(
            lb.c.source == "collect", lb.c.label.in_(("phone", "no_phone"))
        )
    )
    scores: dict[tuple[str, str], list[tuple[bool, float]]] = {}
    for unit, name, label in rows:
        s = parse_sample_name(str(name))
        if s is None or s.reason != "random":
            continue
        scores.setdefault((str(unit), s.model), []).append((label == "phone", s.score))
    thresholds = _thresholds(conn)
    out = []
    for (unit, model), got in sorted(scores.items()):
        thr = thresholds.get((unit, model))
        pos = [sc for is_phone, sc in got if is_phone]
        neg = [sc for is_phone, sc in got if not is_phone]
        if thr is None:
            out.append(SampleEstimate(unit, model, None, Rate(0, 0), Rate(0, 0)))
            continue
        out.append(
            SampleEstimate(
                unit,
                model,
                thr,
                Rate(sum(sc >= thr for sc in pos), len(pos)),
                Rate(sum(sc >= thr for sc in neg), len(neg)),
            )
        )
    return out


@dataclass(frozen=True)
class WeekPrecision:
    week: str
    """ISO week of the reviews, ``2026-W49``."""
    confirmed: int
    rejected: int

    @property
    def rate(self) -> Rate:
        return Rate(self.confirmed, self.confirmed + self.rejected)


def precision_by_week(conn: Connection) -> list[WeekPrecision]:
    """Reviewers' verdicts per ISO week (UTC) of the review, oldest first."""
    a = db.alerts
    got: dict[str, list[int]] = {}
    for status, at in conn.execute(
        sa.select(a.c.status, a.c.reviewed_at).where(
            a.c.status.in_(("confirmed", "rejected")), a.c.reviewed_at.is_not(None)
        )
    ):
        y, w, _ = datetime.fromtimestamp(float(at), UTC).isocalendar()
        counts = got.setdefault(f"{y}-W{w:02d}", [0, 0])
        counts[0 if status == "confirmed" else 1] += 1
    return [WeekPrecision(k, c, r) for k, (c, r) in sorted(got.items())]


def trend_svg(weeks: list[WeekPrecision], *, width: int = 320, height: int = 140) -> str:
    """A small SVG chart of weekly precision with its 95 % intervals (no script, no library:
    the page's CSP allows it inline as markup). Empty string without data."""
    if not weeks:
        return ""
    left, right, top, bottom = 28, 8, 8, 22
    pw, ph = width - left - right, height - top - bottom
    step = pw / max(1, len(weeks))

    def y(v: float) -> float:
        return top + (1.0 - v) * ph

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="precision-trend" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        "<title>Precision per week of review, with 95 % intervals</title>",
    ]
    for v in (0.0, 0.5, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#ccc" stroke-width="1"/>'
            f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{v:g}</text>"
        )
    points: list[str] = []
    for i, wk in enumerate(weeks):
        x = left + step * (i + 0.5)
        r = wk.rate
        lo, hi = r.interval
        p = r.value if r.value is not None else 0.0
        points.append(f"{x:.1f},{y(p):.1f}")
        parts.append(
            f'<line class="ci" x1="{x:.1f}" x2="{x:.1f}" y1="{y(hi):.1f}" y2="{y(lo):.1f}" '
            'stroke="#888" stroke-width="2"/>'
            f'<circle class="week" cx="{x:.1f}" cy="{y(p):.1f}" r="3" fill="#1f5fa8">'
            f"<title>{wk.week}: {p:.2f} ({wk.confirmed} confirmed, {wk.rejected} rejected; "
            f"95 % {lo:.2f}-{hi:.2f})</title></circle>"
        )
    if len(points) > 1:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f5fa8" '
            'stroke-width="1.5"/>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="10">{weeks[0].week}</text>'
        f'<text x="{width - right}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"{weeks[-1].week}</text></svg>"
    )
    return "".join(parts)


def quality_context(conn: Connection) -> dict[str, Any]:
    """What ``/labels`` shows under "Live quality"."""
    weeks = precision_by_week(conn)
    return {
        "samples": sample_estimates(conn),
        "weeks": weeks,
        "trend_svg": trend_svg(weeks),
    }
