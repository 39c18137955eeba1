"""The unit's model receiver on its own (no broker): chunks checked and kept on disk, a restart
resumes, refusals say why, a new offer replaces an unfinished one."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlroom.rollout import Offer, make_offer
from edge.adapters.model_transfer import ModelReceiver
from edge.common import model_package as mp
from edge.common.signing import Ed25519PrivateKey, generate_key
from edge.core import messages as m
from tests.waiting import wait_until

DATA = Path(__file__).resolve().parents[1] / "data"
MODEL = Path(__file__).resolve().parents[2] / "models" / "phone_in_hand"


class Unit:
    """What the receiver is wired to: the published status documents and the handed-over
    packages."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []
        self.packages: list[tuple[mp.InstalledPackage, str]] = []
        self.online = True
        self._lock = threading.Lock()

    def publish(self, doc: dict[str, Any]) -> bool:
        m.validate(doc, m.MODEL_STATUS_SCHEMA)
        if not self.online:
            return False
        with self._lock:
            self.docs.append(doc)
        return True

    def events(self) -> list[str]:
        with self._lock:
            return [d["event"] for d in self.docs]

    def on_package(self, pkg: mp.InstalledPackage, mode: str) -> None:
        self.packages.append((pkg, mode))


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def blob(key: Ed25519PrivateKey) -> bytes:
    """The shipped model's package (about 330 KB: 6 chunks of 64 KiB)."""
    return mp.build_package(
        MODEL / "phone_in_hand.tflite", MODEL / "phone_in_hand.json", MODEL / "MODEL_CARD.md", key
    )


@pytest.fixture
def unit() -> Unit:
    return Unit()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def receiver(models_dir: Path, key: Ed25519PrivateKey, unit: Unit, **kw: Any) -> ModelReceiver:
    kw.setdefault("disk_reserve_bytes", 0)
    return ModelReceiver(
        models_dir,
        [key.public_key()],
        unit_id="unit-a",
        publish=unit.publish,
        on_package=unit.on_package,
        **kw,
    ).start()


@pytest.fixture
def rx(models_dir: Path, key: Ed25519PrivateKey, unit: Unit) -> Iterator[ModelReceiver]:
    r = receiver(models_dir, key, unit)
    yield r
    r.close()


def send(rx: ModelReceiver, offer: Offer, indices: list[int] | None = None) -> None:
    for i in range(len(offer.chunks)) if indices is None else indices:
        rx.chunk(offer.sha256, i, offer.chunks[i])


