"""How well a per-device lookup table predicts whole-network latency on this host.

Builds the table on ``--device`` (default local) for the default space (groups {1,2,3,4,8} x
widths 0.25-2.0, every unit shape plus stems and heads) and prints two accuracy figures, each
the share of configs predicted within +-10% (nn-Meter reports 99.0% on a Cortex-A76):

- held out: ``--holdout`` random configs timed in the build session but kept out of the fit
  (``build_lut(..., holdout_configs=...)``, stored as ``holdout`` in the table). The test suite
  used to assert >= 80% of 20 such configs of a small space (``--space small`` repeats exactly
  that setup); it depends on how loaded the machine is, so it is reported here instead;
- validation: ``--n`` random configs measured in a separate session, as ``nas latency
  validate`` does (the same as ``nas latency build-lut`` followed by ``nas latency validate``).

Neither set shares a config with the calibration networks the overhead is fitted on (by
construction: ``sample_distinct(..., exclude=calibration)``, asserted below).

``--noise`` measures the validation configs a second time in another session: how far the same
networks move between two sessions is the floor under any table's error on this machine.
``--lut FILE`` validates an existing table instead of building one.

The table reduces each model's runs to one figure by ``build_lut``'s default estimator (p10,
see ``nas.latency.timing.ESTIMATORS``). Unless ``--no-compare``, the recorded sessions are then
replayed through ``build_lut`` and ``validate_lut`` with every estimator (no new measurement):
their accuracy and noise floor side by side, from one run. ``--sessions FILE`` keeps the
recorded runs and ``--replay FILE`` repeats that comparison from them later.

    .venv/bin/python benchmarks/latency_lut.py [--device local] [--space default|small] [--n 200]
        [--holdout 20] [--noise] [--seed 1000] [--out lut.json] [--lut existing.json] [--report rows.json]
        [--no-compare] [--sessions runs.json] [--replay runs.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import nas.latency.lut as lut_module
from nas.latency import Device, RunSettings, Timing, open_device
from nas.latency.lut import LatencyLUT, ValidationReport, build_lut, sample_distinct, validate_lut
from nas.latency.space import default_space
from nas.latency.timing import ESTIMATORS

SPACES = {
    # name: (space, calibration networks, timing settings)
    "default": (default_space, 32, dict(rounds=5)),
    # What tests/nas/latency/test_lut.py built and asserted on before the figure moved here.
    "small": (lambda: default_space(groups=(3, 8), widths=(0.25, 0.5), depth_ranges=((1, 3), (1, 4), (1, 3))), 12,
              dict(rounds=9, runs=100)),
}
CALIBRATION_SEED, HOLDOUT_SEED = 1, 2000
"""Seeds of the calibration and held-out draws (the validation draw takes --seed)."""
GOAL_SHARE = 0.98
"""The share of validation configs within +-10% the project aims at (LitePred reports 99.3%,
nn-Meter 99.0%, both on dedicated boards)."""
HOLDOUT_BOUND = 0.80
"""What the suite asserted on the held-out share of the small space (it fails under CI load
that changes between the component and network timings, which no table can predict)."""


class Recorder(Device):
    """Measures on ``inner`` and keeps every session's timings (each run), for a replay."""

    def __init__(self, inner: Device) -> None:
        super().__init__(inner.spec)
        self.inner = inner
        self.sessions: list[list[Timing]] = []

    def _probe(self) -> dict[str, Any]:
        return self.inner.probe()

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        self.sessions.append(self.inner.measure(models, settings, input_file=input_file))
        return self.sessions[-1]


class Replay(Device):
    """Answers each measure call with the next recorded session: no new measurement."""

    def __init__(self, info: dict[str, Any], sessions: list[list[Timing]]) -> None:
        super().__init__(str(info.get("spec", "replay")))
        self.info, self.sessions = info, list(sessions)

    def _probe(self) -> dict[str, Any]:
        return self.info

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        timings = self.sessions.pop(0)
        assert len(timings) == len(models), "a replay must ask for the recorded session's models"
        return timings


def _share(report: ValidationReport) -> str:
    summary = report.to_dict()
    return (f"{100 * report.within_share:.1f}% ({100 * summary['median_abs_error']:.1f}%, "
            f"{100 * summary['max_abs_error']:.1f}%)")


