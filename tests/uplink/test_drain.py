"""The end of an offline run (`phonewatch run` on a file): it waits for the control room to
receipt what it sent, including a part the control room missed and gets on the resend, and
gives up, saying what stays in the outbox, when nobody receipts anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from edge.adapters.mqtt import MqttUplink
from edge.app import cli_unit
from edge.app.compose import build_uplink
from edge.app.local_broker import LocalBroker
from edge.core.ports import Detection
from tests.uplink.conftest import UNIT_A, subscribe
from tests.uplink.test_mqtt import sink_config
from tests.waiting import wait_until

if TYPE_CHECKING:
    from edge.app.compose import Unit

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]


@pytest.fixture
def uplink(broker: LocalBroker, tmp_path: Path) -> Iterator[MqttUplink]:
    up = build_uplink(
        sink_config(broker, receipt_timeout_s=1.0, receipt_timeout_max_s=2.0),
        unit_id=UNIT_A,
        data_dir=tmp_path / UNIT_A,
    )
    yield up
    up.close(drain_timeout_s=0)


def as_unit(up: MqttUplink) -> Unit:
    return cast("Unit", SimpleNamespace(sink=up))


def test_drain_waits_for_the_resend_of_a_part_the_control_room_missed(
    broker: LocalBroker,
    uplink: MqttUplink,
    make_detection: Callable[..., Detection],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No receipt for a while would end the wait at once; only the pending resend keeps it.
    monkeypatch.setattr(cli_unit, "OFFLINE_DRAIN_S", 0.2)
    alerts_only = subscribe(
        broker, certs_for=None, client_id="cr-alerts", topics=("phonewatch/+/alert",), receipts=True
    )
    assert uplink.wait_connected(10)
    uplink.send(make_detection())
    assert alerts_only.wait_alerts(1)
    assert wait_until(lambda: uplink.drain_progress()[0] >= 1, timeout_s=10)
    acked, resend_in = uplink.drain_progress()
    assert resend_in is not None  # the evidence frame was not receipted: it goes again
    assert uplink.outbox.depth() == 1
    # The part of the control room that takes frames comes up after the first send.
    frames = subscribe(
        broker,
        certs_for=None,
        client_id="cr-frames",
        topics=("phonewatch/+/evidence/+",),
        receipts=True,
    )
    cli_unit._drain(as_unit(uplink))
    assert uplink.outbox.depth() == 0
    assert "not yet receipted" not in capsys.readouterr().out
    assert frames.evidence()  # it came by the resend
    now_acked, resend_in = uplink.drain_progress()
    assert now_acked > acked
    assert resend_in is None


def test_drain_gives_up_and_keeps_the_alert_when_nobody_receipts(
    uplink: MqttUplink,
    make_detection: Callable[..., Detection],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_unit, "OFFLINE_DRAIN_S", 0.2)
    assert uplink.wait_connected(10)
    uplink.send(make_detection())
    cli_unit._drain(as_unit(uplink))
    assert uplink.outbox.depth() == 1
    assert "1 alert(s) not yet receipted by the control room" in capsys.readouterr().out
