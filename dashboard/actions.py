"""Things the page computes or runs on demand: parameter importances, figure files, `nas export`.

Each returns a value or a message, never raises into the page.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "export_command",
    "figure_html",
    "figure_png",
    "param_importances",
    "run_export",
]


def param_importances(study: Any) -> tuple[dict[str, float] | None, str | None]:
    """PED-ANOVA importances of the sampled parameters for the study's quality (accuracy or
    zero-cost score), or a message saying why not.

    Only evaluated trials count: over-budget trials that a search stored with a placeholder
    value and no accuracy or score would otherwise read as the worst models.
    """
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    evaluated = [t for t in complete if t.params and _quality(t) is not None]
    if len(evaluated) < 2:
        return None,(
            f"parameter importances need at least 2 evaluated trials with sampled parameters (this study has {len(evaluated)})"
        )
    if not any(len({repr(t.params.get(name)) for t in evaluated}) > 1 for name in evaluated[0].params):
        return None, "parameter importances need parameters that vary between trials"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scratch = optuna.create_study(direction="minimize")  # in memory; the storage is never written
            scratch.add_trials([
                optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=-quality)  # low = good
                for t in evaluated if (quality := _quality(t)) is not None
            ])
            importances = optuna.importance.get_param_importances(scratch, evaluator=_evaluator(optuna))
    except Exception as error:  # noqa: BLE001 - the evaluators fail in several ways on tiny studies
        text = str(error).strip()
        return None, f"parameter importances could not be computed: {text.splitlines()[0] if text else type(error).__name__}"
    if not importances:
        return None, "no parameter is shared by every evaluated trial, so importances are undefined"
    return {name: float(value) for name, value in importances.items()}, None


def _quality(trial: Any) -> float | None:
    for key in ("accuracy", "score"):
        if trial.user_attrs.get(key) is not None:
            return float(trial.user_attrs[key])
    return None


def _evaluator(optuna: Any) -> Any:
    """PED-ANOVA: Optuna's default, needs no scikit-learn (fANOVA does)."""
    evaluator = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    return evaluator() if evaluator is not None else None


def figure_html(figure: Any) -> str:
    """A self-contained HTML file (plotly.js inlined, opens offline)."""
    return figure.to_html(include_plotlyjs=True, full_html=True)


PNG_ATTEMPTS = 3
"""kaleido tries per PNG; only its page-not-ready answer (:data:`_PAGE_NOT_READY`) is tried again."""

_PAGE_NOT_READY = "kaleido_scopes is not defined"


def figure_png(figure: Any) -> bytes:
    """A PNG through kaleido (which drives a local Chrome/Chromium).

    On a busy machine kaleido 1.x sometimes calls into its page before the page's script has
    loaded (1 draw in 15 with six busy processes on 2 cores here) and gets a JavaScript
    ReferenceError; a fresh draw then works, so that one error is tried again.
    """
    for _ in range(PNG_ATTEMPTS - 1):
        try:
            return _draw_png(figure)
        except RuntimeError as error:
            if _PAGE_NOT_READY not in str(error):
                raise
    return _draw_png(figure)


def _draw_png(figure: Any) -> bytes:
    return figure.to_image(format="png", width=1200, height=700, scale=2)


def export_command(
    storage_url: str, study: str, number: int, out_dir: str | Path, *, weights: str = "kept", train_epochs: int = 1
) -> list[str]:
    """`nas export` for one trial; ``weights`` is "kept" (the search's), "untrained" or "train"."""
    argv = ["nas", "export", "--storage", storage_url, "--study", study, "--trial", str(number), "--out", str(out_dir)]
    if weights == "untrained":
        argv.append("--untrained")
    elif weights == "train":
        argv += ["--train-epochs", str(train_epochs)]
    elif weights != "kept":
        raise ValueError(f"weights must be 'kept', 'untrained' or 'train', got {weights!r}")
    return argv


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in argv)


def run_export(command: list[str], timeout: float = 3600) -> tuple[bool, str]:
    """Run an :func:`export_command` as a subprocess (argv list, no shell); (ok, its output)."""
    argv = [sys.executable, "-m", "nas.cli", *command[1:]]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"nas export did not finish: {error}"
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, output
