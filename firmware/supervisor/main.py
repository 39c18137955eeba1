"""Pico entry point (MicroPython runs main.py at boot). Copy with:

    mpremote cp firmware/supervisor/{protocol,pins,supervisor,main}.py :

Pins come from pins.py, generated from hardware/pinmap.toml (never edit pins.py by hand).
"""

import time

import machine
import pins
import supervisor

UART_BAUD = 115200
TICK_MS = 10


def build(machine_mod=machine, time_mod=time, settings=None):
    Pin = machine_mod.Pin
    power = Pin(pins.PI_POWER_EN, Pin.OUT, value=0)
    ign_raw = Pin(pins.IGNITION_RAW, Pin.IN, Pin.PULL_UP)
    ign_out = Pin(pins.IGNITION, Pin.OUT, value=0)
    ir = Pin(pins.IR_STROBE, Pin.OUT, value=0)
    frame_sync = Pin(pins.FRAME_SYNC, Pin.IN)
    uart = machine_mod.UART(
        0, baudrate=UART_BAUD, tx=Pin(pins.UART_PICO_TO_PI), rx=Pin(pins.UART_PI_TO_PICO)
    )
    wdt = machine_mod.WDT(timeout=8000)
    diff = time_mod.ticks_diff
    strobe = supervisor.Strobe(ir, time_mod.ticks_us, time_mod.sleep_us, diff)
    frame_sync.irq(trigger=Pin.IRQ_RISING, handler=strobe.on_frame, hard=True)
    return supervisor.Supervisor(
        power_pin=power,
        ign_raw_pin=ign_raw,
        ign_out_pin=ign_out,
        uart=uart,
        ticks_ms=time_mod.ticks_ms,
        wdt=wdt,
        settings=settings,
        ign_raw_active_low=pins.IGNITION_RAW_ACTIVE_LOW,
        diff=diff,
        strobe=strobe,
    )


def run():
    sup = build()
    while True:
        try:
            sup.tick()
        except Exception as e:  # keep supervising whatever one message did; WDT covers hangs
            print("supervisor:", repr(e))
        time.sleep_ms(TICK_MS)  # type: ignore[attr-defined]  # MicroPython


if __name__ == "__main__":
    run()
