"""The unit's heartbeat: gathered here, in the app, and handed to the uplink as a document.

The uplink is a transport; what a heartbeat says (pipeline rates, outbox depth, GPS state and
fix, CPU temperature, the live and shadow models, per-camera and vehicle figures) is the app's
business. :class:`StatsEmitter` runs one thread that, every ``interval_s``, builds the document
with :func:`edge.core.messages.build_heartbeat` from the parts it was given and calls
``uplink.publish_heartbeat``. A part that fails is left out of that heartbeat (logged); the
heartbeat still goes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge.core import messages as m
from edge.core.gps import GpsSource
from edge.core.ports import Detection, Uplink

log = logging.getLogger(__name__)

CPU_TEMP_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
FIRST_AFTER_S = 2.0
"""The first heartbeat goes this soon after start (or ``interval_s``, if shorter)."""


def read_cpu_temp_c(path: Path = CPU_TEMP_PATH) -> float | None:
    """CPU temperature in degrees C from sysfs (millidegrees), or None where there is none."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def read_position(gps: GpsSource | None) -> tuple[dict[str, Any] | None, str | None]:
    """The newest fix (as :func:`edge.core.messages.fix_dict` keeps it) and the GPS state.

    Never waits and never raises: a GPS bug must not cost an alert (state ``error``)."""
    if gps is None:
        return None, None
    try:
        state = gps.state
        fix = gps.latest()
        return (m.fix_dict(fix.to_dict()) if fix is not None else None), str(state)
    except Exception as e:
        log.warning("GPS read failed; no fix this time: %s", e)
        return None, "error"


def stamp_position(det: Detection, gps: GpsSource | None, *, max_fix_age_s: float) -> Detection:
    """``det`` with the GPS fix and state read now and its alert time by the one rule
    (:func:`edge.core.messages.alert_time`): what every sink records."""
    fix, gps_state = read_position(gps)
    return m.stamp_detection(det, fix=fix, gps_state=gps_state, max_fix_age_s=max_fix_age_s)


def _part(
    what: str,
    source: Callable[[], Any] | None,
    check: Callable[[Any], Any],
) -> Any:
    """One optional part of the heartbeat, checked (``check`` raises on a bad one): None when
    there is no source, it gives None, or it fails (logged: the heartbeat still goes)."""
    if source is None:
        return None
    try:
        got = source()
        return None if got is None else check(got)
    except Exception as e:
        log.warning("%s figures failed; heartbeat without them: %s", what, e)
        return None


class StatsEmitter:
    """Builds a heartbeat every ``interval_s`` and hands it to ``uplink``."""

    def __init__(
        self,
        *,
        unit_id: str,
        uplink: Uplink,
        interval_s: float,
        pipeline_stats: Callable[[], Mapping[str, Any]],
        gps: GpsSource | None = None,
        cpu_temp: Callable[[], float | None] = read_cpu_temp_c,
        model: Callable[[], Mapping[str, Any] | None] | None = None,
        cameras: Callable[[], Mapping[str, Mapping[str, Any]] | None] | None = None,
        vehicles: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.uplink = uplink
        self.interval_s = interval_s
        self._pipeline_stats = pipeline_stats
        self._gps = gps
        self._cpu_temp = cpu_temp
        self._model = model
        """The unit's models for the heartbeat's ``model`` object (``ModelManager.heartbeat``)."""
        self._cameras = cameras
        """Per camera id: ``status``, ``fps``, ``dropped``, ``last_error`` (multi-camera units;
        None: a single-camera unit, and the heartbeat has no ``cameras``)."""
        self._vehicles = vehicles
        """The vehicle stage's ``tracks_per_min`` and ``active`` (None: no vehicle stage)."""
        self._t0_mono = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.sent = 0

    def build(self) -> dict[str, Any]:
        """The heartbeat document as of now."""
        try:
            pipeline = dict(self._pipeline_stats())
        except Exception as e:
            log.warning("pipeline stats failed; heartbeat without pipeline figures: %s", e)
            pipeline = {}
        up = self.uplink.stats()
        fix, gps_state = read_position(self._gps)
        model = None
        if self._model is not None:
            try:
                model = self._model()
            except Exception as e:
                log.warning("model figures failed; heartbeat without them: %s", e)
        cameras = _part("camera", self._cameras, m.heartbeat_cameras)
        vehicles = _part("vehicle", self._vehicles, m.heartbeat_vehicles)
        return m.build_heartbeat(
            self.unit_id,
            t_wall_s=time.time(),
            uptime_s=time.monotonic() - self._t0_mono,
            pipeline=pipeline,
            outbox_depth=int(up.get("outbox_depth", 0)),
            evidence_pruned=int(up.get("outbox_evidence_pruned", 0)),
            alerts_pruned=int(up.get("outbox_alerts_pruned", 0)),
            gps_state=gps_state,
            fix=fix,
            cpu_temp_c=self._cpu_temp(),
            model=model,
            cameras=cameras,
            vehicles=vehicles,
        )

    def start(self) -> StatsEmitter:
        self._thread.start()
        return self

    def _run(self) -> None:
        wait_s = min(FIRST_AFTER_S, self.interval_s)
        while not self._stop.wait(wait_s):
            wait_s = self.interval_s
            if not self.uplink.is_connected:
                continue
            try:
                if self.uplink.publish_heartbeat(self.build()):
                    self.sent += 1
            except Exception:  # keep beating whatever one heartbeat hit
                log.exception("heartbeat failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
