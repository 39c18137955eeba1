"""Power supervisor logic for the Raspberry Pi Pico (MicroPython; also runs under CPython).

What it does, every ``tick()`` (10 ms):

- **Ignition debounce.** The raw ignition line (optocoupler, noisy while cranking) must hold a
  new level for ``ign_on_ms`` / ``ign_off_ms`` before it counts. The clean level drives the Pi's
  ignition input (the Pi starts its clean shutdown from it) and is reported as ``IG``.
- **Hardware watchdog for the Pi.** Once powered, the Pi must send a heartbeat within
  ``boot_grace_s``, then at least every ``hb_timeout_s``; otherwise the Pico power-cycles it
  (supply EN low for ``cycle_off_s``). Not while the ignition is off: then the Pi is going down.
- **Clean power-off.** After the Pi announces ``SD`` (shutting down), the Pico waits until its
  heartbeats have stopped for ``halt_s`` and cuts the supply. If the ignition is off and the Pi
  never announces anything, the supply is cut after ``hard_off_s`` to save the battery. The
  ignition coming back powers the Pi up again.
- **IR strobe.** :class:`Strobe` pulses the 850 nm illuminator once per camera frame (frame
  sync interrupt), with a duty-cycle cap for the LEDs and the eyes of passing drivers.
- Its own ``machine.WDT`` is fed each tick, so a hung Pico resets itself.

Hardware objects (``machine.Pin``, ``machine.UART``, ``machine.WDT``) and the millisecond clock
are passed in; ``main.py`` builds the real ones. Tests use a fake ``machine`` module.
"""

import protocol

FW_VERSION = "1.0.0"


def _ticks_diff(a, b):
    """a - b in ms; MicroPython's ``time.ticks_diff`` where available (wrap-safe)."""
    return a - b


class Settings:
    def __init__(self, **kw):
        self.ign_on_ms = 500
        self.ign_off_ms = 2000
        self.boot_grace_s = 240
        self.hb_timeout_s = 60
        self.cycle_off_s = 10
        self.halt_s = 20
        self.hard_off_s = 900
        self.status_every_s = 10
        for k, v in kw.items():
            if not hasattr(self, k):
                raise ValueError("unknown setting " + k)
            setattr(self, k, v)


class Debouncer:
    """A level must hold ``on_ms`` (to go active) or ``off_ms`` (to go inactive) to count."""

    def __init__(self, initial, on_ms, off_ms):
        self.state = initial
        self._on_ms = on_ms
        self._off_ms = off_ms
        self._since = None

    def update(self, raw, now_ms, diff=_ticks_diff):
        """Returns the new state when it changes, else None."""
        if raw == self.state:
            self._since = None
            return None
        if self._since is None:
            self._since = now_ms
            return None
        need = self._on_ms if raw else self._off_ms
        if diff(now_ms, self._since) >= need:
            self.state = raw
            self._since = None
            return raw
        return None


class Strobe:
    """One IR pulse per frame-sync edge, never above ``max_duty_pct`` of the time."""

    def __init__(self, out_pin, ticks_us, sleep_us, diff=_ticks_diff):
        self._out = out_pin
        self._ticks_us = ticks_us
        self._sleep_us = sleep_us
        self._diff = diff
        self.on_us = 0
        self.max_duty_pct = 25
        self._last_us = None
        self.pulses = 0
        self.skipped = 0
        self._out.value(0)

    def configure(self, on_us, max_duty_pct):
        if not 0 <= on_us <= 5000:
            raise ValueError("on_us must be within 0..5000")
        if not 1 <= max_duty_pct <= 50:
            raise ValueError("max_duty_pct must be within 1..50")
        self.on_us = on_us
        self.max_duty_pct = max_duty_pct
        if on_us == 0:
            self._out.value(0)

    def on_frame(self, _pin=None):
        """Frame-sync interrupt handler: keep it short (no allocation on the hot path)."""
        if self.on_us == 0:
            return
        now = self._ticks_us()
        if self._last_us is not None:
            min_period_us = self.on_us * 100 // self.max_duty_pct
            if self._diff(now, self._last_us) < min_period_us:
                self.skipped += 1
                return
        self._last_us = now
        self._out.value(1)
        self._sleep_us(self.on_us)
        self._out.value(0)
        self.pulses += 1


