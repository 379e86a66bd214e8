"""Does the final stage pay? The raced answer vs the proxy's single best, re-trained higher up.

For each search seed: `nas search --budget B --seed S` (final stage on, as by default), then
the study's proxy best (what `--best` meant before the final stage: the highest single proxy
score) and its final-stage answer. All of them and the paper's 1x g3 are then re-trained with
`nas compare` on fresh seeds at a higher fidelity and scored on the test split, which neither
the search nor the final stage saw.

Run (the issue's design; 63 min on 2 cores with 3 seeds per config, README "Benchmarks"):
    .venv/bin/python benchmarks/answer_quality.py --search-seeds 1 2 3 --epochs 10 --data fashion-mnist:full --seeds 3
Reduced (about 15 min here):
    .venv/bin/python benchmarks/answer_quality.py --search-seeds 1 2 --epochs 3 --seeds 4
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas.records import FINAL_ANSWER, load_records, study_info
from nas.results import best_trial

REFERENCE = "shufflenet_v1_1.0x_g3"


def _nas(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nas {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="140M")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10, help="re-training epochs (the search uses 1)")
    parser.add_argument("--data", default="fashion-mnist", help="re-training data (fashion-mnist:full: all 60k images)")
    parser.add_argument("--seeds", type=int, default=5, help="re-training seeds per config")
    parser.add_argument("--storage", type=Path, default=None, help="keep the studies here (default: a temp dir)")
    args = parser.parse_args()

    folder = args.storage.parent if args.storage else Path(tempfile.mkdtemp(prefix="answer-quality-"))
    db = args.storage or folder / "bench.db"
    started = time.perf_counter()
    picks: list[dict] = []
    for seed in args.search_seeds:
        name = f"aq-{args.budget}-s{seed}"
        _nas("search", "--budget", args.budget, "--seed", str(seed), "--storage", str(db), "--study", name, "--quiet")
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        records, info = load_records(study), study_info(study)
        answer = info.attrs.get(FINAL_ANSWER) or {}
        proxy_info = dataclasses.replace(info, attrs={k: v for k, v in info.attrs.items() if k != FINAL_ANSWER})
        proxy_best = best_trial(records, proxy_info)
        answer_trial = answer.get("answer_trial")
        for role, number in (("proxy best", proxy_best.number if proxy_best else None), ("final answer", answer_trial)):
            record = next((r for r in records if r.number == number), None)
            if record is None or record.config is None:
                continue
            # One file per distinct config, so a config that is both the proxy best and the
            # answer (or the answer of two searches) is trained once per seed, not twice.
            text = json.dumps(record.config.to_dict(), sort_keys=True)
            path = folder / f"{record.config.short_name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.json"
            path.write_text(text)
            picks.append({"search_seed": seed, "role": role, "trial": number, "file": str(path),
                          "short_name": record.config.short_name, "verdict": answer.get("verdict")})
    files = list(dict.fromkeys(p["file"] for p in picks))
    compared = json.loads(_nas(
        "compare", REFERENCE, *files, "--epochs", str(args.epochs), "--train-size", "all", "--data", args.data,
        "--seeds", str(args.seeds), "--first-seed", "5000", "--storage", str(db), "--json", "--quiet",
    ))
    by_label = {row["label"]: row for row in compared["rows"]}
    reference = by_label[REFERENCE]
    print(f"re-trained at {args.epochs} epoch(s) on all training images of {args.data}, {args.seeds} fresh seeds, "
          f"test split ({compared['evaluated_on']['images']} images); {time.perf_counter() - started:.0f} s in all")
    print(f"reference {REFERENCE}: {100 * reference['mean']:.2f} +- {100 * reference['sd']:.2f}")
    gains: dict[str, list[float]] = {"proxy best": [], "final answer": []}
    for pick in picks:
        row = by_label[pick["file"]]
        gains[pick["role"]].append(row["mean"] - reference["mean"])
        print(f"search seed {pick['search_seed']} {pick['role']:>12}: trial {pick['trial']} {pick['short_name']} "
              f"{100 * row['mean']:.2f} +- {100 * row['sd']:.2f} "
              f"(vs reference {100 * row['gap']:+.2f}, p = {row['p_value']:.3g})")
    for role, values in gains.items():
        if values:
            gain = 100 * statistics.fmean(values)
            print(f"{role}: mean gain over {REFERENCE} {gain:+.2f} points over {len(values)} search(es)")


if __name__ == "__main__":
    main()
