"""Each unit's kernel time inside a whole network against the same unit run alone.

Run: .venv/bin/python benchmarks/unit_in_network.py [--groups 3] [--widths 1.0 1.5] [--runs 150]
     [--depths 4 8 4] [--no-classifier]

The latency table sums units timed alone; this says, from ONNX Runtime's own profile (1 thread,
batch 1, the table's export and session settings), which units of a network run slower or
faster in it than alone, so a misprediction can be traced to shapes instead of guessed at.
Prints per unit: the summed kernel time of its nodes in the network (the layout reorders ONNX
Runtime inserts between nodes count to the unit of the node before them), alone, the ratio,
and the weights of its convolutions outside ONNX Runtime's blocked layout (what the table's
unblocked term counts: those units are the ones that slow down inside a network).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

UNIT_NODE = re.compile(r"stages\.(\d+)\.(\d+)")


def profiled_kernels(path: Path, shape: tuple[int, ...], runs: int) -> dict[str, float]:
    """Median kernel time (us) of every node over ``runs`` profiled runs, after a warm-up."""
    import numpy as np
    import onnxruntime as ort

    from nas.latency.runner import session_options

    options = session_options(ort, threads=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    warmup = 30
    for _ in range(warmup + runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"].removesuffix("_kernel_time")].append(event["dur"])
    return {node: statistics.median(values[-runs:]) for node, values in times.items()}


def compare(config: Any, runs: int, folder: Path, *,
            classifier: bool = True) -> list[tuple[str, float, float, int | None]]:
    """(unit, kernel us in the network, kernel us alone, unblocked weights) for every unit in
    network order;
    ``classifier=False`` profiles the network with its classifier replaced by an identity, to
    tell whether its weights, streamed on every run, slow the units before it."""
    import onnxruntime as ort
    import torch

    from nas.latency.measure import export_module
    from nas.latency.runner import unblocked_conv_params
    from shufflenet_core import build_model
    from shufflenet_core.model import ShuffleUnit
    from shufflenet_core.structure import unit_specs

    torch.manual_seed(0)
    model = build_model(config).eval()
    if not classifier:
        model.classifier = torch.nn.Identity()
    exported = export_module(model, folder / "network.onnx", input_size=config.input_size,
                             in_channels=config.in_channels)
    network = profiled_kernels(exported, (1, config.in_channels, config.input_size, config.input_size), runs)
    in_network: dict[tuple[int, int], float] = defaultdict(float)
    unit: tuple[int, int] | None = None
    for node, us in network.items():  # in the order the nodes first ran
        match = UNIT_NODE.search(node)
        if match:
            unit = int(match[1]), int(match[2])
        elif not node.startswith("Reorder"):
            unit = None
        if unit is not None:
            in_network[unit] += us
    alone: dict[tuple[Any, ...], float] = {}
    unblocked: dict[tuple[Any, ...], int | None] = {}
    rows = []
    for spec in unit_specs(config):
        key = spec.shape_key()
        if key not in alone:
            torch.manual_seed(0)
            path = export_module(ShuffleUnit(spec).eval(), folder / f"unit{len(alone)}.onnx",
                                 input_size=spec.input_size, in_channels=spec.in_channels)
            alone[key] = sum(profiled_kernels(path, (1, spec.in_channels, spec.input_size, spec.input_size),
                                              runs).values())
            unblocked[key] = unblocked_conv_params(ort, str(path), 1)
        rows.append((f"stage {spec.stage + 2} unit {spec.unit} ({spec.in_channels}->{spec.out_channels} "
                     f"at {spec.input_size}px)", in_network[spec.stage, spec.unit], alone[key], unblocked[key]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 1.5])
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--depths", type=int, nargs="+", default=None,
                        help="Units per stage (default: the paper's 4 8 4).")
    parser.add_argument("--no-classifier", action="store_true",
                        help="Profile the networks with their classifier replaced by an identity.")
    args = parser.parse_args(argv)

    from shufflenet_core import ShuffleNetConfig

    for width in args.widths:
        depths = {"stage_depths": tuple(args.depths)} if args.depths else {}
        try:
            config = ShuffleNetConfig.from_width(args.groups, width, **depths)
        except ValueError as error:
            parser.error(str(error))
        with tempfile.TemporaryDirectory() as folder:
            rows = compare(config, args.runs, Path(folder), classifier=not args.no_classifier)
        network = "the network without its classifier" if args.no_classifier else "the network"
        print(f"{width}x g{args.groups} {config.stage_out_channels}, depths {config.stage_depths}: unit kernel "
              f"time in {network} vs alone")
        for name, inside, alone, outside_blocked in rows:
            weights = "?" if outside_blocked is None else f"{outside_blocked / 1e6:.2f} M"
            print(f"  {name:40s} {inside:8.1f} vs {alone:8.1f} us  x{inside / alone:.2f}  unblocked weights {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
