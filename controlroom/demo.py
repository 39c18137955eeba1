"""A throw-away control room for ``make demo``: SQLite in a work folder, the demo's units
registered, one operator, the dashboard on a free local port."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

from controlroom import crypto, db, users
from controlroom.app import ControlRoom
from controlroom.config import parse_config

DEMO_USER = "demo"
DEMO_PASSWORD = "phonewatch-demo"


def demo_control_room(
    workdir: Path,
    *,
    mqtt_host: str,
    mqtt_port: int,
    unit_keys: Mapping[str, Path],
    topic_root: str = "phonewatch",
    user: str = DEMO_USER,
    password: str = DEMO_PASSWORD,
    web_port: int = 0,
) -> ControlRoom:
    """Start (and return) a control room that accepts ``unit_keys`` (unit id -> public key
    PEM path). Register the units *before* they publish: alerts from unknown units are
    rejected. ``room.url`` is the dashboard; log in as ``user`` / ``password``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///controlroom.sqlite"},
            "mqtt": {
                "host": mqtt_host,
                "port": mqtt_port,
                "topic_root": topic_root,
                "client_id": "controlroom-demo",
                "share_group": "demo",
            },
            "web": {"port": web_port},
            # the demo's one user plays the evidence officer too: bundle export and originals
            "privacy": {"original_viewers": [user]},
        },
        base_dir=workdir,
    )
    room = ControlRoom(cfg)
    try:
        for unit, pub in unit_keys.items():
            key = crypto.parse_public_key(pub.read_bytes())
            db.upsert_unit(
                room.engine,
                unit,
                base64.b64encode(crypto.raw_public_bytes(key)).decode("ascii"),
                crypto.key_id(key),
            )
        users.add_user(room.engine, user, password, replace=True)
        room.start()
        if room.receiver is not None:
            room.receiver.wait_ready(10)
    except BaseException:
        room.close()
        raise
    return room
