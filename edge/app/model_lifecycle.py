"""The unit's model lifecycle once a verified package is on disk: shadow, promote, probation,
rollback, and which model is live across restarts.

* **Shadow.** A candidate scores the same frames as the live model on its own thread, fed by a
  one-item latest-frame slot, so it can never slow or block the live pipeline (frames it had
  no time for are counted as ``skipped``). It crops and preprocesses for its own input, runs
  the decider the candidate would run live, and raises no alert: it counts would-be alerts,
  per-frame per-ROI agreement with the live model's decisions, and keeps the last few
  would-be alerts for the heartbeat.
* **Promote.** The new classifier is opened first (a failure leaves the live model), then
  :meth:`Pipeline.swap_classifier` puts it in between two frames, with the decider's
  threshold following the new model. **Probation** follows: if frames start failing or the
  processed-frame rate falls below half the rate before the swap, the previous model, still
  open, is swapped back automatically. It is closed only when probation ends.
* **State.** ``<models_dir>/state.json`` (written atomically) says which model is live, the
  previous one, and whether the live one is in probation. A unit that restarts in probation
  starts on the previous model: the new one did not survive.

Every step is reported through ``report(event, package_sha256, version, detail)`` and logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from edge.app.pipeline import LatestSlot, Pipeline
from edge.core.decider import Decider, DeciderParams
from edge.core.frame import Frame
from edge.core.messages import utc_iso
from edge.core.ports import Classifier
from edge.core.roi import Roi

log = logging.getLogger(__name__)

ReportFn = Callable[[str, str, str, str | None], None]
"""``report(event, package_sha256, version, detail)``; events: ``shadow_started``,
``shadow_stopped``, ``promoted``, ``rolled_back``, ``load_failed``."""
OpenFn = Callable[[Path, Path | None], Classifier]
"""Opens a ``.tflite`` with its sidecar (the composition root adds accelerator and threads)."""

STATE_FILE = "state.json"
RESTART_IN_PROBATION = "did not survive a restart in probation"


class ModelPackage(Protocol):
    """A verified package installed on disk (``edge.common.model_package.InstalledPackage``)."""

    @property
    def dir(self) -> Path: ...
    @property
    def tflite(self) -> Path: ...
    @property
    def sidecar(self) -> Path: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model: the config's own (``dir`` is ``"config"``) or an installed package."""

    dir: str
    name: str
    version: str
    sha256: str
    tflite: str | None = None
    sidecar: str | None = None

    @property
    def is_config(self) -> bool:
        return self.dir == "config"

    @classmethod
    def of_package(cls, pkg: ModelPackage) -> ModelRef:
        return cls(
            dir=str(pkg.dir),
            name=pkg.name,
            version=pkg.version,
            sha256=pkg.sha256,
            tflite=str(pkg.tflite),
            sidecar=str(pkg.sidecar),
        )

    @classmethod
    def of_config(cls, clf: Classifier) -> ModelRef:
        return cls(dir="config", name=clf.name, version=clf.version, sha256=clf.sha256)

    @classmethod
    def from_dict(cls, d: Any) -> ModelRef:
        if not isinstance(d, dict):
            raise ValueError(f"a model entry must be an object, not {type(d).__name__}")
        try:
            fields = {k: d[k] for k in ("dir", "name", "version", "sha256")}
        except KeyError as e:
            raise ValueError(f"a model entry lacks {e}") from None
        bad = [k for k, v in fields.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"a model entry's {', '.join(bad)} must be text")
        return cls(**fields).with_files(d.get("tflite"), d.get("sidecar"))

    def with_files(self, tflite: Any, sidecar: Any) -> ModelRef:
        if not self.is_config and not isinstance(tflite, str):
            raise ValueError(f"package entry {self.dir} has no tflite path")
        return ModelRef(
            self.dir,
            self.name,
            self.version,
            self.sha256,
            tflite if isinstance(tflite, str) else None,
            sidecar if isinstance(sidecar, str) else None,
        )

    def brief(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class LifecycleState:
    live: ModelRef
    previous: ModelRef | None
    state: Literal["live", "probation"]


def read_state(path: Path) -> LifecycleState | None:
    """The saved state, or None when there is none. Raises ValueError naming the problem
    when the file is there but unreadable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        state = d.get("state")
        if state not in ("live", "probation"):
            raise ValueError(f"state must be live or probation, not {state!r}")
        prev = d.get("previous")
        out = LifecycleState(
            live=ModelRef.from_dict(d.get("live")),
            previous=None if prev is None else ModelRef.from_dict(prev),
            state=state,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if out.state == "probation" and out.previous is None:
        raise ValueError(f"{path}: in probation with no previous model")
    return out


def write_state(path: Path, st: LifecycleState) -> None:
    """Write atomically: a temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "live": asdict(st.live),
        "previous": None if st.previous is None else asdict(st.previous),
        "state": st.state,
        "time": utc_iso(time.time()),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_Item = tuple[Frame, dict[str, float], float]


class Shadow:
    """A candidate model scoring beside the live one (see the module doc). Raises nothing."""

    def __init__(
        self,
        classifier: Classifier,
        ref: ModelRef,
        *,
        rois: Sequence[Roi],
        params: DeciderParams,
        keep_recent: int = 5,
    ) -> None:
        self.classifier = classifier
        self.ref = ref
        self.rois = list(rois)
        self.params = params
        self._decider: Decider[float] = Decider([r.id for r in self.rois], params)
        self._slot: LatestSlot[_Item] = LatestSlot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pw-shadow", daemon=True)
        self.frames = 0
        self.errors = 0
        self.would_alert = 0
        self.live_alerts = 0
        self._agree = 0
        self._compared = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep_recent)

    def start(self) -> Shadow:
        self._thread.start()
        return self

    def offer(self, frame: Frame, live_scores: dict[str, float], live_on: float, hits: int) -> None:
        """The inference thread, every frame: hand the frame over and return at once."""
        self.live_alerts += hits
        self._slot.put((frame, live_scores, live_on))

    @property
    def skipped(self) -> int:
        """Frames the shadow had no time for (replaced in its slot before it took them)."""
        return self._slot.dropped

    @property
    def agreement(self) -> float | None:
        return round(self._agree / self._compared, 4) if self._compared else None

    def stats(self) -> dict[str, Any]:
        return {
            **self.ref.brief(),
            "threshold": self.params.score_on,
            "frames": self.frames,
            "skipped": self.skipped,
            "errors": self.errors,
            "agreement": self.agreement,
            "would_alert": self.would_alert,
            "live_alerts": self.live_alerts,
            "recent": list(self.recent),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._slot.get(0.2)
            if item is None or self._stop.is_set():
                continue
            try:
                self._score(*item)
            except Exception as e:  # best effort: count, say so once, go on
                self.errors += 1
                if self.errors == 1:
                    log.warning("shadow model %s failed on a frame: %s", self.ref.version, e)

    def _score(self, frame: Frame, live_scores: dict[str, float], live_on: float) -> None:
        img = frame.inference_image
        tensors = [self.classifier.preprocess(r.crop(img), r.mask(img)) for r in self.rois]
        scores = self.classifier.score_batch(tensors)
        on = self.params.score_on
        by_roi = {r.id: s for r, s in zip(self.rois, scores, strict=True)}
        for roi_id, s in by_roi.items():
            live = live_scores.get(roi_id)
            if live is not None:
                self._compared += 1
                self._agree += (s >= on) == (live >= live_on)
        items = {r.id: frame.t_wall_s for r in self.rois}
        for hit in self._decider.update(by_roi, frame.t_mono_s, items):
            self.would_alert += 1
            self.recent.append(
                {"time": utc_iso(hit.best), "roi": hit.roi_id, "score": round(hit.score, 4)}
            )
        self.frames += 1

    def close(self) -> None:
        """Stop the thread (waiting up to 5 s for a frame in hand), then close the model."""
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.classifier.close()


@dataclass
class _Probation:
    started_s: float
    processed0: int
    errors0: int
    baseline_fps: float | None


@dataclass(frozen=True, slots=True)
class ProbationRules:
    """When a promoted model is kept, and when it is rolled back."""

    duration_s: float = 120.0
    """Probation lasts at least this long ..."""
    frames: int = 100
    """... and at least this many processed frames."""
    max_errors: int = 3
    """This many frames failing (pipeline ``stage_errors``) during probation rolls back."""
    rate_window_s: float = 10.0
    """The processed-frame rate is measured over this window, before and after the swap."""
    min_rate_ratio: float = 0.5
    """A rate after the swap below this fraction of the rate before rolls back."""


class ModelManager:
    """Which model is live, the shadow, promotions and rollbacks, and ``state.json``.

    Build it, :meth:`open_live` (the classifier the pipeline starts with), :meth:`attach`
    the pipeline, :meth:`start` the probation watch; :meth:`on_scored` is the pipeline's
    shadow hook. Commands and packages arrive on other threads: every change holds one lock.
    """

    def __init__(
        self,
        *,
        models_dir: Path,
        open_config: Callable[[], Classifier],
        open_package: OpenFn,
        decider_params: Callable[[float], DeciderParams],
        report: ReportFn | None = None,
        open_shadow: OpenFn | None = None,
        rules: ProbationRules | None = None,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_swap: Callable[[Classifier, DeciderParams], None] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.state_path = models_dir / STATE_FILE
        self._open_config = open_config
        self._open_package = open_package
        self._open_shadow = open_shadow or open_package
        self._decider_params = decider_params
        self._report_fn = report
        self.rules = rules or ProbationRules()
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._on_swap = on_swap
        """Told the new classifier and decider rules after each swap (others that follow the
        live model's threshold and version, such as the sampler)."""
        """Monotonic seconds: probation's length and the frame-rate samples."""
        self._lock = threading.RLock()
        self._pipeline: Pipeline | None = None
        self._live: ModelRef | None = None
        self._live_clf: Classifier | None = None
        self._previous: ModelRef | None = None
        self._previous_clf: Classifier | None = None
        """Open only during probation, for a fast rollback."""
        self._probation: _Probation | None = None
        self.shadow: Shadow | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start --------------------------------------------------------------------------------
    def open_live(self) -> Classifier:
        """The classifier to start on: the state's live model, or the previous one when the
        unit restarted in probation, or the config's model when there is no state or the
        package fails to load (said in a WARNING). The config's model failing raises."""
        try:
            st = read_state(self.state_path)
        except ValueError as e:
            log.warning("model state unreadable (%s); starting on the config's model", e)
            st = None
        if st is None:
            return self._start_on_config()
        target = st.live
        if st.state == "probation":
            assert st.previous is not None
            target = st.previous
            log.warning(
                "model %s %s; starting on the previous model %s",
                st.live.version,
                RESTART_IN_PROBATION,
                target.version,
            )
            self._report(
                "rolled_back",
                st.live,
                f"{RESTART_IN_PROBATION}; back on {target.version}",
            )
        previous = st.previous if st.state == "live" else None
        if target.is_config:
            return self._start_on_config(previous)
        try:
            clf = self._open_package(Path(str(target.tflite)), _path(target.sidecar))
        except Exception as e:
            log.warning(
                "live model %s (%s) failed to load (%s); starting on the config's model",
                target.version,
                target.dir,
                e,
            )
            self._report("load_failed", target, f"at start: {e}")
            return self._start_on_config()
        self._live, self._live_clf = target, clf
        self._previous = previous
        self._save("live")
        return clf

    def _start_on_config(self, previous: ModelRef | None = None) -> Classifier:
        clf = self._open_config()
        self._live, self._live_clf = ModelRef.of_config(clf), clf
        self._previous = previous
        if self.state_path.exists():
            self._save("live")
        return clf

    def attach(self, pipeline: Pipeline) -> None:
        """The running pipeline whose classifier is swapped (built on :meth:`open_live`'s)."""
        self._pipeline = pipeline

    def start(self) -> ModelManager:
        """Start the probation watch (a thread sampling the pipeline's figures)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="pw-models", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.check()
            except Exception:
                log.exception("model probation check failed")

    # -- the pipeline's hook ------------------------------------------------------------------
    def on_scored(self, frame: Frame, scores: dict[str, float], score_on: float, hits: int) -> None:
        """Inference thread, every frame: hand the frame to the shadow, if any. Never raises."""
        shadow = self.shadow
        if shadow is not None:
            try:
                shadow.offer(frame, scores, score_on, hits)
            except Exception:
                log.debug("shadow offer failed", exc_info=True)

    # -- packages and commands ----------------------------------------------------------------
    def on_package(self, pkg: ModelPackage, mode: str) -> bool:
        """A verified, installed package: ``mode`` ``shadow`` or ``live``. True if it took."""
        if mode == "shadow":
            return self.start_shadow(pkg)
        if mode == "live":
            return self.promote(ModelRef.of_package(pkg))
        ref = ModelRef.of_package(pkg)
        log.warning("model package %s: unknown mode %r (shadow or live)", ref.version, mode)
        self._report("load_failed", ref, f"unknown mode {mode!r}; expected shadow or live")
        return False

    def start_shadow(self, pkg: ModelPackage) -> bool:
        ref = ModelRef.of_package(pkg)
        with self._lock:
            p = self._pipeline
            if p is None:
                self._report("load_failed", ref, "the unit is starting; offer it again")
                return False
            if self._live is not None and ref.sha256 == self._live.sha256:
                self._report("load_failed", ref, "already the live model; no shadow started")
                return False
            try:
                clf = self._open_shadow(pkg.tflite, pkg.sidecar)
            except Exception as e:
                self._report("load_failed", ref, f"shadow not started: {e}")
                return False
            params = self._decider_params(clf.threshold)
            self._end_shadow(f"replaced by {ref.version}")
            self.shadow = Shadow(clf, ref, rois=p.rois, params=params).start()
            self._report("shadow_started", ref, f"threshold {params.score_on:g}")
            return True

    def stop_shadow(self, reason: str = "stopped by the control room") -> bool:
        with self._lock:
            if self.shadow is None:
                log.info("no model in shadow to stop")
                return False
            self._end_shadow(reason)
            return True

    def _end_shadow(self, reason: str) -> None:
        shadow, self.shadow = self.shadow, None
        if shadow is not None:
            s = shadow.stats()
            shadow.close()
            self._report(
                "shadow_stopped",
                shadow.ref,
                f"{reason}; {s['frames']} frames, agreement {s['agreement']}, "
                f"{s['would_alert']} would-be alerts vs {s['live_alerts']} live",
            )

    def promote(self, ref: ModelRef | None = None, *, sha256: str | None = None) -> bool:
        """Make ``ref`` live (default: the model in shadow; ``sha256`` must then match it).
        The model is opened first; a failure reports ``load_failed`` and keeps the old one."""
        with self._lock:
            if ref is None:
                if self.shadow is None:
                    log.warning("promote: no model in shadow, and no package named")
                    return False
                if sha256 is not None and sha256 != self.shadow.ref.sha256:
                    log.warning(
                        "promote refused: %s... is not the model in shadow (%s...)",
                        sha256[:12],
                        self.shadow.ref.sha256[:12],
                    )
                    return False
                ref = self.shadow.ref
            return self._promote(ref)

    def _promote(self, ref: ModelRef) -> bool:
        p, live = self._pipeline, self._live
        if p is None or live is None:
            self._report("load_failed", ref, "the unit is starting; offer it again")
            return False
        if ref.sha256 == live.sha256:
            log.warning("promote: %s is already the live model", ref.version)
            return False
        try:
            new = self._open(ref)
        except Exception as e:
            self._report("load_failed", ref, f"not promoted, still on {live.version}: {e}")
            return False
        if self._probation is not None:
            log.info("model %s accepted early: %s is promoted over it", live.version, ref.version)
            self._end_probation()
        try:
            old = p.swap_classifier(new, params=self._decider_params(new.threshold))
        except TimeoutError as e:
            new.close()
            self._report("load_failed", ref, f"not promoted, still on {live.version}: {e}")
            return False
        self._previous, self._previous_clf = live, old
        self._live, self._live_clf = ref, new
        self._swapped(new, p.params)
        now = self._clock()
        self._probation = _Probation(
            now, p.stats.processed, p.stats.stage_errors, self._rate_before(now)
        )
        self._save("probation")
        self._end_shadow(f"{ref.version} promoted")
        r = self.rules
        self._report(
            "promoted",
            ref,
            f"from {live.version}; threshold {p.params.score_on:g}; probation "
            f"{r.duration_s:g} s and {r.frames} frames",
        )
        return True

    def rollback(self, reason: str = "asked by the control room") -> bool:
        """Swap back to the previous model (still open in probation, else opened again)."""
        with self._lock:
            p, live, prev = self._pipeline, self._live, self._previous
            if p is None or live is None or prev is None:
                log.warning("rollback (%s): no previous model to go back to", reason)
                return False
            clf = self._previous_clf
            if clf is None:
                try:
                    clf = self._open(prev)
                except Exception as e:
                    self._report("load_failed", prev, f"rollback to it failed: {e}")
                    return False
            try:
                old = p.swap_classifier(clf, params=self._decider_params(clf.threshold))
            except TimeoutError as e:
                if self._previous_clf is None:
                    clf.close()
                log.error("rollback to %s failed: %s", prev.version, e)
                return False
            old.close()
            self._live, self._live_clf = prev, clf
            self._swapped(clf, p.params)
            self._previous, self._previous_clf = None, None
            self._probation = None
            self._save("live")
            self._report("rolled_back", live, f"{reason}; back on {prev.version}")
            return True

    def _swapped(self, clf: Classifier, params: DeciderParams) -> None:
        if self._on_swap is not None:
            try:
                self._on_swap(clf, params)
            except Exception:
                log.exception("after the swap to %s, telling the rest of the unit failed", clf.name)

    def _open(self, ref: ModelRef) -> Classifier:
        if ref.is_config:
            return self._open_config()
        return self._open_package(Path(str(ref.tflite)), _path(ref.sidecar))

    # -- probation ----------------------------------------------------------------------------
    def check(self, now: float | None = None) -> None:
        """Sample the pipeline's rate; in probation, roll back or end it. Called by the
        watch thread every ``check_interval_s`` (and by tests)."""
        p = self._pipeline
        if p is None:
            return
        now = self._clock() if now is None else now
        with self._lock:
            self._samples.append((now, p.stats.processed))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.rules.rate_window_s:
                self._samples.popleft()
            pr = self._probation
            if pr is None:
                return
            reason = self._probation_failure(p, pr, now)
            if reason is not None:
                self.rollback(f"automatic: {reason}")
            elif (
                now - pr.started_s >= self.rules.duration_s
                and p.stats.processed - pr.processed0 >= self.rules.frames
            ):
                assert self._live is not None
                log.info(
                    "model %s passed probation (%d frames, %d errors)",
                    self._live.version,
                    p.stats.processed - pr.processed0,
                    p.stats.stage_errors - pr.errors0,
                )
                self._end_probation()
                self._save("live")

    def _probation_failure(self, p: Pipeline, pr: _Probation, now: float) -> str | None:
        r = self.rules
        errors = p.stats.stage_errors - pr.errors0
        if errors >= r.max_errors:
            return f"{errors} frames failed on the new model in probation"
        if (
            pr.baseline_fps is None
            or now - pr.started_s < r.rate_window_s
            or p.status != "running"
            or p.is_finished
        ):
            return None
        fps = self._rate(since_s=pr.started_s)
        if fps is not None and fps < r.min_rate_ratio * pr.baseline_fps:
            return f"frame rate fell from {pr.baseline_fps:.1f} to {fps:.1f} fps"
        return None

    def _rate(self, since_s: float) -> float | None:
        """Processed frames per second over the samples since ``since_s`` (None: too few)."""
        s = [x for x in self._samples if x[0] >= since_s]
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return None
        return (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])

    def _rate_before(self, now: float) -> float | None:
        fps = self._rate(since_s=now - self.rules.rate_window_s)
        p = self._pipeline
        if fps is None and p is not None and p.stats.processed:
            fps = p.stats.processed / max(1e-9, now - p.stats.started_mono_s)
        return fps

    def _end_probation(self) -> None:
        self._probation = None
        clf, self._previous_clf = self._previous_clf, None
        if clf is not None:
            clf.close()

    # -- state and reports --------------------------------------------------------------------
    @property
    def live(self) -> ModelRef | None:
        return self._live

    @property
    def state(self) -> str:
        if self._probation is not None:
            return "probation"
        return "shadow" if self.shadow is not None else "live"

    def heartbeat(self) -> dict[str, Any] | None:
        """The heartbeat's ``model`` object (None before a model is live)."""
        live, shadow = self._live, self.shadow
        if live is None:
            return None
        prev, clf = self._previous, self._live_clf
        return {
            "live": {**live.brief(), "model_sha256": clf.sha256} if clf else live.brief(),
            "previous": prev.version if prev is not None else None,
            "state": self.state,
            "shadow": shadow.stats() if shadow is not None else None,
        }

    def _save(self, state: Literal["live", "probation"]) -> None:
        assert self._live is not None
        try:
            write_state(self.state_path, LifecycleState(self._live, self._previous, state))
        except OSError as e:
            log.error("model state not saved to %s: %s", self.state_path, e)

    def _report(self, event: str, ref: ModelRef, detail: str | None) -> None:
        level = logging.WARNING if event in ("rolled_back", "load_failed") else logging.INFO
        log.log(level, "model %s %s (%s): %s", ref.version, event, ref.sha256[:12], detail)
        if self._report_fn is not None:
            try:
                self._report_fn(event, ref.sha256, ref.version, detail)
            except Exception:
                log.exception("reporting model event %s failed", event)

    def close(self) -> None:
        """Stop the watch and the shadow; close the previous and the live classifiers."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5.0)
        with self._lock:
            shadow, self.shadow = self.shadow, None
            if shadow is not None:
                shadow.close()
            for clf in (self._previous_clf, self._live_clf):
                if clf is not None:
                    clf.close()
            self._previous_clf = self._live_clf = None


def status_doc(
    unit: str, event: str, package_sha256: str, version: str, detail: str | None
) -> dict[str, Any]:
    """A ``model_status.v1`` document for one of this module's events."""
    doc: dict[str, Any] = {
        "schema": "phonewatch.model_status",
        "v": 1,
        "unit": unit,
        "time": utc_iso(time.time()),
        "package_sha256": package_sha256,
        "version": version[:64],
        "event": event,
    }
    if detail is not None:
        doc["detail"] = detail[:1000]
    return doc


def _path(p: str | None) -> Path | None:
    return Path(p) if p is not None else None
