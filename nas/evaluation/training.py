"""Short, seeded, deterministic training of a candidate on in-memory tensors.

The recipe follows ../shared/PROXY.md, which trained stably here: SGD with Nesterov momentum
0.9, lr 0.1, linear warm-up over the first 20% of steps then cosine decay, weight decay 4e-5,
and the last BN scale of each residual (stride-1) unit initialised to zero (without it, 1.0x g8
diverged).
Batches are drawn by indexing tensors: there is no per-sample Python on the hot path.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nas.evaluation.accelerator import CPU, Placement
from nas.evaluation.data import Dataset
from nas.interrupts import raise_if_interrupted
from shufflenet_core import ShuffleNetConfig, build_model
from shufflenet_core.model import ShuffleNetV1, ShuffleUnit

__all__ = [
    "PreparedData", "Recipe", "TrainResult", "evaluate", "evaluated_on_split", "prepare_data", "proxy_config",
    "train_config",
]

FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
"""Where SGD runs as one fused kernel over all parameters instead of a few ops per parameter
(the same update; on this 2-core CPU 1.0 vs 5.2 ms per step for 1.0x g3, 3.1 vs 8.9 ms for
2.0x g3, about 3-4% of a proxy training step)."""


@dataclass(frozen=True)
class Recipe:
    """How a candidate is trained; stored with every trial so results stay interpretable."""

    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_fraction: float = 0.2
    label_smoothing: float = 0.0
    resolution: int = 32
    train_size: int | None = None
    val_size: int | None = None
    horizontal_flip: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch size must be >= 2, got {self.batch_size}")
        if self.resolution < 32:
            raise ValueError(f"proxy resolution must be >= 32, got {self.resolution}")
        for name in ("train_size", "val_size"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ValueError(f"{name} must be >= 10 images, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PreparedData:
    """Normalised float tensors at the proxy resolution."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    in_channels: int
    resolution: int
    mean: torch.Tensor | None = None
    """Per-channel mean and std of the training images: every split is normalised with them."""
    std: torch.Tensor | None = None
    evaluated_on: str = "val"
    """Which split ``val_images`` holds: "val" (the search's validation images) or "test"."""


@dataclass
class TrainResult:
    val_accuracy_per_epoch: list[float]
    seconds: float
    diverged: bool
    model: ShuffleNetV1 = field(repr=False)

    @property
    def accuracy(self) -> float:
        return self.val_accuracy_per_epoch[-1]


def _subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A class-balanced (round-robin over classes) subset of ``size`` indices, seeded."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order: list[int] = []
    for rank in range(max(len(members) for members in per_class)):
        order.extend(members[rank] for members in per_class if rank < len(members))
    return np.sort(np.asarray(order[:size]))


def _to_tensor(images: np.ndarray, resolution: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if tensor.shape[-1] != resolution or tensor.shape[-2] != resolution:
        tensor = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return tensor


@lru_cache(maxsize=4)
def _prepare_cached(dataset: Dataset, resolution: int, train_size: int | None, val_size: int | None) -> PreparedData:
    train_index = _subset(dataset.train_labels, train_size, seed=0)
    val_index = _subset(dataset.val_labels, val_size, seed=1)
    train = _to_tensor(dataset.train_images[train_index], resolution)
    val = _to_tensor(dataset.val_images[val_index], resolution)
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return PreparedData(
        train_images=((train - mean) / std).contiguous(),
        train_labels=torch.from_numpy(dataset.train_labels[train_index]).long(),
        val_images=((val - mean) / std).contiguous(),
        val_labels=torch.from_numpy(dataset.val_labels[val_index]).long(),
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        resolution=resolution,
        mean=mean,
        std=std,
    )


def prepare_data(dataset: Dataset, recipe: Recipe) -> PreparedData:
    """Tensors for ``recipe`` (cached: every trial of a search shares them)."""
    return _prepare_cached(dataset, recipe.resolution, recipe.train_size, recipe.val_size)


def evaluated_on_split(data: PreparedData, dataset: Dataset, split: str) -> PreparedData:
    """The same training tensors, accuracy measured on another split of ``dataset`` ("val",
    "selection" or "test"), normalised like the training images."""
    assert data.mean is not None and data.std is not None, "prepare_data records the normalisation"
    if split == "val" and data.evaluated_on == "val":
        return data
    images, labels = dataset.split(split)
    held_out = (_to_tensor(images, data.resolution) - data.mean) / data.std
    return dataclasses.replace(
        data, val_images=held_out.contiguous(), val_labels=torch.from_numpy(labels).long(), evaluated_on=split
    )


def proxy_config(config: ShuffleNetConfig, data: PreparedData) -> ShuffleNetConfig:
    """The candidate as trained: same architecture, the data's classes, channels and size."""
    return config.replace(num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.resolution)


def _zero_init_last_bn(model: nn.Module) -> None:
    """Residual units start as identities. Not stride-2 units: their branch passes a ReLU of
    its own, whose gradient at exactly zero is zero, so a zero scale would never train."""
    for module in model.modules():
        if isinstance(module, ShuffleUnit) and module.stride == 1:
            nn.init.zeros_(module.bn3.weight)


def _learning_rate_factor(step: int, total: int, warmup_fraction: float) -> float:
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             place: Placement = CPU) -> float:
    """Top-1 accuracy in [0, 1] (on ``place``'s device, where the model is)."""
    model.eval()
    correct = 0
    device = torch.device(place.device)
    with place.autocast():
        for start in range(0, len(labels), batch_size):
            raise_if_interrupted()
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            if place.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = model(batch)
            correct += int((logits.argmax(dim=1).cpu() == labels[start : start + batch_size].cpu()).sum())
    return correct / max(1, len(labels))


