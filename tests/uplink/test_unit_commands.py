"""The composed unit acting on control-room commands through a real Mosquitto: ``collect``
(ROI crops on ``collect/<name>``), ``snapshot``, ``reload`` (exit status 75) and malformed
commands, with the brightness test model on a looping clip."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.adapters.mqtt import MqttUplink
from edge.app.compose import EXIT_RELOAD, Unit
from edge.app.config import load_config
from edge.app.local_broker import LocalBroker
from edge.core.roi import Roi
from tests.uplink.conftest import UNIT_A, connect_client, subscribe
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]

REPO = Path(__file__).resolve().parents[2]
ROIS = {"lane1": [0.05, 0.1, 0.45, 0.9], "lane2": [0.55, 0.2, 0.95, 0.8]}
CMD = f"phonewatch/{UNIT_A}/cmd/"


def write_config(
    path: Path, broker: LocalBroker, video: Path, *, extra: str = "", cameras: str | None = None
) -> Path:
    """A unit reading ``video`` (looped, in real time) with ``ROIS``; or, given ``cameras``,
    those ``[[cameras]]`` instead."""
    rois = "\n".join(f'[[rois]]\nid = "{rid}"\nrect = {box}\n' for rid, box in ROIS.items())
    sink = "\n".join(f"{k} = {json.dumps(v)}" for k, v in broker.sink_settings(UNIT_A).items())
    source = f"""[camera]
type = "replay"
path = "{video}"
loop = true
speed = 1.0

{rois}"""
    path.write_text(f"""
[unit]
id = "{UNIT_A}"
data_dir = "{path.parent / "unit"}"

{source if cameras is None else cameras}
[model]
path = "{REPO / "tests" / "data" / "brightness_int8.tflite"}"
accelerator = "cpu"

[sink]
{sink}
signing_key_autogenerate = true
reconnect_min_s = 0.2
reconnect_max_s = 1.0
heartbeat_interval_s = 3600
{extra}
""")
    return path


@dataclass
class Running:
    unit: Unit
    thread: threading.Thread
    stop: threading.Event
    result: dict[str, Any] = field(default_factory=dict)

    def frames(self) -> int:
        assert self.unit.pipeline is not None
        return int(self.unit.pipeline.stats.processed)

    @property
    def uplink(self) -> MqttUplink:
        """The unit's sink: these units send to a broker, so it is the MQTT uplink."""
        assert isinstance(self.unit.sink, MqttUplink), self.unit.sink
        return self.unit.sink


@pytest.fixture
def start_unit(
    tmp_path: Path, broker: LocalBroker, make_video: Callable[..., Path]
) -> Iterator[Callable[..., Running]]:
    made: list[tuple[Running, Any]] = []

    def start(*, size: tuple[int, int] = (160, 120), fps: float = 20.0) -> Running:
        video = make_video([40, 60, 80, 100] * 5, fps=fps, size=size)
        cfg_path = write_config(tmp_path / "unit.toml", broker, video)
        unit = Unit(load_config(cfg_path), config_path=cfg_path)
        ctx = unit.__enter__()
        stop = threading.Event()
        run = Running(ctx, threading.Thread(target=lambda: None), stop)

        def main() -> None:
            run.result.update(ctx.run(stop=stop, max_s=120))

        run.thread = threading.Thread(target=main, daemon=True)
        run.thread.start()
        made.append((run, unit))
        assert run.uplink.wait_connected(10)
        assert wait_until(lambda: run.frames() >= 3, 10), "the unit processes no frames"
        return run

    yield start
    for run, unit in made:
        run.stop.set()
        run.thread.join(15)
        unit.__exit__(None, None, None)


def commander(broker: LocalBroker) -> mqtt.Client:
    c = connect_client(broker, "controlroom-commander")
    c.loop_start()
    return c