def test_an_offer_arrives_out_of_order_with_bad_chunks_and_is_installed(
    rx: ModelReceiver, unit: Unit, blob: bytes, models_dir: Path
) -> None:
    offer = make_offer(blob, mode="shadow")
    n = len(offer.chunks)
    assert n == -(-len(blob) // (64 * 1024)) >= 5
    rx.offer(offer.body)
    order = list(range(n))
    random.Random(7).shuffle(order)
    rx.chunk(offer.sha256, order[0], b"x" * len(offer.chunks[order[0]]))  # wrong bytes
    rx.chunk(offer.sha256, 99, b"y")  # no such chunk
    rx.chunk("0" * 64, 0, offer.chunks[0])  # another package
    send(rx, offer, order[:1] * 2 + order[1:])  # one twice
    assert wait_until(lambda: unit.packages, 10)
    pkg, mode = unit.packages[0]
    assert mode == "shadow"
    assert (pkg.name, pkg.version, pkg.sha256) == ("phone-in-hand", "1.0.0", offer.sha256)
    assert pkg.tflite.read_bytes() == (MODEL / "phone_in_hand.tflite").read_bytes()
    assert unit.events() == ["receiving", "received", "installed"]
    assert unit.docs[0]["have"] == 0
    assert "missing" not in unit.docs[0]
    st = rx.stats()
    assert (st["chunks_kept"], st["chunks_bad"], st["chunks_duplicate"]) == (n, 1, 1)
    assert st["chunks_unexpected"] == 2
    assert list((models_dir / "incoming").iterdir()) == []  # nothing left half-done

    # offered again (now live): already installed, nothing to transfer, handed over again
    rx.offer(make_offer(blob, mode="live").body)
    assert wait_until(lambda: len(unit.packages) == 2, 10)
    assert unit.packages[1] == (pkg, "live")
    assert unit.docs[-1]["event"] == "installed"
    assert "already installed" in unit.docs[-1]["detail"]


def test_a_restarted_unit_keeps_its_chunks_and_asks_only_for_the_missing(
    models_dir: Path, key: Ed25519PrivateKey, unit: Unit, blob: bytes
) -> None:
    offer = make_offer(blob, mode="live", chunk_size=16 * 1024)
    n = len(offer.chunks)
    assert n > 10
    evens = list(range(0, n, 2))
    first = receiver(models_dir, key, unit)
    first.offer(offer.body)
    send(first, offer, evens)  # the even ones, then the power goes
    assert wait_until(lambda: first.stats()["chunks_kept"] == len(evens), 10)
    first.close()

    unit.online = False
    second = receiver(models_dir, key, unit, reconnect_grace_s=0.05, stall_s=60)
    try:
        unit.online = True
        second.connected()
        assert wait_until(
            lambda: unit.events()[-1:] == ["receiving"] and "missing" in unit.docs[-1]
        )
        doc = unit.docs[-1]
        assert doc["have"] == len(evens)
        assert doc["missing"] == list(range(1, n, 2))
        send(second, offer, doc["missing"])
        assert wait_until(lambda: unit.packages, 10)
        assert unit.packages[0][1] == "live"
        assert second.stats()["chunks_kept"] == n - len(evens)  # the even ones not again
    finally:
        second.close()


def test_a_stalled_transfer_asks_again_with_a_growing_wait(
    models_dir: Path, key: Ed25519PrivateKey, unit: Unit, blob: bytes
) -> None:
    offer = make_offer(blob, mode="shadow")
    rx = receiver(models_dir, key, unit, stall_s=0.1, stall_max_s=0.4)
    try:
        rx.offer(offer.body)
        n = len(offer.chunks)
        send(rx, offer, [i for i in range(n) if i != 3])

        def asks() -> list[dict[str, Any]]:
            return [d for d in list(unit.docs) if d.get("missing") == [3]]

        assert wait_until(lambda: len(asks()) >= 3, 10)
        assert all(d["have"] == n - 1 for d in asks())
        assert all(3 in d.get("missing", [3]) for d in unit.docs)
        times = [m.parse_utc_iso(d["time"]) for d in asks()[:3]]
        assert times[2] - times[1] > times[1] - times[0]  # the wait doubles
        send(rx, offer, [3])
        assert wait_until(lambda: unit.packages, 10)
    finally:
        rx.close()


def test_offers_over_the_limits_or_inconsistent_are_refused(
    models_dir: Path, key: Ed25519PrivateKey, unit: Unit, blob: bytes
) -> None:
    rx = receiver(models_dir, key, unit, max_bytes=200_000)
    try:
        offer = make_offer(blob, mode="shadow")
        rx.offer(offer.body)
        bad = dict(offer.body, size=150_000)  # 3 chunks of 64 KiB, the offer lists 6
        rx.offer(bad)
        assert wait_until(lambda: len(unit.docs) == 2, 10)
        assert [d["event"] for d in unit.docs] == ["refused", "refused"]
        assert "over this unit's limit of 200000" in unit.docs[0]["detail"]
        assert "offer is inconsistent" in unit.docs[1]["detail"]
        assert rx.stats()["offers_refused"] == 2
        assert list((models_dir / "incoming").iterdir()) == []
    finally:
        rx.close()
    rx = receiver(models_dir, key, unit, disk_reserve_bytes=1 << 60)
    try:
        rx.offer(make_offer(blob, mode="shadow").body)
        assert wait_until(lambda: len(unit.docs) == 3, 10)
        assert unit.docs[2]["detail"].startswith("not enough disk")
    finally:
        rx.close()


def test_a_new_offer_replaces_an_unfinished_one(
    rx: ModelReceiver, unit: Unit, blob: bytes, key: Ed25519PrivateKey, models_dir: Path
) -> None:
    old = make_offer(blob, mode="shadow")
    rx.offer(old.body)
    send(rx, old, [0, 1])
    assert wait_until(lambda: rx.stats()["chunks_kept"] == 2, 10)
    small = mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, key
    )
    new = make_offer(small, mode="live", chunk_size=1024)
    rx.offer(new.body)
    send(rx, old, [2])  # a late chunk of the old package: not kept
    send(rx, new)
    assert wait_until(lambda: unit.packages, 10)
    assert unit.packages[0][0].version == "test-1"
    assert [p.name for p in (models_dir / "incoming").iterdir()] == []
    assert rx.stats()["chunks_unexpected"] == 1


def test_a_package_that_fails_verification_is_refused_with_the_reason(
    rx: ModelReceiver, unit: Unit, models_dir: Path
) -> None:
    stranger = mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, generate_key()
    )
    offer = make_offer(stranger, mode="live", chunk_size=1024)
    rx.offer(offer.body)
    send(rx, offer)
    assert wait_until(lambda: "refused" in unit.events(), 10)
    assert unit.events() == ["receiving", "received", "refused"]
    assert "not pinned on this unit" in unit.docs[-1]["detail"]
    assert unit.packages == []
    assert [p.name for p in models_dir.iterdir()] == ["incoming"]
    assert list((models_dir / "incoming").iterdir()) == []
