"""One inference stage for every camera of a unit: fair, batched, never held up by a camera.

Each camera keeps its own pipeline for what is its own (capture with reconnect and backoff,
its latest-frame slot, its decider, evidence, clip buffer and counters). The hub takes the
newest frame of every camera that has one, crops and preprocesses their ROIs, scores all the
crops in one ``score_batch`` call (one ``invoke()`` when the classifier batches) and hands each
camera its scores to decide on.

* **Fair**: a round takes at most one frame from each camera, whatever its frame rate, so a
  fast camera cannot starve a slow one; the camera served first rotates.
* **Never held up**: a camera that is slow, stalled or reconnecting simply has no frame in
  its slot this round; the others' frames go on. A camera whose frame arrives while its last
  one waits drops the older one, counted in that camera's ``dropped_frames``.
* **One model**: every camera is scored by the same classifier (one Edge TPU serves all);
  a model swap lands between two rounds for all cameras at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.app.pipeline import same_input
from edge.app.stats import Series, fmt_ms, table
from edge.core.decider import DeciderParams
from edge.core.frame import Frame
from edge.core.ports import Classifier

if TYPE_CHECKING:
    from edge.app.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    pipeline: Pipeline
    frame: Frame
    start: int
    count: int
    prep_ms: float


@dataclass(slots=True)
class _Round:
    """One round, prepared: each camera's frame and where its tensors sit in the batch, the
    classifier they were prepared for, and the cameras that ended (their evidence stage may
    finish once this round is decided)."""

    entries: list[_Entry]
    tensors: list[np.ndarray]
    clf: Classifier | None
    ended: list[Pipeline]
    done: bool = False


class InferenceHub:
    """The shared inference thread. Pipelines attach themselves when built with ``hub=``."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.bell = threading.Event()
        """Set by any camera's slot when a frame arrives or the camera ends."""
        self.pipelines: list[Pipeline] = []
        self._lock = threading.RLock()
        """Held while a round is scored and decided: a model swap waits for it."""
        self._thread: threading.Thread | None = None
        self._prep: threading.Thread | None = None
        self._prepared: queue.Queue[_Round] = queue.Queue(maxsize=1)
        """One round waits while the previous one is scored; more would only age frames."""
        self._first = 0
        self.rounds = 0
        self.errors = 0
        self.batch_crops = Series()
        self.invoke_ms = Series()

    def attach(self, pipeline: Pipeline) -> None:
        if self._thread is not None:
            raise RuntimeError("the inference hub is running: attach cameras before start")
        if any(p.camera_id == pipeline.camera_id for p in self.pipelines):
            raise ValueError(f"camera {pipeline.camera_id!r} is attached twice")
        pipeline.classifier = self.classifier
        self.pipelines.append(pipeline)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._prep = threading.Thread(target=self._prep_main, name="pw-prep", daemon=True)
            self._thread = threading.Thread(
                target=self._infer_main, name="pw-inference", daemon=True
            )
            self._thread.start()
            self._prep.start()

    def join(self, timeout_s: float | None = None) -> bool:
        if self._thread is None:
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in (self._prep, self._thread):
            if t is not None:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive

    @property
    def is_alive(self) -> bool:
        return any(t is not None and t.is_alive() for t in (self._prep, self._thread))

    def swap_classifier(
        self, new: Classifier, *, params: DeciderParams | None = None, timeout_s: float = 10.0
    ) -> Classifier:
        """Put ``new`` in place for every camera between two rounds; returns the old one
        (still open). ``TimeoutError`` if the round in hand does not finish in time."""
        if not self._lock.acquire(timeout=timeout_s):
            raise TimeoutError(
                f"model swap: the frames being scored did not finish within {timeout_s:g} s"
            )
        try:
            old, self.classifier = self.classifier, new
            for p in self.pipelines:
                p._put_classifier(new, params)
        finally:
            self._lock.release()
        return old

    # -- the stage ----------------------------------------------------------------------------
    # Two threads, as many as a Pi's (or this machine's) cores can run at once: prep forms a
    # round and crops it while the interpreter scores the previous one (docs/performance.md:
    # prep moved into the inference thread would serialise about a millisecond a frame).
    def _prep_main(self) -> None:
        live = list(self.pipelines)
        try:
            while live:
                self.bell.clear()
                batch = self._take_round(live)
                ended = [p for p in live if p.slot.is_drained] if not batch else []
                for p in ended:  # that camera's file ended or the unit stops
                    live.remove(p)
                if batch or ended:
                    self._prepared.put(self._prepare_round(batch, ended))
                elif live:
                    self.bell.wait(0.2)
        except Exception:
            log.exception("inference hub: preparing frames failed")
            for p in live:
                p._set_status("degraded")
        finally:
            self._prepared.put(_Round([], [], None, list(live), done=True))

    def _infer_main(self) -> None:
        while True:
            r = self._prepared.get()
            try:
                if r.entries:
                    self._score_round(r)
            except Exception:
                log.exception("inference hub: scoring a round failed")
            for p in r.ended:
                p.end_inference()
            if r.done:
                return

    def _take_round(self, live: Sequence[Pipeline]) -> list[tuple[Pipeline, Frame]]:
        """The newest frame of each camera that has one, the first camera served rotating."""
        n = len(live)
        if n == 0:
            return []
        first = self._first % n
        self._first = first + 1
        out: list[tuple[Pipeline, Frame]] = []
        for i in range(n):
            p = live[(first + i) % n]
            frame = p.slot.take()
            if frame is not None:
                out.append((p, frame))
        return out

    def _prepare_round(
        self, batch: Sequence[tuple[Pipeline, Frame]], ended: list[Pipeline]
    ) -> _Round:
        clf = self.classifier
        tensors: list[np.ndarray] = []
        entries: list[_Entry] = []
        for p, frame in batch:
            t0 = time.perf_counter()
            try:
                ts = p.prepare(frame, clf)
            except Exception:  # that camera's frame is lost, counted; the others go on
                p.stats.stage_errors += 1
                log.exception("preprocessing frame %d of %s failed", frame.index, p.name)
                continue
            prep_ms = (time.perf_counter() - t0) * 1e3
            entries.append(_Entry(p, frame, len(tensors), len(ts), prep_ms))
            tensors.extend(ts)
        return _Round(entries, tensors, clf, ended)

    def _score_round(self, r: _Round) -> None:
        with self._lock:
            clf = self.classifier
            tensors = r.tensors
            if r.clf is not clf and (r.clf is None or not same_input(r.clf, clf)):  # a swap
                tensors = []
                for e in r.entries:
                    tensors.extend(e.pipeline.prepare(e.frame, clf))
            t1 = time.perf_counter()
            try:
                scores = clf.score_batch(tensors)
            except Exception:
                self.errors += 1
                for e in r.entries:
                    e.pipeline.stats.stage_errors += 1
                log.exception("inference on a round of %d camera(s) failed", len(r.entries))
                return
            invoke_ms = (time.perf_counter() - t1) * 1e3
            self.rounds += 1
            self.batch_crops.add(len(tensors))
            self.invoke_ms.add(invoke_ms)
            for e in r.entries:
                share = invoke_ms * e.count / len(tensors)
                try:
                    e.pipeline._decide(
                        e.frame, scores[e.start : e.start + e.count], e.prep_ms, share
                    )
                except Exception:
                    e.pipeline.stats.stage_errors += 1
                    log.exception("deciding frame %d of %s failed", e.frame.index, e.pipeline.name)

    # -- reporting ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "errors": self.errors,
            "crops_per_round_p50": self.batch_crops.percentile(50),
            "round_invoke_ms_p50": self.invoke_ms.percentile(50),
            "round_invoke_ms_p99": self.invoke_ms.percentile(99),
        }


