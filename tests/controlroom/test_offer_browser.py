"""Offering a model package from the unit's page in a real browser (Playwright driving Debian's
chromium) on a phone-wide screen: choose the file, keep shadow, submit, and the page says it was
offered, without sideways scrolling; the command reaches a real Mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlroom import db, users
from controlroom.app import ControlRoom
from controlroom.cli import MODEL_KEY_NAME
from controlroom.config import parse_config
from edge.app.local_broker import LocalBroker
from edge.common import model_package as mp
from edge.common.signing import generate_key, load_private_key, write_key_pair
from tests.controlroom.conftest import raw_pub_b64
from tests.controlroom.test_browser import PASSWORD
from tests.controlroom.test_commands import Listener

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def room(tmp_path: Path, broker: LocalBroker) -> Iterator[ControlRoom]:
    write_key_pair(MODEL_KEY_NAME, tmp_path / "keys")
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "client_id": "cr-offer",
                "share_group": "offer",
            },
            "web": {"port": 0},
            "models": {
                "offer_users": ["alice"],
                "trusted_keys": [f"keys/{MODEL_KEY_NAME}.sign.pub"],
            },
        },
        base_dir=tmp_path,
    )
    r = ControlRoom(cfg, retention=False)
    try:
        users.add_user(r.engine, "alice", PASSWORD)
        db.upsert_unit(r.engine, "unit-web", raw_pub_b64(generate_key()), "0" * 16)
        r.start()
        assert r.receiver is not None
        assert r.receiver.wait_ready(10)
        yield r
    finally:
        r.close()


def test_an_operator_uploads_a_package_and_the_unit_page_says_it_was_offered(
    browser: Any, room: ControlRoom, broker: LocalBroker, tmp_path: Path
) -> None:
    key = load_private_key(tmp_path / "keys" / f"{MODEL_KEY_NAME}.sign.key")
    package = tmp_path / "candidate.pwpkg"
    package.write_bytes(
        mp.build_package(DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, key)
    )
    sha = mp.sha256_hex(package.read_bytes())
    listener = Listener(broker, "phonewatch/unit-web/cmd/+")  # the unit's session, as it were
    try:
        page = browser.new_page(viewport={"width": 375, "height": 800})  # a phone
        page.set_default_timeout(10_000)
        page.goto(f"{room.url}units/unit-web")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#offer-form")
        assert page.is_checked("#offer-form input[name=mode][value=shadow]")
        page.set_input_files("#offer-form input[name=package]", str(package))
        page.click("#offer-form button[type=submit]")
        flash = page.wait_for_selector("p.flash-ok")
        assert flash is not None
        assert flash.inner_text().startswith(
            f"Offered brightness-int8 test-1 ({sha[:12]}) as shadow to unit-web"
        )
        assert page.url.endswith("/units/unit-web")
        row = page.locator(f"#rollouts tr[data-sha256='{sha}']")
        assert row.get_attribute("data-state") == "offered"
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        cmd = json.loads(listener.one().payload)
        assert (cmd["package_sha256"], cmd["mode"]) == (sha, "shadow")
    finally:
        listener.close()
