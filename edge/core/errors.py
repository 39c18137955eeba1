"""One error root for phonewatch; each leaf also inherits the builtin it behaves like.

Callers can catch ``PhonewatchError`` for "an expected failure with a message for a person",
or the builtin (``ValueError``, ``OSError`` ...) as they would for any library.
"""

from __future__ import annotations


class PhonewatchError(Exception):
    """Root of every error phonewatch raises on purpose."""


class ConfigError(PhonewatchError, ValueError):
    """The configuration is invalid; the message names the key."""


class ModelError(PhonewatchError, ValueError):
    """A model file or its sidecar is missing, corrupt or inconsistent."""


class AcceleratorError(ModelError):
    """An accelerator was required but is not available (e.g. no Edge TPU)."""


class CameraError(PhonewatchError, OSError):
    """A frame source could not be opened or has stopped delivering frames."""


class RoiError(PhonewatchError, ValueError):
    """A driver-window region is malformed or lies outside the frame."""


class EvidenceError(PhonewatchError, OSError):
    """Evidence could not be written."""


class NmeaError(PhonewatchError, ValueError):
    """An NMEA 0183 sentence is malformed; it is dropped and counted."""


class NmeaChecksumError(NmeaError):
    """An NMEA sentence's checksum is wrong or (when required) missing."""


class GpsError(PhonewatchError, OSError):
    """A GPS source (serial port, gpsd, replay file) could not be opened or read."""


class MessageError(PhonewatchError, ValueError):
    """An alert, status, heartbeat or command message is malformed or fails its schema."""


class SignatureError(PhonewatchError, ValueError):
    """A signing key is missing, unreadable or of the wrong kind."""


class OutboxError(PhonewatchError, OSError):
    """The durable alert outbox cannot be opened or written."""


class BrokerError(PhonewatchError, RuntimeError):
    """A local MQTT broker could not be started or stopped."""


class GpioError(PhonewatchError, OSError):
    """A GPIO line (LED, buzzer, button, ignition) could not be claimed or driven."""


class SupervisorError(PhonewatchError, OSError):
    """The Pico power supervisor link failed (serial port, malformed or unanswered message)."""
