"""Camera id and tracked vehicle in a real browser (Playwright driving Debian's chromium): the
alert page draws the vehicle's box, dashed and labelled, beside the ROI box, where the signed
alert puts them; the live list shows a new alert's camera; the Units page shows each camera."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import pytest

from controlroom.app import ControlRoom
from controlroom.ingest import Ingest, Message
from edge.core import messages as m
from edge.core.ports import VehicleInfo
from tests.controlroom.conftest import status_and_heartbeat
from tests.controlroom.test_console_browser import Seeder, new_page, room, script_errors

pytestmark = pytest.mark.slow
__all__ = ["room"]  # the fixture, used by name


class _Seeder(Seeder):
    """The console test's seeder with one plain 960x540 frame (rendering the junction scene
    costs seconds this test has no need of)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.ingest = Ingest(engine)
        self.units = {}
        img = np.full((540, 960, 3), 90, np.uint8)
        cv2.rectangle(img, (430, 130), (720, 320), (40, 40, 200), -1)  # a "car"
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        self.frames = [bytes(buf.tobytes())]
        self.n = 0


def _near(drawn: dict[str, float], img: dict[str, float], box: tuple[int, ...], s: float) -> bool:
    return (
        abs(drawn["x"] - (img["x"] + box[0] * s)) <= 3
        and abs(drawn["y"] - (img["y"] + box[1] * s)) <= 3
        and abs(drawn["width"] - box[2] * s) <= 4
        and abs(drawn["height"] - box[3] * s) <= 4
    )


def test_alert_page_draws_the_vehicle_and_the_list_and_units_show_cameras(
    browser: Any, room: ControlRoom
) -> None:
    s = _Seeder(room.engine)
    first = cv2.imdecode(np.frombuffer(s.frames[0], np.uint8), cv2.IMREAD_COLOR)
    assert first is not None
    fh, fw = first.shape[:2]
    roi = (int(fw * 0.55), int(fh * 0.3), int(fw * 0.1), int(fh * 0.12))
    car = (int(fw * 0.45), int(fh * 0.25), int(fw * 0.3), int(fh * 0.35))
    vehicle = VehicleInfo(track_id=42, box=car, label="car", frames=17)
    aid = s.alert(roi_box=roi, camera="north", vehicle=vehicle, frame_size=(fw, fh))

    page, errors = new_page(browser, room)
    page.goto(f"/alerts/{aid}")
    assert page.locator("#summary-camera").inner_text() == "north"
    page.wait_for_selector("#vehicle-box")
    page.wait_for_selector("#roi-box")
    img = page.locator("#evidence").bounding_box()
    drawn_car = page.locator("#vehicle-box").bounding_box()
    drawn_roi = page.locator("#roi-box").bounding_box()
    assert img is not None
    assert drawn_car is not None
    assert drawn_roi is not None
    scale = img["width"] / fw
    assert _near(drawn_car, img, car, scale), (drawn_car, img, car)
    assert _near(drawn_roi, img, roi, scale), (drawn_roi, img, roi)
    assert page.locator("#vehicle-box .box-label").inner_text() == "#42 car"
    style = "(sel) => getComputedStyle(document.querySelector(sel)).borderTopStyle"
    assert page.evaluate(style, "#vehicle-box") == "dashed"
    assert page.evaluate(style, "#roi-box") == "solid"

    page.goto("/")  # the live list: a new alert arrives with its camera and vehicle
    page.wait_for_selector("#live:has-text('new alerts appear here')")
    fresh = s.alert(camera="side-2", vehicle=vehicle, frame_size=(fw, fh))
    row = page.locator(f"#alerts tr:has(a:text-is('{fresh}'))")
    row.wait_for()
    assert row.locator("td.camera").inner_text() == "side-2 #42 car"

    now = time.time()
    st, hb = status_and_heartbeat("junction-7", now)
    hb["cameras"] = m.heartbeat_cameras(
        {
            "north": {"status": "running", "fps": 29.9, "dropped": 0, "last_error": None},
            "side-2": {"status": "stopped", "fps": None, "dropped": 40, "last_error": "gone"},
        }
    )
    s.ingest.process(
        [
            Message("phonewatch/junction-7/status", m.encode(st), now),
            Message("phonewatch/junction-7/heartbeat", m.encode(hb), now),
        ]
    )
    page.goto("/units")
    card = page.locator("#unit-junction-7")
    assert card.get_attribute("data-state") == "degraded"
    assert card.locator("tr[data-camera='north'] td").nth(1).inner_text() == "running"
    assert card.locator("tr[data-camera='side-2'] td").nth(4).inner_text() == "gone"
    assert "Camera side-2 stopped: gone" in card.locator(".why").inner_text()
    assert script_errors(errors) == [], errors
    page.context.close()
