"""The operator's console in a real browser (Playwright driving Debian's chromium): every page
at 375 px and 1366 px without horizontal scrolling, the review queue by keyboard (confirm with
its second step, reject, undo), the error pages, and a time-to-decision measurement for 50
alerts by keyboard (printed, never asserted).

``PHONEWATCH_SCREENSHOTS=docs/img`` also saves a screenshot of each main page at both widths
(the ones in docs/controlroom.md)."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, users
from controlroom.app import ControlRoom
from controlroom.config import parse_config
from controlroom.ingest import Ingest, Message
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key
from edge.core import messages as m
from tests.controlroom.conftest import Unit, raw_pub_b64, status_and_heartbeat
from tests.controlroom.test_browser import PASSWORD

pytestmark = pytest.mark.slow
WIDTHS = (375, 1366)
SHOTS = os.environ.get("PHONEWATCH_SCREENSHOTS")


def junction_frames(n: int) -> list[bytes]:
    """Evidence-like frames: the demo junction with cars passing (models/synth)."""
    from models.synth.demo_clip import frames

    it, truth = frames(0, 30.0, 5.0)
    wanted = {(e["start_frame"] + e["end_frame"]) // 2 for e in truth["events"]}
    out = []
    for i, img in enumerate(it):
        if i in wanted:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            out.append(bytes(buf.tobytes()))
    return [out[i % len(out)] for i in range(n)]


class Seeder:
    """Stores signed alerts, status and heartbeats through the real ingest path."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ingest = Ingest(engine)
        self.units: dict[str, Unit] = {}
        self.frames = junction_frames(12)
        self.n = 0

    def unit(self, unit_id: str) -> Unit:
        if unit_id not in self.units:
            u = Unit(unit_id, generate_key())
            db.upsert_unit(self.engine, unit_id, raw_pub_b64(u.key), "0" * 16)
            self.ingest.reload_keys()
            self.units[unit_id] = u
        return self.units[unit_id]

    def alert(self, unit_id: str = "junction-7", **kw: Any) -> str:
        payload, jpeg = self.unit(unit_id).alert(jpeg=self.frames[self.n % len(self.frames)], **kw)
        self.n += 1
        aid = json.loads(payload)["alert_id"]
        t = f"phonewatch/{unit_id}"
        self.ingest.process(
            [
                Message(f"{t}/alert", payload, time.time()),
                Message(f"{t}/evidence/{aid}", jpeg, time.time()),
            ]
        )
        return str(aid)

    def health(self, unit_id: str, **hb: Any) -> None:
        self.unit(unit_id)
        now = time.time()
        st, beat = status_and_heartbeat(unit_id, now)
        if hb:
            beat = m.build_heartbeat(
                unit_id,
                t_wall_s=now,
                uptime_s=3600.0,
                pipeline={"fps": hb.get("fps", 14.5), "dropped_frames": 0},
                outbox_depth=hb.get("outbox", 0),
                evidence_pruned=0,
                alerts_pruned=0,
                gps_state=hb.get("gps", "fix_3d"),
                cpu_temp_c=hb.get("temp", 51.0),
            )
        self.ingest.process(
            [
                Message(f"phonewatch/{unit_id}/status", m.encode(st), now),
                Message(f"phonewatch/{unit_id}/heartbeat", m.encode(beat), now),
            ]
        )


@pytest.fixture
def room(tmp_path: Path, broker: LocalBroker) -> Iterator[ControlRoom]:
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": "cr-console"},
            "web": {"port": 0, "live_poll_s": 0.1},
        },
        base_dir=tmp_path,
    )
    r = ControlRoom(cfg, receiver=False, retention=False)
    try:
        users.add_user(r.engine, "alice", PASSWORD)
        users.add_user(r.engine, "bob", PASSWORD)
        r.start()
        yield r
    finally:
        r.close()