class Supervisor:
    def __init__(
        self,
        *,
        power_pin,
        ign_raw_pin,
        ign_out_pin,
        uart,
        ticks_ms,
        wdt=None,
        settings=None,
        ign_raw_active_low=True,
        diff=_ticks_diff,
        strobe=None,
    ):
        self.s = settings or Settings()
        self._power = power_pin
        self._ign_raw = ign_raw_pin
        self._ign_out = ign_out_pin
        self._uart = uart
        self._ticks_ms = ticks_ms
        self._wdt = wdt
        self._active_low = ign_raw_active_low
        self._diff = diff
        self.strobe = strobe
        self._lines = protocol.LineBuffer()
        now = ticks_ms()
        self._last_tick_ms = now
        self.uptime_ms = 0  # accumulated per tick: ticks_ms wraps after ~12 days
        self.ignition = Debouncer(self._read_ign(), self.s.ign_on_ms, self.s.ign_off_ms)
        self.resets = 0
        self.bad_lines = 0
        self.last_hb_ms = None
        self.last_hb_seq = None
        self.pi_status = ""
        self.last_reason = ""
        self._shutdown_ms = None
        self._ign_off_ms = None if self.ignition.state else now
        self._last_status_ms = now
        self._ign_out.value(1 if self.ignition.state else 0)
        if self.ignition.state:
            self._enter("booting", now)
            self._power.value(1)
        else:
            self._enter("off", now)
            self._power.value(0)
        self._send("ST", *self._status_fields(now))

    # -- helpers -----------------------------------------------------------------------------

    def _read_ign(self):
        v = self._ign_raw.value()
        return (not v) if self._active_low else bool(v)

    def _enter(self, state, now):
        self.state = state
        self._state_ms = now

    def _elapsed_s(self, since_ms, now):
        return self._diff(now, since_ms) / 1000

    def _send(self, kind, *fields):
        self._uart.write(protocol.encode(kind, *fields))

    def _reject(self, reason):
        self.bad_lines += 1
        for ch in ",*$\r\n":
            reason = reason.replace(ch, " ")
        self._send("ER", reason[:60])

    def _status_fields(self, now):
        return (
            FW_VERSION,
            self.state,
            1 if self.ignition.state else 0,
            self.resets,
            self.uptime_ms // 1000,
        )

    def _power_cycle(self, now, why):
        self.resets += 1
        self._power.value(0)
        self._enter("cycling", now)
        self.last_hb_ms = None
        self._shutdown_ms = None
        self._send("ST", *self._status_fields(now))
        self.last_reason = why

    def _power_off(self, now):
        self._power.value(0)
        self._shutdown_ms = None
        self.last_hb_ms = None
        self._enter("off", now)
        self._send("ST", *self._status_fields(now))

    def _power_on(self, now):
        self._power.value(1)
        self._enter("booting", now)
        self._send("ST", *self._status_fields(now))

    # -- messages from the Pi ----------------------------------------------------------------

    def _handle(self, line, now):
        try:
            kind, fields = protocol.decode(line)
        except protocol.ProtocolError as e:
            self._reject(str(e))
            return
        if kind == "HB":
            self.last_hb_ms = now
            self.last_hb_seq = fields[0] if fields else None
            self.pi_status = fields[1] if len(fields) > 1 else ""
            if self.state == "booting":
                self._enter("running", now)
                self._send("ST", *self._status_fields(now))
        elif kind == "SD":
            try:
                if fields:
                    self.s.halt_s = max(5, min(120, int(fields[0])))
            except ValueError:
                self._reject("bad halt_s")
                return
            if self.state in ("booting", "running"):
                self._shutdown_ms = now
                self._enter("halting", now)
            self._send("AK", "SD")
        elif kind == "IR":
            if self.strobe is None:
                self._send("ER", "no strobe")
                return
            try:
                self.strobe.configure(int(fields[0]), int(fields[1]))
            except (ValueError, IndexError):
                self._reject("bad IR fields")
                return
            self._send("AK", "IR")
        elif kind == "QS":
            self._send("ST", *self._status_fields(now))
        else:
            self._reject("unknown kind " + kind)

    # -- the loop body -----------------------------------------------------------------------

    def tick(self):
        now = self._ticks_ms()
        self.uptime_ms += self._diff(now, self._last_tick_ms)
        self._last_tick_ms = now
        if self._wdt is not None:
            self._wdt.feed()
        self._read_uart(now)
        self._update_ignition(now)
        self._step(now)
        if self._elapsed_s(self._last_status_ms, now) >= self.s.status_every_s:
            self._last_status_ms = now
            self._send("ST", *self._status_fields(now))

    def _read_uart(self, now):
        n = self._uart.any()
        if n:
            data = self._uart.read(n)
            if data:
                for line in self._lines.feed(data):
                    self._handle(line, now)

    def _update_ignition(self, now):
        changed = self.ignition.update(self._read_ign(), now, self._diff)
        if changed is not None:
            self._ign_out.value(1 if changed else 0)
            self._send("IG", 1 if changed else 0)
            self._ign_off_ms = None if changed else now

    def _step(self, now):
        """The power state machine: one step per tick."""
        st = self.state
        if st == "off":
            if self.ignition.state:
                self._power_on(now)
        elif st == "cycling":
            self._step_cycling(now)
        elif st == "halting":
            self._step_halting(now)
        elif st in ("booting", "running"):
            self._step_up(now)

    def _step_cycling(self, now):
        if self._elapsed_s(self._state_ms, now) >= self.s.cycle_off_s:
            if self.ignition.state:
                self._power_on(now)
            else:
                self._enter("off", now)

    def _step_halting(self, now):
        halt_s = self.s.halt_s
        quiet_since = self.last_hb_ms if self.last_hb_ms is not None else self._shutdown_ms
        if (
            self._elapsed_s(quiet_since, now) >= halt_s
            and self._elapsed_s(self._shutdown_ms, now) >= halt_s
        ):
            if self.ignition.state:
                self._power_cycle(now, "halted with ignition on")  # bring it back up
            else:
                self._power_off(now)

    def _step_up(self, now):
        """Booting or running: the watchdog on the Pi, and the hard-off timer once the ignition
        is off."""
        s, st = self.s, self.state
        if not self.ignition.state:
            if self._elapsed_s(self._ign_off_ms, now) >= s.hard_off_s:
                self._power_off(now)  # the Pi never said goodbye: save the battery
        elif st == "booting" and self._elapsed_s(self._state_ms, now) >= s.boot_grace_s:
            self._power_cycle(now, "no heartbeat after boot")
        elif (
            st == "running"
            and self.last_hb_ms is not None
            and self._elapsed_s(self.last_hb_ms, now) >= s.hb_timeout_s
        ):
            self._power_cycle(now, "heartbeat lost")
