"""Pico <-> Pi supervisor link: one ASCII line per message, NMEA-style framing.

    $PW<KIND>[,field,...]*<XOR checksum, 2 hex digits>\\r\\n

The checksum is the XOR of every character between ``$`` and ``*`` (as in NMEA 0183). KIND is
two capital letters. 115200 8N1 on the Pico's UART0 and the Pi 5's UART2 (pins in
hardware/pinmap.toml). Documented in docs/field.md ("Supervisor link").

Pi -> Pico                                   Pico -> Pi
  HB,<seq>,<status>   heartbeat (every 2 s)    ST,<fw>,<state>,<ign 0|1>,<resets>,<uptime_s>
  SD,<halt_s>         "I am shutting down:     IG,<0|1>   debounced ignition changed
                      cut power halt_s after   AK,<KIND>  command accepted
                      my heartbeats stop"      ER,<reason> line rejected (bad checksum ...)
  IR,<on_us>,<duty%>  IR strobe per frame
                      (on_us 0 = off)
  QS                  ask for an ST now

This file runs on the Pico (MicroPython) and under CPython; the Pi's own implementation is
``edge/adapters/supervisor.py``, and the tests hold the two to each other.
"""

MAX_LINE = 96
KINDS_TO_PICO = ("HB", "SD", "IR", "QS")
KINDS_TO_PI = ("ST", "IG", "AK", "ER")


class ProtocolError(ValueError):
    pass


def checksum(body):
    x = 0
    for ch in body:
        x ^= ord(ch)
    return x


def encode(kind, *fields):
    if len(kind) != 2 or not kind.isupper():
        raise ProtocolError("kind must be two capital letters")
    body = "PW" + kind
    for f in fields:
        text = str(f)
        if "," in text or "*" in text or "$" in text or "\n" in text:
            raise ProtocolError("field may not contain , * $ or newline")
        body += "," + text
    line = f"${body}*{checksum(body):02X}\r\n"
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    return line.encode()


def decode(line):
    """``b'$PWHB,1,run*4C\\r\\n'`` -> ``('HB', ['1', 'run'])``; ProtocolError if malformed."""
    try:
        text = line.decode().strip()
    except UnicodeError:
        raise ProtocolError("not ASCII") from None
    if len(text) > MAX_LINE:
        raise ProtocolError("line too long")
    if not text.startswith("$PW") or len(text) < 8 or text[-3] != "*":
        raise ProtocolError("not a PW line")
    body = text[1:-3]
    try:
        got = int(text[-2:], 16)
    except ValueError:
        raise ProtocolError("checksum is not hex") from None
    if got != checksum(body):
        raise ProtocolError("bad checksum")
    parts = body.split(",")
    kind = parts[0][2:]
    if len(kind) != 2:
        raise ProtocolError("bad kind")
    return kind, parts[1:]


class LineBuffer:
    """Bytes in, whole lines out; overlong garbage is dropped."""

    def __init__(self):
        self._buf = b""
        self.dropped = 0

    def feed(self, data):
        self._buf += data
        lines = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                break
            line, self._buf = self._buf[: i + 1], self._buf[i + 1 :]
            if len(line) > MAX_LINE + 2:
                self.dropped += 1
                continue
            lines.append(line)
        if len(self._buf) > MAX_LINE + 2:
            self._buf = b""
            self.dropped += 1
        return lines
