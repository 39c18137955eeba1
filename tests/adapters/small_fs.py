"""A real, small filesystem for disk-full tests: a tmpfs of a given size mounted on a test's own
folder (needs root, or CAP_SYS_ADMIN; the test is skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(folder: Path, *, leave_bytes: int = 0) -> Path:
    """Write zeros to ``folder/filler`` until the filesystem is full (or ``leave_bytes`` are
    left, to the nearest 4 KiB); return the filler's path."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave_bytes:
                break
            try:
                os.write(fd, chunk[: max(4096, min(len(chunk), free - leave_bytes))])
            except OSError:
                break
    finally:
        os.close(fd)
    return filler
