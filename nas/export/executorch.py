"""ExecuTorch programs (``.pte``) lowered to the XNNPACK delegate, in float32 and int8.

PyTorch's own mobile runtime: ``torch.export`` captures the plain ``nn.Conv2d(groups)`` build
(the fast CPU layers are custom autograd code that export should not trace), the XNNPACK
partitioner hands every op it supports to XNNPACK, and what is left runs in ExecuTorch's
portable kernels; the card records how much was delegated. int8 is PT2E post-training
quantization with the XNNPACK quantizer (symmetric, per-channel weights), calibrated on the
same training images as ONNX int8.

The program takes one fixed input shape (batch 1 at the training resolution): mobile apps
classify one image at a time, and XNNPACK plans memory for the static shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError

__all__ = ["EXECUTORCH_FILE", "EXECUTORCH_INT8_FILE", "PT2E_SCHEME", "executorch_logits", "padded_batches", "quantize_pt2e",
           "require_executorch", "write_executorch"]

EXECUTORCH_FILE = "model.pte"
EXECUTORCH_INT8_FILE = "model.int8.pte"


def require_executorch() -> None:
    """One clear line when the optional package is missing (checked before anything is written)."""
    import importlib.util

    # find_spec, not an import: importing ExecuTorch's compiler pulls torchao, whose warnings
    # about optional kernels would be printed before a command has done anything.
    try:
        found = importlib.util.find_spec("executorch.exir") is not None
    except ImportError:
        found = False
    if not found:
        raise UserError('the executorch formats need ExecuTorch: pip install "shufflenas[mobile]"')


def _plain_copy(model: Any) -> Any:
    """The plain build of a whole network; a part of one (a lookup table's unit, stem or head)
    has no config and is built plain by its caller."""
    from shufflenet_core import build_model

    if not hasattr(model, "config"):
        return model.eval()

    plain = build_model(model.config, fast=False)
    plain.load_state_dict(model.state_dict())
    return plain.eval()


PT2E_SCHEME = {"scheme": "PT2E, XNNPACK quantizer", "weights": "int8, symmetric, per channel",
               "activations": "int8, per tensor"}


def quantize_pt2e(model: Any, example: Any, calibration: np.ndarray) -> Any:
    """The PT2E int8 module of ``model`` (the plain build) for inputs shaped like ``example``,
    calibrated on ``calibration`` images in batches of ``example``'s size (a short last batch
    is padded with the first images, which leaves the observed ranges as they are)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    with torch.no_grad():
        for batch in padded_batches(calibration, int(example.shape[0])):
            prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)


def padded_batches(images: np.ndarray, size: int) -> list[np.ndarray]:
    """``images`` in batches of exactly ``size`` (an exported program's fixed shape)."""
    batches = []
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        if len(batch) < size:
            batch = np.concatenate([batch, np.resize(images, (size - len(batch), *images.shape[1:]))])
        batches.append(batch)
    return batches


def write_executorch(model: Any, path: Path, example: Any, *, calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Lower ``model`` for an input like ``example`` to ``path``; int8 when ``calibration``
    images are given. Returns what the card records (delegation counts included)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    plain = _plain_copy(model)
    exported = torch.export.export(plain, (example,))
    quantization = None
    if calibration is not None:
        exported = torch.export.export(quantize_pt2e(plain, example, calibration), (example,))
        quantization = {"images": int(len(calibration)), "split": "train", **PT2E_SCHEME}
    lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    delegation = get_delegation_info(lowered.exported_program().graph_module)
    program = lowered.to_executorch()
    path.write_bytes(program.buffer)
    delegated, left = int(delegation.num_delegated_nodes), int(delegation.num_non_delegated_nodes)
    return {
        "file": path.name, "format": "ExecuTorch program, XNNPACK delegate" + (" (int8)" if quantization else ""),
        "bytes": path.stat().st_size, "input_shape": list(example.shape),
        "delegation": {"subgraphs": int(delegation.num_delegated_subgraphs), "delegated_nodes": delegated,
                       "portable_nodes": left, "delegated_share": round(delegated / max(1, delegated + left), 4)},
        **({"quantization": quantization} if quantization else {}),
    }


def executorch_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Run the program in ExecuTorch's Python runtime, one image at a time."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return np.stack([method.execute([torch.from_numpy(image[None])])[0][0].numpy() for image in images])
