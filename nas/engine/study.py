"""Create or resume a budget's study: its attributes, its lost trials, its opening trials.

Studies live in the storage and are resumed by name: running the same command again
continues until the study holds ``n_trials`` trials that count. Several ``nas search``
commands (on one machine or many) may prepare the same study at once: study creation is
atomic in every storage, attributes are set once (the first writer wins, the others check
that they agree), and the opening trials (paper presets, start design, prescreen) are
enqueued by whichever process wins the set-once marker, so they are enqueued exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas import __version__
from nas import records as R
from nas.engine.lost_trials import recover_lost_trials, stale_trial_callback
from nas.engine.samplers import SAMPLERS, make_sampler, startup_count
from nas.engine.settings import Budget, SearchSettings, study_name_for
from nas.errors import UserError
from nas.records import directions_for
from nas.storage import open_storage
from nas.storage.optuna_adapter import set_study_attr_once
from search_spaces import DesignSpace, knobs_of, sample_configs, start_design
from shufflenet_core import PRESETS, complexity

if TYPE_CHECKING:
    import optuna

__all__ = ["open_search_storage", "preset_names_for", "prepare_study", "start_trials_for", "study_attrs"]

_MUST_MATCH = (R.BUDGET_MACS, R.OBJECTIVES, R.EVALUATOR_SPEC, R.SPACE, R.DATA_SPEC)
"""Attributes that make a study one experiment: a resume must not change them."""
_MUST_MATCH_WHEN_BOTH = (R.LATENCY_RUNTIME, R.LATENCY_PRECISION)
"""Latencies in one runtime and precision: a resume that measures latency must keep them."""


def open_search_storage(settings: SearchSettings, *, create: bool = True) -> optuna.storages.BaseStorage:
    """The storage as a search uses it: heartbeats on (RDB), lost trials run again."""
    return open_storage(settings.storage, create=create, on_stale_trial=stale_trial_callback(settings.max_attempts))


def start_trials_for(settings: SearchSettings) -> int:
    """How many space-filling trials open a study.

    By default the model-based samplers (tpe, nsga2) replace their random start-up with the
    design; random search stays purely random (it is the baseline samplers are judged by), and
    ``--prescreen`` starts from its own synflow-screened candidates instead.
    """
    if settings.start_trials is not None:
        wanted = settings.start_trials
    elif not SAMPLERS[settings.sampler].model_based or settings.prescreen:
        wanted = 0
    else:
        wanted = startup_count(settings.n_trials)
    return min(wanted, settings.n_trials)


def study_attrs(settings: SearchSettings, budget: Budget) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        R.SHUFFLENAS_VERSION: __version__,
        R.BUDGET_MACS: budget.macs,
        R.BUDGET_LABEL: budget.label,
        R.OBJECTIVES: list(settings.objectives),
        R.SPACE: settings.space.to_dict(),
        R.EVALUATOR_SPEC: settings.evaluator.spec(),
        R.DATA_SPEC: settings.data_spec,
        R.SEED: settings.seed,
        R.SAMPLER: settings.sampler,
        R.ACCURACY_NOISE_SD: settings.evaluator.known_seed_sd(),
    }
    if settings.latency is not None:
        attrs[R.LATENCY_BUDGET_MS] = settings.latency.budget_ms
        attrs[R.LATENCY_DEVICE_SPEC] = settings.latency.device
        attrs[R.LATENCY_RUNTIME] = settings.latency.runtime
        attrs[R.LATENCY_PRECISION] = settings.latency.precision
    if settings.int8_runtime is not None:
        from nas.evaluation.int8 import int8_scheme

        attrs[R.INT8_ACCURACY_SCHEME] = int8_scheme(settings.int8_runtime)
    return attrs


def _check_compatible(name: str, stored: dict[str, Any], expected: dict[str, Any]) -> None:
    """A resumed study must be the same experiment: same budget, objectives and evaluator."""
    for key in _MUST_MATCH + _MUST_MATCH_WHEN_BOTH:
        if key in stored and key in expected and stored[key] != expected[key]:
            where, was, now = _first_difference(key, stored[key], expected[key])
            raise UserError(
                f"study {name!r} already exists with a different {where} "
                f"({_short(was)} vs {_short(now)}); use another --study name"
            )


def _first_difference(path: str, stored: Any, expected: Any) -> tuple[str, Any, Any]:
    """The innermost field where two stored settings part, as ``a.b.c``: a whole evaluator spec
    cut to 60 characters hid the one field that differed (e.g. ``evaluator_spec.seeds``)."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in sorted(set(stored) | set(expected), key=str):
            if stored.get(key) != expected.get(key):
                return _first_difference(f"{path}.{key}", stored.get(key), expected.get(key))
    return path, stored, expected


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def preset_names_for(space: DesignSpace, budget_macs: int) -> list[str]:
    """Paper presets inside the budget (and above half of it), whose knobs the space allows."""
    names = []
    for name, preset in PRESETS.items():
        config = preset.config.replace(num_classes=space.num_classes, input_size=space.input_size)
        macs = complexity(config).macs
        allowed = (
            config.groups in space.groups
            and config.bottleneck_ratio in space.bottleneck_ratios
            and config.stem_channels in space.stem_channels
            and len(config.stage_depths) == len(space.stage_depths)
            and all(lo <= d <= hi for d, (lo, hi) in zip(config.stage_depths, space.stage_depths, strict=True))
        )
        if allowed and budget_macs / 2 <= macs <= budget_macs:
            names.append(name)
    return names


