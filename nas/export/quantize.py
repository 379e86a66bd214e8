"""int8 as mobile engineers ship it: ONNX Runtime static quantization, and its accuracy.

Static (not dynamic) quantization: activation ranges are calibrated once, on
:data:`CALIBRATION_IMAGES` training images of the study's data (never a held-out split), so
the int8 graph runs without float fallbacks. QDQ format with per-channel weight scales:
grouped and depthwise convs have few weights per channel, and a per-tensor scale would cost
them most of their resolution. Activations are uint8 and weights int8 (ONNX Runtime's
recommended "U8S8" on x86 and ARM).

Each exported file's accuracy is then measured on the held-out test split with the runtime
that will run it, so the card shows the int8 drop beside float32.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_IMAGES", "ONNX_SCHEME", "RUNTIME_OF_FILE", "EvaluationImages", "WeightsData", "calibration_images",
           "file_accuracies", "onnx_accuracy", "quantize_onnx"]

CALIBRATION_IMAGES = 256
"""Training images that set the int8 activation ranges (ONNX Runtime's MinMax calibration)."""
CALIBRATION_BATCH = 32
RUNTIME_OF_FILE = {
    "model.onnx": ("onnxruntime", "fp32"),
    "model.int8.onnx": ("onnxruntime", "int8"),
    "model.pte": ("executorch", "fp32"),
    "model.int8.pte": ("executorch", "int8"),
}
"""The exported model files a runtime runs, with the runtime and precision of each (the card
measures each one's accuracy, and ``nas export --device`` its latency)."""
ONNX_SCHEME = {"scheme": "ONNX Runtime static quantization, QDQ, MinMax", "weights": "int8, per channel",
               "activations": "uint8, per tensor"}


@dataclass(frozen=True)
class EvaluationImages:
    """Normalised images as the exported model takes them (NCHW float32), and their labels."""

    images: np.ndarray
    labels: np.ndarray | None
    split: str
    """Which split they come from: "train" (calibration) or "test"."""


@dataclass(frozen=True)
class WeightsData:
    """The data and resolution exported weights were trained at."""

    data_spec: str
    resolution: int
    trained: bool
    """False for an untrained architecture: its accuracy means nothing and is not measured."""

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What an app must do to an image before the model sees it (the card's section)."""
        from nas.evaluation.data import load_data
        from nas.evaluation.training import Recipe, prepare_data

        dataset = load_data(self.data_spec)
        data = prepare_data(dataset, Recipe(resolution=self.resolution))
        assert data.mean is not None and data.std is not None
        return {
            "resize_to": [self.resolution, self.resolution],
            "channels": "grayscale (1 channel)" if dataset.in_channels == 1 else "RGB, in that order",
            "layout": "NCHW float32",
            "scale": "pixel / 255",
            "mean": [round(float(v), 6) for v in data.mean.flatten()],
            "std": [round(float(v), 6) for v in data.std.flatten()],
            "then": "(scaled - mean) / std per channel",
        }


def images_for(data_spec: str, resolution: int, split: str, count: int | None = None, seed: int = 0) -> EvaluationImages:
    """``count`` images of ``split`` (all when None), preprocessed exactly as the weights were
    trained (resolution, the training images' mean and std)."""
    from nas.evaluation.data import load_data
    from nas.evaluation.training import Recipe, evaluated_on_split, prepare_data

    dataset = load_data(data_spec)
    data = prepare_data(dataset, Recipe(resolution=resolution, train_size=None, val_size=None))
    if split == "train":
        order = np.random.default_rng(seed).permutation(len(data.train_labels))[: count or len(data.train_labels)]
        return EvaluationImages(data.train_images[order].numpy(), data.train_labels[order].numpy(), "train")
    held = evaluated_on_split(data, dataset, split)
    images, labels = held.val_images.numpy(), held.val_labels.numpy()
    if count is not None:
        images, labels = images[:count], labels[:count]
    return EvaluationImages(images, labels, split)


def calibration_images(weights: WeightsData | None, config: Any) -> EvaluationImages:
    """The training images int8 ranges are calibrated on; seeded random inputs when the model
    does not take the data's images (an untrained architecture, exported for its latency)."""
    if weights is not None:
        return images_for(weights.data_spec, weights.resolution, "train", CALIBRATION_IMAGES)
    random = np.random.default_rng(0).standard_normal(
        (CALIBRATION_IMAGES, config.in_channels, config.input_size, config.input_size), dtype=np.float32)
    return EvaluationImages(random, None, "random")


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a fixed set of images."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: images[start : start + batch]} for start in range(0, len(images), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: EvaluationImages) -> dict[str, Any]:
    """Write the static int8 (QDQ, per-channel) version of ``fp32_path``; what the card records."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert calibration.split in ("train", "random"), "int8 ranges are never calibrated on held-out images"
    meta = onnxruntime.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    fixed_batch = meta.shape[0] if isinstance(meta.shape[0], int) else None  # a file exported at batch 1
    with tempfile.TemporaryDirectory(prefix="nas-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # shapes and fusions ORT's quantizer expects
        quantize_static(
            str(prepared), str(int8_path), _Calibration(meta.name, calibration.images, fixed_batch or CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "file": int8_path.name, "format": "ONNX QDQ (static int8)", "bytes": int8_path.stat().st_size,
        "calibration": {"images": int(len(calibration.images)), "split": calibration.split, "method": "MinMax",
                        **{k: v for k, v in ONNX_SCHEME.items() if k != "scheme"}},
    }


def onnx_logits(path: Path, images: np.ndarray, batch: int = 250) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[start : start + batch]})[0] for start in range(0, len(images), batch)])


def onnx_accuracy(path: Path, test: EvaluationImages, reference: np.ndarray | None = None) -> dict[str, Any]:
    """Top-1 accuracy of ``path`` on ``test`` and, with float32 ``reference`` predictions, the
    share of images where it names the same class."""
    assert test.labels is not None
    predicted = onnx_logits(path, test.images).argmax(axis=1)
    result: dict[str, Any] = {"test_accuracy": round(float((predicted == test.labels).mean()), 6), "test_images": len(predicted)}
    if reference is not None:
        result["top1_agreement_with_fp32"] = round(float((predicted == reference).mean()), 6)
    return result


def file_accuracies(model: Any, folder: Path, files: Any, weights: WeightsData) -> dict[str, Any]:
    """Each exported model file's top-1 accuracy on the held-out test split, in the runtime
    that runs it, and how often it names the same class as the float32 PyTorch model."""
    import torch

    test = images_for(weights.data_spec, weights.resolution, "test")
    assert test.labels is not None
    model.eval()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(test.images[start : start + 250])).argmax(1).numpy()
                                    for start in range(0, len(test.images), 250)])
    rows = []
    if "model.pt" in files:
        rows.append({"file": "model.pt", "runtime": "pytorch", "precision": "fp32",
                     "test_accuracy": round(float((reference == test.labels).mean()), 6)})
    for name, (runtime, precision) in RUNTIME_OF_FILE.items():
        if name not in files:
            continue
        if runtime == "onnxruntime":
            rows.append({"file": name, "runtime": runtime, "precision": precision,
                         **onnx_accuracy(folder / name, test, reference)})
        else:
            from nas.export.executorch import executorch_logits

            predicted = executorch_logits(folder / name, test.images).argmax(axis=1)
            rows.append({"file": name, "runtime": "executorch (XNNPACK)", "precision": precision,
                         "test_accuracy": round(float((predicted == test.labels).mean()), 6), "test_images": len(predicted),
                         "top1_agreement_with_fp32": round(float((predicted == reference).mean()), 6)})
    return {"split": "test", "images": int(len(test.labels)), "data": weights.data_spec,
            "resolution": weights.resolution, "fp32_pytorch_accuracy": round(float((reference == test.labels).mean()), 6),
            "files": rows}
