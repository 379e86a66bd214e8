"""A trained candidate's int8 accuracy: what ``nas search --precision int8`` reports beside float32.

Post-training static quantization done the way the runtime the user ships with does it (ONNX
Runtime: QDQ, per-channel weights, :mod:`nas.export.quantize`; ExecuTorch: PT2E with the
XNNPACK quantizer, :mod:`nas.export.executorch`), calibrated on
:data:`nas.export.quantize.CALIBRATION_IMAGES` of the candidate's own training images and
scored on the same validation images as its float32 accuracy: the gap between the two is the
quantization's, nothing else. Grouped and depthwise convs quantize very differently from dense
ones, so the front drawn on int8 accuracy need not be the float32 one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nas.evaluation.training import PreparedData
    from shufflenet_core import ShuffleNetConfig

__all__ = ["INT8_RUNTIMES", "Int8Accuracy", "int8_accuracy", "int8_scheme"]

EVAL_BATCH = 250


@dataclass(frozen=True)
class Int8Accuracy:
    accuracy: float
    """Top-1 accuracy of the int8 model on the validation images."""
    agreement: float
    """Share of those images where it names the same class as the float32 model."""
    fp32_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "agreement": self.agreement, "fp32_accuracy": self.fp32_accuracy,
                "seconds": round(self.seconds, 3)}


def _onnxruntime_logits(model: Any, calibration: np.ndarray, images: np.ndarray) -> np.ndarray:
    from nas.export.quantize import EvaluationImages, onnx_logits, quantize_onnx
    from shufflenet_core.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="nas-int8-accuracy-") as scratch:
        fp32, int8 = Path(scratch) / "model.onnx", Path(scratch) / "model.int8.onnx"
        export_onnx(model, fp32, input_size=images.shape[-1], in_channels=images.shape[1], dynamic_batch=True,
                    exporter="legacy")
        quantize_onnx(fp32, int8, EvaluationImages(calibration, None, "train"))
        return onnx_logits(int8, images, batch=EVAL_BATCH)


def _executorch_logits(model: Any, calibration: np.ndarray, images: np.ndarray) -> np.ndarray:
    """PT2E's int8 reference module run in PyTorch: the numerics the XNNPACK program computes,
    without the ~20 s lowering a .pte costs."""
    import torch

    from nas.export.executorch import padded_batches, quantize_pt2e, require_executorch

    require_executorch()
    batch = min(EVAL_BATCH, len(images))
    quantized = quantize_pt2e(model, torch.zeros(batch, *images.shape[1:]), calibration)
    with torch.no_grad():
        logits = np.concatenate([quantized(torch.from_numpy(chunk)).numpy() for chunk in padded_batches(images, batch)])
    return logits[: len(images)]


INT8_RUNTIMES: dict[str, Callable[[Any, np.ndarray, np.ndarray], np.ndarray]] = {
    "onnxruntime": _onnxruntime_logits,
    "executorch": _executorch_logits,
}
"""How each runtime quantizes a float32 model and runs it: (model, calibration, images) -> logits."""


def int8_scheme(runtime: str) -> dict[str, Any]:
    """What a study records about its trials' int8 accuracy (``nas.records.INT8_ACCURACY_SCHEME``)."""
    from nas.export.executorch import PT2E_SCHEME
    from nas.export.quantize import CALIBRATION_IMAGES, ONNX_SCHEME

    return {"runtime": runtime, "calibration_images": CALIBRATION_IMAGES, "calibration_split": "train",
            "evaluated_on": "the search's validation images",
            **(PT2E_SCHEME if runtime == "executorch" else ONNX_SCHEME)}


def int8_accuracy(config: ShuffleNetConfig, state_dict: dict[str, Any], data: PreparedData, runtime: str,
                  *, seed: int = 0) -> Int8Accuracy:
    """Quantize the trained weights for ``runtime`` and score them on ``data``'s validation images."""
    import torch

    from nas.export.quantize import CALIBRATION_IMAGES
    from shufflenet_core import build_model

    started = time.perf_counter()
    model = build_model(config, fast=False)
    model.load_state_dict({key: value.detach().cpu() for key, value in state_dict.items()})
    model.eval()
    order = np.random.default_rng(seed).permutation(len(data.train_labels))[:CALIBRATION_IMAGES]
    calibration = data.train_images[torch.from_numpy(order)].cpu().numpy()
    images, labels = data.val_images.cpu().numpy(), data.val_labels.cpu().numpy()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(images[start : start + EVAL_BATCH])).argmax(1).numpy()
                                    for start in range(0, len(images), EVAL_BATCH)])
    predicted = INT8_RUNTIMES[runtime](model, calibration, images).argmax(axis=1)
    return Int8Accuracy(
        accuracy=float((predicted == labels).mean()), agreement=float((predicted == reference).mean()),
        fp32_accuracy=float((reference == labels).mean()), seconds=time.perf_counter() - started,
    )
