"""Fast layers vs the plain build, the official layout and torch.compile, side by side; ratios.

Run: .venv/bin/python benchmarks/speed.py [--repeats 3] [--threads 1] [--no-compile]

Peers: the plain build (``build_model(config, fast=False)``: nn.Conv2d with groups, the paper's
shuffle as reshape-transpose-reshape after the first pointwise conv; the reference every
PyTorch user starts from), the official megvii code's layout (benchmarks/official.py: the
shuffle after the depthwise conv), and torch.compile (inductor, dynamic=False) of the plain
build, what such a user would try first; its one-off compile time per architecture is printed
too, since a search builds a new architecture every trial.

Training: images/s of forward + backward + SGD (batch 128, Fashion-MNIST-like 1x32x32 at the
proxy resolution). Inference: eager latency, batch 1, 3x224x224, 1 thread, for 1.0x g3, 2.0x g3
and 1.0x g8 (the fast build runs the inference kernels of shufflenet_core/inference.py). ONNX Runtime: our
export of the fast build against the official layout exported the same way (legacy exporter),
batch 1, 1 thread, for 1.0x g3, 2.0x g3 and 1.0x g8. All sides alternate call by call and each
keeps its best time, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from official import build_official
from torch import nn
from torch.nn import functional as F

from shufflenet_core import ShuffleNetConfig, build_model

TRAINING_CONFIGS = [(3, 0.5), (3, 1.0), (3, 2.0), (8, 1.0)]
DEPLOY_CONFIGS = [(3, 1.0), (3, 2.0), (8, 1.0)]
"""The paper's deployment models, timed at batch 1, 224x224: eager and in ONNX Runtime."""
BATCH = 128
SIDES = ("plain", "official", "compiled", "fast")
"""Columns in order; a side that was not measured shows "-"."""


def build(config: ShuffleNetConfig, side: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_official(config) if side == "official" else build_model(config, fast=side == "fast")
    return torch.compile(model, dynamic=False) if side == "compiled" else model


def proxy_resolution() -> int:
    try:
        from nas.evaluation.proxy import DEFAULT_RECIPE
    except ImportError:  # the search package is optional for this benchmark
        return 32
    return DEFAULT_RECIPE.resolution


def best_of(functions: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Best wall time (s) of each function, alternating between them after one warm-up call."""
    for function in functions.values():
        function()
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def training_step(config: ShuffleNetConfig, side: str) -> Callable[[], None]:
    model = build(config, side).train()
    # Every side steps the same optimizer as the proxy training (nas/evaluation/training.py): fused on the CPU.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5, fused=True)
    images = torch.randn(BATCH, config.in_channels, config.input_size, config.input_size)
    labels = torch.randint(0, config.num_classes, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def inference(config: ShuffleNetConfig, side: str) -> Callable[[], None]:
    model = build(config, side).eval()
    image = torch.randn(1, 3, config.input_size, config.input_size)

    def run() -> None:
        with torch.no_grad():
            model(image)

    return run


def onnx_session(config: ShuffleNetConfig, side: str, folder: Path) -> Callable[[], None]:
    import onnxruntime

    from shufflenet_core.onnx_export import export_onnx

    path = export_onnx(build(config, side), folder / f"{side}.onnx", exporter="legacy", input_size=config.input_size,
                       in_channels=config.in_channels)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: torch.randn(1, 3, config.input_size, config.input_size).numpy()}
    return lambda: session.run(None, feed)


def warmed(functions: dict[str, Callable[[], None]]) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    """Each function after its first call, and how long that call took (torch.compile compiles then)."""
    first = {}
    for name, function in functions.items():
        start = time.perf_counter()
        function()
        first[name] = time.perf_counter() - start
    return functions, first


def row(label: str, best: dict[str, float], unit: str, sides: tuple[str, ...]) -> str:
    """A table row: each side's figure, then the fast build's ratio to every other side."""
    def shown(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        return f"{BATCH / seconds:.0f}" if unit == "img/s" else f"{seconds * 1e3:.2f}"

    cells = [shown(best.get(side)) for side in sides]
    cells += ["-" if side not in best else f"{best[side] / best['fast']:.2f}x" for side in sides if side != "fast"]
    return f"| {label} | " + " | ".join(cells) + " |"


def header(sides: tuple[str, ...]) -> str:
    names = {"plain": "plain nn.Conv2d", "official": "official layout", "compiled": "torch.compile(plain)",
             "fast": "fast"}
    columns = [names[side] for side in sides] + [f"fast vs {side}" for side in sides if side != "fast"]
    return "| measurement | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads for training (a search runs 1, see nas/backends/parallelism.py)"
    ))
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    args = parser.parse_args()
    sides = tuple(side for side in SIDES if side != "compiled" or not args.no_compile)
    resolution = proxy_resolution()
    print(f"torch {torch.__version__}, {args.threads} training threads, batch {BATCH}, proxy {resolution}x{resolution}")
    print(header(sides))
    compile_seconds: list[str] = []
    torch.set_num_threads(args.threads)
    for groups, width in TRAINING_CONFIGS:
        config = ShuffleNetConfig.from_width(groups, width, num_classes=10, in_channels=1, input_size=resolution)
        steps, first = warmed({side: training_step(config, side) for side in sides})
        if "compiled" in first:
            compile_seconds.append(f"train {width}x g{groups} {first['compiled']:.0f} s")
        print(row(f"train {width}x g{groups}, img/s", best_of(steps, args.repeats), "img/s", sides), flush=True)
    torch.set_num_threads(1)
    for groups, width in DEPLOY_CONFIGS:
        deploy = ShuffleNetConfig.from_width(groups, width)
        runs, first = warmed({side: inference(deploy, side) for side in sides})
        if "compiled" in first:
            compile_seconds.append(f"eager {width}x g{groups} {first['compiled']:.0f} s")
        print(row(f"eager {width}x g{groups} 224, batch 1, 1 thread, ms", best_of(runs, 4 * args.repeats), "ms", sides),
              flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for groups, width in DEPLOY_CONFIGS:
            config = ShuffleNetConfig.from_width(groups, width)
            sessions = {side: onnx_session(config, side, Path(folder)) for side in ("plain", "official", "fast")}
            print(row(f"ONNX Runtime {width}x g{groups} 224, 1 thread, ms", best_of(sessions, 20 * args.repeats), "ms",
                      sides), flush=True)
    if compile_seconds:
        print("torch.compile's first call (compiling): " + ", ".join(compile_seconds))


if __name__ == "__main__":
    main()