def new_page(
    browser: Any,
    room: ControlRoom,
    width: int = 1366,
    height: int = 800,
    user: str | None = "alice",
) -> tuple[Any, list[str]]:
    ctx = browser.new_context(viewport={"width": width, "height": height}, base_url=room.url)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if user:
        page.goto("/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORD)
        page.click("form.login button[type=submit]")
        page.wait_for_url(re.compile(r".*/(\?.*)?$"))
    return page, errors


def status_of(engine: Engine, aid: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(sa.select(db.alerts.c.status).where(db.alerts.c.alert_id == aid)).scalar()
        )


def script_errors(errors: list[str]) -> list[str]:
    """Console errors other than the failed loads of error pages the test asked for."""
    return [e for e in errors if "status of 4" not in e]


WIDEST = """() => {
  const w = window.innerWidth, out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.right > w + 0.5) out.push(el.tagName + (el.id ? '#' + el.id : '') +
      (el.className && typeof el.className === 'string' ? '.' + el.className : '') + ' ' +
      Math.round(r.right));
  }
  return out.slice(0, 8);
}"""


def test_every_page_fits_a_phone_and_a_desktop(browser: Any, room: ControlRoom) -> None:
    s = Seeder(room.engine)
    s.health("junction-7")
    s.health("patrol-3", temp=84.0, outbox=41, gps="no_fix")
    s.unit("junction-9")  # registered, never heard from
    first = cv2.imdecode(np.frombuffer(s.frames[0], np.uint8), cv2.IMREAD_COLOR)
    assert first is not None
    fh, fw = first.shape[:2]
    roi = (int(fw * 0.55), int(fh * 0.3), int(fw * 0.2), int(fh * 0.25))
    ids = [s.alert(score=0.91 + i / 100, roi_box=roi) for i in range(5)]
    no_fix = s.alert("patrol-3", fix=None, score=0.78)
    with room.engine.begin() as conn:
        db.record_audit(
            conn,
            username="alice",
            action="cmd_collect",
            target="junction-9",
            detail=json.dumps(
                {
                    "payload": {"request_id": "3f2a9c01d4e7", "count": 25, "interval_s": 2},
                    "sent": False,
                    "result": "the broker has no subscriber for this unit's commands",
                }
            ),
        )
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == ids[4])
            .values(
                status="rejected",
                reviewed_by="bob",
                reviewed_at=time.time(),
                review_note="passenger, not the driver",
            )
        )
        conn.execute(
            db.labels.insert().values(
                unit="junction-7",
                name="c1",
                sha256="ab" * 32,
                jpeg=s.frames[0],
                received_at=time.time(),
            )
        )
    pages = {
        "alerts": "/",
        "queue": "/queue",
        "alert": f"/alerts/{ids[0]}",
        "alert-no-fix": f"/alerts/{no_fix}",
        "units": "/units",
        "unit": "/units/patrol-3",
        "labels": "/labels",
        "audit": "/audit",
        "not-found": "/alerts/no-such-alert",
        "bad-filter": "/?since=2026-05-02T10:00&until=2026-05-01T10:00",
    }
    too_wide = []
    for width in WIDTHS:
        page, errors = new_page(
            browser, room, width=width, height=800 if width > 400 else 740, user=None
        )
        page.goto("/login")
        sw = page.evaluate("document.documentElement.scrollWidth")
        if sw > width:
            too_wide.append((width, "login", sw, page.evaluate(WIDEST)))
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("form.login button[type=submit]")
        page.wait_for_url(re.compile(r".*/(\?.*)?$"))
        for name, path in pages.items():
            page.goto(path)
            page.wait_for_load_state("load")
            sw = page.evaluate("document.documentElement.scrollWidth")
            inner = page.evaluate("window.innerWidth")
            assert inner == width
            if sw > inner:
                too_wide.append((width, name, sw, page.evaluate(WIDEST)))
            if name == "alert":
                # the region's box is drawn where the alert says, scaled with the frame
                page.wait_for_selector("#roi-box")
                img = page.locator("#evidence").bounding_box()
                drawn = page.locator("#roi-box").bounding_box()
                assert img is not None
                assert drawn is not None
                scale = img["width"] / fw
                assert abs(drawn["x"] - (img["x"] + roi[0] * scale)) <= 3, (width, drawn, img)
                assert abs(drawn["y"] - (img["y"] + roi[1] * scale)) <= 3, (width, drawn, img)
                assert abs(drawn["width"] - roi[2] * scale) <= 4, (width, drawn, img)
                # the decision buttons are on screen without scrolling
                for sel in ("#confirm", "#reject"):
                    box = page.locator(sel).bounding_box()
                    assert box is not None, (width, sel)
                    assert box["y"] >= 0, (width, sel)
                    assert box["y"] + box["height"] <= page.viewport_size["height"], (width, sel)
            if SHOTS and name in ("queue", "alert", "alerts", "units", "unit", "not-found"):
                Path(SHOTS).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(SHOTS) / f"{name}-{width}.png"))
        assert script_errors(errors) == [], errors
        page.context.close()
    assert not too_wide, too_wide


