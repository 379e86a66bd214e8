"""How well the default proxy ranks configs: `nas proxy-check` for training and zero-cost proxies.

Runs `nas proxy-check --configs N --json` for the default proxy (1 epoch) and for synflow,
both against 4x longer training, and prints their Spearman correlations and the seed noise
side by side. Run: .venv/bin/python benchmarks/proxy_fidelity.py [--configs 8]
(~40-60 minutes on 2 cores: the reference trains 8 configs for 4 epochs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def proxy_check(*extra: str) -> dict:
    command = [sys.executable, "-m", "nas.cli", "proxy-check", "--json", *extra]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    training = proxy_check("--configs", str(args.configs), "--seeds", str(args.seeds))
    zero_cost = proxy_check("--configs", str(args.configs), "--evaluator", "zero-cost")
    print(f"{'proxy':34s} {'Spearman':>9s} {'Kendall':>8s} {'seed sd':>8s} {'s/config':>9s}")
    for report in (training, zero_cost):
        seconds = sum(r["proxy_seconds"] for r in report["results"]) / len(report["results"])
        sd = "" if report["seed_sd"] is None else f"{report['seed_sd']:.4f}"
        print(f"{report['proxy']:34s} {report['spearman']:9.3f} {report['kendall_tau']:8.3f} {sd:>8s} {seconds:9.2f}")
    print(f"reference: {training['reference']} on {len(training['results'])} configs")


if __name__ == "__main__":
    main()
