"""Real SQLite studies written directly with Optuna, following nas/records.py.

Used for the edge cases a real `nas search` does not produce on demand (an empty study, a
study with presets and infeasible trials, latency) and until `nas search` exists.
"""

from __future__ import annotations

from pathlib import Path

from nas import records as R
from shufflenet_core import ShuffleNetConfig, complexity


def make_study(
    path: Path,
    name: str,
    *,
    n_trials: int = 10,
    budget_mflops: float = 140.0,
    latency: bool = False,
    presets: tuple[str, ...] = (),
    seed: int = 0,
    skipped: int = 0,
) -> None:
    """A multi-objective study [accuracy, mflops]: trials over (groups, width), some over budget."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{path}", directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    study.set_user_attr(R.BUDGET_MACS, int(budget_mflops * 1e6))
    study.set_user_attr(R.BUDGET_LABEL, f"{budget_mflops:g}M")
    study.set_user_attr(R.OBJECTIVES, ["accuracy", "mflops"])
    if latency:
        study.set_user_attr(R.DEVICE, {"name": "loopback-cpu", "kind": "local"})

    def store(trial: optuna.Trial, config: ShuffleNetConfig, preset: str | None = None) -> tuple[float, float]:
        cost = complexity(config)
        # A smooth, deterministic stand-in for proxy accuracy: more MACs help, with diminishing returns.
        accuracy = round(0.5 + 0.1 * (cost.mflops ** 0.5) / 10 + 0.01 * (config.groups % 3), 4)
        trial.set_user_attr(R.CONFIG, config.to_dict())
        trial.set_user_attr(R.MACS, cost.macs)
        trial.set_user_attr(R.PARAMS, cost.params)
        trial.set_user_attr(R.ACCURACY, accuracy)
        trial.set_user_attr(R.LEARNING_CURVE, [accuracy * f for f in (0.6, 0.85, 1.0)])
        trial.set_user_attr(R.EVALUATOR, "fixture")
        if preset:
            trial.set_user_attr(R.PRESET, preset)
        if latency:
            trial.set_user_attr(R.LATENCY_MS, round(cost.mflops / 20, 3))
            trial.set_user_attr(R.LATENCY_SOURCE, "measured")
            trial.set_user_attr(R.LATENCY_DEVICE, {"name": "loopback-cpu"})
        trial.set_constraint("flops", cost.mflops - budget_mflops)
        return accuracy, cost.mflops

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        groups = trial.suggest_categorical("groups", [1, 2, 3, 4, 8])
        width = trial.suggest_float("width", 0.25, 1.5)
        return store(trial, ShuffleNetConfig.from_width(groups=groups, width=width))

    study.optimize(objective, n_trials=n_trials)
    for width in (2.0, 3.0)[:skipped]:
        # As `nas search` stores a trial over budget: complete, values [0, mflops], not trained.
        config = ShuffleNetConfig.from_width(groups=8, width=width)
        cost = complexity(config)
        study.add_trial(optuna.trial.create_trial(
            params={"groups": 8, "width": 1.5},
            distributions={"groups": optuna.distributions.CategoricalDistribution([1, 2, 3, 4, 8]),
                           "width": optuna.distributions.FloatDistribution(0.25, 1.5)},
            values=[0.0, cost.mflops],
            user_attrs={R.CONFIG: config.to_dict(), R.MACS: cost.macs, R.PARAMS: cost.params,
                        "skipped": "over budget: not trained"},
            constraints={"flops": cost.mflops - budget_mflops},
        ))
    for preset_name in presets:
        from shufflenet_core import get_preset

        config = get_preset(preset_name)
        study.enqueue_trial({"groups": config.groups, "width": 1.0})

        def preset_objective(trial: optuna.Trial, c: ShuffleNetConfig = config, p: str = preset_name) -> tuple[float, float]:
            trial.suggest_categorical("groups", [1, 2, 3, 4, 8])  # the enqueued values: same space as the search
            trial.suggest_float("width", 0.25, 1.5)
            return store(trial, c, p)

        study.optimize(preset_objective, n_trials=1)


def make_empty_study(path: Path, name: str) -> None:
    import optuna

    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", directions=["maximize", "minimize"])
    study.set_user_attr(R.OBJECTIVES, ["accuracy", "mflops"])