def compare_estimators(info: dict[str, Any], build_sessions: list[list[Timing]],
                       validation_sessions: list[list[Timing]], space: Any, calibration: list, holdout: list,
                       validation: list, settings: RunSettings) -> None:
    """Every estimator's table and validations from the same recorded sessions (replayed: no
    new measurement, and no files, so the exports are skipped), as markdown rows."""
    print("the same sessions, reduced by each estimator (replayed, not re-measured); share within +-10% "
          "(median |error|, max):")
    print("| estimator | overhead | held out | validation | validation again | same configs within +-10% of themselves |")
    print("|---|---|---|---|---|---|")
    def no_file(*args: Any, **kwargs: Any) -> Path:  # a replay reads no file: the export is skipped
        return Path(f"{kwargs.get('name') or args[2]}.onnx")

    with mock.patch.object(lut_module, "export_module_for_runtime", no_file), \
            mock.patch.object(lut_module, "export_for_runtime", no_file):
        for estimator in ESTIMATORS:
            table = build_lut(Replay(info, build_sessions), space.covering(), calibration, holdout_configs=holdout,
                              settings=settings, space_name=space.name, estimator=estimator,
                              sessions=len(build_sessions), attempts=len(build_sessions))
            reports = [validate_lut(Replay(info, [session]), table, validation, settings=settings)
                       for session in validation_sessions]
            cells = [table.describe_overhead(), _share(table.holdout_report())] + [_share(report) for report in reports]
            cells += ["-"] * (4 - len(cells))
            cells.append(f"{100 * _reproduced(*reports):.1f}%" if len(reports) == 2 else "-")
            print(f"| {estimator} | " + " | ".join(cells) + " |", flush=True)


def _reproduced(first: ValidationReport, second: ValidationReport) -> float:
    """The share of configs whose two sessions' measurements agree within the tolerance."""
    pairs = list(zip(first.rows, second.rows, strict=True))
    return sum(abs(b["measured_ms"] / a["measured_ms"] - 1) <= first.tolerance for a, b in pairs) / len(pairs)


def _line(report: ValidationReport) -> str:
    summary = report.to_dict()
    return (f"{100 * report.within_share:.1f}% of {len(report.rows)} configs within +-{100 * report.tolerance:g}% "
            f"(median |error| {100 * summary['median_abs_error']:.1f}%, max {100 * summary['max_abs_error']:.1f}%)")


def _bias(report: ValidationReport) -> float:
    """Mean signed error: a session that ran the networks faster or slower than the table's."""
    return statistics.fmean(row["error"] for row in report.rows)


def _noise_line(first: ValidationReport, second: ValidationReport, speed: float = 1.0) -> str:
    """How the same configs' measurements moved from one session to the other (the second's
    divided by ``speed``, to take out a change of the whole machine's speed)."""
    signed = [(b["measured_ms"] / speed - a["measured_ms"]) / a["measured_ms"]
              for a, b in zip(first.rows, second.rows, strict=True)]
    changes = [abs(change) for change in signed]
    within = sum(1 for change in changes if change <= first.tolerance) / len(changes)
    drift = statistics.fmean(signed)
    return (f"median change {100 * statistics.median(changes):.1f}%, max {100 * max(changes):.1f}%, "
            f"mean signed {100 * drift:+.1f}%; {100 * within:.1f}% of them within +-{100 * first.tolerance:g}% of themselves")


def drawn_configs(space: Any, calibration: int, holdout: int, validation: int, seed: int,
                  table: LatencyLUT | None = None) -> tuple[list, list, list]:
    """The calibration, held-out and validation configs of a run, each draw with its own seed,
    the last two never a calibration network (by construction). A table read with --lut brings
    its own calibration networks (the validation draw avoids those) and no held-out ones."""
    if table is not None:
        calibration_configs, holdout_configs = table.calibration_configs(), []
    else:
        calibration_configs = sample_distinct(space.sample, calibration, seed=CALIBRATION_SEED)
        holdout_configs = sample_distinct(space.sample, holdout, seed=HOLDOUT_SEED, exclude=calibration_configs)
    validation_configs = sample_distinct(space.sample, validation, seed=seed, exclude=calibration_configs)
    return calibration_configs, holdout_configs, validation_configs