class CameraGroup:
    """Several cameras' pipelines and their hub, run, stopped and reported as one."""

    def __init__(self, hub: InferenceHub) -> None:
        self.hub = hub
        self.stop_event = threading.Event()

    @property
    def pipelines(self) -> list[Pipeline]:
        return self.hub.pipelines

    def open_sources(self) -> None:
        for p in self.pipelines:
            p.open_source()

    def start(self) -> None:
        for p in self.pipelines:
            p.start()
        self.hub.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        for p in self.pipelines:
            p.stop_event.set()
            p.slot.close()
        deadline = time.monotonic() + timeout_s
        for p in self.pipelines:
            p.stop(max(0.0, deadline - time.monotonic()))
        self.hub.join(max(0.0, deadline - time.monotonic()))

    def wait(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for p in self.pipelines:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not p.wait(left):
                return False
        return self.hub.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def is_finished(self) -> bool:
        return all(p.is_finished for p in self.pipelines) and not self.hub.is_alive

    @property
    def status(self) -> str:
        """``running`` while every camera runs; ``degraded`` when any is not (each camera's
        own status is in ``snapshot()['cameras']``)."""
        states = [p.status for p in self.pipelines]
        if all(s == states[0] for s in states):
            return states[0]
        return "degraded" if "degraded" in states else "running"

    def snapshot(self) -> dict[str, Any]:
        """The unit's totals (the single-camera keys, summed), then each camera's own."""
        per = [p.snapshot() for p in self.pipelines]
        out: dict[str, Any] = {"status": self.status}
        for key in (
            "frames_captured",
            "frames_processed",
            "dropped_frames",
            "hits",
            "evidence_errors",
            "sink_errors",
            "camera_errors",
            "stage_errors",
        ):
            out[key] = sum(int(s[key]) for s in per)
        for key in ("fps_in", "fps"):
            out[key] = round(sum(float(s[key]) for s in per), 2)
        out["invoke_ms_p50"] = self.hub.invoke_ms.percentile(50)
        out["invoke_ms_p99"] = self.hub.invoke_ms.percentile(99)
        out["evidence_pruned"] = per[0]["evidence_pruned"]
        out["elapsed_s"] = max(float(s["elapsed_s"]) for s in per)
        out.update(self.hub.snapshot())
        out["cameras"] = {str(s["camera"]): s for s in per}
        return out

    def summary_table(self) -> str:
        rows = []
        for p in self.pipelines:
            s = p.snapshot()
            rows.append(
                (
                    f"{p.camera_id} ({p.source.name})",
                    f"{s['status']}, {s['frames_processed']}/{s['frames_captured']} frames, "
                    f"{s['dropped_frames']} dropped, {s['hits']} hits, "
                    f"{s['camera_errors']} camera errors",
                )
            )
        h = self.hub
        rows.append(
            (
                "shared inference",
                f"{h.rounds} rounds, {h.batch_crops.percentile(50) or 0:.0f} crops/round p50, "
                f"invoke ms p50 {fmt_ms(h.invoke_ms.percentile(50))}",
            )
        )
        return table(rows, title=f"phonewatch {self.pipelines[0].unit_id}: {len(rows) - 1} cameras")
