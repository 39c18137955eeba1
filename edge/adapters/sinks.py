"""Simple alert sinks: JSON lines on disk (until/unless the MQTT uplink is used), and memory."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.common.config import StrictModel
from edge.core.errors import EvidenceError
from edge.core.ports import Detection


class JsonlSinkConfig(StrictModel):
    type: Literal["jsonl"] = Field(description="Append one JSON line per alert to a file.")
    path: Path | None = Field(None, description="File; default <unit.data_dir>/alerts.jsonl.")


def detection_to_dict(d: Detection) -> dict[str, Any]:
    """Every field, JSON-ready: the evidence's JPEG bytes stay out (they are on disk)."""
    out = dataclasses.asdict(d)
    out["evidence"].pop("frame_jpeg", None)
    out["evidence"].pop("crop_jpeg", None)
    out["evidence"].pop("clip_data", None)
    return out


class SeqFile:
    """Alert sequence numbers for a unit without an outbox (a JSON-lines sink): the next
    number lives in a small file, rewritten atomically (fsync, rename) on every reservation.
    A new file starts at the clock in milliseconds, like a new outbox."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def reserve(self) -> int:
        from edge.adapters.evidence import write_atomic
        from edge.adapters.outbox import first_seq_for_new_outbox

        with self._lock:
            try:
                nxt = int(self.path.read_text(encoding="ascii").strip())
            except (OSError, ValueError):
                nxt = 0
            seq = max(nxt, first_seq_for_new_outbox() if nxt == 0 else 0)
            try:
                write_atomic(self.path, b"%d\n" % (seq + 1))
            except OSError as e:
                raise EvidenceError(f"cannot write alert numbers {self.path}: {e}") from e
            return seq


class JsonlSink:
    """Appends one JSON object per detection to a file, fsync'd before ``send`` returns.
    Its alert numbers are kept beside it (``<file>.seq``, :class:`SeqFile`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.numbers = SeqFile(self.path.with_name(self.path.name + ".seq"))
        self.sent = 0
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as e:
            raise EvidenceError(f"cannot open alert log {self.path}: {e.strerror}") from e

    def reserve(self) -> int:
        return self.numbers.reserve()

    def send(self, detection: Detection) -> None:
        line = (json.dumps(detection_to_dict(detection), sort_keys=True) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise EvidenceError(f"alert log {self.path} is closed")
            os.write(self._fd, line)
            os.fsync(self._fd)
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class MemorySink:
    """Keeps detections in a list (tests, the demo's scoring)."""

    def __init__(self) -> None:
        self.detections: list[Detection] = []
        self._lock = threading.Lock()

    def send(self, detection: Detection) -> None:
        with self._lock:
            self.detections.append(detection)

    def close(self) -> None:
        pass


class TeeSink:
    """Sends to several sinks in turn."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def send(self, detection: Detection) -> None:
        for s in self.sinks:
            s.send(detection)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
