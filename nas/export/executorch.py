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

__all__ = ["EXECUTORCH_FILE", "EXECUTORCH_INT8_FILE", "executorch_logits", "require_executorch", "write_executorch"]

EXECUTORCH_FILE = "model.pte"
EXECUTORCH_INT8_FILE = "model.int8.pte"


def require_executorch() -> None:
    """One clear line when the optional package is missing (checked before anything is written)."""
    try:
        import executorch.exir  # noqa: F401
    except ImportError:
        raise UserError('the executorch formats need ExecuTorch: pip install "shufflenas[mobile]"') from None


def _plain_copy(model: Any) -> Any:
    from shufflenet_core import build_model

    plain = build_model(model.config, fast=False)
    plain.load_state_dict(model.state_dict())
    return plain.eval()


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
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(exported.module(), quantizer)
        with torch.no_grad():
            for image in calibration:  # one at a time: the program's shape is batch 1
                prepared(torch.from_numpy(image[None]))
        exported = torch.export.export(convert_pt2e(prepared), (example,))
        quantization = {"images": int(len(calibration)), "split": "train", "scheme": "PT2E, XNNPACK quantizer",
                        "weights": "int8, symmetric, per channel", "activations": "int8, per tensor"}
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
