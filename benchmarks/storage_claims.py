"""Claims of enqueued trials under contention, per storage kind: claimed, duplicated, lost, claims/s.

    python benchmarks/storage_claims.py [--processes 8] [--trials 200] [--rounds 3]

For each storage (a SQLite file, a journal file, a throw-away PostgreSQL server started here
when Debian's postgresql is installed) a study gets ``--trials`` enqueued trials; then
``--processes`` processes, released together by a barrier, each claim trials the way a
worker does (``study.ask()`` pops a WAITING trial, ``study.tell`` finishes it) until the queue
is empty. Duplicates (a trial claimed by two processes) and lost trials (never claimed, or
left RUNNING) must both be 0. The row "sqlite, Optuna's RDBStorage as is" opens the same file
without shufflenas's storage layer: release 0.1.0's behaviour, for comparison.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTEXT = multiprocessing.get_context("spawn")


def _open(url: str, plain: bool):  # noqa: ANN202 - an Optuna storage
    import optuna

    from nas.storage import open_storage

    if plain:
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return open_storage(url)


def _claimer(url: str, plain: bool, study_name: str, barrier, results) -> None:  # noqa: ANN001
    import optuna

    optuna.logging.set_verbosity(optuna.logging.CRITICAL)
    study = optuna.load_study(study_name=study_name, storage=_open(url, plain))
    barrier.wait(timeout=300)
    started, claimed = time.perf_counter(), []
    while True:
        try:
            trial = study.ask()
        except Exception:  # noqa: BLE001 - Optuna's own errors under a race count as failures here
            continue
        if "enqueued" not in trial.user_attrs:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        claimed.append(trial.user_attrs["enqueued"])
        try:
            study.tell(trial, 1.0)
        except Exception:  # noqa: BLE001 - "Cannot tell a COMPLETE trial": claimed twice
            pass
    results.put((claimed, started, time.perf_counter()))


def measure(url: str, processes: int, trials: int, *, plain: bool = False) -> dict[str, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.CRITICAL)
    name = f"claims-{time.time_ns()}"
    study = optuna.create_study(study_name=name, storage=_open(url, False))  # made the same way for every row
    for index in range(trials):
        study.enqueue_trial({"x": index}, user_attrs={"enqueued": index})
    barrier, results = CONTEXT.Barrier(processes), CONTEXT.Queue()
    workers = [CONTEXT.Process(target=_claimer, args=(url, plain, name, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcome = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    claimed = Counter(number for batch, _, _ in outcome for number in batch)
    seconds = max(end for _, _, end in outcome) - min(start for _, start, _ in outcome)
    left = Counter(t.state.name for t in optuna.load_study(study_name=name, storage=_open(url, False)).get_trials())
    return {
        "claimed": len(claimed),
        "duplicates": sum(count - 1 for count in claimed.values() if count > 1),
        "lost": trials - len(claimed) + left.get("RUNNING", 0) + left.get("WAITING", 0),
        "claims_per_s": sum(claimed.values()) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="shufflenas-claims-"))
    storages = [
        ("sqlite, Optuna's RDBStorage as is (0.1.0)", f"sqlite:///{folder / 'plain.db'}", True),
        ("sqlite", f"sqlite:///{folder / 'claims.db'}", False),
        ("journal", f"journal:{folder / 'claims.log'}", False),
    ]
    server = None
    from tests.postgres import postgres_unavailable_reason, start_postgres

    reason = postgres_unavailable_reason()
    if reason is None:
        server = start_postgres()
        storages.append(("postgresql", server.url, False))
    else:
        print(f"(no PostgreSQL row: {reason})")
    try:
        print(f"{args.processes} processes claim {args.trials} enqueued trials, {args.rounds} rounds per storage; "
              "claimed: distinct trials per round; duplicates and lost: summed over the rounds")
        print(f"{'storage':44s} {'claimed':>8s} {'duplicates':>10s} {'lost':>5s} {'claims/s':>16s}")
        for label, url, plain in storages:
            rows = [measure(url, args.processes, args.trials, plain=plain) for _ in range(args.rounds)]
            rates = [row["claims_per_s"] for row in rows]
            print(f"{label:44s} {sum(r['claimed'] for r in rows) / len(rows):8.0f} "
                  f"{sum(r['duplicates'] for r in rows):10.0f} {sum(r['lost'] for r in rows):5.0f} "
                  f"{statistics.fmean(rates):8.1f} +- {statistics.stdev(rates) if len(rates) > 1 else 0:4.1f}", flush=True)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
