"""The final stage: race a study's finalists at a higher fidelity and store its answer.

A search ends with several front trials tied within the proxy's seed noise, each chosen on
the same validation images that scored it (selection bias). The final stage takes the top
distinct configs of the feasible front (:func:`nas.results.finalists`) and a reference (the
paper's best preset within the budget), trains them with fresh seeds at a higher fidelity on
images no search saw (the selection split), halves the field after each round, and gives the
survivors a last comparison on fresh seeds: an exact one-sided permutation test against the
reference. The verdict goes into the study (:data:`nas.records.FINAL_ANSWER`) where
:func:`nas.results.choose_best`, and so the summary, dashboard and export, find it. The
winners' test-split accuracy is measured beside it, for the report only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas import records as R
from nas.errors import UserError
from nas.evaluation.comparison import (
    Contender,
    ContenderResult,
    Fidelity,
    SeedRunner,
    compare,
    smallest_reachable_p,
)
from nas.records import StudyInfo, TrialRecord
from nas.results import finalists
from shufflenet_core import PRESETS, ShuffleNetConfig, complexity

__all__ = ["FinalSettings", "answer_line", "planned_runs", "reference_for", "run_final", "sized_epochs"]

ALPHA = 0.05
OVERHEAD = 1.3


@dataclass(frozen=True)
class FinalSettings:
    fidelity: Fidelity
    finalists: int = 3
    round_seeds: int = 2
    """Seeds per successive-halving round (results accumulate over rounds)."""
    seeds: int = 4
    """Fresh seeds of the last comparison: 4 vs 4 is the fewest whose p can go below 0.05."""
    first_seed: int = 2000
    workers: int = 1
    """Training processes (one torch thread each), as a local search runs its trials."""
    weights_dir: Path | None = None
    """Where the last comparison saves its runs' weights; the answer's best run is kept for
    ``nas export`` (the rest are deleted once the verdict is in)."""
    accelerator: str = "cpu"
    train_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.finalists < 1:
            raise UserError(f"--finalists must be at least 1, got {self.finalists}")
        if self.seeds < 2 or self.round_seeds < 1:
            raise UserError("--seeds must be at least 2 and --round-seeds at least 1")


@dataclass(frozen=True)
class Entrant:
    contender: Contender
    trial: int | None
    """The study's trial of this config (None for a reference the study never ran)."""
    proxy_score: float | None


def reference_for(records: Sequence[TrialRecord], info: StudyInfo, like: ShuffleNetConfig) -> Entrant:
    """The paper's best preset (lowest ImageNet top-1 error) within the study's budget; when
    none fits, g3 at the paper's depths with its width solved to the budget. ``like`` gives the
    classes and input size that budgets are judged at."""
    def adapted(config: ShuffleNetConfig) -> ShuffleNetConfig:
        return config.replace(num_classes=like.num_classes, input_size=like.input_size)

    fitting = [
        p for p in PRESETS.values()
        if p.paper_top1_error is not None
        and (info.budget_macs is None or complexity(adapted(p.config)).macs <= info.budget_macs)
    ]
    if fitting:
        best = min(fitting, key=lambda p: (p.paper_top1_error, -p.width))
        contender = Contender(best.name, adapted(best.config))
    else:
        from search_spaces import DesignSpace, solve_width

        # Any width: the reference must fit the budget even where the search space's widths cannot.
        space = DesignSpace(num_classes=like.num_classes, input_size=like.input_size, width=(0.1, 8.0))
        config = solve_width(space, info.budget_macs, groups=3, bottleneck_ratio=0.25, stage_depths=(4, 8, 4),
                             stem_channels=24)
        fits = info.budget_macs is None or complexity(config).macs <= info.budget_macs
        how = "width solved to the budget" if fits else "at its narrowest, still over the budget"
        contender = Contender(f"g3,b0.25,d4-8-4 (paper depths, {how})", config)
    same = [r for r in records if r.config == contender.config and r.score is not None and r.feasible]
    if not same:
        return Entrant(contender, None, None)
    trial = min(same, key=lambda r: r.number)
    return Entrant(Contender(f"{contender.label} (trial {trial.number})", contender.config), trial.number, trial.score)


def planned_runs(contenders: int, settings: FinalSettings) -> int:
    """Training runs of a race of ``contenders`` finalists and the reference."""
    runs, alive = 0, contenders
    while alive > 2:
        runs += (alive + 1) * settings.round_seeds
        alive = math.ceil(alive / 2)
    return runs + (alive + 1) * settings.seeds


