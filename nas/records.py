"""What a study stores: the one place that names stored fields, and the typed view of a trial.

The study storage is the one source of truth; the CLI, the dashboard, export, resume and the
Ray backend all read it through :func:`load_records` / :func:`study_info`. A study's objective
values are, in order, the quality (``accuracy``, or a zero-cost score such as ``synflow``),
``mflops`` and optionally ``latency_ms``; :data:`OBJECTIVE_DIRECTIONS` says which way each one
is better, and ``study.user_attrs[OBJECTIVES]`` names them. Constraints are set with
``trial.set_constraint`` (feasible when <= 0). Everything else lives in user attributes under
the keys below: nothing outside this module spells a stored key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shufflenet_core import ShuffleNetConfig

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OBJECTIVE_DIRECTIONS",
    "StudyInfo",
    "TrialRecord",
    "directions_for",
    "latency_axis",
    "latency_key",
    "load_records",
    "record_from_trial",
    "study_info",
]

# --- objectives ---------------------------------------------------------------------------
Direction = Literal["minimize", "maximize"]

OBJECTIVE_DIRECTIONS: dict[str, Direction] = {
    "accuracy": "maximize",
    "synflow": "maximize",  # zero-cost scores: higher predicts more accurate
    "naswot": "maximize",
    "score": "maximize",  # analysis name for "the study's quality", whatever measured it
    "error": "minimize",
    "mflops": "minimize",
    "mparams": "minimize",
    "params": "minimize",
    "latency_ms": "minimize",
    "accuracy_int8": "maximize",  # analysis name: accuracy after int8 post-training quantization
}
"""Which way each objective (stored or derived) is better."""

LATENCY_AXIS_PREFIX = "latency_ms:"
"""Analysis names ``latency_ms:RUNTIME/PRECISION``: a trial's latency in one of :data:`LATENCIES`."""


def latency_axis(key: str) -> str:
    """The analysis name of the latency stored under ``key`` (``onnxruntime/int8``)."""
    return LATENCY_AXIS_PREFIX + key


def directions_for(objectives: tuple[str, ...] | list[str]) -> list[Direction]:
    """Optuna directions for objective names, by name (never by position)."""
    def direction(name: str) -> Direction | None:
        return "minimize" if name.startswith(LATENCY_AXIS_PREFIX) else OBJECTIVE_DIRECTIONS.get(name)

    unknown = [name for name in objectives if direction(name) is None]
    if unknown:
        raise ValueError(f"unknown objective {unknown[0]!r}; known: {', '.join(OBJECTIVE_DIRECTIONS)}")
    return [direction(name) for name in objectives]  # type: ignore[misc]


# --- study user attributes ----------------------------------------------------------------
SHUFFLENAS_VERSION = "shufflenas_version"
BUDGET_MACS = "budget_macs"  # int: MACs at the deployment resolution
BUDGET_LABEL = "budget_label"  # str as the user wrote it, e.g. "140M"
OBJECTIVES = "objectives"  # list[str], e.g. ["accuracy", "mflops"] or [..., "latency_ms"]
SPACE = "space"  # dict: the design space
EVALUATOR_SPEC = "evaluator_spec"  # dict: evaluator name and recipe
DATA_SPEC = "data"  # str: e.g. "fashion-mnist", "imagefolder:/path"
SEED = "seed"
SAMPLER = "sampler"  # str: tpe, nsga2, random
ACCURACY_NOISE_SD = "accuracy_noise_sd"  # float or None: measured seed noise of the recipe
LATENCY_BUDGET_MS = "latency_budget_ms"  # float or absent
LATENCY_DEVICE_SPEC = "latency_device_spec"  # str: the --device the study measured on
LATENCY_RUNTIME = "latency_runtime"  # str: onnxruntime or executorch (absent: onnxruntime)
LATENCY_PRECISION = "latency_precision"  # str: fp32 or int8 (absent: fp32)
INT8_ACCURACY_SCHEME = "int8_accuracy"  # dict or absent: how trials' int8 accuracy was measured
FRONT_LATENCY_PREFIX = "front_latency:"
"""Study attrs ``front_latency:N`` (dict: median_ms, p10_ms, p90_ms, predicted_ms, runtime,
precision, device, and ``fp32_ms`` when the study's precision is int8): trial N, a front member
whose latency the search predicted, measured for real on the device after the search. A study
attribute, not a trial one, because a finished trial's attributes cannot change;
:func:`load_records` folds it into the trial's record (its latency, source and feasibility)."""
DEVICE = "device"  # dict (device info) or absent
STOPPED_REASON = "stopped_reason"  # str or None: why the last run had to stop (device gone)
# Set-once markers of the study's opening trials (written once, by whichever process wins).
PRESETS_ENQUEUED = "presets_enqueued"  # bool
START_DESIGN_ENQUEUED = "start_design"  # int: how many start-design settings were enqueued
PRESCREENED = "prescreened"  # int: how many candidates the synflow prescreen scored

