"""The collect sampler and the snapshot renderer, without a broker (tests/uplink/ has the
end-to-end tests through a real Mosquitto)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import pytest

from edge.app.overlay import COLD_BGR, HOT_BGR
from edge.app.remote import CollectJob, Collector, render_snapshot
from edge.core.errors import EvidenceError
from edge.core.frame import Frame
from edge.core.roi import Roi
from tests.waiting import wait_until

ROIS = (Roi.rect("lane1", 0.1, 0.1, 0.4, 0.9), Roi.rect("lane2", 0.5, 0.2, 0.9, 0.8, margin=0.0))


class RecordingUplink:
    """Records what would be published; ``online`` False stands for a broker that is away."""

    def __init__(self, *, online: bool = True, gate: threading.Event | None = None) -> None:
        self.online = online
        self.gate = gate
        self.crops: list[tuple[str, bytes]] = []
        self.calls = 0
        """``publish_collect`` calls begun: the worker has taken a sample off the queue."""

    def publish_collect(self, name: str, jpeg: bytes) -> bool:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if not self.online:
            return False
        self.crops.append((name, jpeg))
        return True

    def publish_snapshot(self, jpeg: bytes, *, request_id: str | None = None) -> bool:
        return self.online


def frame(i: int, t: float, *, w: int = 320, h: int = 240) -> Frame:
    img = np.full((h, w, 3), (i * 7) % 255, np.uint8)
    return Frame(index=i, t_mono_s=t, t_wall_s=1_700_000_000.0 + t, image=img)


def job(body: dict[str, Any]) -> CollectJob:
    return CollectJob.from_command(body, ROIS)


def settled(c: Collector, rois: int) -> bool:
    """Every sample taken so far is through the worker: each of its ``rois`` crops published,
    dropped or failed (so the one-slot queue is free for the next sample)."""
    st = c.stats()
    done = st["collect_published"] + st["collect_dropped"] + st["collect_errors"]
    return bool(done == st["collect_samples"] * rois)


def feed(c: Collector, frames: Iterable[Frame], rois: int) -> None:
    """Hand each frame to ``on_frame`` as the inference thread would, letting the worker
    catch up after each one, so no sample is deferred because the worker was still busy."""
    for f in frames:
        c.on_frame(f)
        assert wait_until(lambda: settled(c, rois), 5), c.stats()


def test_job_from_command_defaults_and_unknown_rois(caplog: pytest.LogCaptureFixture) -> None:
    j = job({"count": 3})
    assert (j.count, j.interval_s, [r.id for r in j.rois]) == (3, 2.0, ["lane1", "lane2"])
    j = job({"count": 1, "rois": ["lane2", "nope", "lane2"], "interval_s": 0.5, "request_id": "r9"})
    assert [r.id for r in j.rois] == ["lane2"]
    assert j.interval_s == 0.5
    assert j.request_id == "r9"
    assert "nope" in caplog.text
    assert [r.id for r in job({"count": 1, "rois": ["nope"]}).rois] == ["lane1", "lane2"]
    assert [r.id for r in job({"count": 1, "rois": []}).rois] == ["lane1", "lane2"]


def test_samples_count_frames_interval_apart_and_crops_are_the_roi_crops() -> None:
    up = RecordingUplink()
    c = Collector(uplink=up, jpeg_quality=90)
    try:
        c.start(job({"count": 3, "interval_s": 1.0}))
        # 10 fps for 5 s: samples at t = 0, 1, 2 (the worker is free each time)
        feed(c, (frame(i, i * 0.1) for i in range(50)), rois=2)
        assert c.wait_idle(5)
    finally:
        c.close()
    names = [n for n, _ in up.crops]
    stamps = sorted({int(n.rsplit("-", 1)[1]) for n in names})
    assert len(names) == 6
    assert sorted({n.rsplit("-", 1)[0] for n in names}) == ["lane1", "lane2"]
    assert len(stamps) == 3
    assert all(b - a >= 1000 for a, b in itertools.pairwise(stamps))
    for name, jpeg in up.crops:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        roi = ROIS[0] if name.startswith("lane1") else ROIS[1]
        x0, y0, x1, y1 = roi.crop_box(320, 240)
        assert img.shape == (y1 - y0, x1 - x0, 3)
    st = c.stats()
    assert st["collect_samples"] == 3
    assert st["collect_published"] == 6


def test_a_busy_worker_defers_the_sample_never_blocks_the_caller() -> None:
    gate = threading.Event()
    up = RecordingUplink(gate=gate)
    c = Collector(uplink=up)
    try:
        c.start(job({"count": 3, "interval_s": 0.2, "rois": ["lane1"]}))
        c.on_frame(frame(0, 0.0))  # taken; the worker now waits on the gate
        # once the worker holds it, one more sample fits in the queue; the third must wait
        assert wait_until(lambda: up.calls == 1, 5)
        t0 = time.perf_counter()
        for i in range(1, 40):
            c.on_frame(frame(i, i * 0.1))
        assert time.perf_counter() - t0 < 0.5  # never waited for the worker
        gate.set()
        feed(c, (frame(i, i * 0.1) for i in range(40, 60)), rois=1)  # the third sample
        assert c.wait_idle(5)
    finally:
        c.close()
    assert c.stats()["collect_busy"] >= 1
    assert len(up.crops) == 3


def test_a_new_command_replaces_the_running_one() -> None:
    up = RecordingUplink()
    c = Collector(uplink=up)
    try:
        c.start(job({"count": 500, "interval_s": 3600}))
        feed(c, [frame(0, 0.0)], rois=2)  # first sample at once, the next only in an hour
        c.start(job({"count": 1, "interval_s": 0.2, "rois": ["lane2"]}))
        c.on_frame(frame(1, 0.1))
        assert c.wait_idle(5)
        c.on_frame(frame(2, 5000.0))  # the first job is gone: nothing more
        assert c.stats()["collect_samples"] == 2  # (on_frame decides there and then)
    finally:
        c.close()  # (a sample still queued would be published before the worker stops)
    assert [n.rsplit("-", 1)[0] for n, _ in up.crops] == ["lane1", "lane2", "lane2"]


def test_offline_crops_are_dropped_and_counted() -> None:
    c = Collector(uplink=RecordingUplink(online=False))
    try:
        c.start(job({"count": 2, "interval_s": 0.2}))
        feed(c, (frame(i, i * 0.1) for i in range(20)), rois=2)
        assert c.wait_idle(5)
    finally:
        c.close()
    st = c.stats()
    assert st["collect_dropped"] == 4
    assert st["collect_published"] == 0


def test_snapshot_is_downscaled_drawn_and_fits_the_byte_limit() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    img[:, :] //= 4  # dark noise, so the outlines stand out
    jpeg = render_snapshot(img, ROIS, {"lane1": 0.95, "lane2": 0.1}, 0.7)
    out = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert out is not None
    assert out.shape == (720, 1280, 3)
    assert len(jpeg) <= 2_000_000

    def near(x: int, y: int, bgr: tuple[int, int, int]) -> bool:
        patch = out[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).astype(int)
        return bool((np.abs(patch - np.array(bgr)).sum(axis=1) < 150).any())

    assert near(int(0.1 * 1280), 360, HOT_BGR)  # lane1 over the threshold: red
    assert near(int(0.5 * 1280), 360, COLD_BGR)  # lane2 under it: green
    small = render_snapshot(img, ROIS, {}, 0.7, max_bytes=120_000)  # quality lowered to fit
    assert len(small) <= 120_000 < len(jpeg)
    with pytest.raises(EvidenceError):
        render_snapshot(img, ROIS, {}, 0.7, max_bytes=1000)
    narrow = render_snapshot(img[:, :640], ROIS, {}, 0.7)  # never upscaled
    decoded = cv2.imdecode(np.frombuffer(narrow, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape[1] == 640
