"""UBX framing and the configuration messages phonewatch sends to its u-blox receiver.

Pure (stdlib only): frames in, bytes out. ``configure.py`` beside this file does the serial I/O.

Frame: ``B5 62 | class | id | length (u16 LE) | payload | CK_A CK_B``, where the checksum is the
8-bit Fletcher sum over class, id, length and payload (u-blox protocol specification, "UBX
checksum"). Two configuration styles are supported:

- **VALSET** (``UBX-CFG-VALSET``, protocol 23.01+; the NEO-M9N): key/value items, written to the
  RAM layer and, to keep them across power cycles, the BBR and flash layers;
- **legacy** (``UBX-CFG-RATE`` / ``CFG-MSG`` / ``CFG-PRT`` / ``CFG-CFG``; u-blox 6/7/8).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SYNC = b"\xb5\x62"

# Class / id pairs.
ACK_NAK = (0x05, 0x00)
ACK_ACK = (0x05, 0x01)
CFG_PRT = (0x06, 0x00)
CFG_MSG = (0x06, 0x01)
CFG_RST = (0x06, 0x04)
CFG_RATE = (0x06, 0x08)
CFG_CFG = (0x06, 0x09)
CFG_VALSET = (0x06, 0x8A)
MON_VER = (0x0A, 0x04)

# VALSET layers.
LAYER_RAM = 0x01
LAYER_BBR = 0x02
LAYER_FLASH = 0x04

# Configuration keys (u-blox M9 interface description, "Configuration interface").
# Bits 28..30 of a key give its value size: 1 = one bit (sent as a byte), 2 = 1 byte,
# 3 = 2 bytes, 4 = 4 bytes, 5 = 8 bytes.
KEYS: dict[str, int] = {
    "CFG-RATE-MEAS": 0x30210001,  # U2, ms between measurements
    "CFG-RATE-NAV": 0x30210002,  # U2, measurements per navigation solution
    "CFG-RATE-TIMEREF": 0x20210003,  # E1, 0 = UTC, 1 = GPS
    "CFG-UART1-BAUDRATE": 0x40520001,  # U4
    "CFG-UART1INPROT-UBX": 0x10730001,  # L
    "CFG-UART1INPROT-NMEA": 0x10730002,  # L
    "CFG-UART1OUTPROT-UBX": 0x10740001,  # L
    "CFG-UART1OUTPROT-NMEA": 0x10740002,  # L
    "CFG-SIGNAL-GPS_ENA": 0x1031001F,  # L
    "CFG-SIGNAL-SBAS_ENA": 0x10310020,  # L
    "CFG-SIGNAL-GAL_ENA": 0x10310021,  # L
    "CFG-SIGNAL-BDS_ENA": 0x10310022,  # L
    "CFG-SIGNAL-QZSS_ENA": 0x10310024,  # L
    "CFG-SIGNAL-GLO_ENA": 0x10310025,  # L
    "CFG-MSGOUT-NMEA_ID_GGA_UART1": 0x209100BB,  # U1, output every N epochs (0 = off)
    "CFG-MSGOUT-NMEA_ID_GLL_UART1": 0x209100CA,
    "CFG-MSGOUT-NMEA_ID_GSA_UART1": 0x209100C0,
    "CFG-MSGOUT-NMEA_ID_GSV_UART1": 0x209100C5,
    "CFG-MSGOUT-NMEA_ID_RMC_UART1": 0x209100AC,
    "CFG-MSGOUT-NMEA_ID_VTG_UART1": 0x209100B1,
    "CFG-MSGOUT-NMEA_ID_ZDA_UART1": 0x209100D9,
}
CONSTELLATIONS = {
    "gps": "CFG-SIGNAL-GPS_ENA",
    "sbas": "CFG-SIGNAL-SBAS_ENA",
    "galileo": "CFG-SIGNAL-GAL_ENA",
    "beidou": "CFG-SIGNAL-BDS_ENA",
    "qzss": "CFG-SIGNAL-QZSS_ENA",
    "glonass": "CFG-SIGNAL-GLO_ENA",
}
NMEA_SENTENCES = ("GGA", "GLL", "GSA", "GSV", "RMC", "VTG", "ZDA")
# Legacy CFG-MSG ids of the standard NMEA sentences (class 0xF0).
NMEA_LEGACY_ID = {
    "GGA": 0x00,
    "GLL": 0x01,
    "GSA": 0x02,
    "GSV": 0x03,
    "RMC": 0x04,
    "VTG": 0x05,
    "ZDA": 0x08,
}
BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_VALUE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8}
MAX_VALSET_ITEMS = 64


class UbxError(ValueError):
    """A UBX frame or a configuration request is malformed."""


def checksum(body: bytes) -> bytes:
    """8-bit Fletcher checksum (CK_A, CK_B) over class, id, length and payload."""
    ck_a = ck_b = 0
    for byte in body:
        ck_a = (ck_a + byte) & 0xFF
        ck_b = (ck_b + ck_a) & 0xFF
    return bytes((ck_a, ck_b))


def frame(msg: tuple[int, int], payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise UbxError(f"payload of {len(payload)} bytes does not fit a UBX frame")
    body = struct.pack("<BBH", msg[0], msg[1], len(payload)) + payload
    return SYNC + body + checksum(body)


# -- VALSET ---------------------------------------------------------------------------------


def key_id(key: str | int) -> int:
    if isinstance(key, int):
        return key
    try:
        return KEYS[key]
    except KeyError:
        raise UbxError(f"unknown configuration key {key!r}") from None


def value_bytes(key: int, value: int | bool) -> bytes:
    size = (key >> 28) & 0x7
    if size not in _VALUE_BYTES:
        raise UbxError(f"key 0x{key:08x} has no valid size field ({size})")
    n = _VALUE_BYTES[size]
    v = int(value)
    if size == 1 and v not in (0, 1):
        raise UbxError(f"key 0x{key:08x} is a flag; value must be 0 or 1, not {value!r}")
    if not 0 <= v < 1 << (8 * n):
        raise UbxError(f"value {value!r} does not fit key 0x{key:08x} ({n} bytes)")
    return v.to_bytes(n, "little")


def valset(items: Iterable[tuple[str | int, int | bool]], *, layers: int = LAYER_RAM) -> bytes:
    """One ``UBX-CFG-VALSET`` frame (version 0: applied at once, no transaction)."""
    pairs = list(items)
    if not pairs:
        raise UbxError("VALSET needs at least one item")
    if len(pairs) > MAX_VALSET_ITEMS:
        raise UbxError(f"VALSET takes at most {MAX_VALSET_ITEMS} items, got {len(pairs)}")
    if not layers or layers & ~(LAYER_RAM | LAYER_BBR | LAYER_FLASH):
        raise UbxError(f"bad layers mask 0x{layers:02x}")
    payload = bytes((0x00, layers, 0x00, 0x00))
    for key, value in pairs:
        k = key_id(key)
        payload += struct.pack("<I", k) + value_bytes(k, value)
    return frame(CFG_VALSET, payload)


# -- legacy messages (u-blox 6/7/8) ---------------------------------------------------------


def cfg_rate(meas_ms: int, nav_cycles: int = 1, time_ref: int = 1) -> bytes:
    return frame(CFG_RATE, struct.pack("<HHH", meas_ms, nav_cycles, time_ref))


def cfg_msg(msg: tuple[int, int], rates: tuple[int, int, int, int, int, int]) -> bytes:
    """Output rate per port: (DDC/I2C, UART1, UART2, USB, SPI, reserved)."""
    return frame(CFG_MSG, bytes(msg) + bytes(rates))


def cfg_prt_uart(
    baud: int,
    *,
    port: int = 1,
    in_proto: int = 0x07,
    out_proto: int = 0x03,
    mode: int = 0x08C0,
    tx_ready: int = 0,
) -> bytes:
    """UART port settings; mode 0x08C0 = 8 data bits, no parity, 1 stop bit."""
    payload = struct.pack("<BBHIIHHHH", port, 0, tx_ready, mode, baud, in_proto, out_proto, 0, 0)
    return frame(CFG_PRT, payload)


def cfg_cfg_save(device_mask: int = 0x17) -> bytes:
    """Save the current configuration (all sections) to BBR, flash and EEPROM (device_mask)."""
    return frame(CFG_CFG, struct.pack("<IIIB", 0, 0xFFFF, 0, device_mask))


def cfg_rst(nav_bbr_mask: int, reset_mode: int) -> bytes:
    return frame(CFG_RST, struct.pack("<HBB", nav_bbr_mask, reset_mode, 0))


def mon_ver_poll() -> bytes:
    return frame(MON_VER)


# -- what phonewatch wants ------------------------------------------------------------------


@dataclass(frozen=True)
class GnssSettings:
    rate_hz: float = 5.0
    constellations: frozenset[str] = frozenset({"gps", "galileo", "glonass", "sbas"})
    nmea: frozenset[str] = frozenset({"GGA", "RMC"})
    baud: int | None = 115200
    save: bool = True

    def __post_init__(self) -> None:
        if not 0.1 <= self.rate_hz <= 25:
            raise UbxError(f"rate_hz must be within 0.1..25, not {self.rate_hz}")
        bad = set(self.constellations) - set(CONSTELLATIONS)
        if bad:
            raise UbxError(f"unknown constellations {sorted(bad)}; known: {sorted(CONSTELLATIONS)}")
        bad = set(self.nmea) - set(NMEA_SENTENCES)
        if bad:
            raise UbxError(f"unknown NMEA sentences {sorted(bad)}; known: {list(NMEA_SENTENCES)}")
        if self.baud is not None and self.baud not in BAUD_RATES:
            raise UbxError(f"baud must be one of {BAUD_RATES}, not {self.baud}")

    @property
    def meas_ms(self) -> int:
        return round(1000 / self.rate_hz)


def plan_valset(s: GnssSettings) -> list[bytes]:
    """VALSET frames for an M9-class receiver; the baud change comes last (see configure.py)."""
    layers = LAYER_RAM | (LAYER_BBR | LAYER_FLASH if s.save else 0)
    items: list[tuple[str | int, int | bool]] = [
        ("CFG-RATE-MEAS", s.meas_ms),
        ("CFG-RATE-NAV", 1),
        ("CFG-UART1INPROT-UBX", 1),
        ("CFG-UART1OUTPROT-UBX", 1),
        ("CFG-UART1OUTPROT-NMEA", 1),
    ]
    items += [(f"CFG-MSGOUT-NMEA_ID_{n}_UART1", int(n in s.nmea)) for n in NMEA_SENTENCES]
    frames = [valset(items, layers=layers)]
    # Constellations go in their own message: the receiver restarts its GNSS engine for them.
    frames.append(
        valset(
            [(CONSTELLATIONS[c], int(c in s.constellations)) for c in CONSTELLATIONS], layers=layers
        )
    )
    if s.baud is not None:
        frames.append(valset([("CFG-UART1-BAUDRATE", s.baud)], layers=layers))
    return frames


def plan_legacy(s: GnssSettings) -> list[bytes]:
    """Legacy frames for u-blox 6/7/8 (constellations stay as they are: CFG-GNSS not used)."""
    frames = [cfg_rate(s.meas_ms)]
    for n in NMEA_SENTENCES:
        on = int(n in s.nmea)
        frames.append(cfg_msg((0xF0, NMEA_LEGACY_ID[n]), (0, on, 0, on, 0, 0)))
    if s.save:
        frames.append(cfg_cfg_save())
    if s.baud is not None:
        frames.append(cfg_prt_uart(s.baud))
    return frames


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UbxFrame:
    msg: tuple[int, int]
    payload: bytes


class UbxReader:
    """Incremental UBX de-framer: feed bytes (NMEA and noise interleaved), get whole frames.

    Frames with a bad checksum are dropped and counted; the reader resynchronises on the next
    ``B5 62``.
    """

    MAX_PAYLOAD = 8192

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_checksums = 0
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> Iterator[UbxFrame]:
        self._buf += data
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                keep = 1 if self._buf.endswith(SYNC[:1]) else 0
                self.skipped_bytes += len(self._buf) - keep
                del self._buf[: len(self._buf) - keep]
                return
            if start:
                self.skipped_bytes += start
                del self._buf[:start]
            if len(self._buf) < 6:
                return
            (length,) = struct.unpack_from("<H", self._buf, 4)
            if length > self.MAX_PAYLOAD:
                self.skipped_bytes += 2
                del self._buf[:2]
                continue
            end = 6 + length + 2
            if len(self._buf) < end:
                return
            body = bytes(self._buf[2 : 6 + length])
            if checksum(body) != bytes(self._buf[6 + length : end]):
                self.bad_checksums += 1
                self.skipped_bytes += 2
                del self._buf[:2]
                continue
            del self._buf[:end]
            yield UbxFrame((body[0], body[1]), body[4:])