# --- trial user attributes ----------------------------------------------------------------
CONFIG = "config"  # dict: ShuffleNetConfig.to_dict()
MACS = "macs"
PARAMS = "params"
WIDTH = "width"  # float: stage-2 width relative to the paper's 1x
ACCURACY = "accuracy"  # mean validation accuracy over seeds, in [0, 1]
ACCURACY_STD = "accuracy_std"
ACCURACY_SEEDS = "accuracy_per_seed"  # list[float]
SCORE = "score"  # float: the evaluator's score (accuracy, or a zero-cost score)
LEARNING_CURVE = "learning_curve"  # list[float]: validation accuracy after each epoch (seed 0)
TRAIN_SECONDS = "train_seconds"
ACCELERATOR = "accelerator"  # dict: device, device_name, train_precision, layers (where the trial trained)
DIVERGED = "diverged"  # bool: a seed's loss became NaN/inf
EVALUATOR = "evaluator"  # str
EPOCHS = "epochs"
PRESET = "preset"  # str: set when the trial evaluates a named preset
START_DESIGN = "start_design"  # int: index of the space-filling start setting the trial evaluates
PRESCREEN_SYNFLOW = "prescreen_synflow"  # float: synflow score that got the trial enqueued
SKIPPED = "skipped"  # str: why the trial was not trained (over a budget)
DUPLICATE_OF = "duplicate_of"  # int: earlier trial whose result this re-proposed config reuses
LATENCY_MS = "latency_ms"
LATENCY_P10_MS = "latency_p10_ms"
LATENCY_P90_MS = "latency_p90_ms"
LATENCY_SOURCE = "latency_source"  # "measured" or "predicted"
LATENCY_DEVICE = "latency_device"  # dict
LATENCY_PREDICTED_MS = "latency_predicted_ms"  # float: the table's prediction, once measured for real
LATENCIES = "latencies"  # dict "runtime/precision" -> {"median_ms", "source"}: every latency known
ACCURACY_INT8 = "accuracy_int8"  # float: validation accuracy after int8 post-training quantization
INT8_AGREEMENT = "int8_top1_agreement"  # float: share of validation images where int8 names fp32's class
WEIGHTS_PATH = "weights_path"  # str: state_dict file kept for this trial
FAIL_REASON = "fail_reason"
LOST = "lost"  # bool: lost to its worker, node or the user (not the candidate's fault)
RETRY_OF = "retry_of"  # int: the lost trial this one runs again
RETRY_REASON = "retry_reason"  # str: why that trial was lost
ATTEMPT = "attempt"  # int: 1 for a first run, 2 for its first retry, ...
PRUNED_BY = "pruned_by"  # str: which early-stopping rule stopped the trial
WORKER_HOST = "worker_host"
WORKER_PID = "worker_pid"
WORKER_NAME = "worker"  # str: e.g. "worker 2" (local backend) or "ray"
BACKEND = "backend"  # str: "local" or "ray"
RAY_RUN = "ray_run"  # str: the Tune experiment that ran the trial
RAY_TRIAL_ID = "ray_trial_id"
RAY_NODE = "ray_node"  # str: IP of the Ray node that ran the trial
RAY_NODE_ID = "ray_node_id"  # str: Ray's id of that node (several nodes may share one IP)
RAY_GPU_IDS = "ray_gpu_ids"  # list[str]: the GPUs Ray gave the trial (with --gpus-per-trial)