def replay(path: Path) -> int:
    """The estimator comparison of an earlier run, from its recorded sessions."""
    recorded = json.loads(path.read_text())
    make_space, _, _ = SPACES[recorded["space"]]
    space = make_space()
    calibration, holdout, validation = drawn_configs(space, recorded["calibration"], recorded["holdout"],
                                                     recorded["n"], recorded["seed"])
    sessions = [[Timing(row["model"], tuple(row["times_ms"]), unblocked_params=row.get("unblocked_params"))
                 for row in session] for session in recorded["sessions"]]
    builds = recorded["build"]
    print(f"replaying {path}: {builds} build session(s), {len(sessions) - builds} validation session(s) of "
          f"{len(validation)} configs, seed {recorded['seed']}")
    compare_estimators(recorded["device"], sessions[:builds], sessions[builds:], space, calibration, holdout,
                       validation, RunSettings(rounds=recorded["rounds"], runs=recorded["runs"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local")
    parser.add_argument("--space", choices=sorted(SPACES), default="default")
    parser.add_argument("--n", type=int, default=200, help="Configs measured in a separate validation session.")
    parser.add_argument("--seed", type=int, default=1000, help="Seed of the validation configs.")
    parser.add_argument("--noise", action="store_true", help="Measure the validation configs twice (noise floor).")
    parser.add_argument("--lut", type=Path, default=None, help="Validate this table instead of building one.")
    parser.add_argument("--holdout", type=int, default=20, help="Configs timed in the build session, not fitted.")
    parser.add_argument("--calibration", type=int, default=None, help="Networks the overhead is fitted on "
                        "(default 32, small space 12).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/latency_lut_local.json"))
    parser.add_argument("--report", type=Path, default=None, help="Write the held-out and validation rows as JSON.")
    parser.add_argument("--no-compare", action="store_true", help="Skip replaying the sessions with every estimator.")
    parser.add_argument("--sessions", type=Path, default=None, help="Write every session's runs (ms per run, per "
                        "model, in the order timed) as JSON, to study other estimators offline.")
    parser.add_argument("--replay", type=Path, default=None, help="Compare the estimators on a --sessions file "
                        "of an earlier run (nothing is measured).")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)

    make_space, default_calibration, timing = SPACES[args.space]
    space = make_space()
    table = LatencyLUT.load(args.lut) if args.lut else None
    calibration, holdout, validation = drawn_configs(space, args.calibration or default_calibration, args.holdout,
                                                     args.n, args.seed, table)
    device = Recorder(open_device(args.device))
    settings = RunSettings(threads=args.threads, **timing)
    started = time.perf_counter()
    if table is not None:
        lut = table
    else:
        lut = build_lut(device, space.covering(), calibration, holdout_configs=holdout, settings=settings,
                        space_name=space.name, progress=lambda text: print(text, file=sys.stderr))
        lut.save(args.out)
    built = time.perf_counter() - started
    build_sessions = list(device.sessions)
    fitted = {config.to_json() for config in calibration}
    assert not any(config.to_json() in fitted for config in holdout + validation)
    held_out = lut.holdout_report()
    report = validate_lut(device, lut, validation, settings=settings) if validation else None
    again = validate_lut(device, lut, validation, settings=settings) if validation and args.noise else None
    validation_sessions = device.sessions[len(build_sessions):]

    info = lut.device
    print(f"device: {args.device} ({info.get('arch')}, {info.get('cpu_model')}, {info.get('cores')} cores, "
          f"onnxruntime {info.get('onnxruntime')}, {args.threads} thread, clock {settings.effective_clock})")
    print(f"space: {space.name}")
    print(f"table: {len(lut.entries)} entries, each {lut.describe_estimator()} ({lut.estimator}), "
          f"overhead {lut.describe_overhead()}, "
          + (f"read from {args.lut}" if args.lut else f"built in {built:.0f} s"))
    print(f"configs: {len(calibration)} calibration, {len(holdout)} held out, {len(validation)} validation "
          f"(none of them a calibration network)")
    if held_out.rows:
        verdict = "meets" if held_out.within_share >= HOLDOUT_BOUND else "misses"
        print(f"held out (build session, not in the fit): {_line(held_out)}; {verdict} the >= "
              f"{100 * HOLDOUT_BOUND:.0f}% the test suite used to assert on --space small")
    for title, session in (("validation (separate session)", report), ("validation again (a third session)", again)):
        if session is None:
            continue
        print(f"{title}: {_line(session)}; mean signed error {100 * _bias(session):+.1f}%")
        if session.session_factor is not None:
            print(f"  the calibration networks re-timed in it took x{session.session_factor:.3f} their build-session "
                  f"time; predictions scaled by that: {_line(session.corrected())}")
    sessions = [session for session in (report, again) if session is not None]
    if sessions:
        shares = ", ".join(f"{100 * session.within_share:.1f}%" for session in sessions)
        verdict = "met" if all(session.within_share >= GOAL_SHARE for session in sessions) else "missed"
        print(f"goal (>= {100 * GOAL_SHARE:.0f}% within +-10% in every validation session): {verdict} ({shares})")
    if report is not None and again is not None:
        print(f"noise floor (the same {len(report.rows)} configs in two sessions): {_noise_line(report, again)}")
        if report.session_factor and again.session_factor:
            speed = again.session_factor / report.session_factor
            print(f"  after each session's own factor: {_noise_line(report, again, speed)}")
    if validation and not args.no_compare and not args.lut:
        compare_estimators(device.probe(), build_sessions, validation_sessions, space, calibration, holdout, validation,
                           settings)
    if args.sessions:
        args.sessions.parent.mkdir(parents=True, exist_ok=True)
        args.sessions.write_text(json.dumps({
            "rounds": settings.rounds, "runs": settings.runs, "space": args.space, "seed": args.seed, "n": args.n,
            "holdout": args.holdout, "calibration": len(calibration), "device": device.probe(),
            "build": len(build_sessions), "sessions": [
                [{"model": timing.model, "times_ms": list(timing.times_ms),
                  **({} if timing.unblocked_params is None else {"unblocked_params": timing.unblocked_params})}
                 for timing in session]
                for session in device.sessions]}))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"holdout": held_out.to_dict(),
                                           "validation": report.to_dict() if report else None,
                                           "validation_again": again.to_dict() if again else None}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
