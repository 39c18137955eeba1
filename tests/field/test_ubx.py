"""UBX frames byte for byte (published frames, pyubx2 as an independent encoder), the reader,
and the configure tool against a fake receiver on a real pty."""

from __future__ import annotations

import os
import sys
import threading
import tty
from collections.abc import Callable, Iterator

import pytest
import serial

from .conftest import REPO

sys.path.insert(0, str(REPO / "firmware" / "gnss"))
import configure
import ubx

pyubx2 = pytest.importorskip("pyubx2")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# Frames as printed in the u-blox documentation and used verbatim with real receivers.
@pytest.mark.parametrize(
    ("built", "expected"),
    [
        # UBX-MON-VER poll (no payload).
        (lambda: ubx.mon_ver_poll(), "b5 62 0a 04 00 00 0e 34"),
        # UBX-CFG-RATE: 10 Hz and 5 Hz, navRate 1, GPS time.
        (lambda: ubx.cfg_rate(100), "b5 62 06 08 06 00 64 00 01 00 01 00 7a 12"),
        (lambda: ubx.cfg_rate(200), "b5 62 06 08 06 00 c8 00 01 00 01 00 de 6a"),
        # UBX-CFG-PRT UART1 115200 8N1, in UBX+NMEA+RTCM, out UBX+NMEA.
        (
            lambda: ubx.cfg_prt_uart(115200),
            "b5 62 06 00 14 00 01 00 00 00 c0 08 00 00 00 c2 01 00 07 00 03 00 00 00 00 00 b0 7e",
        ),
        # UBX-CFG-PRT UART1 38400, mode 0x08D0, out NMEA only.
        (
            lambda: ubx.cfg_prt_uart(38400, mode=0x08D0, out_proto=0x01),
            "b5 62 06 00 14 00 01 00 00 00 d0 08 00 00 00 96 00 00 07 00 01 00 00 00 00 00 91 84",
        ),
        # UBX-CFG-RST: cold start, forced (watchdog) reset.
        (lambda: ubx.cfg_rst(0x87FF, 0x00), "b5 62 06 04 04 00 ff 87 00 00 94 f5"),
        # UBX-CFG-MSG NMEA GLL off on every port; NMEA GGA off but the 6th slot set.
        (
            lambda: ubx.cfg_msg((0xF0, 0x01), (0, 0, 0, 0, 0, 0)),
            "b5 62 06 01 08 00 f0 01 00 00 00 00 00 00 00 2a",
        ),
        (
            lambda: ubx.cfg_msg((0xF0, 0x00), (0, 0, 0, 0, 0, 1)),
            "b5 62 06 01 08 00 f0 00 00 00 00 00 00 01 00 24",
        ),
    ],
)
def test_published_frames_byte_for_byte(built: Callable[[], bytes], expected: str) -> None:
    assert built().hex(" ") == expected


def test_checksum_is_fletcher_over_class_to_payload() -> None:
    # Worked by hand: 06 08 06 00 64 00 01 00 01 00 -> CK_A = 0x7a, CK_B = 0x12.
    body = h("06 08 06 00 64 00 01 00 01 00")
    a = b = 0
    sums = []
    for byte in body:
        a = (a + byte) % 256
        b = (b + a) % 256
        sums.append((a, b))
    assert sums[-1] == (0x7A, 0x12)
    assert ubx.checksum(body) == b"\x7a\x12"


def test_valset_matches_pyubx2_byte_for_byte() -> None:
    from pyubx2 import UBXMessage

    ours = ubx.valset(
        [
            ("CFG-RATE-MEAS", 200),
            ("CFG-UART1-BAUDRATE", 115200),
            ("CFG-SIGNAL-GPS_ENA", 1),
            ("CFG-MSGOUT-NMEA_ID_GSV_UART1", 0),
        ],
        layers=ubx.LAYER_RAM | ubx.LAYER_BBR | ubx.LAYER_FLASH,
    )
    theirs = UBXMessage.config_set(
        7,
        0,
        [
            ("CFG_RATE_MEAS", 200),
            ("CFG_UART1_BAUDRATE", 115200),
            ("CFG_SIGNAL_GPS_ENA", 1),
            ("CFG_MSGOUT_NMEA_ID_GSV_UART1", 0),
        ],
    ).serialize()
    assert ours == theirs
    # And the frame itself, read field by field.
    assert ours[:6] == h("b5 62 06 8a 1c 00")  # 4 + (4+2) + (4+4) + (4+1) + (4+1)
    assert ours[6:10] == h("00 07 00 00")  # version 0, layers RAM|BBR|flash, reserved
    assert ours[10:16] == h("01 00 21 30 c8 00")  # CFG-RATE-MEAS = 200 ms (U2)


