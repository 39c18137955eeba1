"""Alert uplink configuration (``[sink]`` with ``type = "mqtt"``). Owned by the uplink work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.app.config_base import StrictModel


class MqttSinkConfig(StrictModel):
    type: Literal["mqtt"] = Field(description="Send alerts over MQTT through the durable outbox.")
    host: str = Field("localhost", description="Broker host name or address.", min_length=1)
    port: int = Field(1883, description="Broker TCP port.", ge=1, le=65535)