def prepare_study(settings: SearchSettings, budget: Budget, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create or resume the study for ``budget``: attributes, lost trials, opening trials."""
    import optuna

    name = study_name_for(settings, budget)
    directions = directions_for(settings.objectives)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name in existing and [d.name.lower() for d in existing[name].directions] != directions:
        raise UserError(f"study {name!r} already exists with other objectives; use another --study name")
    expected = study_attrs(settings, budget)
    if name in existing:
        _check_compatible(name, existing[name].user_attrs, expected)
    sampler = make_sampler(settings.sampler, settings.seed, settings.n_trials)
    pruner = optuna.pruners.SuccessiveHalvingPruner() if settings.halving else optuna.pruners.NopPruner()
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=sampler, load_if_exists=True,
        pruner=pruner if len(directions) == 1 else None,
    )
    for key, value in expected.items():
        set_study_attr_once(storage, name, key, value)
    _check_compatible(name, study.user_attrs, expected)  # another process may have set them first
    study.set_user_attr(R.STOPPED_REASON, None)  # set by a run that had to stop (e.g. device gone)
    recover_lost_trials(study, storage, max_attempts=settings.max_attempts)
    _enqueue_opening_trials(settings, budget, study, storage)
    return study


def _enqueue_opening_trials(
    settings: SearchSettings, budget: Budget, study: optuna.Study, storage: optuna.storages.BaseStorage
) -> None:
    """Presets, then the start design, then the prescreen's picks: each enqueued once, by the
    process that wins its set-once marker (a process that dies right after winning leaves
    that group out; it never runs twice)."""
    name = study.study_name
    presets = preset_names_for(settings.space, budget.macs) if settings.presets else []
    # A study that has run trials (e.g. one made before the design existed) gets no design.
    fresh = all(t.state.name == R.WAITING for t in study.get_trials(deepcopy=False))
    if presets and set_study_attr_once(storage, name, R.PRESETS_ENQUEUED, True):
        for preset in presets:
            study.enqueue_trial(knobs_of(PRESETS[preset].config), user_attrs={R.PRESET: preset}, skip_if_exists=False)
    if R.START_DESIGN_ENQUEUED not in study.user_attrs:
        room = settings.n_trials - len(presets)  # presets go first; the design never outgrows --n-trials
        count = min(start_trials_for(settings), max(0, room)) if fresh else 0
        if set_study_attr_once(storage, name, R.START_DESIGN_ENQUEUED, count):
            for index, knobs in enumerate(start_design(settings.space, count, seed=settings.seed)):
                study.enqueue_trial(knobs, user_attrs={R.START_DESIGN: index}, skip_if_exists=True)
    if settings.prescreen and set_study_attr_once(storage, name, R.PRESCREENED, settings.prescreen):
        _prescreen(study, settings, budget)


def _prescreen(study: optuna.Study, settings: SearchSettings, budget: Budget) -> None:
    """Score ``prescreen`` random budget-filling candidates with synflow; enqueue the best."""
    from nas.evaluation.base import EvaluatorOptions, create_evaluator
    from nas.evaluation.training import Recipe

    scorer = create_evaluator("zero-cost:synflow", EvaluatorOptions(data_spec=settings.data_spec, recipe=Recipe()))
    candidates = sample_configs(settings.space, budget.macs, settings.prescreen, seed=settings.seed or 0)
    scored = []
    for config, knobs in candidates:
        if complexity(config).macs <= budget.macs:
            scored.append((scorer.evaluate(config).score, knobs))
    scored.sort(key=lambda item: item[0], reverse=True)
    for score, knobs in scored[: max(1, settings.n_trials // 2)]:
        study.enqueue_trial(knobs, user_attrs={R.PRESCREEN_SYNFLOW: score})