def sized_epochs(records: Sequence[TrialRecord], info: StudyInfo, runs: int, seconds: float, *,
                 train_images: int, speedup: float = 1.0, max_epochs: int = 3) -> int | None:
    """The most epochs (up to ``max_epochs``) at which ``runs`` training runs on ``train_images``
    images fit in ``seconds``, judged from how long the search's own trials took per image and
    epoch; None when not even one epoch fits (or the study has no timed trial)."""
    spec = info.attrs.get(R.EVALUATOR_SPEC) or {}
    recipe, seeds = spec.get("recipe") or {}, max(1, len(spec.get("seeds") or [0]))
    searched_images = recipe.get("train_size") or train_images
    per_image_epoch = sorted(
        float(r.attrs[R.TRAIN_SECONDS]) / (seeds * max(1, int(r.attrs.get(R.EPOCHS) or recipe.get("epochs") or 1))
                                           * searched_images)
        for r in records if r.attrs.get(R.TRAIN_SECONDS) and r.accuracy is not None
    )
    if not per_image_epoch:
        return None
    # x OVERHEAD: a run also starts its process, prepares data and scores the test split (134 s
    # measured for a 120 s estimate in the quick start).
    one_epoch = per_image_epoch[len(per_image_epoch) // 2] * train_images * runs / speedup * OVERHEAD
    epochs = min(max_epochs, int(seconds // one_epoch)) if one_epoch > 0 else max_epochs
    return epochs if epochs >= 1 else None


def _entrants(records: Sequence[TrialRecord], info: StudyInfo, count: int) -> list[Entrant]:
    chosen = finalists(records, info, count)
    if not chosen:
        raise UserError(f"study {info.name!r} has no feasible trial with a result within its budgets: nothing to race")
    out = []
    for record in chosen:
        assert record.config is not None
        label = f"trial {record.number}" + (f" ({record.attrs[R.PRESET]})" if record.attrs.get(R.PRESET) else "")
        out.append(Entrant(Contender(label, record.config), record.number, record.score))
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def run_final(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    settings: FinalSettings,
    runner: SeedRunner,
    *,
    progress: Callable[[int], Callable[[str, int], None]] | None = None,
) -> dict[str, Any]:
    """Race the finalists, return the verdict (as stored under :data:`R.FINAL_ANSWER`).

    ``progress(total)`` is called once per phase with its number of training runs and returns
    a callback for each finished run.
    """
    entrants = _entrants(records, info, settings.finalists + 1)  # one spare, in case the reference is among them
    reference = reference_for(records, info, entrants[0].contender.config)
    alive = [e for e in entrants if e.contender.config != reference.contender.config][: settings.finalists]
    if not alive:
        raise UserError(f"study {info.name!r} has no feasible config within its budgets other than the reference "
                        f"{reference.contender.label}: nothing to race")
    cursor = settings.first_seed
    rounds = []
    while len(alive) > 2:  # successive halving on the selection split
        seeds = list(range(cursor, cursor + settings.round_seeds))
        cursor += settings.round_seeds
        _train(runner, [reference, *alive], seeds, progress, settings.workers)
        so_far = list(range(settings.first_seed, cursor))
        means = {e.contender.label: _mean(runner.scores(e.contender, so_far)) for e in alive}
        keep = sorted(alive, key=lambda e: -means[e.contender.label])[: math.ceil(len(alive) / 2)]
        rounds.append({
            "seeds": seeds,
            "entries": [{"label": e.contender.label, "trial": e.trial, "mean": means[e.contender.label]} for e in alive],
            "kept": [e.contender.label for e in keep],
        })
        alive = keep
    final_seeds = list(range(cursor, cursor + settings.seeds))
    runner.with_test = True
    runner.weights_dir = settings.weights_dir
    contenders = [reference, *alive]
    _train(runner, contenders, final_seeds, progress, settings.workers)
    results = compare([e.contender for e in contenders], [runner.scores(e.contender, final_seeds) for e in contenders], 0)
    verdict = _verdict(contenders, results, runner, settings, rounds, final_seeds)
    verdict["answer_weights"] = _keep_answer_weights(contenders, verdict, runner, final_seeds)
    return verdict


def _keep_answer_weights(entrants: Sequence[Entrant], verdict: dict[str, Any], runner: SeedRunner,
                         seeds: Sequence[int]) -> dict[str, Any] | None:
    """Keep the state_dict of the answer's most accurate run (by selection accuracy) and delete
    the other runs' files of this comparison in this stage's folder (ours; runs that a final
    stage of another study stored at this fidelity keep theirs)."""
    kept = None
    answer = next((e for e in entrants if e.contender.label == verdict["answer_label"]), None)
    if answer is not None and answer.trial is not None:
        runs = [(runner.store.score(answer.contender.config, s), s, runner.store.weights_path(answer.contender.config, s))
                for s in seeds]
        stored = [(score, seed, path) for score, seed, path in runs if path and Path(path).is_file() and score is not None]
        if stored:
            score, seed, path = max(stored, key=lambda run: (run[0], -run[1]))
            kept = {"path": path, "seed": seed, "accuracy": score,
                    "test_accuracy": runner.store.test_score(answer.contender.config, seed),
                    "fidelity": runner.fidelity.to_dict()}
    if runner.weights_dir is None:
        return kept
    ours = runner.weights_dir.resolve()
    for entrant in entrants:
        for seed in seeds:
            stale = runner.store.weights_path(entrant.contender.config, seed)
            if stale and (kept is None or stale != kept["path"]) and Path(stale).resolve().parent == ours:
                Path(stale).unlink(missing_ok=True)
    return kept


def _train(runner: SeedRunner, entrants: Sequence[Entrant], seeds: Sequence[int],
           progress: Callable[[int], Callable[[str, int], None]] | None, workers: int) -> None:
    todo = runner.missing([e.contender for e in entrants], seeds)
    runner.run_all(todo, workers=workers, advance=progress(len(todo)) if progress is not None else None)


def _verdict(entrants: Sequence[Entrant], results: Sequence[ContenderResult], runner: SeedRunner,
             settings: FinalSettings, rounds: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    winners = [(e, r) for e, r in zip(entrants, results, strict=True)
               if r.p_value is not None and r.p_value < ALPHA and (r.gap or 0) > 0]
    reference = entrants[0]
    answer = max(winners, key=lambda pair: pair[1].mean)[0] if winners else reference
    rows = []
    for entrant, result in zip(entrants, results, strict=True):
        test_scores = runner.test_scores(entrant.contender, seeds)
        rows.append({
            "label": entrant.contender.label, "trial": entrant.trial, "config": entrant.contender.config.to_dict(),
            "mflops": round(entrant.contender.mflops, 3), "proxy_score": entrant.proxy_score,
            "scores": list(result.scores), "mean": result.mean, "sd": result.sd, "gap": result.gap,
            "p_value": result.p_value, "test_scores": test_scores,
        })
    verdict = {
        "fidelity": settings.fidelity.to_dict(),
        "selection_images": runner.images_evaluated(),
        "reference": {"label": reference.contender.label, "trial": reference.trial,
                      "config": reference.contender.config.to_dict()},
        "rounds": rounds,
        "final_seeds": seeds,
        "finalists": rows,
        "answer_trial": answer.trial,
        "answer_label": answer.contender.label,
        "beats_reference": bool(winners),
        "smallest_reachable_p": smallest_reachable_p(len(seeds), len(seeds)),
    }
    verdict["verdict"] = answer_line(verdict)
    return verdict


def answer_line(verdict: dict[str, Any]) -> str:
    """One line a user can act on, from a stored verdict."""
    rows = {row["label"]: row for row in verdict["finalists"]}
    reference = rows[verdict["reference"]["label"]]
    fidelity = Fidelity(**verdict["fidelity"])
    floor = f"smallest reachable p {verdict['smallest_reachable_p']:.2g}"
    at = f"at {fidelity.describe()}, {len(verdict['final_seeds'])} fresh seeds"
    ref_text = f"{reference['label']} {100 * reference['mean']:.1f}% +- {100 * reference['sd']:.1f}"
    if not verdict["beats_reference"]:
        best = max(verdict["finalists"], key=lambda row: row["mean"])
        closest = "" if best is reference else (
            f"; closest: {best['label']} {100 * best['mean']:.1f}% +- {100 * best['sd']:.1f}, p = {best['p_value']:.2g}"
        )
        keep = "answer: the reference, since " if verdict["answer_trial"] is not None else ""
        return f"{keep}no finalist beats the reference {ref_text} {at} ({floor}){closest}"
    row = rows[verdict["answer_label"]]
    config = ShuffleNetConfig.from_dict(row["config"])
    test = row["test_scores"]
    test_text = f"; on the test split {100 * _mean(test):.1f}%" if test else ""
    return (f"answer: {row['label']} ({config.short_name}, {row['mflops']:.1f} MFLOPs) {100 * row['mean']:.1f}% "
            f"+- {100 * row['sd']:.1f} vs {ref_text} {at}, p = {row['p_value']:.2g} ({floor}){test_text}")
