"""The stage threads end to end with a real model on real video files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.adapters.camera import ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import JsonlSink, MemorySink
from edge.app import pipeline as pipeline_mod
from edge.app.pipeline import ClipBuffer, LatestSlot, Pipeline
from edge.core.decider import DeciderParams
from edge.core.errors import CameraError
from edge.core.frame import Frame
from edge.core.ports import AlertSink, Detection, FrameSource
from edge.core.roi import Roi
from tests.conftest import write_video
from tests.waiting import wait_until

LEFT = (0.05, 0.1, 0.45, 0.9)
RIGHT = (0.55, 0.1, 0.95, 0.9)


def build(
    tmp_path: Path,
    source: FrameSource,
    model: Path,
    *,
    lossless: bool = True,
    sink: AlertSink | None = None,
    **kw: Any,
) -> Pipeline:
    return Pipeline(
        source=source,
        classifier=LiteRTClassifier.open(model),
        evidence=EvidenceStore(tmp_path / "ev", quota_bytes=10**9),
        rois=[Roi.rect("left", *LEFT, margin=0.0), Roi.rect("right", *RIGHT, margin=0.0)],
        decider=DeciderParams(window=5, min_frames=3, score_on=0.7, score_off=0.3, cooldown_s=0.0),
        sink=sink or MemorySink(),
        unit_id="t1",
        lossless=lossless,
        **kw,
    )


def test_bright_driver_window_gives_one_hit_with_evidence(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    # 10 dark frames, 12 frames with the left window bright ("phone"), 10 dark again.
    levels = [20] * 10 + [240] * 12 + [20] * 10
    video = make_video(levels, box=(0.1, 0.2, 0.4, 0.8))
    sink = MemorySink()
    p = build(tmp_path, ReplaySource(video, speed=0.0), brightness_model, sink=sink)
    p.start()
    assert p.wait(30)
    snap = p.snapshot()
    assert snap["frames_processed"] == snap["frames_captured"] == 32
    assert snap["dropped_frames"] == 0  # lossless: every frame scored
    assert [d.roi_id for d in sink.detections] == ["left"]
    d = sink.detections[0]
    assert 10 <= d.frame_index <= 21
    assert d.score > 0.7
    assert d.frames_over >= 3
    assert d.model_name == "brightness-int8"
    assert len(d.model_sha256) == 64
    assert Path(d.evidence.frame_path).is_file()
    assert Path(d.evidence.crop_path).is_file()
    # The alert says where the scored crop lies in the evidence frame, in its pixels.
    frame = cv2.imread(d.evidence.frame_path)
    crop = cv2.imread(d.evidence.crop_path)
    assert frame is not None
    assert crop is not None
    h, w = frame.shape[:2]
    assert d.roi_box is not None
    x, y, bw, bh = d.roi_box
    assert (x, y) == (int(LEFT[0] * w), int(LEFT[1] * h))
    assert (bh, bw) == crop.shape[:2]
    assert np.abs(frame[y : y + bh, x : x + bw].astype(int) - crop.astype(int)).mean() < 4
    assert p.status == "running"
    assert "frames dropped" in p.summary_table()


def test_a_slow_consumer_drops_frames_and_counts_them(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video = make_video([100] * 40, fps=200.0)
    p = build(tmp_path, ReplaySource(video, speed=1.0), brightness_model, lossless=False)
    real_process = p._process

    def slow(frame: Frame, tensors: list[np.ndarray], prep_ms: float, *rest: Any) -> None:
        # Inference slower than the camera: each frame takes until two more have come in.
        seen = p.stats.captured
        wait_until(lambda: p.stats.captured >= min(40, seen + 2), timeout_s=5)
        real_process(frame, tensors, prep_ms, *rest)

    monkeypatch.setattr(p, "_process", slow)
    p.start()
    assert p.wait(30)
    s = p.snapshot()
    assert s["frames_captured"] == 40
    assert s["dropped_frames"] > 0
    assert s["frames_processed"] + s["dropped_frames"] == 40


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[Frame] = LatestSlot()
    stop = threading.Event()
    frames = [Frame(i, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8)) for i in range(3)]
    for f in frames:
        slot.put(f, stop)
    got = slot.get(0.1)
    assert got is not None
    assert got.index == 2
    assert slot.dropped == 2
    assert slot.get(0.01) is None
    slot.close()
    assert slot.is_drained


class UnpluggableCamera:
    """A live camera that can be unplugged: ``read`` fails and ``open`` keeps failing while
    unplugged, like OpenCV on a USB device that vanished; frames come from a real file."""

    def __init__(self, video: Path) -> None:
        self._inner = ReplaySource(video, speed=1.0, loop=True)  # paced like a live camera
        self.name = "unpluggable"
        self.plugged = threading.Event()
        self.plugged.set()
        self.opens = 0

    is_live = True
    fps = 25.0

    def open(self) -> None:
        self.opens += 1
        if not self.plugged.is_set():
            raise CameraError("no such device")
        self._inner.open()

    def read(self) -> Frame | None:
        if not self.plugged.is_set():
            raise CameraError("device disconnected")
        return self._inner.read()

    def close(self) -> None:
        self._inner.close()


def test_camera_unplugged_mid_run_reports_degraded_and_recovers(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    cam = UnpluggableCamera(make_video([60] * 5, fps=100.0))
    statuses: list[str] = []
    p = build(
        tmp_path,
        cam,
        brightness_model,
        lossless=False,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        on_status=statuses.append,
    )
    p.start()
    deadline = time.monotonic() + 10  # for all three waits below together

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    wait_until(lambda: p.stats.processed >= 5, left())
    cam.plugged.clear()
    assert wait_until(lambda: p.status == "degraded", left())
    assert wait_until(lambda: cam.opens >= 3, left())  # kept retrying with backoff
    before = p.stats.processed
    cam.plugged.set()
    recovered = wait_until(lambda: p.stats.processed > before + 5, left())
    p.stop()
    assert statuses[:3] == ["running", "degraded", "running"]
    assert recovered
    assert p.stats.reconnects >= 1
    assert p.stats.camera_errors >= 1


def test_a_failing_sink_loses_no_evidence(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    class BrokenSink:
        def send(self, detection: Detection) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    video = make_video([20] * 3 + [240] * 8, box=(0.6, 0.2, 0.9, 0.8))
    p = build(tmp_path, ReplaySource(video, speed=0.0), brightness_model, sink=BrokenSink())
    p.start()
    assert p.wait(30)
    assert p.stats.sink_errors == 1
    frames = list((tmp_path / "ev").glob("*/frame.jpg"))
    assert len(frames) == 1
    assert "right" in frames[0].parent.name


def test_jsonl_output_and_clip(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    video = make_video([20] * 10 + [240] * 10 + [20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    sink = JsonlSink(tmp_path / "alerts.jsonl")
    p = build(
        tmp_path,
        ReplaySource(video, speed=0.0),
        brightness_model,
        sink=sink,
        clip_before_s=0.2,
        clip_after_s=0.1,
        clip_width=64,
    )
    p.start()
    assert p.wait(30)
    sink.close()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["roi_id"] == "left"
    assert rec["evidence"]["clip_path"]
    assert Path(rec["evidence"]["clip_path"]).is_file()


def test_a_hit_keeps_its_clip_while_the_evidence_stage_is_busy_with_another(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two drivers 1 s apart; the file is read far faster than the first clip is saved (as
    # VP8 encoding takes seconds while an offline run races on): the second hit's clip must
    # not have left the clip buffer (4 s of frames) by the time the evidence stage gets to it.
    frames = [np.full((120, 160, 3), 20, np.uint8) for _ in range(300)]
    for i in range(10, 22):
        frames[i][24:96, 16:64] = 240  # the left window
    for i in range(35, 47):
        frames[i][24:96, 96:144] = 240  # the right window
    video = write_video(tmp_path / "two.avi", frames, 25.0)
    sink = MemorySink()
    p = build(
        tmp_path,
        ReplaySource(video, speed=0.0),
        brightness_model,
        sink=sink,
        clip_before_s=1.0,
        clip_after_s=1.0,
        clip_width=64,
    )
    real_save = p.evidence.save

    def slow_save(**kw: Any) -> Any:
        if not sink.detections:  # the first hit: saved only once the whole file is read
            assert wait_until(lambda: p.stats.captured == 300, timeout_s=20)
        return real_save(**kw)

    monkeypatch.setattr(p.evidence, "save", slow_save)
    p.start()
    assert p.wait(30)
    assert sorted(d.roi_id for d in sink.detections) == ["left", "right"]
    for d in sink.detections:
        assert d.evidence.clip_path, f"{d.roi_id} lost its clip"
        cap = cv2.VideoCapture(d.evidence.clip_path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        # 2 s at 25 fps (the left one starts less than 1 s into the file)
        assert 30 <= n <= 52, f"{d.roi_id}: {n} frames"


@pytest.mark.slow
def test_real_traffic_clip_runs_clean(
    tmp_path: Path, shared_data: Path, brightness_model: Path
) -> None:
    p = build(
        tmp_path,
        ReplaySource(shared_data / "video" / "car-detection.mp4", speed=0.0),
        brightness_model,
    )
    p.start()
    assert p.wait(120)
    s = p.snapshot()
    assert s["frames_processed"] == s["frames_captured"] > 300
    assert s["evidence_errors"] == 0
    assert s["camera_errors"] == 0


def test_a_frame_that_fails_inference_is_counted_and_the_stage_goes_on(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = build(tmp_path, ReplaySource(make_video([100] * 12), speed=0.0), brightness_model)
    real = p.classifier.score_batch
    calls = {"n": 0}

    def flaky(tensors: Sequence[np.ndarray]) -> list[float]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("Node number 3 (CONV_2D) failed to invoke")
        return real(tensors)

    monkeypatch.setattr(p.classifier, "score_batch", flaky)
    p.start()
    assert p.wait(30)
    s = p.snapshot()
    assert s["stage_errors"] == 1
    assert s["frames_processed"] == 11


def _frame(t_s: float, level: int = 0) -> Frame:
    return Frame(int(t_s * 10), t_s, 1.7e9 + t_s, np.full((4, 4, 3), level, np.uint8))


def test_a_clip_is_handed_out_when_a_frame_past_its_end_comes_in() -> None:
    clips = ClipBuffer(keep_s=10.0, width=64)
    got: list[list[int]] = []

    def note(clip: list[np.ndarray]) -> None:
        got.append([int(img[0, 0, 0]) for img in clip])

    for k in range(5):  # t = 0.0 .. 0.4
        clips.add(_frame(k / 10, level=k))
    clips.when_recorded(0.2, 0.6, note)  # post-roll still to come
    clips.when_recorded(0.1, 0.3, note)  # already in: at once
    assert got == [[1, 2, 3]]
    assert clips.first_waiting_end_s == 0.6
    clips.add(_frame(0.5, level=5))
    assert len(got) == 1
    clips.add(_frame(0.7, level=7))  # past 0.6 (no frame exactly at the end is needed)
    assert got[1] == [2, 3, 4, 5]
    assert clips.first_waiting_end_s is None


def test_waiting_clips_are_finished_with_what_there_is() -> None:
    clips = ClipBuffer(keep_s=10.0, width=64)
    got: list[tuple[str, int]] = []
    clips.add(_frame(0.0))
    clips.when_recorded(0.0, 1.0, lambda c: got.append(("early", len(c))))
    clips.when_recorded(0.0, 5.0, lambda c: got.append(("late", len(c))))
    clips.finish(ended_by_s=2.0)  # overdue: the camera stalled
    assert got == [("early", 1)]
    clips.finish()  # the source ended
    assert got == [("early", 1), ("late", 1)]


class StallingCamera:
    """A live camera that stops delivering (hangs in ``read``) after ``frames`` frames."""

    def __init__(self, video: Path, frames: int) -> None:
        self._inner = ReplaySource(video, speed=0.0)
        self._left = frames
        self.release = threading.Event()
        self.name = "stalling"

    is_live = True
    fps = 25.0

    def open(self) -> None:
        self._inner.open()

    def read(self) -> Frame | None:
        if self._left == 0:
            self.release.wait(30)
            return None
        self._left -= 1
        return self._inner.read()

    def close(self) -> None:
        self._inner.close()


def test_a_stalled_camera_does_not_hold_an_alert_back(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline_mod, "CLIP_STALL_S", 0.05)
    video = make_video([20] * 3 + [240] * 8, box=(0.1, 0.2, 0.4, 0.8))
    cam = StallingCamera(video, frames=11)
    sink = MemorySink()
    p = build(
        tmp_path,
        cam,
        brightness_model,
        sink=sink,
        clip_before_s=0.2,
        clip_after_s=0.2,
        clip_width=64,
    )
    p.start()
    try:
        # the camera hangs after the hit: the clip is kept with the frames there are
        assert wait_until(lambda: len(sink.detections) == 1, timeout_s=10)
        assert not p.is_finished
        ev = sink.detections[0].evidence
        assert ev.clip_path
        # the clip the uplink will send is the file on disk, as its hash says
        assert ev.clip_data == Path(ev.clip_path).read_bytes()
        assert ev.clip_type == "video/webm"
        assert ev.clip_bytes == len(ev.clip_data)
    finally:
        cam.release.set()
        p.stop()


def test_a_file_ending_inside_a_post_roll_does_not_wait_it_out(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    # The clip waits for frame time to pass its end, not for a timer: the file ends long
    # before 30 s of post-roll, and the hit is recorded then with the frames there are.
    video = make_video([20] * 12 + [240] * 8, box=(0.1, 0.2, 0.4, 0.8))
    sink = MemorySink()
    p = build(
        tmp_path,
        ReplaySource(video, speed=0.0),
        brightness_model,
        sink=sink,
        clip_before_s=0.1,
        clip_after_s=30.0,
        clip_width=64,
    )
    p.start()
    assert p.wait(10)
    assert [d.roi_id for d in sink.detections] == ["left"]
    assert sink.detections[0].evidence.clip_path
