"""The ``phonewatch`` command line.

Subcommands of other parts of the unit (GPS, uplink, keys, models ...) live in their own
``edge.app.cli_*`` modules, each exposing ``add_parsers(subparsers)``; they are listed in
``_PLUGIN_MODULES`` and wired in here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

from edge import __version__
from edge.core.errors import ModelError, PhonewatchError

log = logging.getLogger(__name__)

_PLUGIN_MODULES = [
    "edge.app.cli_unit",  # run, check, classify, roi-preview, demo
    "edge.app.cli_gps",  # gps
    "edge.app.cli_uplink",  # keys, uplink tools
    "edge.app.cli_models",  # eval (model toolchain)
    "edge.app.cli_field",  # gpio / supervisor / field tools
    "controlroom.cli",  # controlroom ...
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phonewatch",
        description="phonewatch: spot drivers holding a mobile phone, and send the evidence "
        "to the control room.",
        epilog="Start with 'phonewatch check --config C' on a new unit; "
        "'phonewatch <command> --help' explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"phonewatch {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _PLUGIN_MODULES:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) is None:
            continue
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        module.add_parsers(sub)
    return parser


TFLITE_CHATTER = (b"Created TensorFlow Lite XNNPACK delegate",)
"""Lines the TFLite runtime prints to the process's stderr (from C++, once per process) that
say nothing to a user of the command line."""


@contextlib.contextmanager
def quiet_tflite() -> Iterator[None]:
    """Drop the TFLite runtime's C++ INFO lines (:data:`TFLITE_CHATTER`) while a model is
    loaded: file descriptor 2 goes to a temporary file inside the block, and everything else
    written there (log lines from any thread) is passed on to stderr when it ends."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = b"".join(
                line
                for line in tmp.read().splitlines(keepends=True)
                if not any(c in line for c in TFLITE_CHATTER)
            )
            if kept:
                sys.stderr.flush()
                os.write(2, kept)


QUIET_COMMANDS = frozenset({"eval", "sidecar"})
"""Batch commands that load models as they go and write nothing but logs to stderr: the whole
command runs under :func:`quiet_tflite` (the others wrap just their model loading)."""


class UsageError(PhonewatchError, ValueError):
    """A command-line option that cannot work (a file where a folder is needed, ...)."""


def explain(e: BaseException) -> str:
    """The one-line message for an expected failure, with the next step where there is one."""
    text = str(e)
    if isinstance(e, ModelError) and "sidecar" in text and "is missing" in text:
        text += (
            "; write one with 'phonewatch sidecar MODEL --positive LABEL ...' "
            "(phonewatch sidecar --help)"
        )
    elif isinstance(e, OSError) and not isinstance(e, PhonewatchError):
        # An operating-system failure the commands did not foresee: name the file, not a
        # traceback (-vv logs the traceback).
        names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        what = e.strerror or type(e).__name__
        text = f"{names}: {what}" if names else f"{what}: {e}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.command in QUIET_COMMANDS:
            with quiet_tflite():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except (PhonewatchError, OSError) as e:
        log.debug("%s failed", args.command, exc_info=True)
        print(f"phonewatch: error: {explain(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