@pytest.mark.parametrize("name", sorted(ubx.KEYS))
def test_every_key_id_agrees_with_pyubx2(name: str) -> None:
    from pyubx2.ubxtypes_configdb import UBX_CONFIG_DATABASE

    theirs = UBX_CONFIG_DATABASE[name.replace("-", "_")][0]
    assert ubx.KEYS[name] == theirs


def test_whole_valset_plan_decodes_with_pyubx2() -> None:
    from pyubx2 import SET, UBXReader

    s = ubx.GnssSettings(
        rate_hz=10,
        constellations=frozenset({"gps", "galileo"}),
        nmea=frozenset({"GGA", "RMC", "ZDA"}),
        baud=230400,
        save=True,
    )
    frames = ubx.plan_valset(s)
    decoded = {}
    for f in frames:
        msg = UBXReader.parse(f, msgmode=SET)
        assert msg.identity == "CFG-VALSET"
        assert (msg.ram, msg.bbr, msg.flash) == (1, 1, 1)
        decoded.update({k: v for k, v in vars(msg).items() if k.startswith("CFG_")})
    assert decoded["CFG_RATE_MEAS"] == 100
    assert decoded["CFG_MSGOUT_NMEA_ID_GGA_UART1"] == 1
    assert decoded["CFG_MSGOUT_NMEA_ID_GSV_UART1"] == 0
    assert decoded["CFG_MSGOUT_NMEA_ID_ZDA_UART1"] == 1
    assert decoded["CFG_SIGNAL_GAL_ENA"] == 1
    assert decoded["CFG_SIGNAL_GLO_ENA"] == 0
    assert decoded["CFG_UART1_BAUDRATE"] == 230400
    assert frames[-1] == ubx.valset([("CFG-UART1-BAUDRATE", 230400)], layers=7)  # baud last


def test_no_save_writes_ram_only() -> None:
    frames = ubx.plan_valset(ubx.GnssSettings(save=False, baud=None))
    assert all(f[7] == ubx.LAYER_RAM for f in frames)
    assert len(frames) == 2


def test_legacy_plan() -> None:
    frames = ubx.plan_legacy(ubx.GnssSettings(rate_hz=5, nmea=frozenset({"RMC"}), baud=115200))
    assert frames[0] == ubx.cfg_rate(200)
    rmc = ubx.cfg_msg((0xF0, 0x04), (0, 1, 0, 1, 0, 0))
    gga_off = ubx.cfg_msg((0xF0, 0x00), (0, 0, 0, 0, 0, 0))
    assert rmc in frames
    assert gga_off in frames
    assert frames[-2] == ubx.cfg_cfg_save()
    assert frames[-1] == ubx.cfg_prt_uart(115200)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_hz": 50}, "rate_hz"),
        ({"constellations": frozenset({"gps", "navic2"})}, "navic2"),
        ({"nmea": frozenset({"GGA", "XYZ"})}, "XYZ"),
        ({"baud": 12345}, "baud"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ubx.UbxError, match=match):
        ubx.GnssSettings(**kwargs)


def test_value_range_is_checked() -> None:
    with pytest.raises(ubx.UbxError, match="does not fit"):
        ubx.valset([("CFG-RATE-MEAS", 70000)])
    with pytest.raises(ubx.UbxError, match="flag"):
        ubx.valset([("CFG-SIGNAL-GPS_ENA", 2)])
    with pytest.raises(ubx.UbxError, match="unknown configuration key"):
        ubx.valset([("CFG-RATE-MEASURE", 1)])


def test_reader_resyncs_through_nmea_noise_and_bad_checksums() -> None:
    good = ubx.frame(ubx.ACK_ACK, b"\x06\x8a")
    corrupt = bytearray(ubx.frame(ubx.ACK_ACK, b"\x06\x08"))
    corrupt[-1] ^= 0xFF
    stream = (
        b"$GNRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
        + b"\xb5"
        + bytes(corrupt)
        + good
        + b"\xb5\x62\x0a"
    )
    reader = ubx.UbxReader()
    frames = []
    for i in range(0, len(stream), 7):  # arrives in small pieces
        frames += list(reader.feed(stream[i : i + 7]))
    assert frames == [ubx.UbxFrame(ubx.ACK_ACK, b"\x06\x8a")]
    assert reader.bad_checksums == 1
    rest = ubx.frame(ubx.MON_VER, b"ROM CORE 3.01\0")
    # The stream ended with "b5 62 0a": the rest of that frame completes it.
    assert list(reader.feed(rest[3:])) == [ubx.UbxFrame(ubx.MON_VER, b"ROM CORE 3.01\0")]
    assert list(reader.feed(b"\x00\xb5\xb5" + rest)) == [ubx.UbxFrame(ubx.MON_VER, rest[6:-2])]


