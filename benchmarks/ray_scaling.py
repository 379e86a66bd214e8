"""Trials per hour of the Ray backend (1 and 2 concurrent trials) against the in-process search.

Runs the same tiny search (same seed, design space and recipe) three ways, side by side in
one run, each as a real ``nas search`` in a fresh storage:

    in-process     --workers 1 --threads 1
    ray x1         --backend ray --max-concurrent 1   (a local Ray started by nas itself)
    ray x2         --backend ray --max-concurrent 2

Wall time includes start-up (Ray's own start is part of its overhead). Usage:

    .venv/bin/python benchmarks/ray_scaling.py [--trials 8] [--epochs 2] [--train-size 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def run_search(folder: Path, name: str, extra: list[str], args: argparse.Namespace) -> float:
    command = [
        sys.executable, "-m", "nas.cli", "search", "--final", "0", "--n-trials", str(args.trials), "--epochs", str(args.epochs),
        "--train-size", str(args.train_size), "--val-size", "200", "--batch-size", "64", "--no-presets",
        "--no-early-stopping", "--storage", str(folder / f"{name}.db"), "--runs-dir", str(folder / name), "-q", *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **ENV}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=1000)
    args = parser.parse_args()
    runs = {
        "in-process": ["--workers", "1", "--threads", "1"],
        "ray x1": ["--backend", "ray", "--max-concurrent", "1"],
        "ray x2": ["--backend", "ray", "--max-concurrent", "2"],
    }
    with tempfile.TemporaryDirectory(prefix="nasbench") as tmp:
        seconds = {name: run_search(Path(tmp), name.replace(" ", "_"), extra, args) for name, extra in runs.items()}
    print(f"{args.trials} trials x {args.epochs} epochs on {args.train_size} images, {os.cpu_count()} CPUs")
    print(f"{'run':<12} {'wall s':>8} {'trials/h':>9} {'vs in-process':>14}")
    for name, value in seconds.items():
        print(f"{name:<12} {value:8.1f} {args.trials * 3600 / value:9.0f} {value / seconds['in-process']:13.2f}x")
    print(f"ray x2 speed-up over ray x1: {seconds['ray x1'] / seconds['ray x2']:.2f}x")


if __name__ == "__main__":
    main()
