"""Helpers shared by the benchmarks: machine description and RSS (tables: ``edge.app.stats``)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def read_frames(clip: Path, n: int) -> list[Any]:
    """Up to the first ``n`` frames of ``clip`` (BGR arrays), held in memory."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    images: list[Any] = []
    try:
        while len(images) < n:
            ok, img = cap.read()
            if not ok:
                break
            images.append(img)
    finally:
        cap.release()
    return images
