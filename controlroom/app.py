"""Composition root of the control room: database, receiver, retention sweeper, dashboard.

``ControlRoom(cfg).start()`` runs everything in the background (threads) and returns; the
dashboard URL is ``.url``. ``phonewatch controlroom serve`` and the demo both use it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine

from controlroom import db
from controlroom.commands import CommandSink
from controlroom.config import Config
from controlroom.errors import ControlRoomError
from controlroom.receiver import CommandPublisher, Receiver
from controlroom.retention import Sweeper
from controlroom.web import create_app

log = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ControlRoom:
    def __init__(
        self,
        cfg: Config,
        *,
        receiver: bool = True,
        web: bool = True,
        retention: bool = True,
        engine: Engine | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine or db.make_engine(cfg.database.url)
        self.version = db.migrate(self.engine)
        self.receiver = Receiver(cfg.mqtt, self.engine) if receiver else None
        self.sweeper = Sweeper(self.engine, cfg.retention) if retention else None
        # Commands go out on the receiver's connection; a dashboard without one gets its own.
        self.publisher = CommandPublisher(cfg.mqtt) if web and not receiver else None
        self.commander: CommandSink | None = self.receiver or self.publisher
        self._web = web
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self.port = cfg.web.port or _free_port(cfg.web.host)
        self.url = f"http://{cfg.web.host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        return self.receiver.stats() if self.receiver is not None else {}

    def start(self, *, timeout_s: float = 15.0) -> ControlRoom:
        """Start everything; a second call does nothing."""
        if self._started:
            return self
        self._started = True
        if self.receiver is not None:
            self.receiver.start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.publisher is not None:
            self.publisher.start()
        if self._web:
            app = create_app(
                self.cfg,
                self.engine,
                stats=self.stats if self.receiver is not None else None,
                commander=self.commander,
            )
            # log_config=None: leave the host process's logging alone (uvicorn's dictConfig would
            # close handlers other code installed, e.g. absl's on sys.stderr).
            config = uvicorn.Config(
                app,
                host=self.cfg.web.host,
                port=self.port,
                log_config=None,
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._server.run, name="controlroom-web", daemon=True
            )
            self._thread.start()
            deadline = time.monotonic() + timeout_s
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    self.close()
                    raise ControlRoomError(f"dashboard did not start on {self.url} (port in use?)")
                time.sleep(0.02)
            log.info("dashboard at %s", self.url)
        return self

    def wait(self) -> None:
        """Block until the web server (or, without it, forever) stops."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.5)
        else:
            threading.Event().wait()

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.receiver is not None:
            self.receiver.close()
        if self.sweeper is not None:
            self.sweeper.close()
        if self.publisher is not None:
            self.publisher.close()
        with contextlib.suppress(Exception):
            self.engine.dispose()

    def __enter__(self) -> ControlRoom:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
