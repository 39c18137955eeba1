"""The unit's side of a model rollout: receive a signed package in hashed chunks, keep them on
disk so a transfer survives a restart, and install the package once it verifies.

The control room sends a ``model_offer`` command (the package's SHA-256, size, chunk size and
the SHA-256 of every chunk), then the chunks as raw bytes on
``<root>/<unit>/model/chunk/<package_sha256>/<index>``. :class:`ModelReceiver` keeps each chunk
that matches its hash under ``<models_dir>/incoming/<package_sha256>/`` (a wrong one is
dropped and counted, never fatal), and when it has them all it checks the whole package's
SHA-256, verifies it against the pinned keys (:func:`edge.common.model_package.verify_package`),
installs it (:func:`~edge.common.model_package.install`) and hands it to ``on_package`` with the
offer's mode. Every step is reported through ``publish`` as a ``model_status.v1`` document:
``receiving``, ``received``, ``refused`` (with the reason) and ``installed``.

Resuming: the unit asks for what it lacks. A ``receiving`` report with ``missing`` (the chunk
indices it still needs) goes out a moment after it (re)connects with a transfer unfinished, and
whenever no chunk has arrived for ``stall_s`` (then doubling up to ``stall_max_s``). The
control room sends those chunks again.

The MQTT callback only queues; one worker thread (``model-receiver``) does the hashing, disk
writes, verification and installing, so the network thread never waits on the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.common import model_package as mp
from edge.core import messages as m
from edge.core.errors import MessageError

log = logging.getLogger(__name__)

PublishFn = Callable[[dict[str, Any]], bool]
PackageFn = Callable[[mp.InstalledPackage, str], object]
"""``Unit.on_model_package``: its return value (if any) is ignored."""
OFFER_FILE = "offer.json"
MAX_CHUNKS = 4096
OFFER_MAX_BYTES = 400 * 1024
"""The largest ``model_offer`` command read (4096 chunk hashes are about 270 KiB)."""
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FINAL_EVENTS = ("refused", "installed")
_UNSENT_MAX = 16


@dataclass
class _Transfer:
    """The one package being received."""

    sha: str
    offer: dict[str, Any]
    dir: Path
    have: set[int] = field(default_factory=set)
    next_report: float | None = None  # monotonic time of the next "missing" report
    backoff_s: float = 0.0

    @property
    def count(self) -> int:
        return int(self.offer["chunk_count"])

    @property
    def version(self) -> str:
        return str(self.offer["version"])

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.have]

    def chunk_len(self, index: int) -> int:
        size, chunk = int(self.offer["size"]), int(self.offer["chunk_size"])
        return chunk if index < self.count - 1 else size - chunk * (self.count - 1)


def chunk_path(folder: Path, index: int) -> Path:
    return folder / f"{index:05d}.chunk"


class ModelReceiver:
    """Receives, keeps, verifies and installs offered model packages (see the module doc)."""

    def __init__(
        self,
        models_dir: Path,
        trusted: Sequence[Ed25519PublicKey],
        *,
        unit_id: str,
        publish: PublishFn,
        on_package: PackageFn,
        stall_s: float = 30.0,
        stall_max_s: float = 600.0,
        reconnect_grace_s: float = 3.0,
        max_bytes: int = mp.MAX_BYTES,
        max_chunks: int = MAX_CHUNKS,
        disk_reserve_bytes: int = 64 * 1024 * 1024,
        queue_max: int = 64,
    ) -> None:
        if not trusted:
            raise mp.ModelPackageError("a model receiver needs at least one pinned key")
        self.models_dir = models_dir
        self.incoming = models_dir / "incoming"
        self.trusted = tuple(trusted)
        self.unit_id = unit_id
        self._publish = publish
        self._on_package = on_package
        self.stall_s = stall_s
        self.stall_max_s = stall_max_s
        self.reconnect_grace_s = reconnect_grace_s
        self.max_bytes = max_bytes
        self.max_chunks = max_chunks
        self.disk_reserve_bytes = disk_reserve_bytes
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_max)
        self._current: _Transfer | None = None
        self._unsent: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._main, name="model-receiver", daemon=True)
        self._started = self._closed = False
        self.counts = {
            "offers": 0,
            "offers_refused": 0,
            "chunks_kept": 0,
            "chunks_bad": 0,
            "chunks_duplicate": 0,
            "chunks_unexpected": 0,
            "chunks_dropped": 0,
            "packages_refused": 0,
            "packages_installed": 0,
            "missing_reports": 0,
        }

    # ------------------------------------------------------------ called from other threads

    def start(self) -> ModelReceiver:
        if not self._started:
            self._started = True
            self.incoming.mkdir(parents=True, exist_ok=True)
            self._resume()
            self._thread.start()
        return self

    def offer(self, body: dict[str, Any]) -> None:
        """A ``model_offer`` command (already checked against the schema)."""
        self._put("offer", body)

    def chunk(self, package_sha256: str, index: int, payload: bytes) -> None:
        """One chunk as it arrived (from the MQTT network thread: only queued here)."""
        self._put("chunk", (package_sha256, index, payload))

    def connected(self) -> None:
        """The uplink (re)connected: re-send unsent results and ask for missing chunks."""
        self._put("connected", None)

    def _put(self, kind: str, arg: Any) -> None:
        if self._closed:
            return
        try:
            self._queue.put((kind, arg), timeout=1.0)
        except queue.Full:  # the worker is behind; a lost chunk is asked for again later
            self.counts["chunks_dropped" if kind == "chunk" else "offers_refused"] += 1
            log.warning("model receiver busy: %s dropped", kind)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        cur = self._current
        out["receiving"] = None if cur is None else f"{cur.sha[:12]} {len(cur.have)}/{cur.count}"
        return out

    def close(self) -> None:
        """Stop the worker (chunks kept on disk stay for the next start). Idempotent."""
        if self._closed:
            return
        if self._started:
            with contextlib.suppress(queue.Full):
                self._queue.put(("stop", None), timeout=5.0)
            self._thread.join(timeout=10.0)
        self._closed = True

    # ------------------------------------------------------------------------ worker

    def _main(self) -> None:
        while True:
            try:
                kind, arg = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                kind, arg = "tick", None
            if kind == "stop":
                return
            try:
                if kind == "offer":
                    self._on_offer(arg)
                elif kind == "chunk":
                    self._on_chunk(*arg)
                elif kind == "connected":
                    self._on_connected()
                self._report_missing_if_due()
            except Exception:  # one bad message must not stop the receiver
                log.exception("model receiver: %s failed", kind)

    def _wait_s(self) -> float:
        cur = self._current
        if cur is None or cur.next_report is None:
            return 1.0
        return max(0.01, min(1.0, cur.next_report - time.monotonic()))

    def _report(
        self,
        event: str,
        sha: str,
        version: str,
        *,
        detail: str | None = None,
        have: int | None = None,
        missing: list[int] | None = None,
    ) -> None:
        doc = m.build_model_status(
            self.unit_id,
            t_wall_s=time.time(),
            package_sha256=sha,
            version=version,
            event=event,
            detail=detail,
            have=have,
            missing=missing,
        )
        if not self._publish(doc) and event in _FINAL_EVENTS:
            self._unsent = [*self._unsent, doc][-_UNSENT_MAX:]

    def _on_connected(self) -> None:
        unsent, self._unsent = self._unsent, []
        for doc in unsent:
            if not self._publish(doc):
                self._unsent.append(doc)
        cur = self._current
        if cur is not None and len(cur.have) < cur.count:
            cur.backoff_s = self.stall_s
            cur.next_report = time.monotonic() + self.reconnect_grace_s

    def _report_missing_if_due(self) -> None:
        cur = self._current
        now = time.monotonic()
        if cur is None or cur.next_report is None or now < cur.next_report:
            return
        if len(cur.have) >= cur.count:
            cur.next_report = None
            return
        missing = cur.missing()
        self.counts["missing_reports"] += 1
        log.info(
            "model package %s: %d of %d chunk(s) still missing; asking for them",
            cur.sha[:12],
            len(missing),
            cur.count,
        )
        self._report("receiving", cur.sha, cur.version, have=len(cur.have), missing=missing)
        cur.backoff_s = min(max(cur.backoff_s, self.stall_s) * 2, self.stall_max_s)
        cur.next_report = now + cur.backoff_s

    # ------------------------------------------------------------------------ offers

    def offer_problem(self, body: dict[str, Any]) -> str | None:
        """Why an offer is refused before any chunk is taken, or None."""
        size, chunk, count = body["size"], body["chunk_size"], body["chunk_count"]
        if size > self.max_bytes:
            return f"package of {size} bytes is over this unit's limit of {self.max_bytes}"
        if count > self.max_chunks:
            return f"{count} chunks is over this unit's limit of {self.max_chunks}"
        if count != math.ceil(size / chunk) or len(body["chunks"]) != count:
            return (
                f"offer is inconsistent: {size} bytes in chunks of {chunk} is "
                f"{math.ceil(size / chunk)} chunks, the offer says {count} and lists "
                f"{len(body['chunks'])} hashes"
            )
        try:
            free = shutil.disk_usage(self.models_dir).free
        except OSError as e:
            return f"cannot check free disk space in {self.models_dir}: {e.strerror}"
        if free < 2 * size + self.disk_reserve_bytes:
            return (
                f"not enough disk: {free // (1024 * 1024)} MiB free, the package needs "
                f"{2 * size // (1024 * 1024) + 1} MiB plus the "
                f"{self.disk_reserve_bytes // (1024 * 1024)} MiB reserve"
            )
        return None

    def _on_offer(self, body: dict[str, Any]) -> None:
        self.counts["offers"] += 1
        sha, version, mode = body["package_sha256"], body["version"], body["mode"]
        cur = self._current
        if cur is not None and (cur.sha, cur.offer["chunk_size"]) != (sha, body["chunk_size"]):
            # a new offer replaces an unfinished one (the same package cut differently too)
            log.info("model package %s replaces the unfinished %s", sha[:12], cur.sha[:12])
            self._drop_current()
            cur = None
        problem = self.offer_problem(body)
        if problem is not None:
            self.counts["offers_refused"] += 1
            log.warning("model package %s refused: %s", sha[:12], problem)
            self._report("refused", sha, version, detail=problem)
            return
        done = mp.find_installed(self.models_dir, version, sha, self.trusted)
        if done is not None:
            self._drop_current()
            log.info("model package %s %s is already installed", done.name, done.version)
            self._report("installed", sha, version, detail=f"already installed in {done.dir}")
            self._hand_over(done, mode)
            return
        if cur is not None and cur.sha == sha:
            cur.offer = body
        else:
            folder = self.incoming / sha
            folder.mkdir(parents=True, exist_ok=True)
            cur = self._current = _Transfer(sha=sha, offer=body, dir=folder)
        _write_atomic(cur.dir / OFFER_FILE, json.dumps(body).encode("utf-8"))
        cur.backoff_s = self.stall_s
        cur.next_report = time.monotonic() + self.stall_s
        log.info(
            "model package %s (%s, %d bytes, %d chunks, %s): receiving, %d chunk(s) kept",
            sha[:12],
            version,
            body["size"],
            cur.count,
            mode,
            len(cur.have),
        )
        self._report("receiving", sha, version, have=len(cur.have))
        if len(cur.have) == cur.count:
            self._finish(cur)

    def _drop_current(self) -> None:
        cur, self._current = self._current, None
        if cur is not None:
            shutil.rmtree(cur.dir, ignore_errors=True)

    # ------------------------------------------------------------------------ chunks

    def _on_chunk(self, sha: str, index: int, payload: bytes) -> None:
        cur = self._current
        if cur is None or cur.sha != sha or not 0 <= index < cur.count:
            self.counts["chunks_unexpected"] += 1
            log.debug("model chunk %s/%d not expected; dropped", sha[:12], index)
            return
        if index in cur.have:
            self.counts["chunks_duplicate"] += 1
            return
        want = cur.offer["chunks"][index]
        if len(payload) != cur.chunk_len(index) or hashlib.sha256(payload).hexdigest() != want:
            self.counts["chunks_bad"] += 1
            log.warning(
                "model chunk %s/%d: %d bytes that do not match the offered hash; dropped (it "
                "will be asked for again)",
                sha[:12],
                index,
                len(payload),
            )
            return
        _write_atomic(chunk_path(cur.dir, index), payload)
        cur.have.add(index)
        self.counts["chunks_kept"] += 1
        cur.backoff_s = self.stall_s
        cur.next_report = time.monotonic() + self.stall_s
        if len(cur.have) == cur.count:
            self._finish(cur)

    def _finish(self, cur: _Transfer) -> None:
        """Every chunk is here: check the whole, verify, install, hand over."""
        blob = b"".join(chunk_path(cur.dir, i).read_bytes() for i in range(cur.count))
        mode = str(cur.offer["mode"])
        self._drop_current()
        if hashlib.sha256(blob).hexdigest() != cur.sha:
            self._refuse(cur, "the assembled package's SHA-256 differs from the offer's")
            return
        self._report("received", cur.sha, cur.version, have=cur.count)
        try:
            pkg = mp.verify_package(blob, self.trusted)
            if pkg.version != cur.version:
                raise mp.ModelPackageError(
                    f"the offer says version {cur.version}, the signed package is {pkg.version}"
                )
            installed = mp.install(pkg, self.models_dir)
        except mp.ModelPackageError as e:
            self._refuse(cur, str(e))
            return
        self.counts["packages_installed"] += 1
        log.info("model %s %s installed in %s (%s)", pkg.name, pkg.version, installed.dir, mode)
        self._report("installed", cur.sha, pkg.version, detail=f"{pkg.name} {pkg.version}")
        self._hand_over(installed, mode)

    def _refuse(self, cur: _Transfer, why: str) -> None:
        self.counts["packages_refused"] += 1
        log.warning("model package %s refused: %s", cur.sha[:12], why)
        self._report("refused", cur.sha, cur.version, detail=why)

    def _hand_over(self, pkg: mp.InstalledPackage, mode: str) -> None:
        try:
            self._on_package(pkg, mode)
        except Exception:
            log.exception("model package %s %s: the unit could not take it", pkg.name, pkg.version)

    # ------------------------------------------------------------------------ restart

    def _resume(self) -> None:
        """Pick up the unfinished transfer a previous run left (the newest offer); delete the
        rest and every chunk that no longer matches its hash."""
        found: list[tuple[float, Path, dict[str, Any]]] = []
        for folder in sorted(self.incoming.iterdir()):
            offer = _read_offer(folder, self.unit_id)
            if offer is None:
                _remove(folder)
                continue
            found.append(((folder / OFFER_FILE).stat().st_mtime, folder, offer))
        found.sort(key=lambda t: t[0])
        for _, folder, _ in found[:-1]:
            shutil.rmtree(folder, ignore_errors=True)
        if not found:
            return
        _, folder, offer = found[-1]
        cur = _Transfer(sha=folder.name, offer=offer, dir=folder)
        for i in range(cur.count):
            p = chunk_path(folder, i)
            if not p.is_file():
                continue
            data = p.read_bytes()
            if (
                len(data) == cur.chunk_len(i)
                and hashlib.sha256(data).hexdigest() == offer["chunks"][i]
            ):
                cur.have.add(i)
            else:
                p.unlink()
        for stray in folder.glob("*.tmp"):
            stray.unlink()
        cur.backoff_s = self.stall_s
        cur.next_report = time.monotonic() + self.reconnect_grace_s
        self._current = cur
        log.info(
            "model package %s: resuming with %d of %d chunk(s) on disk",
            cur.sha[:12],
            len(cur.have),
            cur.count,
        )


def _read_offer(folder: Path, unit_id: str) -> dict[str, Any] | None:
    """The offer a previous run kept in ``folder``, if it is still a sound ``model_offer``."""
    if not folder.is_dir() or not _SHA_RE.match(folder.name):
        return None
    topics = m.Topics("phonewatch", unit_id)
    try:
        raw = (folder / OFFER_FILE).read_bytes()
        _, offer = m.parse_command(
            topics.cmd("model_offer"), raw, topics=topics, max_bytes=OFFER_MAX_BYTES
        )
    except (OSError, MessageError):
        return None
    if offer["package_sha256"] != folder.name or offer["chunk_count"] != len(offer["chunks"]):
        return None
    return offer


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
