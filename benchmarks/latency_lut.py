"""How well a per-device lookup table predicts whole-network latency on this host.

Builds the table for the default space (groups {1,2,3,4,8} x widths 0.25-2.0, every unit shape
plus stems and heads) on ``--device`` (default local), then measures ``--n`` random configs
of that space and prints the share predicted within +-10% (nn-Meter reports 99.0% on a
Cortex-A76). The same as ``nas latency build-lut`` followed by ``nas latency validate``.

    .venv/bin/python benchmarks/latency_lut.py [--device local] [--n 50] [--out lut.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nas.latency import RunSettings, open_device
from nas.latency.lut import build_lut, sample_distinct, validate_lut
from nas.latency.space import default_space


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/latency_lut_local.json"))
    parser.add_argument("--report", type=Path, default=None, help="Write the validation rows as JSON here.")
    args = parser.parse_args(argv)

    device = open_device(args.device)
    space = default_space()
    settings = RunSettings(threads=args.threads, rounds=5)
    started = time.perf_counter()
    lut = build_lut(device, space.covering(), sample_distinct(space.sample, args.calibration, seed=1),
                    settings=settings, space_name=space.name, progress=lambda text: print(text, file=sys.stderr))
    lut.save(args.out)
    built = time.perf_counter() - started
    report = validate_lut(device, lut, sample_distinct(space.sample, args.n, seed=1000), settings=settings)
    summary = report.to_dict()
    info = lut.device
    print(f"device: {args.device} ({info.get('arch')}, {info.get('cpu_model')}, {info.get('cores')} cores, "
          f"onnxruntime {info.get('onnxruntime')}, {args.threads} thread, clock {settings.effective_clock})")
    print(f"table: {len(lut.entries)} entries, overhead {lut.describe_overhead()}, built in {built:.0f} s")
    print(f"validation: {100 * report.within_share:.1f}% of {len(report.rows)} random configs within +-10% "
          f"(median |error| {100 * summary['median_abs_error']:.1f}%, max {100 * summary['max_abs_error']:.1f}%)")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