# --- `nas compare`: a comparison study holds one trial per (config, seed) at one fidelity -----
COMPARE_FIDELITY = "compare_fidelity"  # study attr, dict: epochs, train_size, data, resolution, batch, split
COMPARE_LABEL = "compare_label"  # str: the config as the user named it (preset, spec, study:N)
COMPARE_SEED = "compare_seed"  # int: the training seed (the trial's ACCURACY is on the evaluated split)
TEST_ACCURACY = "test_accuracy"  # float: the same trained model on the test split (final comparisons)

# --- `nas final`: the study's answer, raced at a higher fidelity ------------------------------
FINAL_ANSWER = "final_answer"
"""Study attr, dict (the last `nas final` run; a new run replaces it):
fidelity (dict), selection_images (int), reference {label, trial, config}, rounds
[{seeds, entries [{label, trial, mean}], kept [labels]}], final_seeds [int], finalists
[{label, trial, config, proxy_score, scores, mean, sd, gap, p_value, test_scores}],
answer_trial (int or None), answer_label, beats_reference (bool), smallest_reachable_p, verdict (str),
answer_weights ({path, seed, accuracy, test_accuracy, fidelity} or None: the answer's kept run)."""

RESULT_ATTRS = (ACCURACY, ACCURACY_SEEDS, ACCURACY_STD, LEARNING_CURVE, EPOCHS, SCORE, TRAIN_SECONDS, WEIGHTS_PATH, DIVERGED,
                ACCELERATOR, ACCURACY_INT8, INT8_AGREEMENT)
"""What a re-proposed config copies from the earlier trial that evaluated it."""
ENQUEUE_ATTRS = (PRESET, START_DESIGN, PRESCREEN_SYNFLOW)
"""Why a trial was enqueued: carried over when a lost trial is run again."""

# Optuna's trial states, by name.
COMPLETE, PRUNED, FAIL, RUNNING, WAITING = "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"


@dataclass(frozen=True)
class StudyInfo:
    name: str
    budget_macs: int | None
    budget_label: str | None
    objectives: tuple[str, ...]
    latency_budget_ms: float | None
    attrs: dict[str, Any] = field(repr=False)

    @property
    def quality(self) -> str:
        """The first objective: "accuracy", or the zero-cost score the study ranked by."""
        return self.objectives[0] if self.objectives else ACCURACY

    @property
    def trained(self) -> bool:
        return self.quality == ACCURACY

    @property
    def latency_runtime(self) -> str:
        """The runtime the study's latencies are in (onnxruntime for studies before there was a choice)."""
        return str(self.attrs.get(LATENCY_RUNTIME) or "onnxruntime")

    @property
    def latency_precision(self) -> str:
        return str(self.attrs.get(LATENCY_PRECISION) or "fp32")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the rest of the tool sees it."""

    study: str
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
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
    retried: bool = False
    """A later trial runs this one's config again (set by :func:`load_records`)."""
    duration_s: float | None = None
    """Wall time from start to finish, when both are known."""

    @property
    def mflops(self) -> float | None:
        return None if self.macs is None else self.macs / 1e6

    @property
    def score(self) -> float | None:
        """The trial's quality: accuracy when trained, else the zero-cost score it stored.

        None for trials without a result (failed, pruned, running, or over a budget and
        therefore never evaluated). This is the one definition of a trial's score.
        """
        if self.state != COMPLETE or self.attrs.get(SKIPPED):
            return None
        if self.accuracy is not None:
            return self.accuracy
        value = self.attrs.get(SCORE)
        return None if value is None else float(value)

    @property
    def evaluated(self) -> bool:
        """Finished with a score (trained, or scored by a zero-cost proxy)."""
        return self.score is not None

    @property
    def lost(self) -> bool:
        """Failed because its worker, node or the user stopped it, not because of the candidate.

        Marked by the worker's supervisor (``lost``), or found later: a trial that a heartbeat
        check failed is lost when a later trial retries it. Release 0.1.0 marked such trials
        only by a fail reason starting with "interrupted".
        """
        if self.state != FAIL:
            return False
        legacy = LOST not in self.attrs and str(self.attrs.get(FAIL_REASON, "")).startswith("interrupted")
        return bool(self.attrs.get(LOST)) or self.retried or legacy

    @property
    def latencies(self) -> dict[str, float]:
        """Every latency known for the trial, by ``runtime/precision`` (see :data:`LATENCIES`);
        a study from before there was a choice has its one latency under ``onnxruntime/fp32``."""
        stored = self.attrs.get(LATENCIES)
        if isinstance(stored, dict):
            return {key: float(value["median_ms"]) for key, value in stored.items()
                    if isinstance(value, dict) and value.get("median_ms") is not None}
        return {} if self.latency_ms is None else {latency_key(None, None): float(self.latency_ms)}

    @property
    def duplicate(self) -> bool:
        """A re-proposed config whose result was copied from an earlier trial."""
        return self.attrs.get(DUPLICATE_OF) is not None


