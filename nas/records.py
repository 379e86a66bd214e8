"""What a study stores, and the typed view of it that the CLI, dashboard and export read.

The study storage is the one source of truth. A study's objective values are, in order,
``[accuracy, mflops]`` (maximize, minimize), plus ``latency_ms`` (minimize) when latency is an
objective; ``study.user_attrs[OBJECTIVES]`` names them. Constraints are set with
``trial.set_constraint`` (feasible when <= 0). Everything else lives in user attributes under
the keys below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shufflenet_core import ShuffleNetConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["StudyInfo", "TrialRecord", "load_records", "record_from_trial", "study_info"]

# --- study user attributes -------------------------------------------------------------
SHUFFLENAS_VERSION = "shufflenas_version"
BUDGET_MACS = "budget_macs"  # int: MACs at the deployment resolution
BUDGET_LABEL = "budget_label"  # str as the user wrote it, e.g. "140M"
OBJECTIVES = "objectives"  # list[str], e.g. ["accuracy", "mflops"] or [..., "latency_ms"]
SPACE = "space"  # dict: the design space
EVALUATOR_SPEC = "evaluator_spec"  # dict: evaluator name and recipe
DATA_SPEC = "data"  # str: e.g. "fashion-mnist", "imagefolder:/path"
SEED = "seed"
LATENCY_BUDGET_MS = "latency_budget_ms"  # float or absent
DEVICE = "device"  # dict (device info) or absent

# --- trial user attributes -------------------------------------------------------------
CONFIG = "config"  # dict: ShuffleNetConfig.to_dict()
MACS = "macs"
PARAMS = "params"
ACCURACY = "accuracy"  # mean validation accuracy over seeds, in [0, 1]
ACCURACY_STD = "accuracy_std"
ACCURACY_SEEDS = "accuracy_per_seed"  # list[float]
LEARNING_CURVE = "learning_curve"  # list[float]: validation accuracy after each epoch (seed 0)
TRAIN_SECONDS = "train_seconds"
EVALUATOR = "evaluator"  # str
EPOCHS = "epochs"
PRESET = "preset"  # str: set when the trial evaluates a named preset
START_DESIGN = "start_design"  # int: index of the space-filling start setting the trial evaluates
LATENCY_MS = "latency_ms"
LATENCY_SOURCE = "latency_source"  # "measured" or "predicted"
LATENCY_DEVICE = "latency_device"  # dict
WEIGHTS_PATH = "weights_path"  # str: state_dict file kept for this trial
FAIL_REASON = "fail_reason"


@dataclass(frozen=True)
class StudyInfo:
    name: str
    budget_macs: int | None
    budget_label: str | None
    objectives: tuple[str, ...]
    latency_budget_ms: float | None
    attrs: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the rest of the tool sees it."""

    study: str
    number: int
    state: str  # "COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING"
    config: ShuffleNetConfig | None
    macs: int | None
    params: int | None
    accuracy: float | None
    accuracy_std: float | None
    latency_ms: float | None
    feasible: bool
    learning_curve: tuple[float, ...]
    preset: str | None
    attrs: dict[str, Any] = field(repr=False)

    @property
    def mflops(self) -> float | None:
        return None if self.macs is None else self.macs / 1e6

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.accuracy is not None


def study_info(study: "optuna.Study") -> StudyInfo:
    attrs = dict(study.user_attrs)
    latency_budget = attrs.get(LATENCY_BUDGET_MS)
    return StudyInfo(
        name=study.study_name,
        budget_macs=attrs.get(BUDGET_MACS),
        budget_label=attrs.get(BUDGET_LABEL),
        objectives=tuple(attrs.get(OBJECTIVES, ("accuracy", "mflops"))),
        latency_budget_ms=None if latency_budget is None else float(latency_budget),
        attrs=attrs,
    )


def record_from_trial(study_name: str, trial: "optuna.trial.FrozenTrial") -> TrialRecord:
    attrs = dict(trial.user_attrs)
    config = None
    if CONFIG in attrs:
        try:
            config = ShuffleNetConfig.from_dict(attrs[CONFIG])
        except ValueError:
            config = None
    constraints = getattr(trial, "constraints", None) or {}
    values = constraints.values() if isinstance(constraints, dict) else constraints
    feasible = all(value <= 0 for value in values)
    accuracy = attrs.get(ACCURACY)
    return TrialRecord(
        study=study_name,
        number=trial.number,
        state=trial.state.name,
        config=config,
        macs=attrs.get(MACS),
        params=attrs.get(PARAMS),
        accuracy=None if accuracy is None else float(accuracy),
        accuracy_std=attrs.get(ACCURACY_STD),
        latency_ms=attrs.get(LATENCY_MS),
        feasible=feasible,
        learning_curve=tuple(attrs.get(LEARNING_CURVE, ())),
        preset=attrs.get(PRESET),
        attrs=attrs,
    )


def load_records(study: "optuna.Study") -> list[TrialRecord]:
    """Every trial of ``study`` as a record, in trial order."""
    return [record_from_trial(study.study_name, trial) for trial in study.get_trials(deepcopy=False)]
