"""``lut``: no device, only a lookup table (``nas search --device lut --lut TABLE``).

The evaluator predicts every config from the table (``measures = False``); a config the table
lacks fails with the table's "no entry for" reason instead of being measured. Probing or
measuring this device says to give a table, or a device that can time models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.latency.devices import Device, register_device
from nas.latency.errors import DeviceUnavailableError
from nas.latency.timing import RunSettings, Timing

__all__ = ["LutDevice"]


@register_device("lut")
class LutDevice(Device):
    usage = "lut"
    measures = False

    def _probe(self) -> dict[str, Any]:
        raise DeviceUnavailableError(self.missing_runtime_message({}))

    def missing_runtime_message(self, info: dict[str, Any]) -> str:
        return (f"{self.spec}: this device only stands for a lookup table and times nothing; pass --lut TABLE "
                f"(made by 'nas latency build-lut') or a device that measures (local, ssh://[user@]host[:port], "
                f"adb[:serial])")

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        raise DeviceUnavailableError(self.missing_runtime_message({}))
