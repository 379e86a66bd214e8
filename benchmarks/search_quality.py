"""Search quality in one run, fixed seeds: samplers against random, and the search against the paper.

1. For each sampler (tpe, nsga2, random) and each seed, a `nas search` of N trials at one
   budget (presets off); prints the hypervolume of the accuracy-MFLOPs front (reference:
   accuracy 0, MFLOPs = budget) as mean +- sd over seeds, and its ratio to random's.
2. The search's answer against the paper's 1x g3 preset (same proxy recipe). Picking the best
   of many noisy scores flatters the winner, so the answer is chosen in two stages, as a
   final NAS step would: the top `--finalists` configs of all searches (by proxy score) are
   re-trained with seeds 100.., the best mean is the answer, and only then are the answer and
   the paper's model trained with seeds 200.. that took no part in any choice.
Studies already complete in `--storage` are reused, so the final stage can be re-run alone.

Run: .venv/bin/python benchmarks/search_quality.py [--trials 16] [--seeds 3] [--train-size 10000]
(~15-25 minutes on 2 cores with the defaults).
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

from nas.analysis import hypervolume, objective_value
from nas.data import load_data
from nas.records import load_records
from nas.summary import best_record
from nas.training import Recipe, prepare_data, train_config
from shufflenet_core import get_preset

SAMPLERS = ("tpe", "nsga2", "random")


def run_search(storage: Path, study: str, sampler: str, seed: int, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "nas.cli", "search", "--budget", args.budget, "--n-trials", str(args.trials),
        "--sampler", sampler, "--seed", str(seed), "--storage", str(storage), "--study", study, "--no-presets",
        "--train-size", str(args.train_size), "--epochs", str(args.epochs), "--quiet",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def finished_trials(storage: Path, study: str) -> int:
    try:
        loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{storage}")
    except KeyError:
        return 0
    return sum(1 for t in loaded.get_trials(deepcopy=False) if t.state.name == "COMPLETE")


def front_hypervolume(records, budget_mflops: float) -> float:
    points = [
        (objective_value(r, "accuracy"), objective_value(r, "mflops"))
        for r in records
        if r.complete and r.feasible and not r.attrs.get("skipped")
    ]
    return hypervolume(points, (0.0, budget_mflops), ("maximize", "minimize"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="140M")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--finalists", type=int, default=5)
    parser.add_argument("--storage", type=Path, default=None, help="Keep the studies in this SQLite file.")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = args.storage or Path(tempfile.mkdtemp()) / "search_quality.db"
    from nas.budget import parse_budget

    budget_mflops = parse_budget(args.budget) / 1e6
    results: dict[str, list[float]] = {s: [] for s in SAMPLERS}
    best_configs = []
    for seed in range(args.seeds):
        for sampler in SAMPLERS:
            name = f"{sampler}-seed{seed}"
            done = storage.exists() and finished_trials(storage, name) >= args.trials
            seconds = 0.0 if done else run_search(storage, name, sampler, seed, args)
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage}")
            records = load_records(study)
            volume = front_hypervolume(records, budget_mflops)
            results[sampler].append(volume)
            best = best_record(records)
            best_configs.extend((sampler, seed, r) for r in records if r.complete and r.feasible and not r.attrs.get("skipped"))
            print(f"{name}: hypervolume {volume:.2f} in {seconds:.0f} s; best {best.accuracy:.4f} at {best.mflops:.1f}M", flush=True)

    print(f"\nHypervolume of the accuracy-MFLOPs front after {args.trials} trials at {args.budget} "
          f"({args.seeds} seeds, train-size {args.train_size}, {args.epochs} epoch(s)):")
    random_mean = statistics.fmean(results["random"])
    for sampler in SAMPLERS:
        values = results[sampler]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {sampler:7s} {statistics.fmean(values):8.2f} +- {spread:5.2f}   ratio to random {statistics.fmean(values) / random_mean:.3f}")

    recipe = Recipe(epochs=args.epochs, train_size=args.train_size)
    data = prepare_data(load_data(), recipe)
    retrain_seeds = [100 + s for s in range(args.retrain_seeds)]

    def retrained(config) -> list[float]:
        return [train_config(config, data, recipe, seed=s).accuracy for s in retrain_seeds]

    paper = get_preset("shufflenet_v1_1.0x_g3")
    unique: dict[str, tuple] = {}
    for sampler, seed, record in sorted(best_configs, key=lambda item: -item[2].accuracy):
        unique.setdefault(record.config.to_json(), (sampler, seed, record))
    finalists = list(unique.values())[: args.finalists]
    selection_seeds = [100 + s for s in range(args.retrain_seeds)]
    final_seeds = [200 + s for s in range(args.retrain_seeds)]

    def trained(config, seeds) -> list[float]:
        return [train_config(config, data, recipe, seed=s).accuracy for s in seeds]

    print(f"\nFinalists (top {len(finalists)} distinct configs by proxy score) re-trained with seeds {selection_seeds}:")
    scored = []
    for sampler, seed, record in finalists:
        values = trained(record.config, selection_seeds)
        scored.append((statistics.fmean(values), sampler, seed, record))
        print(f"  {record.config.short_name} ({record.mflops:.1f}M, proxy {record.accuracy:.4f}): {statistics.fmean(values):.4f}")
    _, sampler, seed, answer = max(scored, key=lambda item: item[0])
    paper_scores = trained(paper, final_seeds)
    answer_scores = trained(answer.config, final_seeds)
    print(f"\nFinal comparison with fresh seeds {final_seeds} (same recipe):")
    print(f"  paper 1.0x g3 (137.5 MFLOPs): {statistics.fmean(paper_scores):.4f} +- {statistics.stdev(paper_scores):.4f}")
    print(f"  search's answer ({sampler}, seed {seed}, trial {answer.number}, {answer.mflops:.1f} MFLOPs, "
          f"{answer.config.short_name}): {statistics.fmean(answer_scores):.4f} +- {statistics.stdev(answer_scores):.4f}")
    gap = statistics.fmean(answer_scores) - statistics.fmean(paper_scores)
    noise = max(statistics.stdev(paper_scores), statistics.stdev(answer_scores))
    verdict = "beats" if gap > noise else ("ties with (gap inside the seed noise)" if gap > -noise else "loses to")
    print(f"  the search {verdict} the paper's hand design: {gap:+.4f}")
    print(f"\nstudies kept in {storage}")


if __name__ == "__main__":
    main()