def test_review_queue_by_keyboard(browser: Any, room: ControlRoom) -> None:
    s = Seeder(room.engine)
    a1, a2, a3 = (s.alert() for _ in range(3))
    page, errors = new_page(browser, room)
    page.goto("/queue")
    page.wait_for_selector("#live-ready, body[data-unreviewed='3']")
    assert page.title() == "(3) Review queue — phonewatch"
    page.keyboard.press("Enter")  # the first (oldest) thumbnail is the current one
    page.wait_for_url(f"**/alerts/{a1}")

    page.keyboard.press("r")  # reject: on to the next one, with an undo bar
    page.wait_for_url(f"**/alerts/{a2}")
    assert status_of(room.engine, a1) == "rejected"
    assert page.locator("#undo-bar").inner_text().startswith(f"Rejected {a1}.")
    page.keyboard.press("u")  # undo (server side, audited)
    page.wait_for_url(f"**/alerts/{a1}")
    assert status_of(room.engine, a1) == "new"
    assert "unreviewed again" in page.locator(".flash-ok").inner_text()

    page.keyboard.press("j")
    page.wait_for_url(f"**/alerts/{a2}")
    page.keyboard.press("c")  # first step only: nothing happens yet
    step = page.locator("#confirm-step")
    step.wait_for(state="visible")
    assert "Confirming starts a prosecution" in step.inner_text()
    page.keyboard.press("Escape")
    step.wait_for(state="hidden")
    assert status_of(room.engine, a2) == "new"
    page.keyboard.press("n")
    page.keyboard.type("phone at the ear")
    page.keyboard.press("Escape")  # leave the note field; the keys work again
    page.keyboard.press("c")
    step.wait_for(state="visible")
    page.keyboard.press("c")  # the second step
    page.wait_for_url(f"**/alerts/{a3}")
    assert status_of(room.engine, a2) == "confirmed"
    with room.engine.connect() as conn:
        note = conn.execute(
            sa.select(db.alerts.c.review_note).where(db.alerts.c.alert_id == a2)
        ).scalar()
        actions = [
            (r.action, r.target)
            for r in conn.execute(
                sa.select(db.audit)
                .where(db.audit.c.action.in_(("rejected", "confirmed", "undo")))
                .order_by(db.audit.c.id)
            )
        ]
    assert note == "phone at the ear"
    assert actions == [("rejected", a1), ("undo", a1), ("confirmed", a2)]
    assert page.title() == f"(2) {a3} — phonewatch"
    page.keyboard.press("k")  # previous unreviewed: a1 (a2 is done)
    page.wait_for_url(f"**/alerts/{a1}")

    # a new alert raises the count in the title on any page, live
    s.alert()
    page.wait_for_function("() => document.title.startsWith('(3) ')")

    # bulk reject from the queue: select two with x, Shift+R
    page.goto("/queue")
    page.locator(".thumb.current").wait_for()
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.locator("#n-selected").inner_text() == "2"
    page.keyboard.press("Shift+R")
    page.wait_for_selector("#undo-bar")
    assert page.locator("#undo-bar").inner_text().startswith("Rejected 2 alerts.")
    assert [status_of(room.engine, a) for a in (a1, a3)] == ["rejected", "rejected"]
    assert page.locator(".thumb").count() == 1
    page.keyboard.press("u")
    page.wait_for_selector(".flash-ok")
    assert page.locator(".thumb").count() == 3
    assert script_errors(errors) == [], errors
    page.context.close()


