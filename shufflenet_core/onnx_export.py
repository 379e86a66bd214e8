"""ONNX export of a model or config: one file, batch 1 by default, standard Conv nodes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import ShuffleNetConfig

__all__ = ["DEFAULT_OPSET", "export_onnx"]

DEFAULT_OPSET = 18


def export_onnx(
    model_or_config: nn.Module | ShuffleNetConfig,
    path: str | os.PathLike,
    *,
    input_size: int | None = None,
    in_channels: int | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
) -> Path:
    """Write ``model_or_config`` to ``path`` as one self-contained ONNX file.

    ``exporter="dynamo"`` is torch's current exporter (folds BN into conv, ~2-5 s);
    ``"legacy"`` is the TorchScript exporter (~0.3 s, deprecated but handy for many small
    graphs such as latency lookup tables). A config is built with fresh weights.
    """
    from .model import ShuffleNetV1, build_model

    model = build_model(model_or_config) if isinstance(model_or_config, ShuffleNetConfig) else model_or_config
    config = model.config if isinstance(model, ShuffleNetV1) else None
    size = input_size or (config.input_size if config else 224)
    channels = in_channels or (config.in_channels if config else 3)
    example = torch.randn(batch_size, channels, size, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    kwargs: dict = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=dynamic, **kwargs)
            elif exporter == "legacy":
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes, **kwargs)
            else:
                raise ValueError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    finally:
        model.train(was_training)
    return path


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints progress and torchvision warnings; keep the user's terminal clean."""
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(previous)
