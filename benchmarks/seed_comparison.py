"""Several configs against a reference under the default proxy recipe, over many seeds.

One proxy run per config says little: seed noise (~0.7 points) is as large as most gaps. This
trains each config with the same seeds and prints mean +- sd and a one-sided permutation p of
"better than the reference" (the first config). Configs are preset names or knob specs whose
width is solved to fill the budget: `g1,b0.5,d2-4-2` (groups, bottleneck ratio, stage depths,
optional `c24` stem).

Run: .venv/bin/python benchmarks/seed_comparison.py shufflenet_v1_1.0x_g3 g1,b0.5,d2-4-2 g3,b0.5,d2-4-2 g2,b0.25,d2-6-2
     [--seeds 16] [--first-seed 300] [--budget 140M]   (~8 min for 4 configs x 16 seeds on 2 cores)
"""

from __future__ import annotations

import argparse
import statistics

from nas.analysis import permutation_p_value
from nas.budget import parse_budget
from nas.evaluation.data import load_data
from nas.evaluation.training import Recipe, prepare_data, train_config
from search_spaces import DesignSpace, solve_width
from shufflenet_core import PRESETS, ShuffleNetConfig, complexity, get_preset


def parse_config(text: str, budget_macs: int) -> ShuffleNetConfig:
    """A preset name, or `gG,bR,dA-B-C[,cS]` solved to the budget's widest fitting width."""
    if text in PRESETS:
        return get_preset(text)
    knobs = {part[0]: part[1:] for part in text.split(",") if part}
    if set(knobs) - set("gbdc") or not {"g", "b", "d"} <= set(knobs):
        raise SystemExit(f"config {text!r}: give a preset name or g<groups>,b<ratio>,d<depths>[,c<stem>]")
    return solve_width(
        DesignSpace(), budget_macs, groups=int(knobs["g"]), bottleneck_ratio=float(knobs["b"]),
        stage_depths=tuple(int(d) for d in knobs["d"].split("-")), stem_channels=int(knobs.get("c", 24)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="reference first: preset names or g1,b0.5,d2-4-2 specs")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=300)
    parser.add_argument("--budget", default="140M")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    budget = parse_budget(args.budget)
    configs = [parse_config(text, budget) for text in args.configs]
    recipe = Recipe(epochs=args.epochs, train_size=args.train_size)
    data = prepare_data(load_data(), recipe)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    scores: list[list[float]] = [[] for _ in configs]
    for seed in seeds:  # seed by seed, so an interrupted run still shows every config
        for index, config in enumerate(configs):
            scores[index].append(train_config(config, data, recipe, seed=seed).accuracy)
        print(f"seed {seed}: " + "  ".join(f"{s[-1]:.4f}" for s in scores), flush=True)
    print(f"\n{args.seeds} seeds ({seeds[0]}-{seeds[-1]}), {args.epochs} epoch(s) on {args.train_size} images:")
    reference = scores[0]
    for config, values in zip(configs, scores, strict=True):
        line = (f"  {config.short_name:36s} {complexity(config).macs / 1e6:6.1f}M  "
                f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f}")
        if values is not reference:
            gap = statistics.fmean(values) - statistics.fmean(reference)
            line += f"  {gap:+.4f} vs reference, p = {permutation_p_value(values, reference):.4f}"
        print(line)


if __name__ == "__main__":
    main()