def send(c: mqtt.Client, name: str, payload: bytes | dict[str, Any]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    c.publish(CMD + name, data, qos=1).wait_for_publish(5)


def collect_done(run: Running, published: int) -> bool:
    """Wait until the collect job has finished and the unit has published ``published`` crops
    in all: then nothing more is coming, so a subscriber that has that many has them all."""
    collector = run.unit.collector
    assert collector is not None
    assert collector.wait_idle(15)
    return bool(run.unit.heartbeat_stats()["collect_published"] == published)


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img


def crop_shape(roi_id: str, w: int, h: int) -> tuple[int, int, int]:
    x0, y0, x1, y1 = ROIS[roi_id]
    box = Roi.rect(roi_id, x0, y0, x1, y1).crop_box(w, h)  # margin 0.1, as configured
    return box[3] - box[1], box[2] - box[0], 3


def test_collect_publishes_count_crops_per_roi_then_stops(
    broker: LocalBroker, start_unit: Callable[..., Running]
) -> None:
    run = start_unit()
    sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/collect/+",))
    cr = commander(broker)
    send(cr, "collect", {"request_id": "r1", "count": 3, "interval_s": 0.2})
    assert sub.wait(lambda ms: len(ms) >= 6, 15), [r.topic for r in sub.messages]
    assert collect_done(run, 6), run.unit.heartbeat_stats()  # ... and no more than count
    got = list(sub.messages)
    assert len(got) == 6
    stamps: dict[str, list[int]] = {}
    for r in got:
        assert not r.retain
        m = re.fullmatch(rf"phonewatch/{UNIT_A}/collect/(lane[12])-(\d{{13}})", r.topic)
        assert m, r.topic
        stamps.setdefault(m.group(1), []).append(int(m.group(2)))
        assert decode(r.payload).shape == crop_shape(m.group(1), 160, 120)
    assert sorted(stamps) == ["lane1", "lane2"]
    for ts in stamps.values():  # three frames, at least interval_s apart (frame wall time)
        ts.sort()
        assert len(set(ts)) == 3, ts
        assert all(b - a >= 190 for a, b in itertools.pairwise(ts)), ts
    assert abs(stamps["lane1"][0] - time.time() * 1000) < 30_000
    # only the named ROI; an unknown id is ignored
    send(cr, "collect", {"count": 2, "interval_s": 0.2, "rois": ["lane2", "no-such-roi"]})
    assert sub.wait(lambda ms: len(ms) >= 8, 15)
    assert collect_done(run, 8), run.unit.heartbeat_stats()
    assert len(sub.messages) == 8
    assert all("/collect/lane2-" in r.topic for r in sub.messages[6:])
    hb = run.unit.heartbeat_stats()  # what the heartbeat carries under "pipeline"
    assert hb["collect_published"] == 8
    assert hb["collect_dropped"] == 0
    assert run.thread.is_alive()
    cr.loop_stop()
    cr.disconnect()
    sub.close()


def test_collect_while_the_broker_goes_away_drops_and_counts(
    broker: LocalBroker, start_unit: Callable[..., Running]
) -> None:
    run = start_unit()
    sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/collect/+",))
    cr = commander(broker)
    send(cr, "collect", {"count": 3, "interval_s": 2.5})
    assert sub.wait(lambda ms: len(ms) >= 2, 10)  # the first sample, at once
    sub.close()
    cr.loop_stop()
    cr.disconnect()
    broker.stop()
    assert run.unit.collector is not None
    assert run.unit.collector.wait_idle(15)
    st = run.unit.heartbeat_stats()
    # the first sample went out; the last (2 x 2.5 s later) found no broker
    published, dropped = st["collect_published"], st["collect_dropped"]
    assert published >= 2, (published, dropped)
    assert dropped >= 2, (published, dropped)
    assert published + dropped == 6, (published, dropped)
    assert run.thread.is_alive()
    # crops are not alerts: nothing went through the outbox
    assert run.uplink.stats()["alerts_committed"] == 0
    assert run.uplink.outbox.depth() == 0


def test_snapshot_is_one_jpeg_at_most_1280_wide_with_the_rois(
    broker: LocalBroker, start_unit: Callable[..., Running]
) -> None:
    run = start_unit(size=(1920, 1080), fps=10.0)
    sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/snapshot",))
    cr = commander(broker)
    send(cr, "snapshot", {"request_id": "s1", "reason": "aim check"})
    assert sub.wait(lambda ms: len(ms) >= 1, 15)
    # one command, one snapshot published (the count follows the publish): no second coming
    assert wait_until(lambda: run.unit.heartbeat_stats()["snapshot_published"] >= 1, 5)
    assert run.unit.uplink is not None
    assert run.unit.uplink.stats()["commands_accepted"] == 1
    assert len(sub.messages) == 1
    assert not sub.messages[0].retain
    assert sub.messages[0].user_properties == (("request_id", "s1"),)  # which request it answers
    jpeg = sub.messages[0].payload
    img = decode(jpeg)
    assert img.shape == (720, 1280, 3)
    assert len(jpeg) <= 2_000_000
    # the ROI outline (green or red) is drawn on the grey frame
    x = int(ROIS["lane1"][0] * 1280)
    patch = img[300:420, x - 3 : x + 4].reshape(-1, 3).astype(int)
    b, g, r = patch[:, 0], patch[:, 1], patch[:, 2]
    assert ((g - np.maximum(b, r) > 80) | (r - np.maximum(b, g) > 80)).any()
    hb = run.unit.heartbeat_stats()
    assert hb["snapshot_published"] == 1
    assert hb["snapshot_failed"] == 0
    cr.loop_stop()
    cr.disconnect()
    sub.close()


def test_malformed_collect_commands_are_rejected_and_the_unit_keeps_running(
    broker: LocalBroker, start_unit: Callable[..., Running]
) -> None:
    run = start_unit()
    sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/collect/+",))
    cr = commander(broker)
    bad: list[bytes | dict[str, Any]] = [
        {"count": 0},
        {"count": 501},
        {"count": 3, "shell": "rm -rf /"},
        {},
        {"count": "3"},
        {"count": 2.5},
        {"count": 3, "interval_s": 0.1},
        {"count": 3, "interval_s": 3601},
        {"count": 3, "rois": [f"r{i}" for i in range(17)]},
        {"count": 3, "rois": "lane1"},
        {"count": 3, "request_id": "x" * 65},
        b'{"count": 3, "rois": ["' + b"A" * 10_000 + b'"]}',
        b"[3]",
        b"not json",
    ]
    for payload in bad:
        send(cr, "collect", payload)
    send(cr, "collect", {"count": 1, "interval_s": 0.2, "rois": ["lane1"]})
    assert sub.wait(lambda ms: len(ms) >= 1, 10)
    # the valid command was sent last (one topic: delivered in order), so every bad one was
    # judged before it; its job done with one crop published, nothing more is coming
    assert collect_done(run, 1), run.unit.heartbeat_stats()
    assert [r.topic.rsplit("/", 1)[1].split("-")[0] for r in sub.messages] == ["lane1"]
    st = run.uplink.stats()
    assert st["commands_rejected"] == len(bad)
    assert st["commands_accepted"] == 1
    assert st["connected"]
    assert run.thread.is_alive()
    n = run.frames()
    assert wait_until(lambda: run.frames() > n, 5)
    cr.loop_stop()
    cr.disconnect()
    sub.close()


def test_reload_with_a_broken_config_keeps_running_a_valid_one_ends_with_75(
    broker: LocalBroker,
    start_unit: Callable[..., Running],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = start_unit()
    cfg_path = tmp_path / "unit.toml"
    good = cfg_path.read_text()
    cr = commander(broker)
    caplog.set_level(logging.INFO, logger="edge")
    cfg_path.write_text(good.replace("[model]", "[decider]\nwindw = 8\n\n[model]"))
    send(cr, "reload", {"request_id": "rl1"})
    assert wait_until(lambda: "reload rl1 refused" in caplog.text, 10)
    assert "decider.windw" in caplog.text  # the error names the key
    # (refused: reload_requested, which exit_code reads, was never set; a few more frames)
    n = run.frames()
    wait_until(lambda: run.frames() > n + 5, 10)
    assert run.thread.is_alive()
    assert run.frames() > n
    assert run.unit.exit_code == 0
    # a model file that is not there would not start: refused too
    cfg_path.write_text(good.replace("brightness_int8.tflite", "missing.tflite"))
    send(cr, "reload", {"request_id": "rl2"})
    assert wait_until(lambda: "reload rl2 refused" in caplog.text, 10)
    assert "model.path" in caplog.text
    assert run.thread.is_alive()
    # a valid new config: the run ends, asking for exit status 75
    cfg_path.write_text(good.replace("heartbeat_interval_s = 3600", "heartbeat_interval_s = 60"))
    send(cr, "reload", {})
    run.thread.join(15)
    assert not run.thread.is_alive()
    assert run.unit.exit_code == EXIT_RELOAD == 75
    assert run.unit.heartbeat_stats()["reloads_refused"] == 2
    cr.loop_stop()
    cr.disconnect()


def test_phonewatch_run_exits_75_on_reload(
    broker: LocalBroker, tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    video = make_video([40, 60, 80, 100] * 5, fps=20.0)
    cfg_path = write_config(tmp_path / "unit.toml", broker, video)
    status = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/status",))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.app.cli", "-v", "run", "--config", str(cfg_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def online(ms: list[Any]) -> bool:
            return any(json.loads(r.payload)["state"] == "online" for r in ms)

        assert status.wait(online, 60), "the unit never came online"
        cr = commander(broker)
        send(cr, "reload", {"request_id": "deploy-42"})
        _, err = proc.communicate(timeout=30)
        cr.loop_stop()
        cr.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, err.decode()[-2000:]
    assert b"reload deploy-42" in err
    # a clean stop: the retained status says offline, "stopped"
    assert status.wait(lambda ms: json.loads(ms[-1].payload)["state"] == "offline", 5)
    status.close()


def test_collected_crops_land_in_the_control_rooms_labelling_queue(
    broker: LocalBroker, start_unit: Callable[..., Running], tmp_path: Path
) -> None:
    pytest.importorskip("sqlalchemy")
    import base64

    import sqlalchemy as sa
    from cryptography.hazmat.primitives import serialization

    from controlroom import db
    from controlroom.config import MqttConfig
    from controlroom.receiver import Receiver
    from edge.common.signing import key_id, load_public_key

    run = start_unit()
    pub = load_public_key(tmp_path / "unit" / "keys" / f"{UNIT_A}.sign.pub")
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cr.sqlite'}")
    db.migrate(engine)
    db.upsert_unit(engine, UNIT_A, base64.b64encode(raw).decode(), key_id(pub))
    rx = Receiver(
        MqttConfig(host=broker.host, port=broker.port, client_id="cr-labels", share_group="labels"),
        engine,
    ).start()
    try:
        assert rx.wait_ready(10)
        cr = commander(broker)
        # (0.25 s = 5 frames of the 4-level clip: two different crops; the queue keeps each
        # distinct JPEG once)
        send(cr, "collect", {"count": 2, "interval_s": 0.25})

        def queued() -> list[Any]:
            with engine.connect() as conn:
                return list(conn.execute(sa.select(db.labels.c.unit, db.labels.c.name)))

        wait_until(lambda: len(queued()) >= 4, 15, step_s=0.1)
        rows = queued()
        assert len(rows) == 4
        assert {u for u, _ in rows} == {UNIT_A}
        assert sorted(n.rsplit("-", 1)[0] for _, n in rows) == ["lane1", "lane1", "lane2", "lane2"]
        assert run.thread.is_alive()
        cr.loop_stop()
        cr.disconnect()
    finally:
        rx.close()
        engine.dispose()