# -- the tool against a fake receiver on a pty ---------------------------------------------


class FakeReceiver:
    """Answers like a u-blox receiver: ACK-ACK (or NAK for chosen keys) and MON-VER."""

    def __init__(self, nak_key: int | None = None, silent: bool = False) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no newline translation: a wire, like a UART
        self.path = os.ttyname(slave)
        self._slave = slave
        self.nak_key = nak_key
        self.silent = silent
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        reader = ubx.UbxReader()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for fr in reader.feed(data):
                raw = ubx.frame(fr.msg, fr.payload)
                self.received.append(raw)
                if self.silent:
                    continue
                if fr.msg == ubx.MON_VER:
                    answer = ubx.frame(
                        ubx.MON_VER,
                        b"ROM SPG 4.04 (7f89f7)".ljust(30, b"\0") + b"00190000".ljust(10, b"\0"),
                    )
                elif self.nak_key is not None and self.nak_key.to_bytes(4, "little") in fr.payload:
                    answer = ubx.frame(ubx.ACK_NAK, bytes(fr.msg))
                else:
                    answer = ubx.frame(ubx.ACK_ACK, bytes(fr.msg))
                os.write(self.master, b"$GNGGA,,,,,,0,00,99.99,,,,,,*56\r\n" + answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    r = FakeReceiver()
    yield r
    r.close()


def test_configure_sends_every_frame_and_verifies(receiver: FakeReceiver) -> None:
    frames = ubx.plan_valset(ubx.GnssSettings(baud=115200))
    with serial.Serial(receiver.path, 9600, timeout=0.05) as port:
        version = configure.configure(port, frames, new_baud=115200, timeout_s=2)
        assert port.baudrate == 115200
    assert version == "ROM SPG 4.04 (7f89f7)"
    assert receiver.received[: len(frames)] == frames
    assert receiver.received[-1] == ubx.mon_ver_poll()


def test_configure_reports_a_nak() -> None:
    r = FakeReceiver(nak_key=ubx.KEYS["CFG-SIGNAL-GLO_ENA"])
    try:
        with (
            serial.Serial(r.path, 9600, timeout=0.05) as port,
            pytest.raises(configure.ConfigureError, match="refused UBX-CFG-VALSET"),
        ):
            configure.configure(port, ubx.plan_valset(ubx.GnssSettings()), new_baud=None)
    finally:
        r.close()


def test_configure_gives_up_on_silence() -> None:
    r = FakeReceiver(silent=True)
    try:
        with (
            serial.Serial(r.path, 9600, timeout=0.05) as port,
            pytest.raises(configure.ConfigureError, match="no ACK.*wrong port or baud"),
        ):
            configure.configure(port, [ubx.cfg_rate(200)], new_baud=None, timeout_s=0.2, retries=1)
        assert r.received == [ubx.cfg_rate(200)] * 2
    finally:
        r.close()


def test_cli_dry_run_prints_frames(capsys: pytest.CaptureFixture[str]) -> None:
    assert configure.main(["--dry-run", "--rate-hz", "5", "--new-baud", "115200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [bytes.fromhex(x) for x in lines] == ubx.plan_valset(ubx.GnssSettings(baud=115200))


def test_cli_bad_constellation_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert configure.main(["--dry-run", "--constellations", "gps,marsnet"]) == 2
    assert "marsnet" in capsys.readouterr().err


def test_configure_legacy_plan_changes_baud_last(receiver: FakeReceiver) -> None:
    frames = ubx.plan_legacy(ubx.GnssSettings(baud=115200))
    with serial.Serial(receiver.path, 9600, timeout=0.05) as port:
        configure.configure(port, frames, new_baud=115200, timeout_s=2)
        assert port.baudrate == 115200
    sent = receiver.received
    assert sent[: len(frames)] == frames
    assert sent[len(frames) - 1][2:4] == bytes(ubx.CFG_PRT)  # the port change went last
    assert sent[-1] == ubx.mon_ver_poll()  # and the receiver answered at the new rate
