"""Configs compared on the same seeds at one fidelity (``nas compare``).

One proxy run per config says little: seed noise (~0.7 points at the default proxy) is as
large as most gaps. A comparison trains every config with the same seeds, at a fidelity the
user chooses, measures accuracy on images that played no part in choosing the configs (the
data set's test split by default), and tests each gap to the reference with an exact
one-sided permutation test. Results are stored one per (config, seed) in a comparison study,
so the same command resumes and a config named twice (a preset and the trial that found it)
is trained once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import records as R
from nas.analysis import permutation_p_value
from nas.errors import UserError
from shufflenet_core import PRESETS, ShuffleNetConfig, complexity, get_preset

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Contender",
    "ContenderResult",
    "Fidelity",
    "ResultStore",
    "SeedRunner",
    "compare",
    "open_result_store",
    "parse_contender",
    "parse_train_size",
    "smallest_reachable_p",
    "verdict",
]

SPLITS = ("test", "selection", "val")


@dataclass(frozen=True)
class Contender:
    label: str
    """As the user named it: a preset, a knob spec, a JSON file or ``study:N``, maybe ``+noshuffle``."""
    config: ShuffleNetConfig

    @property
    def mflops(self) -> float:
        return complexity(self.config).macs / 1e6


def _knob_config(text: str, budget_macs: int) -> ShuffleNetConfig:
    """``gG,bR,dA-B-C[,cS]``: groups, bottleneck ratio, stage depths, stem; width solved to the budget."""
    from search_spaces import DesignSpace, solve_width
    from shufflenet_core import PAPER_STAGE2_CHANNELS

    knobs = {part[0]: part[1:] for part in text.split(",") if part}
    if set(knobs) - set("gbdc") or not {"g", "b", "d"} <= set(knobs):
        raise UserError(f"config {text!r}: give a preset name, a config JSON file, study:TRIAL, or a knob spec "
                        "such as g3,b0.5,d2-4-2[,c24]")
    try:
        groups, ratio = int(knobs["g"]), float(knobs["b"])
        depths, stem = tuple(int(d) for d in knobs["d"].split("-")), int(knobs.get("c", 24))
    except ValueError:
        raise UserError(f"config {text!r}: g, d and c take whole numbers and b a ratio, e.g. g3,b0.5,d2-4-2") from None
    if groups not in PAPER_STAGE2_CHANNELS:
        raise UserError(f"config {text!r}: groups must be one of {', '.join(map(str, sorted(PAPER_STAGE2_CHANNELS)))}")
    if not 0 < ratio <= 1 or not depths or min(depths) < 1 or stem < 1:
        raise UserError(f"config {text!r}: b must be in (0, 1], every depth and c at least 1")
    try:
        return solve_width(DesignSpace(), budget_macs, groups=groups, bottleneck_ratio=ratio, stage_depths=depths,
                           stem_channels=stem)
    except ValueError as error:
        raise UserError(f"config {text!r}: {error}") from None


def parse_contender(
    text: str, budget_macs: int, *, trial_config: Callable[[int], dict[str, Any]] | None = None
) -> Contender:
    """A config from how a user names it. ``trial_config(N)`` reads trial N's stored config
    (for ``study:N``); a ``+noshuffle`` suffix turns channel shuffle off (the paper's Table 3)."""
    base, _, modifier = text.strip().partition("+")
    if modifier not in ("", "noshuffle"):
        raise UserError(f"config {text!r}: the only modifier is +noshuffle")
    if base in PRESETS:
        config = get_preset(base)
    elif base.startswith("study:"):
        number = base[len("study:"):]
        if trial_config is None:
            raise UserError(f"config {text!r}: study:TRIAL needs --study NAME (and --storage)")
        if not number.isdigit():
            raise UserError(f"config {text!r}: study:TRIAL takes a trial number, e.g. study:12")
        config = _config_from_dict(trial_config(int(number)), text)
    elif base.endswith(".json") or Path(base).is_file():
        try:
            data = json.loads(Path(base).expanduser().read_text())
        except OSError as error:
            raise UserError(f"config {text!r}: cannot read it ({error.strerror})") from None
        except json.JSONDecodeError as error:
            raise UserError(f"config {text!r}: not valid JSON ({error.msg}, line {error.lineno})") from None
        config = _config_from_dict(data, text)
    else:
        config = _knob_config(base, budget_macs)
    if modifier == "noshuffle":
        config = config.replace(channel_shuffle=False)
    return Contender(text.strip(), config)


def _config_from_dict(data: Any, text: str) -> ShuffleNetConfig:
    if isinstance(data, dict) and isinstance(data.get("config"), dict):  # nas export's config.json wraps it
        data = data["config"]
    try:
        return ShuffleNetConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"config {text!r}: not a ShuffleNet config ({error})") from None


