"""The labelling queue in a real browser (Playwright driving Debian's chromium): labelling by
keyboard without a page reload, undo, bulk select and label, the keys' help, a time range
labelled after its preview, all at 375 px without horizontal scrolling."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
from tests.controlroom.conftest import jpeg_bytes, raw_pub_b64
from tests.controlroom.test_browser import PASSWORD
from tests.controlroom.test_console_browser import WIDEST, new_page, script_errors
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
SHOTS = os.environ.get("PHONEWATCH_SCREENSHOTS")
T0 = float(int(time.time()) - 3600)
SEEDS = itertools.count(700)


@pytest.fixture
def room(tmp_path: Path, broker: LocalBroker) -> Iterator[ControlRoom]:
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": "cr-labels"},
            "web": {"port": 0, "live_poll_s": 0.1},
        },
        base_dir=tmp_path,
    )
    r = ControlRoom(cfg, receiver=False, retention=False)
    try:
        users.add_user(r.engine, "alice", PASSWORD)
        db.upsert_unit(r.engine, "junction-1", raw_pub_b64(generate_key()), "0" * 16)
        r.start()
        yield r
    finally:
        r.close()


def cal(t: float, roi: str = "lane1") -> str:
    return m.sample_name("calibration", roi, t, 0.5, "1.2.0", run_ms=int(T0 * 1000))


def seed(engine: Engine, names: list[str], unit: str = "junction-1") -> dict[str, int]:
    """Crops of ``unit`` through the real ingest path; their ids by name."""
    Ingest(engine).process(
        [
            Message(f"phonewatch/{unit}/collect/{n}", jpeg_bytes(next(SEEDS)), time.time())
            for n in names
        ]
    )
    lb = db.labels
    with engine.connect() as conn:
        q = sa.select(lb.c.name, lb.c.id).where(lb.c.unit == unit)
        return {r.name: r.id for r in conn.execute(q)}


def labels(engine: Engine) -> dict[int, str | None]:
    with engine.connect() as conn:
        return {r.id: r.label for r in conn.execute(sa.select(db.labels.c.id, db.labels.c.label))}


def screenshots(browser: Any, room: ControlRoom, page: Any) -> None:
    """``PHONEWATCH_SCREENSHOTS=docs/img``: the labelling page at both widths (docs)."""
    Path(SHOTS or ".").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(SHOTS or ".") / "labels-375.png"))
    wide, _ = new_page(browser, room, width=1366, height=800)
    wide.goto("/labels")
    wide.screenshot(path=str(Path(SHOTS or ".") / "labels-1366.png"))
    wide.context.close()


def test_label_by_keyboard_in_place_with_undo_and_bulk_at_375px(
    browser: Any, room: ControlRoom
) -> None:
    ids = seed(room.engine, [cal(T0 + i) for i in range(6)])
    first, second, third, fourth = (ids[cal(T0 + i)] for i in range(4))
    page, errors = new_page(browser, room, width=375, height=740)
    page.goto("/labels")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, page.evaluate(WIDEST)
    if SHOTS:
        screenshots(browser, room, page)
    page.evaluate("window.notReloaded = true")
    count = page.locator("#label-count")
    assert count.inner_text() == "6 to label"

    page.keyboard.press("?")
    assert page.locator("#label-help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#label-help").is_visible()

    # the first crop is current: "p" labels it phone and moves on, in place, with an undo bar
    assert not page.locator("#label-undo-bar").is_visible()
    assert not page.locator("#label-status").is_visible()
    assert page.locator("figure.crop.current").get_attribute("data-id") == str(first)
    page.keyboard.press("p")
    page.locator(f"#crop-{first}").wait_for(state="hidden")
    assert wait_until(lambda: labels(room.engine)[first] == "phone")
    assert count.inner_text() == "5 to label"
    assert page.locator("figure.crop.current").get_attribute("data-id") == str(second)
    # "u" takes it back
    page.locator("#label-undo-bar").wait_for(state="visible")  # with the server's answer
    page.keyboard.press("u")
    page.locator(f"#crop-{first}").wait_for(state="visible")
    assert wait_until(lambda: labels(room.engine)[first] is None)
    assert count.inner_text() == "6 to label"
    page.locator("#label-undo-bar").wait_for(state="hidden")

    # j moves, n labels no_phone; s skips
    page.keyboard.press("j")
    assert page.locator("figure.crop.current").get_attribute("data-id") == str(second)
    page.keyboard.press("n")
    page.locator(f"#crop-{second}").wait_for(state="hidden")
    page.keyboard.press("s")
    page.locator(f"#crop-{third}").wait_for(state="hidden")
    assert wait_until(lambda: labels(room.engine)[third] is not None)
    got = labels(room.engine)
    assert (got[second], got[third]) == ("no_phone", "skip")

    # bulk: tick two crops (one by mouse, one by "x"), Shift+P labels both; undo by the button
    page.locator(f"#crop-{first} input[type=checkbox]").check()
    page.keyboard.press("k")  # the tick left focus on the checkbox: keys still work
    page.locator(f"#crop-{fourth}").click(position={"x": 60, "y": 30})
    page.keyboard.press("x")
    assert page.locator("#n-selected").inner_text() == "2"
    page.keyboard.press("Shift+P")
    page.locator(f"#crop-{fourth}").wait_for(state="hidden")
    assert wait_until(lambda: labels(room.engine)[first] == labels(room.engine)[fourth] == "phone")
    assert count.inner_text() == "2 to label"
    page.wait_for_function(  # the crops went at once; the bar comes with the server's answer
        "document.getElementById('label-undo-text').textContent === 'Labelled 2 crops as phone.'"
    )
    page.locator("#label-undo").click()
    page.locator(f"#crop-{fourth}").wait_for(state="visible")
    assert wait_until(lambda: labels(room.engine)[first] is labels(room.engine)[fourth] is None)
    assert count.inner_text() == "4 to label"

    # keys pressed faster than the server answers are all kept, in order
    for _ in range(3):
        page.keyboard.press("p")
    assert count.inner_text() == "1 to label"
    assert page.locator("h3.session-head .n").inner_text() == "1"
    assert wait_until(lambda: list(labels(room.engine).values()).count("phone") == 3)
    last = page.locator("figure.crop:not([hidden])")
    assert last.count() == 1
    # a label the server refuses (the crop was deleted meanwhile) brings the crop back, saying why
    last_id = int(last.get_attribute("data-id") or 0)
    with room.engine.begin() as conn:
        conn.execute(db.labels.delete().where(db.labels.c.id == last_id))
    page.keyboard.press("n")
    status = page.locator("#label-status")
    status.wait_for(state="visible")
    assert status.inner_text().startswith("Not labelled: no such crop")
    assert page.locator(f"#crop-{last_id}").is_visible()
    assert count.inner_text() == "1 to label"
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, page.evaluate(WIDEST)
    assert script_errors(errors) == [], errors
    page.context.close()


def test_label_a_time_range_after_its_preview(browser: Any, room: ControlRoom) -> None:
    ids = seed(room.engine, [cal(T0 + i * 30) for i in range(5)] + [cal(T0 + 30, "lane2")])
    db.upsert_unit(room.engine, "junction-2", raw_pub_b64(generate_key()), "0" * 16)
    seed(room.engine, [cal(T0 + 30, "west")], unit="junction-2")
    page, errors = new_page(browser, room, width=375, height=740)
    page.goto("/labels")
    page.select_option("#range-unit", "junction-1")
    # only junction-1's ROIs are offered
    offered = page.eval_on_selector_all(
        "#range-roi option:not([disabled])", "os => os.map(o => o.value)"
    )
    assert offered == ["", "lane1", "lane2"]
    page.select_option("#range-roi", "lane1")
    page.fill("#range-from", datetime.fromtimestamp(T0 + 30).strftime("%Y-%m-%dT%H:%M:%S"))
    page.fill("#range-to", datetime.fromtimestamp(T0 + 90).strftime("%Y-%m-%dT%H:%M:%S"))
    page.click("#range-form button[type=submit]")
    assert page.locator("#range-count").inner_text() == "3"
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, page.evaluate(WIDEST)
    page.click("#range-phone")
    page.wait_for_url(re.compile(r".*/labels$"))
    assert "Labelled 3 crops from junction-1 lane1" in page.locator(".flash-ok").inner_text()
    got = labels(room.engine)
    assert [got[ids[cal(T0 + i * 30)]] for i in range(5)] == [None, "phone", "phone", "phone", None]
    assert got[ids[cal(T0 + 30, "lane2")]] is None
    page.locator("#recent button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/labels$"))
    assert "Undone: 3 crops back in the queue." in page.locator(".flash-ok").inner_text()
    assert set(labels(room.engine).values()) == {None}
    page.select_option("#range-unit", "junction-2")
    offered = page.eval_on_selector_all(
        "#range-roi option:not([disabled])", "os => os.map(o => o.value)"
    )
    assert offered == ["", "west"]
    assert script_errors(errors) == [], errors
    page.context.close()
