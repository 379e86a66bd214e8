"""Design spaces from YAML or TOML files (``nas search --space FILE``).

Example (YAML)::

    groups: [3, 8]
    width: [0.5, 2.0]
    bottleneck_ratios: [0.25]
    stage_depths: [[2, 6], [4, 10], [2, 6]]
    stem_channels: [24]
    channel_shuffle: [true, false]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .space import DesignSpace

__all__ = ["SpaceFileError", "load_space"]


class SpaceFileError(ValueError):
    """A space file that cannot be read or does not describe a valid space."""


def load_space(path: str | os.PathLike) -> DesignSpace:
    """Read a ``.yaml``/``.yml``/``.toml``/``.json`` file into a :class:`DesignSpace`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SpaceFileError(f"no design-space file at {file}")
    try:
        text = file.read_text()
    except OSError as error:
        raise SpaceFileError(f"cannot read {file}: {error.strerror}") from None
    data = _parse(file, text)
    if not isinstance(data, dict):
        raise SpaceFileError(f"{file} must hold a mapping of design-space keys, e.g. 'groups: [3, 8]'")
    data = data.get("space", data)
    try:
        return DesignSpace.from_dict(data)
    except ValueError as error:
        raise SpaceFileError(f"{file}: {error}") from None


def _parse(file: Path, text: str) -> Any:
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix == ".json":
            import json

            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - each parser raises its own error type
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SpaceFileError(f"{file} is not valid {suffix[1:].upper()}: {first}") from None
    raise SpaceFileError(f"{file}: use a .yaml, .yml, .toml or .json file")