def parse_train_size(text: str) -> int | None:
    """``--train-size``: a number of images (>= 10), or "all" (None)."""
    if text.strip().lower() == "all":
        return None
    if text.strip().isdigit() and int(text) >= 10:
        return int(text)
    raise UserError(f"--train-size must be a number of images (>= 10) or 'all', got {text!r}")


@dataclass(frozen=True)
class Fidelity:
    """How every contender is trained and where its accuracy is measured."""

    epochs: int = 1
    train_size: int | None = 10_000
    """Training images (None: all of the training split)."""
    data: str = "fashion-mnist"
    resolution: int = 32
    batch_size: int = 128
    split: str = "test"
    """Where accuracy is measured: "test" (no search uses it), "selection" (where ``nas final``
    chooses) or "val" (the search's validation images)."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UserError(f"--eval-on must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def study_name(self) -> str:
        """One comparison study per fidelity: results at another fidelity never mix."""
        images = "all" if self.train_size is None else str(self.train_size)
        data = "" if self.data == "fashion-mnist" else "-" + "".join(c if c.isalnum() else "_" for c in self.data)[-40:]
        return f"compare-{self.epochs}ep-{images}img-{self.resolution}px-b{self.batch_size}-{self.split}{data}"

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "train_size": self.train_size, "data": self.data, "resolution": self.resolution,
                "batch_size": self.batch_size, "split": self.split}

    def describe(self) -> str:
        images = "all training images" if self.train_size is None else f"{self.train_size} training images"
        return f"{self.epochs} epoch(s) on {images} of {self.data} at {self.resolution}px"


@dataclass(frozen=True)
class TrainJob:
    """One (config, seed) run, as sent to a pool worker."""

    index: int
    config: dict[str, Any]
    fidelity: dict[str, Any]
    seed: int
    with_test: bool
    save_to: str | None
    """Where to save the trained state_dict (None: not kept)."""
    accelerator: str = "cpu"
    train_precision: str = "auto"
    workers: int = 1
    """How many run at once: job ``index`` takes GPU ``index mod count`` and its memory share."""


class ResultStore:
    """One trial per (config, seed) in a comparison study: the accuracy and how it was got."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._attrs: dict[tuple[str, int], dict[str, Any]] = {}
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name == R.COMPLETE and R.COMPARE_SEED in trial.user_attrs:
                key = (json.dumps(trial.user_attrs[R.CONFIG], sort_keys=True), int(trial.user_attrs[R.COMPARE_SEED]))
                self._attrs[key] = dict(trial.user_attrs)

    @staticmethod
    def _key(config: ShuffleNetConfig, seed: int) -> tuple[str, int]:
        return json.dumps(config.to_dict(), sort_keys=True), seed

    def score(self, config: ShuffleNetConfig, seed: int) -> float | None:
        attrs = self._attrs.get(self._key(config, seed))
        return None if attrs is None else float(attrs[R.ACCURACY])

    def test_score(self, config: ShuffleNetConfig, seed: int) -> float | None:
        """The same run's accuracy on the test split, when it was measured."""
        value = self._attrs.get(self._key(config, seed), {}).get(R.TEST_ACCURACY)
        return None if value is None else float(value)

    def weights_path(self, config: ShuffleNetConfig, seed: int) -> str | None:
        """The state_dict file the run kept (see :attr:`SeedRunner.weights_dir`), if any."""
        value = self._attrs.get(self._key(config, seed), {}).get(R.WEIGHTS_PATH)
        return None if value is None else str(value)

    def add(self, contender: Contender, seed: int, accuracy: float, *, diverged: bool, seconds: float,
            test_accuracy: float | None = None, weights_path: str | None = None,
            place: dict[str, Any] | None = None) -> None:
        import optuna

        attrs: dict[str, Any] = {R.CONFIG: contender.config.to_dict(), R.COMPARE_LABEL: contender.label,
                                 R.COMPARE_SEED: seed, R.ACCURACY: accuracy, R.DIVERGED: diverged, R.TRAIN_SECONDS: seconds}
        if test_accuracy is not None:
            attrs[R.TEST_ACCURACY] = test_accuracy
        if weights_path is not None:
            attrs[R.WEIGHTS_PATH] = weights_path
        if place is not None:
            attrs[R.ACCELERATOR] = place
        # One finished trial in one call: an interrupted run leaves nothing half-stored.
        self.study.add_trial(optuna.trial.create_trial(value=accuracy, user_attrs=attrs))
        self._attrs[self._key(contender.config, seed)] = attrs


