"""ONNX export of a model or config: one file, batch 1 by default, standard Conv nodes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .config import ShuffleNetConfig

__all__ = ["DEFAULT_OPSET", "OnnxCheck", "check_onnx", "export_onnx"]

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
    dynamic_spatial: bool = False,
) -> Path:
    """Write ``model_or_config`` to ``path`` as one self-contained ONNX file.

    ``exporter="dynamo"`` is torch's current exporter (folds BN into conv, ~2-5 s);
    ``"legacy"`` is the TorchScript exporter (~0.3 s, deprecated but handy for many small
    graphs such as latency lookup tables). A config is built with fresh weights.
    ``dynamic_spatial`` leaves height and width free (>= 32), so one file serves the training
    resolution and the deployment resolution alike.
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
                axes_dims = {}
                if dynamic_batch:
                    axes_dims[0] = torch.export.Dim("batch", min=1, max=4096)
                if dynamic_spatial:
                    axes_dims[2] = torch.export.Dim("height", min=32, max=4096)
                    axes_dims[3] = torch.export.Dim("width", min=32, max=4096)
                dynamic = {"x": axes_dims} if axes_dims else None
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=dynamic, **kwargs)
            elif exporter == "legacy":
                input_axes = {**({0: "batch"} if dynamic_batch else {}), **({2: "height", 3: "width"} if dynamic_spatial else {})}
                axes = {"input": input_axes, "output": {0: "batch"} if dynamic_batch else {}} if input_axes else None
                torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes, **kwargs)
            else:
                raise ValueError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    finally:
        model.train(was_training)
    return path


class OnnxCheck(NamedTuple):
    """What :func:`check_onnx` found: the file's opset and the largest output difference."""

    opset: int
    max_abs_diff: float
    batch_sizes: tuple[int, ...]


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    atol: float = 1e-4,
    batch_sizes: tuple[int, ...] = (1,),
    seed: int = 0,
    input_size: int | None = None,
) -> OnnxCheck:
    """Prove an exported file is the model: ``onnx.checker`` passes and ONNX Runtime agrees.

    Runs the file and ``model`` (in eval mode) on the same seeded random input for each batch
    size (at ``input_size`` where the file leaves height and width free; by default the
    config's) and raises ``ValueError`` when any output differs by more than ``atol``.
    """
    import numpy as np
    import onnx
    import onnxruntime

    path = Path(path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 0)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_meta = session.get_inputs()[0]
    config = getattr(model, "config", None)
    default_size = input_size or (config.input_size if config is not None else 224)
    channels, height, width = (dim if isinstance(dim, int) else default_size for dim in input_meta.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for batch in batch_sizes:
            example = torch.randn(batch, channels, height, width, generator=generator)
            with torch.no_grad():
                expected = model(example).cpu().numpy()
            actual = session.run(None, {input_meta.name: example.numpy()})[0]
            if actual.shape != expected.shape:
                raise ValueError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
            worst = max(worst, float(np.abs(actual - expected).max()))
    finally:
        model.train(was_training)
    if worst > atol:
        raise ValueError(f"ONNX Runtime and PyTorch outputs differ by {worst:.3g} (> {atol:g}) for {path}")
    return OnnxCheck(opset=opset, max_abs_diff=worst, batch_sizes=tuple(batch_sizes))


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
