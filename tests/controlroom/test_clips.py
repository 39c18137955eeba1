"""Video clips of alerts in the control room: ingest (checks, orphans, duplicates, receipts),
the alert page and ``/alerts/<id>/clip`` (redacted for most users, the original for viewers),
the court bundle, retention, a real browser playing it and a real Mosquitto + Receiver.

Clips are real WebM VP8 files written by OpenCV, alerts are signed like the unit signs them and
go in through the real ingest path into SQLite."""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import bundle, db, retention, users
from controlroom.app import ControlRoom
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.receiver import Receiver
from controlroom.web import create_app
from edge.common.signing import generate_key
from tests.controlroom.conftest import Publisher, Unit, raw_pub_b64
from tests.waiting import wait_until

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

PASSWORD = "correct horse battery"
BROWSER_PASSWORD = "operator password 1"
"""What tests.controlroom.test_console_browser.new_page logs in with."""
FRAME_W, FRAME_H = 320, 180
CLIP_W, CLIP_H = 160, 90
BOX = (120, 40, 80, 60)
"""The driver's box in the evidence frame's pixels: in the clip (half size) 60, 20, 40 x 30."""


def _textured(seed: int, w: int, h: int) -> np.ndarray:
    """Fine detail everywhere (a checkerboard of 4-pixel cells plus noise): blur destroys it."""
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((xx // 4) + (yy // 4)) % 2 * 200 + 25).astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 30, (h, w), dtype=np.uint8)
    return np.dstack([board + noise] * 3)


def make_clip(path: Path, *, frames: int = 20, size: tuple[int, int] = (CLIP_W, CLIP_H)) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"VP80"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(_textured(i, *size))
    writer.release()
    return path.read_bytes()


@pytest.fixture(scope="module")
def clip() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return make_clip(Path(d) / "clip.webm")


def frame_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", _textured(99, FRAME_W, FRAME_H))
    assert ok
    return bytes(buf.tobytes())


def decode_frames(data: bytes) -> list[np.ndarray]:
    with tempfile.NamedTemporaryFile(suffix=".webm") as f:
        f.write(data)
        f.flush()
        cap = cv2.VideoCapture(f.name)
        frames = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
        cap.release()
    return frames


def detail(img: np.ndarray, where: np.ndarray) -> float:
    """Mean absolute Laplacian over the ``where`` mask: high for the checkerboard, near zero
    once blurred."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F))[where].mean())


def msgs(unit: Unit, aid: str, **parts: bytes) -> list[Message]:
    now = time.time()
    return [Message(f"phonewatch/{unit.unit_id}/{k}/{aid}", v, now) for k, v in parts.items()]


def alert_msg(unit: Unit, payload: bytes) -> Message:
    return Message(f"phonewatch/{unit.unit_id}/alert", payload, time.time())


def put(ingest: Ingest, unit: Unit, clip: bytes | None, **kw: Any) -> tuple[str, bytes]:
    """An alert, its evidence frame and (if given) its clip through the real ingest path."""
    payload, jpeg = unit.alert(clip=clip, jpeg=frame_jpeg(), **kw)
    aid = json.loads(payload)["alert_id"]
    batch = [alert_msg(unit, payload), *msgs(unit, aid, evidence=jpeg)]
    if clip is not None:
        batch += msgs(unit, aid, clip=clip)
    ingest.process(batch)
    return aid, payload


def stored_clips(engine: Engine) -> list[tuple[str, bytes]]:
    with engine.connect() as conn:
        return [(r.alert_id, bytes(r.jpeg)) for r in conn.execute(sa.select(db.clips))]


# ------------------------------------------------------------------ ingest


def test_clip_is_stored_and_receipted(engine: Engine, unit_a: Unit, clip: bytes) -> None:
    ingest = Ingest(engine)
    aid, _ = put(ingest, unit_a, clip)
    assert stored_clips(engine) == [(aid, clip)]
    assert ingest.stats()["clips_stored"] == 1
    seq = int(aid.rpartition("-")[2])
    assert ingest.take_receipts().by_unit[unit_a.unit_id] == ({seq}, {seq}, set(), {seq})


def test_clip_not_the_signed_one_is_rejected(engine: Engine, unit_a: Unit, clip: bytes) -> None:
    ingest = Ingest(engine)
    aid, _ = put(ingest, unit_a, clip)
    other = clip[:-1] + bytes([clip[-1] ^ 0xFF])
    ingest.take_receipts()
    # A different clip for the same alert, and a clip for an alert that names none.
    ingest.process(msgs(unit_a, aid, clip=other))
    aid2, _ = put(ingest, unit_a, None)
    ingest.process(msgs(unit_a, aid2, clip=clip))
    assert ingest.stats()["rejected"] == {"clip_mismatch": 2}
    assert stored_clips(engine) == [(aid, clip)]
    assert ingest.take_receipts().by_unit[unit_a.unit_id][3] == set()


def test_not_a_video_and_oversized_are_rejected(engine: Engine, unit_a: Unit, clip: bytes) -> None:
    ingest = Ingest(engine, clip_max_bytes=len(clip) - 1)
    aid, _ = put(ingest, unit_a, None)
    ingest.process(msgs(unit_a, aid, clip=b"\xff\xd8\xff" + b"\0" * 100))
    ingest.process(msgs(unit_a, aid, clip=clip))
    assert ingest.stats()["rejected"] == {"not_video": 1, "oversized": 1}
    assert stored_clips(engine) == []


def test_avi_container_is_accepted(engine: Engine, unit_a: Unit) -> None:
    avi = b"RIFF" + (100).to_bytes(4, "little") + b"AVI LIST" + bytes(92)
    ingest = Ingest(engine)
    aid, _ = put(ingest, unit_a, avi, clip_type="video/x-msvideo")
    assert stored_clips(engine) == [(aid, avi)]


def test_orphan_clip_then_alert_and_duplicate(engine: Engine, unit_a: Unit, clip: bytes) -> None:
    ingest = Ingest(engine)
    payload, jpeg = unit_a.alert(clip=clip, jpeg=frame_jpeg())
    aid = json.loads(payload)["alert_id"]
    seq = int(aid.rpartition("-")[2])
    ingest.process(msgs(unit_a, aid, clip=clip))  # the clip overtook its alert
    assert stored_clips(engine) == [(aid, clip)]
    assert ingest.take_receipts().by_unit[unit_a.unit_id][3] == {seq}
    ingest.process([alert_msg(unit_a, payload), *msgs(unit_a, aid, evidence=jpeg, clip=clip)])
    assert stored_clips(engine) == [(aid, clip)]
    assert ingest.stats()["clips_stored"] == 1
    assert ingest.stats()["duplicates"] == 1
    assert ingest.take_receipts().by_unit[unit_a.unit_id][3] == {seq}  # receipted again


# ------------------------------------------------------------------ web


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(
        {"web": {"tile_url": ""}, "privacy": {"original_viewers": ["alice"]}},
        base_dir=tmp_path,
    )


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)
    users.add_user(engine, "bob", PASSWORD)
    return Ingest(engine)


@pytest.fixture
def client(cfg: Config, engine: Engine, ingest: Ingest) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine)) as c:
        yield c


def login(c: Any, user: str) -> str:
    from tests.controlroom.test_web import login as web_login

    return web_login(c, user, PASSWORD)


@pytest.mark.slow
def test_alert_page_shows_the_clip_or_says_why_not(
    client: Any, ingest: Ingest, unit_a: Unit, clip: bytes
) -> None:
    login(client, "bob")
    with_clip, _ = put(ingest, unit_a, clip, roi_box=BOX)
    page = client.get(f"/alerts/{with_clip}").text
    assert f'<video id="clip" controls preload="metadata" src="/alerts/{with_clip}/clip">' in page
    assert 'id="original-clip"' not in page  # bob is no original viewer
    payload, jpeg = unit_a.alert(clip=clip, jpeg=frame_jpeg())
    waiting = json.loads(payload)["alert_id"]
    ingest.process([alert_msg(unit_a, payload), *msgs(unit_a, waiting, evidence=jpeg)])
    page = client.get(f"/alerts/{waiting}").text
    assert 'id="no-clip"' in page
    assert "the clip has not arrived yet" in page
    assert "<video" not in page
    without, _ = put(ingest, unit_a, None)
    page = client.get(f"/alerts/{without}").text
    assert "<video" not in page
    assert 'id="no-clip"' not in page
    assert "Clip:" not in page
    assert client.get(f"/alerts/{without}/clip").status_code == 404
    assert client.get(f"/alerts/{waiting}/clip").status_code == 404


@pytest.mark.slow
def test_avi_without_blur_is_a_download(
    tmp_path: Path, engine: Engine, ingest: Ingest, unit_a: Unit
) -> None:
    from fastapi.testclient import TestClient

    avi = b"RIFF" + (100).to_bytes(4, "little") + b"AVI LIST" + bytes(92)
    aid, _ = put(ingest, unit_a, avi, clip_type="video/x-msvideo")
    cfg = parse_config({"web": {"tile_url": ""}, "privacy": {"blur": "off"}}, base_dir=tmp_path)
    with TestClient(create_app(cfg, engine)) as c:
        login(c, "bob")
        page = c.get(f"/alerts/{aid}").text
        assert 'id="clip-download"' in page
        assert "browsers cannot play it" in page
        assert "<video" not in page
        r = c.get(f"/alerts/{aid}/clip")
        assert r.status_code == 200
        assert r.headers["content-type"] == "video/x-msvideo"
        assert r.content == avi


@pytest.mark.slow
def test_non_viewer_gets_a_redacted_clip_viewer_the_audited_original(
    client: Any, engine: Engine, ingest: Ingest, unit_a: Unit, clip: bytes
) -> None:
    aid, _ = put(ingest, unit_a, clip, roi_box=BOX)
    login(client, "bob")
    r = client.get(f"/alerts/{aid}/clip")
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/webm"
    assert r.content.startswith(b"\x1a\x45\xdf\xa3")
    assert r.content != clip
    originals, shown = decode_frames(clip), decode_frames(r.content)
    assert len(shown) == len(originals) == 20
    x, y, w, h = (v // 2 for v in BOX)  # the box in the clip's (half-size) pixels
    outside = np.ones((CLIP_H, CLIP_W), dtype=bool)
    outside[y - 8 : y + h + 8, x - 8 : x + w + 8] = False  # a margin for VP8's 16 px blocks
    inside = np.zeros_like(outside)
    inside[y + 4 : y + h - 4, x + 4 : x + w - 4] = True
    for orig, red in zip(originals[::5], shown[::5], strict=True):
        assert detail(orig, outside) > 50
        # Outside the box the fine pattern is gone; inside it is about as sharp as the original.
        assert detail(red, outside) < detail(orig, outside) / 10
        assert detail(red, inside) > 0.6 * detail(orig, inside)
    again = client.get(f"/alerts/{aid}/clip")  # from the cache, not redacted twice
    assert again.content == r.content
    assert client.app.state.web.redacted_clips.hits == 1
    assert client.get(f"/alerts/{aid}/original-clip").status_code == 403
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(sa.select(db.audit))]
    assert "view_original_clip" not in actions

    client.cookies.clear()
    login(client, "alice")
    assert 'id="original-clip"' in client.get(f"/alerts/{aid}").text
    r = client.get(f"/alerts/{aid}/original-clip")
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/webm"
    assert r.content == clip
    with engine.connect() as conn:
        audited = [
            (r.username, r.target)
            for r in conn.execute(
                sa.select(db.audit).where(db.audit.c.action == "view_original_clip")
            )
        ]
    assert audited == [("alice", aid)]


# ------------------------------------------------------------------ bundle and retention


def confirm(c: Any, token: str, aid: str) -> None:
    r = c.post(
        f"/alerts/{aid}/review",
        data={"action": "confirm", "sure": "yes", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def rezip(data: bytes, path: Path, **replace: bytes) -> Path:
    """``data`` (a bundle) written to ``path`` with members replaced."""
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, replace.get(name.replace(".", "_"), src.read(name)))
    return path


@pytest.mark.slow
def test_bundle_holds_the_clip_and_verify_checks_it(
    client: Any, ingest: Ingest, unit_a: Unit, clip: bytes, tmp_path: Path
) -> None:
    token = login(client, "alice")
    aid, _ = put(ingest, unit_a, clip, roi_box=BOX)
    plain, _ = put(ingest, unit_a, None)
    confirm(client, token, aid)
    confirm(client, token, plain)
    data = client.get(f"/alerts/{aid}/bundle.zip").content
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read("clip.webm") == clip
        assert "clip.webm is the unit's video clip" in z.read("VERIFY.txt").decode()
    good = bundle.verify_bundle(rezip(data, tmp_path / "good.zip"))
    assert good.ok, good.report()
    assert f"PASS  clip: clip.webm is {len(clip)} bytes with SHA-256" in good.report()
    assert "and video clip (clip.webm), are exactly as signed" in good.report()

    tampered = clip[:-1] + bytes([clip[-1] ^ 0x01])
    bad = bundle.verify_bundle(rezip(data, tmp_path / "bad.zip", clip_webm=tampered))
    assert not bad.ok
    assert "FAIL  clip: clip.webm: the clip's SHA-256 is not the one in the signed alert" in (
        bad.report()
    )

    no_clip = client.get(f"/alerts/{plain}/bundle.zip").content
    with zipfile.ZipFile(io.BytesIO(no_clip)) as z:
        assert not [n for n in z.namelist() if n.startswith("clip")]
    path = rezip(no_clip, tmp_path / "plain.zip")
    result = bundle.verify_bundle(path)
    assert result.ok, result.report()
    assert "clip" not in result.report()


def test_retention_deletes_clips_with_the_evidence(
    cfg: Config, engine: Engine, unit_a: Unit, clip: bytes
) -> None:
    ingest = Ingest(engine)
    rejected, _ = put(ingest, unit_a, clip)
    kept, _ = put(ingest, unit_a, clip + b"")  # same bytes, another alert
    payload, _ = unit_a.alert(clip=clip)
    orphan = json.loads(payload)["alert_id"]
    ingest.process(msgs(unit_a, orphan, clip=clip))  # its alert never comes
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == rejected)
            .values(status="rejected", reviewed_at=now, reviewed_by="alice")
        )
    assert {a for a, _ in stored_clips(engine)} == {rejected, kept, orphan}
    out = retention.sweep(engine, cfg.retention, now=now + cfg.retention.rejected_evidence_s + 1)
    assert out["rejected_evidence"] == 1
    assert {a for a, _ in stored_clips(engine)} == {kept, orphan}
    retention.sweep(engine, cfg.retention, now=now + cfg.retention.orphan_evidence_s + 1)
    assert {a for a, _ in stored_clips(engine)} == {kept}
    # A clip resent after its evidence was deleted is receipted (the unit may forget it), not
    # stored again.
    ingest.take_receipts()
    ingest.process(msgs(unit_a, rejected, clip=clip))
    assert {a for a, _ in stored_clips(engine)} == {kept}
    seq = int(rejected.rpartition("-")[2])
    assert ingest.take_receipts().by_unit[unit_a.unit_id][3] == {seq}


# ------------------------------------------------------------------ a real browser


@pytest.fixture
def room(tmp_path: Path, clip: bytes) -> Iterator[tuple[ControlRoom, str]]:
    """The whole control room (no receiver) serving one alert with a clip; blur on."""
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "web": {"port": 0, "tile_url": ""},
            "privacy": {"original_viewers": ["alice"]},
        },
        base_dir=tmp_path,
    )
    r = ControlRoom(cfg, receiver=False, retention=False)
    try:
        users.add_user(r.engine, "alice", BROWSER_PASSWORD)
        unit = Unit("unit-a", generate_key())
        db.upsert_unit(r.engine, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
        aid, _ = put(Ingest(r.engine), unit, clip, roi_box=BOX)
        r.start()
        yield r, aid
    finally:
        r.close()


PLAY = """async () => {
  const v = document.getElementById('clip');
  v.muted = true;
  await v.play();
  if (v.readyState < 2) await new Promise(ok => v.addEventListener('loadeddata', ok, {once: true}));
  await new Promise(ok => v.currentTime > 0 ? ok()
                                            : v.addEventListener('timeupdate', ok, {once: true}));
  return {ready: v.readyState, duration: v.duration, width: v.videoWidth,
          error: v.error && v.error.code, right: v.getBoundingClientRect().right,
          scroll: document.documentElement.scrollWidth};
}"""


@pytest.mark.slow
def test_the_clip_plays_in_a_real_browser_at_375_px(
    browser: Any, room: tuple[ControlRoom, str]
) -> None:
    from tests.controlroom.test_console_browser import new_page

    cr, aid = room
    page, errors = new_page(browser, cr, width=375, height=740)
    page.goto(f"/alerts/{aid}")
    got = page.evaluate(PLAY)
    assert got["error"] is None
    assert got["ready"] >= 2
    assert got["duration"] > 0
    assert got["width"] == CLIP_W
    assert got["right"] <= 375
    assert got["scroll"] <= 375
    assert errors == []


# ------------------------------------------------------------------ a real broker and receiver


@pytest.mark.slow
def test_receipt_over_mqtt_lists_the_clip(
    broker: Any, receiver: Receiver, publisher: Publisher, engine: Engine, unit_a: Unit, clip: bytes
) -> None:
    from tests.controlroom.test_commands import Listener

    acks = Listener(broker, f"phonewatch/{unit_a.unit_id}/ack")
    try:
        payload, jpeg = unit_a.alert(clip=clip, jpeg=frame_jpeg())
        aid = json.loads(payload)["alert_id"]
        seq = int(aid.rpartition("-")[2])
        t = f"phonewatch/{unit_a.unit_id}"
        publisher.publish(f"{t}/alert", payload)
        publisher.publish(f"{t}/evidence/{aid}", jpeg)
        publisher.publish(f"{t}/clip/{aid}", clip)
        got: dict[str, set[int]] = {"alerts": set(), "evidence": set(), "clips": set()}

        def receipted() -> bool:
            while not acks.got.empty():
                doc = json.loads(acks.got.get().payload)
                for k, seqs in got.items():
                    seqs.update(doc.get(k, []))
            return all(seq in seqs for seqs in got.values())

        assert wait_until(receipted, 10), got
        assert stored_clips(engine) == [(aid, clip)]
    finally:
        acks.close()


def test_orphan_clips_are_capped_per_unit(engine: Engine, unit_a: Unit, clip: bytes) -> None:
    ingest = Ingest(engine, orphan_evidence_max_count=2)
    ids = []
    for i in range(4):
        payload, _ = unit_a.alert(clip=clip)
        aid = json.loads(payload)["alert_id"]
        ids.append(aid)
        ingest.process([Message(f"phonewatch/{unit_a.unit_id}/clip/{aid}", clip, 100.0 + i)])
    assert sorted(a for a, _ in stored_clips(engine)) == sorted(ids[2:])
    assert ingest.stats()["orphans_dropped"] == 2


@pytest.mark.slow
def test_an_avi_clip_is_shown_redacted_as_webm(
    client: Any, ingest: Ingest, unit_a: Unit, tmp_path: Path
) -> None:
    """A unit that cannot encode VP8 sends Motion-JPEG AVI: with blur on, the page plays the
    redacted copy, which is WebM."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (CLIP_W, CLIP_H))
    for i in range(10):
        writer.write(_textured(i, CLIP_W, CLIP_H))
    writer.release()
    avi = path.read_bytes()
    assert avi[8:12] == b"AVI "
    aid, _ = put(ingest, unit_a, avi, clip_type="video/x-msvideo", roi_box=BOX)
    login(client, "bob")
    assert '<video id="clip"' in client.get(f"/alerts/{aid}").text
    r = client.get(f"/alerts/{aid}/clip")
    assert r.headers["content-type"] == "video/webm"
    assert len(decode_frames(r.content)) == 10


def test_phonewatch_verify_checks_an_avi_clip_and_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.app.cli import main
    from tests.controlroom.conftest import pub_pem

    unit = Unit("unit-a", generate_key())
    avi = b"RIFF" + (100).to_bytes(4, "little") + b"AVI LIST" + bytes(92)

    def verify(payload: bytes, jpeg: bytes, clip: bytes | None, name: str) -> tuple[int, str]:
        data = bundle.make_bundle(
            alert_payload=payload,
            jpeg=jpeg,
            public_key_pem=pub_pem(unit.key),
            review={"reviewed_by": "alice", "reviewed_at": 1.7e9},
            clip=clip,
        )
        path = tmp_path / name
        path.write_bytes(data)
        rc = main(["verify", str(path)])
        return rc, capsys.readouterr().out

    payload, jpeg = unit.alert(clip=avi, clip_type="video/x-msvideo")
    rc, out = verify(payload, jpeg, avi, "avi.zip")
    assert rc == 0, out
    assert f"PASS  clip: clip.avi is {len(avi)} bytes" in out
    with zipfile.ZipFile(tmp_path / "avi.zip") as z:
        assert z.read("clip.avi") == avi
    # The clip never reached the control room: the bundle says so and still verifies.
    rc, out = verify(payload, jpeg, None, "missing.zip")
    assert rc == 0, out
    assert "PASS  clip: the signed alert records a clip (" in out
    assert "does not enclose" in out
    with zipfile.ZipFile(tmp_path / "missing.zip") as z:
        assert "not enclosed" in z.read("VERIFY.txt").decode()
    # A clip slipped into the bundle of an alert that records none is not covered: FAIL.
    plain, jpeg2 = unit.alert()
    rc, out = verify(plain, jpeg2, b"\x1a\x45\xdf\xa3" + bytes(10), "extra.zip")
    assert rc != 0
    assert "FAIL  clip: clip.webm: the signed alert records no clip" in out


@pytest.mark.slow
def test_clips_are_served_in_ranges_and_an_original_view_is_audited_once(
    tmp_path: Path, engine: Engine, ingest: Ingest, unit_a: Unit, clip: bytes
) -> None:
    from fastapi.testclient import TestClient

    aid, _ = put(ingest, unit_a, clip)
    cfg = parse_config(
        {"web": {"tile_url": ""}, "privacy": {"blur": "off", "original_viewers": ["alice"]}},
        base_dir=tmp_path,
    )
    with TestClient(create_app(cfg, engine)) as c:
        login(c, "alice")
        whole = c.get(f"/alerts/{aid}/clip")
        assert whole.status_code == 200
        assert whole.headers["accept-ranges"] == "bytes"
        part = c.get(f"/alerts/{aid}/clip", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == clip[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(clip)}"
        tail = c.get(f"/alerts/{aid}/clip", headers={"Range": "bytes=-5"})
        assert tail.content == clip[-5:]
        outside = c.get(f"/alerts/{aid}/clip", headers={"Range": f"bytes={len(clip)}-"})
        assert outside.status_code == 416
        # A player fetching the original in pieces is one view in the audit log.
        for rng in ("bytes=0-", "bytes=100-199", f"bytes=200-{len(clip) - 1}"):
            r = c.get(f"/alerts/{aid}/original-clip", headers={"Range": rng})
            assert r.status_code == 206
        assert (
            b"".join(
                c.get(f"/alerts/{aid}/original-clip", headers={"Range": rng}).content
                for rng in ("bytes=1-99", f"bytes=100-{len(clip) - 1}")
            )
            == clip[1:]
        )
    with engine.connect() as conn:
        views = conn.execute(
            sa.select(sa.func.count()).where(db.audit.c.action == "view_original_clip")
        ).scalar()
    assert views == 1