def open_result_store(storage: optuna.storages.BaseStorage, fidelity: Fidelity) -> ResultStore:
    """The comparison study of this fidelity (made on first use)."""
    import optuna

    from nas.storage.optuna_adapter import set_study_attr_once

    study = optuna.create_study(study_name=fidelity.study_name(), storage=storage, direction="maximize", load_if_exists=True)
    set_study_attr_once(storage, study.study_name, R.COMPARE_FIDELITY, fidelity.to_dict())
    return ResultStore(study)


class SeedRunner:
    """Trains contenders seed by seed at one fidelity and stores every result, so that the
    same call after an interruption trains only what is missing. With ``with_test``, each
    model is also scored on the test split (reported, never used to choose)."""

    def __init__(self, store: ResultStore, fidelity: Fidelity, *, with_test: bool = False,
                 weights_dir: Path | None = None, accelerator: str = "cpu", train_precision: str = "auto") -> None:
        self.store = store
        self.fidelity = fidelity
        self.with_test = with_test
        self.accelerator = accelerator
        self.train_precision = train_precision
        self.weights_dir = weights_dir
        """When set, each run's trained state_dict is saved there (for ``nas export``)."""
        self.trained = 0

    def _job(self, index: int, contender: Contender, seed: int, workers: int = 1) -> TrainJob:
        save_to = None
        if self.weights_dir is not None:
            digest = hashlib.sha1(ResultStore._key(contender.config, seed)[0].encode()).hexdigest()[:12]
            save_to = str((self.weights_dir / f"{digest}-seed{seed}.pt").resolve())
        return TrainJob(index, contender.config.to_dict(), self.fidelity.to_dict(), seed, self.with_test, save_to,
                        self.accelerator, self.train_precision, workers)

    def missing(self, contenders: Sequence[Contender], seeds: Sequence[int]) -> list[tuple[int, Contender]]:
        """(seed, contender) pairs without a stored result, seed by seed (an interrupted run then
        has every contender on its first seeds). A config named twice is listed once."""
        todo: dict[tuple[str, int], tuple[int, Contender]] = {}
        for seed in seeds:
            for contender in contenders:
                if self.store.score(contender.config, seed) is None:
                    todo.setdefault(ResultStore._key(contender.config, seed), (seed, contender))
        return list(todo.values())

    def run(self, contender: Contender, seed: int) -> None:
        if self.store.score(contender.config, seed) is not None:
            return
        job = self._job(0, contender, seed)
        _, accuracy, test_accuracy, diverged, seconds, place = _train_job(job)
        self.store.add(contender, seed, accuracy, diverged=diverged, seconds=seconds, test_accuracy=test_accuracy,
                       weights_path=job.save_to, place=place)
        self.trained += 1

    def run_all(self, todo: Sequence[tuple[int, Contender]], *, workers: int = 1,
                advance: Callable[[str, int], None] | None = None) -> None:
        """Train every (seed, contender) of ``todo`` that has no stored result, in ``workers``
        single-threaded processes (as a local search runs its trials) or in this process. Each
        result is stored as it arrives; Ctrl-C stops the workers at once and keeps what arrived."""
        todo = [(seed, c) for seed, c in todo if self.store.score(c.config, seed) is None]
        if workers <= 1 or len(todo) <= 1:
            for seed, contender in todo:
                self.run(contender, seed)
                if advance is not None:
                    advance(contender.label, seed)
            return
        import multiprocessing

        processes = min(workers, len(todo))
        jobs = [self._job(index, contender, seed, processes) for index, (seed, contender) in enumerate(todo)]
        pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_quiet_worker)
        try:
            for index, accuracy, test_accuracy, diverged, seconds, place in pool.imap_unordered(_train_job, jobs):
                seed, contender = todo[index]
                self.store.add(contender, seed, accuracy, diverged=diverged, seconds=seconds, test_accuracy=test_accuracy,
                               weights_path=jobs[index].save_to, place=place)
                self.trained += 1
                if advance is not None:
                    advance(contender.label, seed)
            pool.close()
        finally:
            pool.terminate()  # Ctrl-C or an error: no worker outlives the call
            pool.join()

    def scores(self, contender: Contender, seeds: Sequence[int]) -> list[float]:
        values = [self.store.score(contender.config, seed) for seed in seeds]
        if any(v is None for v in values):
            raise AssertionError(f"{contender.label}: not every seed is trained yet")
        return [float(v) for v in values if v is not None]

    def test_scores(self, contender: Contender, seeds: Sequence[int]) -> list[float]:
        return [v for v in (self.store.test_score(contender.config, seed) for seed in seeds) if v is not None]

    def images_evaluated(self) -> int:
        from nas.evaluation.data import load_data

        return len(load_data(self.fidelity.data).split(self.fidelity.split)[1])


