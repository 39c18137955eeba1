"""TLS and credentials for a paho client, the same on the unit and in the control room.

A missing or unreadable file is a :class:`ConfigError` that names the key (``sink.ca_file``,
``mqtt.cert_file``), not an ``ssl`` traceback.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt

from edge.core.errors import ConfigError


def configure_client(
    client: mqtt.Client,
    *,
    section: str,
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """TLS when ``ca_file`` is given (with a client certificate when ``cert_file`` is), and a
    username/password when ``username`` is. ``section`` prefixes the keys in error messages."""
    if ca_file is not None:
        for key, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{section}.{key}: file not found: {path}")
        try:
            client.tls_set(
                ca_certs=str(ca_file),
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
            )
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"{section}.ca_file / cert_file / key_file: cannot load TLS files "
                f"({ca_file}, {cert_file}, {key_file}): {e}"
            ) from None
    if username:
        client.username_pw_set(username, password)
