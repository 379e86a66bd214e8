"""The search engine: prepare each budget's study, hand it to a backend, say what happened.

The engine owns the storage connection, the studies and the definitions of success
(:mod:`nas.engine.outcome`); a backend only runs trials; the CLI only parses arguments and
renders what the engine returns.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nas.engine.backend import Backend
from nas.engine.display import Display, NullDisplay
from nas.engine.front_latency import measure_front_latency
from nas.engine.lost_trials import OWNERLESS_AFTER_S, fail_ownerless_trials
from nas.engine.outcome import (
    BackendReport,
    SearchOutcome,
    StudyOutcome,
    StudyPlan,
    count_toward_target,
    ran_by_state,
)
from nas.engine.settings import SearchSettings
from nas.engine.study import open_search_storage, prepare_study
from nas.records import COMPLETE, FAIL, PRUNED, STOPPED_REASON, load_records, study_info
from nas.storage import describe_storage, resolve_storage_url

if TYPE_CHECKING:
    pass

__all__ = ["run_search"]


def run_search(settings: SearchSettings, backend: Backend, display: Display | None = None) -> SearchOutcome:
    """Run every budget's study until it reaches ``n_trials`` counted trials (or the timeout)."""
    display = display or NullDisplay()
    url = resolve_storage_url(settings.storage)
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    outcomes: list[StudyOutcome] = []
    interrupted = timed_out = False
    display.note(f"storage: {describe_storage(url)} | evaluator: {settings.evaluator.name} | sampler: {settings.sampler}")
    with backend.opened(settings, display):
        storage = open_search_storage(settings)
        for budget in settings.budgets:
            study = prepare_study(settings, budget, storage)
            records = load_records(study)
            counted = count_toward_target(records)
            plan = StudyPlan(settings, budget, study.study_name, settings.n_trials, counted, None)
            if plan.remaining <= 0:
                display.note(
                    f"study {study.study_name!r} already has {settings.n_trials} finished trials; "
                    "raise --n-trials to continue"
                )
                outcomes.append(
                    StudyOutcome(study.study_name, budget, plan.target, study_info(study), records, {}, BackendReport(),
                                 already_done=True)
                )
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                outcomes.append(
                    StudyOutcome(study.study_name, budget, plan.target, study_info(study), records, {}, BackendReport())
                )
                break
            plan = StudyPlan(settings, budget, study.study_name, settings.n_trials, counted, left)
            finished_before = {r.number for r in records if r.state in (COMPLETE, PRUNED, FAIL)}
            run_started = time.monotonic()
            with display.study(plan, study_info(study), records) as feed:
                report = backend.run(plan, study, storage, feed)
            # A trial still ownerless after this whole run was claimed before it began by a worker
            # that died at once (see lost_trials.OWNERLESS_AFTER_S): no worker will record itself now.
            fail_ownerless_trials(study, storage, max_attempts=settings.max_attempts,
                                  older_than_s=max(1.0, min(OWNERLESS_AFTER_S, time.monotonic() - run_started)))
            stopped = study.user_attrs.get(STOPPED_REASON)
            if not (report.interrupted or stopped):
                measure_front_latency(study, settings, display)
            after = load_records(study)
            outcomes.append(
                StudyOutcome(
                    study.study_name, budget, plan.target, study_info(study), after, ran_by_state(after, finished_before),
                    report, stopped_reason=stopped,
                )
            )
            if deadline is not None and time.monotonic() >= deadline and count_toward_target(after) < plan.target:
                timed_out = True
            if report.interrupted or stopped:
                interrupted = report.interrupted
                break
    return SearchOutcome(outcomes, url, interrupted=interrupted, timed_out=timed_out)