_ON_DEVICE: dict[str, tuple[PreparedData, PreparedData]] = {}


def on_device(data: PreparedData, device: str) -> PreparedData:
    """``data`` with its tensors on ``device``, copied once per process and device (the proxy's
    data set is small: it lives on the GPU for every trial of a worker)."""
    if device == "cpu":
        return data
    cached = _ON_DEVICE.get(device)
    if cached is not None and cached[0] is data:
        return cached[1]
    target = torch.device(device)
    moved = dataclasses.replace(
        data, train_images=data.train_images.to(target), train_labels=data.train_labels.to(target),
        val_images=data.val_images.to(target), val_labels=data.val_labels.to(target),
    )
    _ON_DEVICE[device] = (data, moved)
    return moved


def train_config(
    config: ShuffleNetConfig,
    data: PreparedData,
    recipe: Recipe,
    *,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    place: Placement = CPU,
) -> TrainResult:
    """Train ``config`` on ``data`` and report validation accuracy after each epoch.

    ``on_epoch(epoch, accuracy)`` may raise (e.g. to prune the trial); ``on_step(done, total)``
    feeds progress bars. ``place`` is the device and precision (see
    :mod:`nas.evaluation.accelerator`); the returned model stays there.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    model = build_model(proxy_config(config, data), fast=place.fast_layers)
    _zero_init_last_bn(model)
    device = torch.device(place.device)
    if place.kind != "cpu":
        torch.backends.cudnn.benchmark = place.kind == "cuda"
        model = model.to(device, memory_format=torch.channels_last if place.channels_last else torch.contiguous_format)
        data = on_device(data, place.device)
    scaler = place.grad_scaler()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay, nesterov=True, fused=device.type in FUSED_OPTIMIZER_DEVICES,
    )
    count = len(data.train_labels)
    batches_per_epoch = count // recipe.batch_size if count >= recipe.batch_size else 1
    batch_size = min(recipe.batch_size, count)
    total_steps = batches_per_epoch * recipe.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, total_steps, recipe.warmup_fraction)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    accuracies: list[float] = []
    diverged = False
    started = time.perf_counter()
    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(count, generator=generator)
        for batch in range(batches_per_epoch):
            index = order[batch * batch_size : (batch + 1) * batch_size].to(device)
            images = data.train_images[index]
            if recipe.horizontal_flip:
                flip = (torch.rand(len(index), generator=generator) < 0.5).to(device)
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            if place.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with place.autocast():
                loss = criterion(model(images), data.train_labels[index])
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            step += 1
            raise_if_interrupted()  # a held Ctrl-C (see nas.interrupts) stops training here
            if on_step is not None:
                on_step(step, total_steps)
        accuracy = evaluate(model, data.val_images, data.val_labels, place=place)
        accuracies.append(accuracy)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
        if diverged:
            break
    return TrainResult(accuracies, time.perf_counter() - started, diverged, model)