@dataclass(frozen=True)
class ContenderResult:
    contender: Contender
    scores: tuple[float, ...]
    gap: float | None
    """Mean minus the reference's mean (None for the reference itself)."""
    p_value: float | None
    """One-sided exact permutation p of "better than the reference" (None for the reference)."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0


def smallest_reachable_p(n: int, m: int) -> float:
    """The smallest p an exact permutation test of n vs m scores can give: 1 / C(n + m, n)."""
    return 1.0 / math.comb(n + m, n)


def compare(contenders: Sequence[Contender], scores: Sequence[Sequence[float]], reference: int) -> list[ContenderResult]:
    """Each contender's scores against the reference's (same seeds)."""
    base = scores[reference]
    results = []
    for index, (contender, values) in enumerate(zip(contenders, scores, strict=True)):
        if index == reference:
            results.append(ContenderResult(contender, tuple(values), None, None))
        else:
            gap = statistics.fmean(values) - statistics.fmean(base)
            results.append(ContenderResult(contender, tuple(values), gap, permutation_p_value(values, base)))
    return results


def verdict(results: Sequence[ContenderResult], reference: int, fidelity: Fidelity, *, alpha: float = 0.05) -> str:
    """One line: which contender beats the reference, by how much and how surely, at this fidelity."""
    ref = results[reference]
    floor = smallest_reachable_p(len(ref.scores), len(ref.scores))
    winners = sorted((r for r in results if r.p_value is not None and r.p_value < alpha and (r.gap or 0) > 0),
                     key=lambda r: -r.mean)
    at = f"at {fidelity.describe()}, {len(ref.scores)} seeds; smallest reachable p = {floor:.3g}"
    if not winners:
        reach = "" if floor < alpha else f" (with {len(ref.scores)} seeds p < {alpha} is out of reach: add seeds)"
        return f"no config beats {ref.contender.label} ({100 * ref.mean:.2f}%) {at}{reach}"
    best = winners[0]
    return (f"{best.contender.label} ({best.contender.mflops:.1f} MFLOPs) {100 * best.mean:.2f}% +- {100 * best.sd:.2f} beats "
            f"{ref.contender.label} {100 * ref.mean:.2f}% +- {100 * ref.sd:.2f} by {100 * (best.gap or 0):.2f} points, "
            f"p = {best.p_value:.3g}, {at}")


def _quiet_worker() -> None:
    """A pool worker: one torch thread (as a search's workers), Ctrl-C left to the parent."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _recipe(fidelity: Fidelity) -> Any:
    from nas.evaluation.training import Recipe

    return Recipe(epochs=fidelity.epochs, batch_size=fidelity.batch_size, resolution=fidelity.resolution,
                  train_size=fidelity.train_size)


@lru_cache(maxsize=2)
def _prepared(fidelity: Fidelity, with_test: bool) -> tuple[Any, Any]:
    """Training tensors and the evaluated split (and the test split), once per process and fidelity."""
    from nas.evaluation.data import load_data
    from nas.evaluation.training import evaluated_on_split, prepare_data

    dataset = load_data(fidelity.data)
    data = prepare_data(dataset, _recipe(fidelity))
    test = evaluated_on_split(data, dataset, "test") if with_test else None
    return evaluated_on_split(data, dataset, fidelity.split), test


def _train_job(job: TrainJob) -> tuple[int, float, float | None, bool, float, dict[str, Any]]:
    """One (config, seed) run, here or in a pool worker: (index, accuracy, test accuracy, diverged,
    seconds, where it trained); its state_dict is saved to ``job.save_to`` when that is set."""
    import torch

    from nas.evaluation.accelerator import pin_worker, placement
    from nas.evaluation.training import evaluate, on_device, train_config

    fidelity = Fidelity(**job.fidelity)
    data, test = _prepared(fidelity, job.with_test)
    pin_worker(job.accelerator, job.index, job.workers)
    place = placement(job.accelerator, job.train_precision)
    result = train_config(ShuffleNetConfig.from_dict(job.config), data, _recipe(fidelity), seed=job.seed, place=place)
    test_accuracy = None
    if test is not None:
        test = on_device(test, place.device)
        test_accuracy = float(evaluate(result.model, test.val_images, test.val_labels, place=place))
    save_to = job.save_to
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, partial)
        os.replace(partial, path)  # whole or absent, even if the run is killed while saving
    return job.index, float(result.accuracy), test_accuracy, bool(result.diverged), float(result.seconds), place.to_dict()
