from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.adapters.evidence import EvidenceStore, encode_jpeg, evidence_id, write_atomic
from edge.adapters.sinks import JsonlSink
from edge.core.ports import Detection


def noise(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_saves_frame_and_crop_with_hashes(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ev", quota_bytes=50_000_000)
    frame = noise()
    rec = store.save(
        alert_id="u-1",
        ev_id=evidence_id(1_700_000_000.5, "lane1"),
        frame=frame,
        crop=frame[10:90, 20:120],
    )
    data = Path(rec.frame_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec.frame_sha256
    assert len(data) == rec.frame_bytes
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == frame.shape
    crop = cv2.imread(rec.crop_path)
    assert crop is not None
    assert crop.shape == (80, 100, 3)
    assert hashlib.sha256(Path(rec.crop_path).read_bytes()).hexdigest() == rec.crop_sha256
    assert "20231114T221320.500Z_lane1" in rec.frame_path


def test_clip_is_written_and_hashed(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, quota_bytes=50_000_000)
    frames = [noise(seed=i) for i in range(12)]
    rec = store.save(
        alert_id="u-2",
        ev_id="x_lane1",
        frame=frames[0],
        crop=frames[0][:50, :50],
        clip=frames,
        clip_fps=12,
    )
    assert rec.clip_path is not None
    cap = cv2.VideoCapture(rec.clip_path)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12
    data = Path(rec.clip_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec.clip_sha256
    # WebM (VP8): a browser plays it as it is; the bytes travel with the record
    assert rec.clip_path.endswith("clip.webm")
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML, the Matroska/WebM header
    assert (rec.clip_type, rec.clip_bytes, rec.clip_data) == ("video/webm", len(data), data)
    assert not list(Path(rec.clip_path).parent.glob(".*"))  # no temporary file left


def test_clip_falls_back_to_motion_jpeg_without_a_vp8_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import edge.adapters.evidence as ev

    # an OpenCV built without libvpx: its VP8 writer does not open
    monkeypatch.setattr(
        ev, "CLIP_FORMATS", (("clip.webm", "XXXX", "video/webm"), *ev.CLIP_FORMATS[1:])
    )
    monkeypatch.setattr(ev, "_warned", set())
    store = EvidenceStore(tmp_path, quota_bytes=50_000_000)
    frames = [noise(seed=i) for i in range(6)]
    with caplog.at_level("WARNING"):
        rec = store.save(
            alert_id="u-3",
            ev_id="y_lane1",
            frame=frames[0],
            crop=frames[0][:50, :50],
            clip=frames,
            clip_fps=6,
        )
    assert rec.clip_path is not None
    assert rec.clip_path.endswith("clip.avi")
    assert rec.clip_type == "video/x-msvideo"
    assert Path(rec.clip_path).read_bytes()[:4] == b"RIFF"
    assert not (Path(rec.clip_path).parent / "clip.webm").exists()
    assert "no XXXX video encoder" in caplog.text


def test_quota_prunes_oldest_first_and_never_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EvidenceStore(tmp_path, quota_bytes=1)  # everything is over quota
    one = store.save(
        alert_id="a", ev_id="20250101T000000.000Z_l", frame=noise(), crop=noise(20, 20)
    )
    assert Path(one.frame_path).exists()  # the evidence being written is kept
    store.quota_bytes = int(2.5 * (one.frame_bytes + one.crop_bytes))
    recs = [
        store.save(
            alert_id=str(i),
            ev_id=f"2025010{i}T000000.000Z_l",
            frame=noise(seed=i),
            crop=noise(20, 20, seed=i),
        )
        for i in range(2, 6)
    ]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["20250104T000000.000Z_l", "20250105T000000.000Z_l"]
    assert Path(recs[-1].frame_path).exists()
    assert store.pruned_count == 3
    assert "pruned" in caplog.text  # never silently


def test_a_file_renamed_while_the_quota_is_counted_loses_no_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two cameras share the store: while one camera's save counts the folders for the quota,
    # the other renames its record's temporary file into place. Here the rename lands between
    # the first and the second look at that file, every time.
    store = EvidenceStore(tmp_path, quota_bytes=10**9)
    other = tmp_path / "20250101T000000.000Z_north-left"
    other.mkdir()
    (other / ".record.json.tmp").write_bytes(b"{}")
    real_stat, looked = Path.stat, set()

    def stat_then_gone(self: Path, **kw: Any) -> os.stat_result:
        if self.name == ".record.json.tmp":
            if self in looked:
                raise FileNotFoundError(2, "renamed meanwhile", str(self))
            looked.add(self)
        return real_stat(self, **kw)

    monkeypatch.setattr(Path, "stat", stat_then_gone)
    rec = store.save(
        alert_id="a", ev_id="20250102T000000.000Z_south-right", frame=noise(), crop=noise(20, 20)
    )
    assert Path(rec.frame_path).exists()
    assert store.usage_bytes() > 0


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
    det = Detection(
        alert_id="u-1",
        roi_id="lane1",
        score=0.9,
        frames_over=5,
        window=8,
        frame_index=42,
        t_wall_s=1.0,
        t_mono_s=2.0,
        model_name="m",
        model_version="1",
        model_sha256="c" * 64,
        threshold=0.6,
        evidence=ev,
    )
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
    assert rec["roi_id"] == "lane1"
    assert rec["evidence"]["frame_sha256"] == "a" * 64


# --- the disk, not just the quota (issue 17 item 3): a real, small tmpfs ----------------------

MB = 1024 * 1024


@pytest.mark.slow
def test_quota_larger_than_the_disk_follows_the_free_space(tmp_path: Path) -> None:
    from tests.adapters.small_fs import small_tmpfs

    with small_tmpfs(tmp_path / "fs", 8 * MB) as fs:
        store = EvidenceStore(fs / "ev", quota_bytes=500_000_000, reserve_bytes=MB)
        for i in range(80):  # ~300 kB a hit: 24 MB in all, on an 8 MB disk
            rec = store.save(
                alert_id=f"u-{i}",
                ev_id=f"20250101T0000{i:02d}.000Z_l",
                frame=noise(480, 640, seed=i),
                crop=noise(40, 40, seed=i),
            )
            assert Path(rec.frame_path).exists()
            assert Path(rec.crop_path).exists()
            assert shutil.disk_usage(fs).free >= MB
        assert store.dropped_count == 0
        assert store.pruned_count > 0
        kept = sorted(p.name for p in (fs / "ev").iterdir())
        assert kept[-1] == "20250101T000079.000Z_l"
        assert kept == [f"20250101T0000{i:02d}.000Z_l" for i in range(80 - len(kept), 80)]


def test_evidence_still_owed_is_pruned_last(tmp_path: Path) -> None:
    owed = {"a0", "a1"}
    store = EvidenceStore(tmp_path, quota_bytes=10**9, is_owed=lambda r: r.alert_id in owed)
    recs = [
        store.save(
            alert_id=f"a{i}",
            ev_id=f"2025010{i}T000000.000Z_l",
            frame=noise(seed=i),
            crop=noise(20, 20, seed=i),
        )
        for i in range(3)
    ]
    one = sum(f.stat().st_size for f in Path(recs[0].frame_path).parent.iterdir())
    store.quota_bytes = int(3.5 * one)
    for i in range(3, 6):
        store.save(
            alert_id=f"a{i}",
            ev_id=f"2025010{i}T000000.000Z_l",
            frame=noise(seed=i),
            crop=noise(20, 20, seed=i),
        )
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["20250100T000000.000Z_l", "20250101T000000.000Z_l", "20250105T000000.000Z_l"]
    owed.clear()  # the outbox delivered them: now they are the oldest, and go first
    store.quota_bytes = int(1.5 * one)
    store.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20250105T000000.000Z_l"]


def test_a_full_disk_costs_the_evidence_never_the_hit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.adapters.small_fs import fill_disk, small_tmpfs

    with small_tmpfs(tmp_path / "fs", 4 * MB) as fs:
        store = EvidenceStore(fs / "ev", quota_bytes=500_000_000, reserve_bytes=0)
        fill_disk(fs)  # by someone else: there is nothing of ours to prune
        frame = noise()
        rec = store.save(
            alert_id="u-1", ev_id="20250101T000000.000Z_l", frame=frame, crop=frame[:50, :50]
        )
        assert rec.frame_sha256 == hashlib.sha256(encode_jpeg(frame, 92)).hexdigest()
        assert not Path(rec.frame_path).exists()
        assert list((fs / "ev").rglob("*")) == []  # no half-written file left behind
        assert store.dropped_count == 1
        assert "NOT kept" in caplog.text
        (fs / "filler").unlink()
        rec = store.save(
            alert_id="u-2", ev_id="20250101T000001.000Z_l", frame=frame, crop=frame[:50, :50]
        )
        assert Path(rec.frame_path).exists()
