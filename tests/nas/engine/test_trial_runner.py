"""The trial runner on its own: one Optuna study in memory, the real proxy evaluator on a few
dozen real images, every path a trial can take (trained, over budget, re-proposed, failed,
stopped early, interrupted)."""

from __future__ import annotations

import optuna
import pytest

from nas import records as R
from nas.engine.settings import Budget, LatencySettings, SearchSettings
from nas.engine.trial_runner import make_runner
from nas.evaluation.base import EvaluatorOptions, create_evaluator
from nas.evaluation.training import Recipe
from search_spaces import knobs_of
from shufflenet_core import PRESETS, complexity

BUDGET = Budget("40M", 40_000_000)
SMALL = knobs_of(PRESETS["shufflenet_v1_0.5x_g3"].config)  # 37.6 MFLOPs


@pytest.fixture(scope="module")
def settings() -> SearchSettings:
    recipe = Recipe(epochs=2, resolution=32, train_size=60, val_size=30, batch_size=30)
    evaluator = create_evaluator("proxy", EvaluatorOptions(data_spec="fashion-mnist", recipe=recipe))
    return SearchSettings(budgets=(BUDGET,), evaluator=evaluator, seed=0)


def _study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))


def _run(study: optuna.Study, settings: SearchSettings, **runner_options: object) -> optuna.trial.FrozenTrial:
    study.optimize(make_runner(settings, BUDGET, worker="test worker", **runner_options), n_trials=1, catch=(Exception,))
    return max((t for t in study.get_trials() if t.state.is_finished()), key=lambda t: t.datetime_complete)


def test_a_trained_trial_stores_its_config_cost_and_curve(settings: SearchSettings) -> None:
    study = _study()
    study.enqueue_trial(SMALL, user_attrs={R.PRESET: "shufflenet_v1_0.5x_g3"})
    trial = _run(study, settings)
    assert trial.state.name == "COMPLETE"
    attrs = trial.user_attrs
    assert attrs[R.MACS] == complexity(PRESETS["shufflenet_v1_0.5x_g3"].config).macs
    assert len(attrs[R.LEARNING_CURVE]) == 2 and attrs[R.ACCURACY] == attrs[R.SCORE] == trial.values[0]
    assert attrs[R.WORKER_NAME] == "test worker" and attrs[R.BACKEND] == "local"
    assert trial.constraints["macs_over_budget"] <= 0


def test_a_config_over_the_budget_is_stored_but_not_trained(settings: SearchSettings) -> None:
    study = _study()
    study.enqueue_trial(knobs_of(PRESETS["shufflenet_v1_1.0x_g3"].config), user_attrs={R.PRESET: "shufflenet_v1_1.0x_g3"})
    trial = _run(study, settings)  # the paper's 1x g3: 137 MFLOPs, over the 40M budget
    assert trial.state.name == "COMPLETE" and trial.values[0] == 0.0
    assert trial.user_attrs[R.SKIPPED].startswith("over budget") and R.ACCURACY not in trial.user_attrs
    assert trial.constraints["macs_over_budget"] > 0


def test_a_re_proposed_config_reuses_the_earlier_result(settings: SearchSettings) -> None:
    study = _study()
    study.enqueue_trial(SMALL)
    study.enqueue_trial(SMALL)
    first, second = _run(study, settings), _run(study, settings)
    assert second.user_attrs[R.DUPLICATE_OF] == first.number
    assert second.values == first.values and second.user_attrs[R.TRAIN_SECONDS] == first.user_attrs[R.TRAIN_SECONDS]


def test_an_evaluation_that_raises_fails_its_trial_with_a_one_line_reason(settings: SearchSettings, tmp_path) -> None:
    from dataclasses import replace

    from nas.latency.lut import LatencyLUT

    table = tmp_path / "empty.json"
    LatencyLUT(device={"name": "elsewhere"}, entries={}, settings={"threads": 1}).save(table)
    study = _study()
    study.enqueue_trial(SMALL)
    trial = _run(study, replace(settings, latency=LatencySettings(device="lut", lut_path=str(table))))
    assert trial.state.name == "FAIL"
    reason = trial.user_attrs[R.FAIL_REASON]
    assert reason.startswith("DeviceError: the lookup table has no entry for") and "\n" not in reason
    assert not trial.user_attrs.get(R.LOST)  # the candidate's own failure: it counts


def test_a_trial_trailing_its_peers_is_stopped_after_an_epoch(settings: SearchSettings) -> None:
    study = _study()
    macs = complexity(PRESETS["shufflenet_v1_0.5x_g3"].config).macs
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.99, macs / 1e6], user_attrs={R.MACS: macs, R.LEARNING_CURVE: [0.99, 0.99]},
        ))
    study.enqueue_trial(SMALL)
    trial = _run(study, settings)
    assert trial.state.name == "PRUNED"
    assert trial.user_attrs[R.PRUNED_BY] == "successive halving among MFLOPs peers after epoch 1"
    assert len(trial.user_attrs[R.LEARNING_CURVE]) == 1


def test_ctrl_c_marks_the_trial_lost_and_enqueues_its_config_again(settings: SearchSettings) -> None:
    study = _study()
    study.enqueue_trial(SMALL, user_attrs={R.START_DESIGN: 3})

    def press_ctrl_c(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.optimize(make_runner(settings, BUDGET, worker="test worker", on_step=press_ctrl_c), n_trials=1)
    interrupted, retry = study.get_trials()
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs[R.LOST] is True
    assert interrupted.user_attrs[R.FAIL_REASON] == "interrupted by the user"
    assert retry.state.name == "WAITING" and retry.system_attrs["fixed_params"] == interrupted.params
    assert retry.user_attrs[R.RETRY_OF] == interrupted.number and retry.user_attrs[R.START_DESIGN] == 3
    assert retry.user_attrs[R.ATTEMPT] == 1  # Ctrl-C says nothing about the config: not an attempt


def test_a_trained_trial_stores_where_it_trained(settings: SearchSettings) -> None:
    study = _study()
    study.enqueue_trial(SMALL)
    place = _run(study, settings).user_attrs[R.ACCELERATOR]
    assert place["device"] == "cpu" and place["train_precision"] == "fp32" and place["layers"] == "fast CPU layers"


def test_running_out_of_gpu_memory_fails_that_trial_only_and_the_next_one_trains(settings: SearchSettings,
                                                                                 monkeypatch) -> None:
    """A GPU cannot exist here: the evaluator raises torch's own CUDA out-of-memory error once."""
    import torch

    from nas.evaluation.proxy import ProxyTrainingEvaluator

    real = ProxyTrainingEvaluator.evaluate
    calls = []

    def once_out_of_memory(self, config, **kwargs):  # noqa: ANN001, ANN202
        calls.append(config)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, config, **kwargs)

    monkeypatch.setattr(ProxyTrainingEvaluator, "evaluate", once_out_of_memory)
    study = _study()
    study.enqueue_trial(SMALL)
    failed = _run(study, settings)
    assert failed.state.name == "FAIL" and not failed.user_attrs.get(R.LOST)
    assert failed.user_attrs[R.FAIL_REASON] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    study.enqueue_trial(SMALL)
    assert _run(study, settings).state.name == "COMPLETE"
