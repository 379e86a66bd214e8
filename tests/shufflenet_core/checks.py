"""Checks shared by the layer tests: which implementation ran, and closeness to float64."""

from __future__ import annotations

import torch


def backward_nodes(tensor: torch.Tensor) -> set[str]:
    """Names of every backward node behind ``tensor``."""
    seen, names, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest difference over the reference's largest magnitude."""
    return ((actual.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def assert_training_batch_norm_close(out, expected, x, reference_x, bn, reference_bn, *, input_bound: float) -> None:
    """A float32 training BN step (output, input, weight and bias gradients, running
    statistics) equals its float64 ``reference_bn`` step to float32 rounding."""
    assert relative_error(out, expected) < 1e-6
    assert relative_error(x.grad, reference_x.grad) < input_bound
    assert relative_error(bn.weight.grad, reference_bn.weight.grad) < 1e-6
    assert relative_error(bn.bias.grad, reference_bn.bias.grad) < 1e-6
    for name, value in reference_bn.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[name], value.to(bn.state_dict()[name].dtype), atol=1e-6, rtol=1e-6,
                                   msg=name)


def randomize_batch_norms(model: torch.nn.Module) -> None:
    """Non-trivial statistics and affines, so a wrong fold cannot hide behind identity BNs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.5)
