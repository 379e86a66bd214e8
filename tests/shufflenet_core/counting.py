"""Counting MACs and parameters on a *built* model, independently of ``complexity()``."""

from __future__ import annotations

import torch
from torch import nn


def hook_count(model: nn.Module, input_size: int, in_channels: int = 3) -> dict[str, int]:
    """MACs per conv / linear layer, measured with forward hooks on a batch-1 forward pass."""
    counts: dict[str, int] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
                counts[name] = per_output * output.numel()
            elif isinstance(module, nn.Linear):
                counts[name] = module.in_features * output.numel()

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(make_hook(name)))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, input_size, input_size))
    for handle in handles:
        handle.remove()
    return counts


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
