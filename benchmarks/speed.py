"""Fast layers vs the plain nn.Conv2d(groups) build and torch.compile of it, side by side; ratios.

Run: .venv/bin/python benchmarks/speed.py [--repeats 3] [--threads 1] [--no-compile]

The plain build is the official megvii code's layout reproduced in-repo (nn.Conv2d with
groups, channel shuffle as reshape-transpose-reshape): the reference every PyTorch user starts
from. torch.compile (inductor, dynamic=False) of that build is what such a user would try
first; its one-off compile time per architecture is printed too, since a search builds a new
architecture every trial.

Training: images/s of forward + backward + SGD (batch 128, Fashion-MNIST-like 1x32x32 at the
proxy resolution). Inference: eager latency, batch 1, 3x224x224, 1 thread. ONNX Runtime: the
export of each build (legacy exporter), batch 1, 1 thread. The two builds alternate step by
step and each keeps its best time, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from shufflenet_core import ShuffleNetConfig, build_model

TRAINING_CONFIGS = [(3, 0.5), (3, 1.0), (3, 2.0), (8, 1.0)]
BATCH = 128


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


def training_step(config: ShuffleNetConfig, fast: bool, compiled: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(config, fast=fast).train()
    if compiled:
        model = torch.compile(model, dynamic=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
    images = torch.randn(BATCH, config.in_channels, config.input_size, config.input_size)
    labels = torch.randint(0, config.num_classes, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def inference(config: ShuffleNetConfig, fast: bool, compiled: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(config, fast=fast).eval()
    if compiled:
        model = torch.compile(model, dynamic=False)
    image = torch.randn(1, 3, config.input_size, config.input_size)

    def run() -> None:
        with torch.no_grad():
            model(image)

    return run


def onnx_session(config: ShuffleNetConfig, fast: bool, folder: Path) -> Callable[[], None]:
    import onnxruntime

    from shufflenet_core.onnx_export import export_onnx

    path = export_onnx(build_model(config, fast=fast), folder / f"{'fast' if fast else 'plain'}.onnx", exporter="legacy")
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


def row(label: str, best: dict[str, float], unit: str, *, compile_column: bool) -> str:
    """A table row; with ``compile_column``, "-" where torch.compile was not measured."""
    def shown(seconds: float) -> str:
        return f"{BATCH / seconds:.0f}" if unit == "img/s" else f"{seconds * 1e3:.2f}"

    compiled = best.get("compiled")
    cells = [shown(best["plain"])]
    if compile_column:
        cells.append("-" if compiled is None else shown(compiled))
    cells += [shown(best["fast"]), f"{best['plain'] / best['fast']:.2f}x"]
    if compile_column:
        cells.append("-" if compiled is None else f"{compiled / best['fast']:.2f}x")
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads for training (a search runs 1, see nas/backends/parallelism.py)"
    ))
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    args = parser.parse_args()
    compile_too = not args.no_compile
    resolution = proxy_resolution()
    print(f"torch {torch.__version__}, {args.threads} training threads, batch {BATCH}, proxy {resolution}x{resolution}")
    if compile_too:
        print("| measurement | plain nn.Conv2d | torch.compile(plain) | fast | fast vs plain | fast vs compiled |")
        print("|---|---|---|---|---|---|")
    else:
        print("| measurement | plain nn.Conv2d | fast | speed-up |\n|---|---|---|---|")
    compile_seconds: list[str] = []
    torch.set_num_threads(args.threads)
    for groups, width in TRAINING_CONFIGS:
        config = ShuffleNetConfig.from_width(groups, width, num_classes=10, in_channels=1, input_size=resolution)
        steps = {"plain": training_step(config, False), "fast": training_step(config, True)}
        if compile_too:
            steps["compiled"] = training_step(config, False, compiled=True)
        steps, first = warmed(steps)
        if compile_too:
            compile_seconds.append(f"train {width}x g{groups} {first['compiled']:.0f} s")
        print(row(f"train {width}x g{groups}, img/s", best_of(steps, args.repeats), "img/s", compile_column=compile_too),
              flush=True)
    torch.set_num_threads(1)
    deploy = ShuffleNetConfig.from_width(3, 1.0)
    runs = {"plain": inference(deploy, False), "fast": inference(deploy, True)}
    if compile_too:
        runs["compiled"] = inference(deploy, False, compiled=True)
    runs, first = warmed(runs)
    if compile_too:
        compile_seconds.append(f"eager 1.0x g3 {first['compiled']:.0f} s")
    print(row("eager 1.0x g3 224, batch 1, 1 thread, ms", best_of(runs, 4 * args.repeats), "ms",
              compile_column=compile_too), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {"plain": onnx_session(deploy, False, Path(folder)), "fast": onnx_session(deploy, True, Path(folder))}
        print(row("ONNX Runtime 1.0x g3 224, 1 thread, ms", best_of(sessions, 4 * args.repeats), "ms",
                  compile_column=compile_too))
    if compile_seconds:
        print("torch.compile's first call (compiling): " + ", ".join(compile_seconds))


if __name__ == "__main__":
    main()
