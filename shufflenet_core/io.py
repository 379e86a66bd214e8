"""A model on disk as two plain files: ``config.json`` (the architecture) and ``model.pt``.

``model.pt`` holds only a state_dict of tensors, so it loads with ``torch.load(...,
weights_only=True)``: opening a downloaded model never runs code from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ShuffleNetConfig

if TYPE_CHECKING:
    from torch import nn

    from .model import ShuffleNetV1

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load", "load_config", "load_state_dict", "save"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


def save(model: nn.Module, directory: str | os.PathLike, *, config: ShuffleNetConfig | None = None) -> Path:
    """Write ``model``'s config and state_dict into ``directory`` (created if missing).

    ``config`` is needed only for a module that is not a :class:`ShuffleNetV1`.
    """
    import torch

    config = config or getattr(model, "config", None)
    if not isinstance(config, ShuffleNetConfig):
        raise ValueError("save needs a ShuffleNetV1 model or an explicit config=ShuffleNetConfig")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config.to_json(indent=2) + "\n", encoding="utf-8")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    return directory


def load_config(directory: str | os.PathLike) -> ShuffleNetConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: is it a folder written by shufflenet_core.save?")
    return ShuffleNetConfig.from_json(path.read_text(encoding="utf-8"))


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A state_dict file, read safely; also accepts ``{"state_dict": {...}, ...}`` checkpoints."""
    import torch

    try:
        loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - pickle and zip errors come in many kinds
        raise ValueError(f"{path} is not a weights-only PyTorch state_dict file: {error}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(key, str) for key in loaded):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of tensor names to tensors)")
    return dict(loaded)


def load(directory: str | os.PathLike) -> ShuffleNetV1:
    """The model saved in ``directory``, on CPU and in eval mode."""
    from .model import build_model

    config = load_config(directory)
    model = build_model(config)
    state = load_state_dict(Path(directory) / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"the weights in {directory} do not fit its {CONFIG_FILE}: {first}") from None
    return model.eval()
