"""The whole review loop in a real browser (Playwright driving Debian's chromium; no browser
download): log in, see a live alert arrive from a real Mosquitto, open it, see the evidence,
the map marker and the coordinate readout, confirm it, export the bundle and verify it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlroom import db, users
from controlroom.app import ControlRoom
from controlroom.bundle import verify_bundle
from controlroom.config import parse_config
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key
from tests.controlroom.conftest import Publisher, Unit, raw_pub_b64

PASSWORD = "operator password 1"

pytestmark = pytest.mark.slow


@pytest.fixture
def room(tmp_path: Path, broker: LocalBroker) -> Iterator[ControlRoom]:
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "client_id": "cr-browser",
                "share_group": "browser",
            },
            "web": {"port": 0, "live_poll_s": 0.1},
            "privacy": {"original_viewers": ["alice"]},
        },
        base_dir=tmp_path,
    )
    r = ControlRoom(cfg)
    try:
        users.add_user(r.engine, "alice", PASSWORD)
        r.start()
        assert r.receiver is not None
        assert r.receiver.wait_ready(10)
        yield r
    finally:
        r.close()


def test_login_live_alert_review_export_verify(
    browser: Any, room: ControlRoom, publisher: Publisher, tmp_path: Path
) -> None:
    unit = Unit("unit-web", generate_key())
    db.upsert_unit(room.engine, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
    assert room.receiver is not None
    room.receiver.ingest.reload_keys()

    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(10_000)
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    page.goto(room.url)
    assert "/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "Wrong user name or password."
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#live >> text=Live: new alerts appear here")

    payload, jpeg = unit.alert()
    alert_id = json.loads(payload)["alert_id"]
    publisher.publish(f"phonewatch/{unit.unit_id}/alert", payload)
    publisher.publish(f"phonewatch/{unit.unit_id}/evidence/{alert_id}", jpeg)
    link = page.locator(f"#alerts a:text('{alert_id}')")
    link.wait_for()  # pushed over SSE: no reload
    assert page.locator("#alerts tbody tr").count() == 1

    link.click()
    page.wait_for_url(f"**/alerts/{alert_id}")
    assert "51.500700, -0.124600" in page.locator("#coords").inner_text()
    assert "age 0.3 s" in page.locator("#fix-quality").inner_text()
    page.wait_for_function(
        "document.getElementById('evidence').complete && "
        "document.getElementById('evidence').naturalWidth > 0"
    )
    assert page.eval_on_selector("#evidence", "e => e.naturalWidth") == 64
    # no tile server configured: a note saying so and how, and links to a map app
    assert "No map is shown: no tile server is configured" in page.locator("#no-tiles").inner_text()
    assert page.get_attribute("#geo-link", "href") == "geo:51.500700,-0.124600"

    page.fill("textarea[name=note]", "phone at the ear, clear view")
    page.click("button.confirm")  # the second step: confirming starts a prosecution
    page.locator("#confirm-step").wait_for(state="visible")
    page.click("#confirm-yes")
    page.wait_for_url("**/queue")  # on to the next alert; this was the only one
    page.goto(f"{room.url}alerts/{alert_id}")
    page.wait_for_selector("#status:text('confirmed')")
    assert "Confirmed by alice" in page.content()
    assert "phone at the ear" in page.content()

    with page.expect_download() as dl:
        page.click("#bundle")
    path = tmp_path / "bundle.zip"
    dl.value.save_as(path)
    result = verify_bundle(path)
    assert result.ok, result.report()
    assert result.alert["alert_id"] == alert_id
    # the failed log-in's 401 is the only error; nothing blocked by the CSP, no script errors
    assert [e for e in console_errors if "401" not in e] == [], console_errors

    # disabling the operator ends the open live list too: the page goes to the log-in form
    page.goto(room.url)
    page.wait_for_selector("#live >> text=Live: new alerts appear here")
    users.set_active(room.engine, "alice", False)
    page.wait_for_url("**/login?next=%2F")