def test_error_pages_in_the_browser(browser: Any, room: ControlRoom) -> None:
    s = Seeder(room.engine)
    s.health("junction-7")
    aid = s.alert()
    page, errors = new_page(browser, room, width=375, height=740)
    page.goto("/alerts/no-such-alert")
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator("#error").inner_text() == "No alert 'no-such-alert'"
    assert page.locator("#nav-queue").count() == 1  # the normal page, with the navigation

    # the list's filters persist in this browser; a refused filter is not kept
    page.goto("/?unit=junction-7&status=new")
    page.goto("/")
    page.wait_for_url("**/?unit=junction-7&status=new")
    page.click("#clear-filters")
    page.wait_for_url("**/?unit=")
    saved = "() => localStorage.getItem('phonewatch.filters')"
    assert page.evaluate(saved) == "unit="  # nothing to bring back
    page.fill("input[name=since]", "2026-05-02T10:00")
    page.fill("input[name=until]", "2026-05-01T10:00")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#filter-error")
    assert "is after To" in page.locator("#filter-error").inner_text()
    assert page.evaluate(saved) == "unit="  # the refused filter was not kept

    page.goto(f"/alerts/{aid}")
    with room.engine.begin() as conn:  # bob decides first
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == aid)
            .values(status="rejected", reviewed_by="bob", reviewed_at=time.time())
        )
    page.click("#reject")
    page.wait_for_selector("#error")
    assert page.locator("h1").inner_text() == "Already done"
    assert f"Alert {aid} is already rejected by bob" in page.locator("#error").inner_text()
    page.click("#back")
    page.wait_for_url(f"**/alerts/{aid}")

    page.goto("/units/junction-7")
    count = page.locator("input[name=count]")
    count.evaluate("e => e.removeAttribute('max')")  # past the browser's own check
    count.fill("9999")
    page.click("form[action$='/cmd/collect'] button[type=submit]")
    page.wait_for_selector("#error")
    assert "Count must be a whole number from 1 to 500" in page.locator("#error").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    assert script_errors(errors) == [], errors
    page.context.close()


def test_time_to_decision_for_50_alerts_by_keyboard(browser: Any, room: ControlRoom) -> None:
    """Measured, printed, not asserted: from an alert's page being ready (evidence frame
    decoded) to the next alert's page being ready, one key per rejection, two per
    confirmation (every fifth)."""
    s = Seeder(room.engine)
    ids = [s.alert() for _ in range(50)]
    page, errors = new_page(browser, room)
    page.goto("/queue")
    page.locator(".thumb.current").wait_for()
    page.keyboard.press("Enter")
    ready = (
        "() => { const i = document.getElementById('evidence');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    times = []
    for i, aid in enumerate(ids):
        page.wait_for_url(f"**/alerts/{aid}")
        page.wait_for_function(ready)
        t0 = time.perf_counter()
        if i % 5 == 4:
            page.keyboard.press("c")
            page.locator("#confirm-step").wait_for(state="visible")
            page.keyboard.press("c")
        else:
            page.keyboard.press("r")
        if i + 1 < len(ids):
            page.wait_for_url(f"**/alerts/{ids[i + 1]}")
            page.wait_for_function(ready)
        else:
            page.wait_for_url("**/queue")
        times.append(time.perf_counter() - t0)
    with room.engine.connect() as conn:
        got: dict[str, int] = dict(
            conn.execute(
                sa.select(db.alerts.c.status, sa.func.count()).group_by(db.alerts.c.status)
            ).all()
        )
    assert got == {"confirmed": 10, "rejected": 40}
    print(
        f"\ntime to decision, 50 alerts by keyboard: total {sum(times):.2f} s, "
        f"median {statistics.median(times) * 1000:.0f} ms, "
        f"p90 {sorted(times)[44] * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
        "(machine time from the frame shown to the next frame shown; the operator's "
        "looking is on top)"
    )
    assert script_errors(errors) == [], errors
    page.context.close()