def study_info(study: optuna.Study) -> StudyInfo:
    attrs = dict(study.user_attrs)
    latency_budget = attrs.get(LATENCY_BUDGET_MS)
    return StudyInfo(
        name=study.study_name,
        budget_macs=attrs.get(BUDGET_MACS),
        budget_label=attrs.get(BUDGET_LABEL),
        objectives=tuple(attrs.get(OBJECTIVES, (ACCURACY, "mflops"))),
        latency_budget_ms=None if latency_budget is None else float(latency_budget),
        attrs=attrs,
    )


def record_from_trial(study_name: str, trial: optuna.trial.FrozenTrial, *, retried: bool = False) -> TrialRecord:
    attrs = dict(trial.user_attrs)
    config = None
    if CONFIG in attrs:
        try:
            config = ShuffleNetConfig.from_dict(attrs[CONFIG])
        except ValueError:
            config = None
    constraints = trial.constraints or {}
    values = constraints.values() if isinstance(constraints, dict) else constraints
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
        feasible=all(value <= 0 for value in values),
        learning_curve=tuple(attrs.get(LEARNING_CURVE, ())),
        preset=attrs.get(PRESET),
        attrs=attrs,
        retried=retried,
        duration_s=None if trial.duration is None else trial.duration.total_seconds(),
    )


def load_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study`` as a record, in trial order (front latencies measured after
    the search folded in: see :data:`FRONT_LATENCY_PREFIX`)."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get(RETRY_OF) for trial in trials} - {None}
    records = [record_from_trial(study.study_name, trial, retried=trial.number in retried) for trial in trials]
    attrs = study.user_attrs
    if not any(key.startswith(FRONT_LATENCY_PREFIX) for key in attrs):
        return records
    budget = attrs.get(LATENCY_BUDGET_MS)
    return [_with_measured_latency(record, attrs.get(f"{FRONT_LATENCY_PREFIX}{record.number}"), budget)
            for record in records]


def latency_key(runtime: str | None, precision: str | None) -> str:
    """The key of :data:`LATENCIES`: ``onnxruntime/fp32``."""
    return f"{runtime or 'onnxruntime'}/{precision or 'fp32'}"


def _with_measured_latency(record: TrialRecord, measured: Any, budget_ms: Any) -> TrialRecord:
    """The record with its predicted latency replaced by the one measured for real; over the
    study's latency budget makes it infeasible, whatever the prediction said."""
    if not isinstance(measured, dict) or measured.get("median_ms") is None:
        return record
    import dataclasses

    median = float(measured["median_ms"])
    attrs = dict(record.attrs)
    latencies = dict(attrs.get(LATENCIES) or {})
    latencies[latency_key(measured.get("runtime"), measured.get("precision"))] = {"median_ms": median,
                                                                                 "source": "measured"}
    if measured.get("fp32_ms") is not None:
        latencies[latency_key(measured.get("runtime"), "fp32")] = {"median_ms": float(measured["fp32_ms"]),
                                                                  "source": "measured"}
    attrs.update({LATENCY_MS: median, LATENCY_SOURCE: "measured", LATENCY_PREDICTED_MS: measured.get("predicted_ms"),
                  LATENCY_P10_MS: measured.get("p10_ms", median), LATENCY_P90_MS: measured.get("p90_ms", median),
                  LATENCIES: latencies})
    if measured.get("device"):
        attrs[LATENCY_DEVICE] = measured["device"]
    feasible = record.feasible and (budget_ms is None or median <= float(budget_ms))
    return dataclasses.replace(record, latency_ms=median, feasible=feasible, attrs=attrs)
