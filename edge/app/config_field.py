"""GPIO / field configuration (the ``[gpio]`` table). Owned by the field work; extend freely."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.app.config_base import StrictModel


class GpioConfig(StrictModel):
    pin_map: Path | None = Field(
        None, description="Pin map file; default: hardware/pinmap.toml shipped with phonewatch."
    )
