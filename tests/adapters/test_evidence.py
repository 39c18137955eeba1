from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.evidence import EvidenceStore, evidence_id, write_atomic
from edge.adapters.sinks import JsonlSink
from edge.core.ports import Detection


def noise(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_saves_frame_and_crop_with_hashes(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ev", quota_bytes=50_000_000)
    frame = noise()
    rec = store.save(alert_id="u-1", ev_id=evidence_id(1_700_000_000.5, "lane1"), frame=frame,
                     crop=frame[10:90, 20:120])
    data = Path(rec.frame_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec.frame_sha256
    assert len(data) == rec.frame_bytes
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape
    crop = cv2.imread(rec.crop_path)
    assert crop.shape == (80, 100, 3)
    assert hashlib.sha256(Path(rec.crop_path).read_bytes()).hexdigest() == rec.crop_sha256
    assert "20231114T221320.500Z_lane1" in rec.frame_path


def test_clip_is_written_and_hashed(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, quota_bytes=50_000_000)
    frames = [noise(seed=i) for i in range(12)]
    rec = store.save(alert_id="u-2", ev_id="x_lane1", frame=frames[0], crop=frames[0][:50, :50],
                     clip=frames, clip_fps=12)
    assert rec.clip_path is not None
    cap = cv2.VideoCapture(rec.clip_path)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12
    assert hashlib.sha256(Path(rec.clip_path).read_bytes()).hexdigest() == rec.clip_sha256


def test_quota_prunes_oldest_first_and_never_the_new_one(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    store = EvidenceStore(tmp_path, quota_bytes=1)  # everything is over quota
    one = store.save(alert_id="a", ev_id="20250101T000000.000Z_l", frame=noise(),
                     crop=noise(20, 20))
    assert Path(one.frame_path).exists()  # the evidence being written is kept
    store.quota_bytes = int(2.5 * (one.frame_bytes + one.crop_bytes))
    recs = [store.save(alert_id=str(i), ev_id=f"2025010{i}T000000.000Z_l", frame=noise(seed=i),
                       crop=noise(20, 20, seed=i)) for i in range(2, 6)]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["20250104T000000.000Z_l", "20250105T000000.000Z_l"]
    assert Path(recs[-1].frame_path).exists()
    assert store.pruned_count == 3
    assert "pruned" in caplog.text  # never silently


def test_partial_files_from_a_power_cut_are_cleaned(tmp_path: Path) -> None:
    d = tmp_path / "20250101T000000.000Z_l"
    d.mkdir()
    (d / ".frame.jpg.tmp").write_bytes(b"half")
    (d / "crop.jpg").write_bytes(b"whole")
    EvidenceStore(tmp_path, quota_bytes=10**9)
    assert not (d / ".frame.jpg.tmp").exists()
    assert (d / "crop.jpg").read_bytes() == b"whole"


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    p = tmp_path / "f"
    write_atomic(p, b"one")
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_jsonl_sink_appends_and_survives_reopen(tmp_path: Path) -> None:
    from edge.core.ports import EvidenceRecord

    ev = EvidenceRecord("u-1", "/f.jpg", "a" * 64, 10, "/c.jpg", "b" * 64, 5)
    det = Detection(alert_id="u-1", roi_id="lane1", score=0.9, frames_over=5, window=8,
                    frame_index=42, t_wall_s=1.0, t_mono_s=2.0, model_name="m",
                    model_version="1", model_sha256="c" * 64, threshold=0.6, evidence=ev)
    s = JsonlSink(tmp_path / "alerts.jsonl")
    s.send(det)
    s.close()
    s.close()  # idempotent
    s2 = JsonlSink(tmp_path / "alerts.jsonl")
    s2.send(det)
    s2.close()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["roi_id"] == "lane1" and rec["evidence"]["frame_sha256"] == "a" * 64
