"""Search quality in one run, fixed seeds: samplers against random, and the search against the paper.

1. For each sampler (tpe, nsga2, random) and each seed, a `nas search` of N trials at one
   budget (presets off; tpe and nsga2 open with `nas search`'s default space-filling start
   design, random stays purely random); prints the hypervolume of the accuracy-MFLOPs front
   (reference: accuracy 0, MFLOPs = budget) as mean +- sd over seeds, its ratio to random's,
   and the mean proxy accuracy of each study's 5 best distinct configs (samples fill the
   budget, so the hypervolume mostly measures the cheapest config's slack).
2. The search's answer against the paper's 1x g3 preset (same proxy recipe). Picking the best
   of many noisy scores flatters the winner (seed noise is as large as the gaps), so the
   answer is chosen by racing, as a final NAS step would: the top `--finalists` distinct
   configs of all searches by proxy score are re-trained with seeds 100-101, the best
   `--survivors` of those with seeds 102-104 as well, and the best mean over seeds 100-104 is
   the answer. Only then are the answer and the paper's model trained with `--final-seeds`
   fresh seeds (200..) that took no part in any choice. "Beats" means a one-sided exact
   permutation test of the mean gap gives p < 0.05.
Studies already complete in `--storage` are reused, so the final stage can be re-run alone.

Run: .venv/bin/python benchmarks/search_quality.py [--trials 32] [--seeds 3] [--train-size 10000]
(~30 minutes on 2 cores with the defaults; `--storage FILE` keeps the studies for a re-run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas.analysis import hypervolume, objective_value, permutation_p_value
from nas.engine.outcome import count_toward_target
from nas.evaluation.data import load_data
from nas.evaluation.training import Recipe, prepare_data, train_config
from nas.records import load_records, study_info
from nas.results import best_trial
from shufflenet_core import get_preset

SAMPLERS = ("tpe", "nsga2", "random")


def run_search(storage: Path, study: str, sampler: str, seed: int, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "nas.cli", "search", "--final", "0", "--budget", args.budget, "--n-trials", str(args.trials),
        "--sampler", sampler, "--seed", str(seed), "--storage", str(storage), "--study", study, "--no-presets",
        "--train-size", str(args.train_size), "--epochs", str(args.epochs), "--seeds", str(args.trial_seeds),
        "--quiet",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def finished_trials(storage: Path, study: str) -> int:
    """Finished trials as `nas search --n-trials` counts them (0 for a study not yet made)."""
    try:
        loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{storage}")
    except KeyError:
        return 0
    return count_toward_target(load_records(loaded))


def measured(records) -> list:
    """Trials that were trained under the budget (not failed, pruned, over budget or skipped)."""
    return [r for r in records if r.evaluated and r.feasible]


def front_hypervolume(records, budget_mflops: float) -> float:
    points = [(objective_value(r, "accuracy"), objective_value(r, "mflops")) for r in measured(records)]
    return hypervolume(points, (0.0, budget_mflops), ("maximize", "minimize"))


def top_accuracy(records, count: int = 5) -> float:
    """Mean proxy accuracy of the ``count`` best distinct feasible configs a study found.

    Every sample fills >= 90% of the budget, so the front spans a few MFLOPs and its
    hypervolume mostly measures the cheapest config's width-quantization slack; this says
    how good the configs a sampler proposes are (all samplers get the same number of trials).
    """
    best: dict[str, float] = {}
    for r in measured(records):
        key = r.config.to_json()
        best[key] = max(best.get(key, 0.0), r.accuracy)
    ranked = sorted(best.values(), reverse=True)[:count]
    return statistics.fmean(ranked) if ranked else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="140M")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated, from tpe,nsga2,random")
    parser.add_argument("--trial-seeds", type=int, default=1, help="seeds per trial (nas search --seeds)")
    parser.add_argument("--finalists", type=int, default=12, help="configs re-trained in the first racing round")
    parser.add_argument("--survivors", type=int, default=4, help="configs re-trained in the second racing round")
    parser.add_argument("--final-seeds", type=int, default=8, help="fresh seeds for the final comparison")
    parser.add_argument("--storage", type=Path, default=None, help="Keep the studies in this SQLite file.")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = args.storage or Path(tempfile.mkdtemp()) / "search_quality.db"
    from nas.budget import parse_budget

    budget_mflops = parse_budget(args.budget) / 1e6
    samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]
    if not samplers or set(samplers) - set(SAMPLERS):
        parser.error(f"--samplers takes names from {','.join(SAMPLERS)}")
    results: dict[str, list[float]] = {s: [] for s in samplers}
    tops: dict[str, list[float]] = {s: [] for s in samplers}
    best_configs = []
    for seed in range(args.seeds):
        for sampler in samplers:
            name = f"{sampler}-seed{seed}" + (f"-x{args.trial_seeds}" if args.trial_seeds > 1 else "")
            done = storage.exists() and finished_trials(storage, name) >= args.trials
            seconds = 0.0 if done else run_search(storage, name, sampler, seed, args)
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage}")
            records = load_records(study)
            volume = front_hypervolume(records, budget_mflops)
            results[sampler].append(volume)
            tops[sampler].append(top_accuracy(records))
            best = best_trial(records, study_info(study))
            best_configs.extend((sampler, seed, r) for r in measured(records))
            cheapest = min((r.mflops for r in measured(records)), default=float("nan"))
            print(f"{name}: hypervolume {volume:.2f} (cheapest {cheapest:.1f}M) in {seconds:.0f} s; best {best.accuracy:.4f} "
                  f"at {best.mflops:.1f}M; top-5 mean {tops[sampler][-1]:.4f}", flush=True)

    print(f"\nHypervolume of the accuracy-MFLOPs front after {args.trials} trials at {args.budget} "
          f"({args.seeds} seeds, train-size {args.train_size}, {args.epochs} epoch(s)):")
    random_mean = statistics.fmean(results["random"]) if "random" in results else float("nan")
    for sampler in samplers:
        values = results[sampler]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        top = tops[sampler]
        ratio = statistics.fmean(values) / random_mean
        print(f"  {sampler:7s} {statistics.fmean(values):8.2f} +- {spread:5.2f}   ratio to random {ratio:.3f}"
              f"   top-5 proxy accuracy {statistics.fmean(top):.4f} +- {statistics.stdev(top) if len(top) > 1 else 0.0:.4f}")

    recipe = Recipe(epochs=args.epochs, train_size=args.train_size)
    data = prepare_data(load_data(), recipe)
    paper = get_preset("shufflenet_v1_1.0x_g3")
    unique: dict[str, tuple] = {}
    for sampler, seed, record in sorted(best_configs, key=lambda item: -item[2].accuracy):
        unique.setdefault(record.config.to_json(), (sampler, seed, record))
    final_seeds = [200 + s for s in range(args.final_seeds)]

    def trained(config, seeds) -> list[float]:
        return [train_config(config, data, recipe, seed=s).accuracy for s in seeds]

    scores: dict[str, list[float]] = {}
    contenders = list(unique.values())[: args.finalists]
    for round_seeds, keep in (([100, 101], args.survivors), ([102, 103, 104], 1)):
        print(f"\nRacing: {len(contenders)} configs re-trained with seeds {round_seeds} "
              f"(mean over all re-training seeds so far):")
        for _sampler, _seed, record in contenders:
            key = record.config.to_json()
            scores.setdefault(key, []).extend(trained(record.config, round_seeds))
            print(f"  {record.config.short_name} ({record.mflops:.1f}M, proxy {record.accuracy:.4f}): "
                  f"{statistics.fmean(scores[key]):.4f}", flush=True)
        contenders = sorted(contenders, key=lambda item: -statistics.fmean(scores[item[2].config.to_json()]))[:keep]
    sampler, seed, answer = contenders[0]
    paper_scores = trained(paper, final_seeds)
    answer_scores = trained(answer.config, final_seeds)
    print(f"\nFinal comparison with fresh seeds {final_seeds} (same recipe):")
    print(f"  paper 1.0x g3 (137.5 MFLOPs): {statistics.fmean(paper_scores):.4f} +- {statistics.stdev(paper_scores):.4f}")
    print(f"  search's answer ({sampler}, seed {seed}, trial {answer.number}, {answer.mflops:.1f} MFLOPs, "
          f"{answer.config.short_name}): {statistics.fmean(answer_scores):.4f} +- {statistics.stdev(answer_scores):.4f}")
    gap = statistics.fmean(answer_scores) - statistics.fmean(paper_scores)
    p_better = permutation_p_value(answer_scores, paper_scores)
    p_worse = permutation_p_value(paper_scores, answer_scores)
    if p_better < 0.05:
        verdict = "beats"
    elif p_worse < 0.05:
        verdict = "loses to"
    else:
        verdict = "ties with (gap inside the seed noise)"
    print(f"  the search {verdict} the paper's hand design: {gap:+.4f} "
          f"(one-sided permutation p = {min(p_better, p_worse):.3f} over {len(final_seeds)} + {len(final_seeds)} seeds)")
    print(f"\nstudies kept in {storage}")


if __name__ == "__main__":
    main()
