#!/usr/bin/env python3
"""Configure the unit's u-blox receiver over its serial port with UBX messages.

    python firmware/gnss/configure.py --port /dev/ttyAMA0 --baud 9600 \
        --rate-hz 5 --constellations gps,galileo,glonass,sbas --nmea GGA,RMC --new-baud 115200

Each frame is sent and its ``UBX-ACK-ACK`` awaited (a NAK or no answer is an error naming the
message). The baud change goes last; the tool then reopens the port at the new rate and polls
``UBX-MON-VER`` to prove the receiver answers there. Settings are written to RAM, BBR and flash
unless ``--no-save``. ``--legacy`` uses CFG-RATE/CFG-MSG/CFG-PRT/CFG-CFG for u-blox 6/7/8.
``--dry-run`` prints the frames as hex and touches no port. Any pyserial URL works as
``--port`` (``loop://``, ``socket://``, ``rfc2217://``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import serial
from ubx import (  # type: ignore[import-not-found]
    ACK_ACK,
    ACK_NAK,
    BAUD_RATES,
    CFG_PRT,
    CFG_VALSET,
    MON_VER,
    GnssSettings,
    UbxError,
    UbxReader,
    mon_ver_poll,
    plan_legacy,
    plan_valset,
)

log = logging.getLogger("gnss.configure")


class ConfigureError(RuntimeError):
    """The receiver refused a message or did not answer."""


def _is_baud_change(f: bytes) -> bool:
    msg = (f[2], f[3])
    if msg == CFG_PRT:
        return True
    return msg == CFG_VALSET and f[10:14] == (0x40520001).to_bytes(4, "little")


def wait_for(
    port: serial.Serial, reader: UbxReader, want: set[tuple[int, int]], timeout_s: float
) -> tuple[tuple[int, int], bytes] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = port.read(port.in_waiting or 1)
        if not data:
            continue
        for fr in reader.feed(data):
            if fr.msg in want:
                return fr.msg, fr.payload
    return None


def send_acked(
    port: serial.Serial, reader: UbxReader, f: bytes, *, timeout_s: float, retries: int
) -> None:
    msg = (f[2], f[3])
    for attempt in range(1 + retries):
        port.write(f)
        port.flush()
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            got = wait_for(port, reader, {ACK_ACK, ACK_NAK}, max(left, 0.0)) if left > 0 else None
            if got is None:
                break
            kind, payload = got
            if tuple(payload[:2]) != msg:
                continue  # an answer to something else
            if kind == ACK_NAK:
                raise ConfigureError(f"receiver refused {_name(msg)} (ACK-NAK): {f.hex(' ')}")
            return
        log.warning("no ACK for %s (attempt %d)", _name(msg), attempt + 1)
    raise ConfigureError(
        f"no ACK for {_name(msg)} after {1 + retries} tries; wrong port or baud rate?"
    )


def configure(
    port: serial.Serial,
    frames: Sequence[bytes],
    *,
    new_baud: int | None,
    timeout_s: float = 1.5,
    retries: int = 2,
) -> str:
    """Send ``frames`` in order; returns the receiver's MON-VER software version string."""
    reader = UbxReader()
    port.reset_input_buffer()
    for f in frames:
        if _is_baud_change(f):
            port.write(f)
            port.flush()
            time.sleep(0.1)  # let the last bytes leave at the old rate
            if new_baud is not None:
                port.baudrate = new_baud
            port.reset_input_buffer()
            continue
        send_acked(port, reader, f, timeout_s=timeout_s, retries=retries)
    for _ in range(1 + retries):
        port.write(mon_ver_poll())
        got = wait_for(port, reader, {MON_VER}, timeout_s)
        if got is not None:
            return got[1][:30].rstrip(b"\0").decode("ascii", "replace")
    raise ConfigureError(
        "receiver did not answer UBX-MON-VER after configuration"
        + (f" at {new_baud} baud" if new_baud else "")
    )


def _name(msg: tuple[int, int]) -> str:
    names = {
        (0x06, 0x8A): "UBX-CFG-VALSET",
        (0x06, 0x08): "UBX-CFG-RATE",
        (0x06, 0x01): "UBX-CFG-MSG",
        (0x06, 0x00): "UBX-CFG-PRT",
        (0x06, 0x09): "UBX-CFG-CFG",
    }
    return names.get(msg, f"UBX 0x{msg[0]:02x} 0x{msg[1]:02x}")


def _csv(text: str) -> frozenset[str]:
    return frozenset(p.strip() for p in text.split(",") if p.strip())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--port", help="serial device or pyserial URL (e.g. /dev/ttyAMA0)")
    p.add_argument("--baud", type=int, default=9600, help="current baud rate (default 9600)")
    p.add_argument("--rate-hz", type=float, default=5.0, help="navigation rate (default 5)")
    p.add_argument(
        "--constellations",
        type=_csv,
        default=_csv("gps,galileo,glonass,sbas"),
        help="comma list of gps,galileo,glonass,beidou,qzss,sbas",
    )
    p.add_argument(
        "--nmea",
        type=lambda s: frozenset(x.upper() for x in _csv(s)),
        default=frozenset({"GGA", "RMC"}),
        help="NMEA sentences to keep (GGA,RMC)",
    )
    p.add_argument(
        "--new-baud",
        type=int,
        choices=BAUD_RATES,
        default=None,
        help="switch the receiver's UART1 to this rate (last step)",
    )
    p.add_argument("--no-save", action="store_true", help="RAM only: lost at power-off")
    p.add_argument("--legacy", action="store_true", help="u-blox 6/7/8 legacy messages")
    p.add_argument("--timeout-s", type=float, default=1.5, help="wait per ACK (s)")
    p.add_argument("--dry-run", action="store_true", help="print the frames, send nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = GnssSettings(
            rate_hz=args.rate_hz,
            constellations=args.constellations,
            nmea=args.nmea,
            baud=args.new_baud,
            save=not args.no_save,
        )
        frames = plan_legacy(settings) if args.legacy else plan_valset(settings)
    except UbxError as e:
        print(f"configure: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for f in frames:
            print(f.hex(" "))
        return 0
    if not args.port:
        print("configure: error: --port is required (or use --dry-run)", file=sys.stderr)
        return 2
    try:
        with serial.serial_for_url(args.port, baudrate=args.baud, timeout=0.05) as port:
            version = configure(port, frames, new_baud=args.new_baud, timeout_s=args.timeout_s)
    except (ConfigureError, serial.SerialException) as e:
        print(f"configure: error: {e}", file=sys.stderr)
        return 1
    print(f"configured ({len(frames)} messages); receiver software: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
