"""The local backend: trials in this process, or in N supervised worker processes.

Worker processes share the study through its storage (claims of enqueued trials are atomic
there, see nas/storage/optuna_adapter.py). The supervisor (this process) watches them: a
worker that dies is reported by name with its exit code and last error line, its running
trial is failed as lost (and runs again), and a replacement takes over the rest of its share
of trials, up to ``settings.worker_restarts`` times. Worker output goes to log files in a
temporary folder of this run, removed at the end unless a worker died (then its path is
printed). The storage is polled for finished trials: it is the one source of truth.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nas import records as R
from nas.engine.display import Display, TrialFeed
from nas.engine.lost_trials import lose_trial
from nas.engine.outcome import EXIT_INTERRUPTED, BackendReport, StudyPlan, counts_toward_target
from nas.engine.settings import Budget, SearchSettings
from nas.engine.trial_runner import INTERRUPTED_BY_USER, make_runner
from nas.interrupts import catching_interrupts, deferred_interrupts, raise_if_interrupted
from nas.records import record_from_trial

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    import optuna

__all__ = ["LocalBackend", "WorkerJob", "split_trials", "worker_main"]

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30
"""After Ctrl-C, how long workers get to mark their running trials before they are killed."""
OWN_INTERRUPT_WAIT_SECONDS = 2.0
"""A Ctrl-C reaches the workers and the supervisor alike (one process group), but a worker may
end on it before the supervisor's KeyboardInterrupt is raised: an exit on SIGINT waits this
long for it before it is counted as a worker death."""


def split_trials(total: int, workers: int) -> list[int]:
    """Trials per worker, summing exactly to ``total`` (no overshoot, no duplicates)."""
    base, extra = divmod(total, workers)
    shares = [base + (1 if index < extra else 0) for index in range(workers)]
    return [share for share in shares if share > 0]


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process runs (pickled to it)."""

    settings: SearchSettings
    budget: Budget
    study_name: str
    share: int
    """Trials it runs (each counts: complete, pruned or failed on its own)."""
    number: int
    """1, 2, ...: its name is "worker N"; replacements get the next numbers."""
    deadline: float | None
    """time.time() after which it starts no new trial (--timeout)."""
    log_path: str

    @property
    def name(self) -> str:
        return f"worker {self.number}"


def worker_main(job: WorkerJob) -> None:
    """Entry point of a worker process: its own storage connection and sampler seed.

    The supervisor starts it with SIGINT blocked (see :meth:`_Pool.start`), so a Ctrl-C while
    Python starts up waits until the output goes to the log; from here on it stops the
    current trial cleanly (Optuna marks it, the runner marks it lost) and exits with 130.
    """
    _die_with_parent()
    _log_to(job.log_path)
    try:
        with catching_interrupts():  # an interrupt that garbage collection swallows still stops the trial
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            _run_share(job)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def _run_share(job: WorkerJob) -> None:
    import optuna

    from nas.engine.samplers import make_sampler
    from nas.engine.study import open_search_storage
    from nas.evaluation.accelerator import pin_worker

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = job.settings
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    seed = None if settings.seed is None else settings.seed + 1000 * job.number
    study = optuna.load_study(
        study_name=job.study_name, storage=open_search_storage(settings, create=False),
        sampler=make_sampler(settings.sampler, seed, settings.n_trials),
    )
    timeout = None if job.deadline is None else job.deadline - time.time()
    if timeout is not None and timeout <= 0:
        return
    pin_worker(settings.evaluator.accelerator, job.number - 1, settings.workers)  # worker k on GPU k mod count
    runner = make_runner(settings, job.budget, worker=job.name)
    with deferred_interrupts():  # a Ctrl-C stops the trial at its next step, never inside Optuna
        study.optimize(runner, n_trials=job.share, timeout=timeout, catch=(Exception,), gc_after_trial=False,
                       callbacks=[lambda study, trial: raise_if_interrupted()])


def _die_with_parent() -> None:
    """Linux: take SIGKILL when the parent dies, so kill -9 of `nas search` stops its workers."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_to(path: str) -> None:
    """Send this process's stdout and stderr (Python's and C libraries') to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except FileNotFoundError:  # the supervisor already ended and removed its log folder: nobody to work for
        os._exit(EXIT_INTERRUPTED)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code} (killed by signal {-code})"
    return f"exit code {code}"


def last_error_line(path: Path) -> str | None:
    """The last non-empty line a worker wrote (a traceback ends with its error)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


@dataclass
class _Worker:
    job: WorkerJob
    process: BaseProcess
    handled: bool = False

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


@dataclass
class _Pool:
    """The supervisor of one study's worker processes."""

    plan: StudyPlan
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    feed: TrialFeed
    log_dir: Path
    report: BackendReport = field(default_factory=BackendReport)
    workers: list[_Worker] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.host = socket.gethostname()
        self.deadline = None if self.plan.timeout is None else time.time() + self.plan.timeout
        self.seen = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def start(self, share: int) -> None:
        number = len(self.workers) + 1
        job = WorkerJob(
            self.plan.settings, self.plan.budget, self.plan.study_name, share, number, self.deadline,
            str(self.log_dir / f"worker-{number}.log"),
        )
        process = self.context.Process(target=worker_main, args=(job,), name=job.name, daemon=False)
        # The child inherits a blocked SIGINT: a Ctrl-C during its start-up is held until it
        # can be handled (otherwise Python prints a traceback of an interrupted import).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        self.workers.append(_Worker(job, process))

    def run(self) -> BackendReport:
        for share in split_trials(self.plan.remaining, self.plan.settings.workers):
            self.start(share)
        try:
            while any(worker.process.is_alive() for worker in self.workers) or self._unhandled():
                self._poll()
                for worker in self._unhandled():
                    self._exited(worker)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self._stop_after_interrupt()
            self.report.interrupted = True
        self._poll()
        return self.report

    def _unhandled(self) -> list[_Worker]:
        return [w for w in self.workers if not w.handled and w.process.exitcode is not None]

    def _poll(self) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number not in self.seen and trial.state.is_finished():
                self.seen.add(trial.number)
                self.feed.trial_finished(record_from_trial(self.study.study_name, trial))

    def _trials_of(self, worker: _Worker) -> list[optuna.trial.FrozenTrial]:
        return [
            t for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get(R.WORKER_HOST) == self.host and t.user_attrs.get(R.WORKER_PID) == worker.pid
        ]

    def _exited(self, worker: _Worker) -> None:
        worker.handled = True
        code = worker.process.exitcode or 0
        if code == 0:
            return
        if code in (EXIT_INTERRUPTED, -signal.SIGINT):
            time.sleep(OWN_INTERRUPT_WAIT_SECONDS)  # the user's Ctrl-C raises KeyboardInterrupt here
        settings = self.plan.settings
        cause = describe_exit(code)
        last = last_error_line(Path(worker.job.log_path))
        line = f"{worker.job.name} (pid {worker.pid}) died with {cause}" + (f": {last}" if last else "")
        reason = f"interrupted: {worker.job.name} (pid {worker.pid}) died with {cause}"
        trials = self._trials_of(worker)
        for trial in trials:
            if trial.state.name == R.RUNNING and lose_trial(
                self.study, self.storage, trial, reason, max_attempts=settings.max_attempts
            ):
                line += f"; its trial #{trial.number} is marked FAIL"
        done = sum(1 for t in self.study.get_trials(deepcopy=False) if t.number in {x.number for x in trials}
                   and counts_toward_target(record_from_trial(self.study.study_name, t)))
        left = worker.job.share - done
        past_deadline = self.deadline is not None and time.time() >= self.deadline
        if left > 0 and not past_deadline:
            if self.restarts < settings.worker_restarts:
                self.restarts += 1
                self.start(left)
                line +=(
                    f"; {self.workers[-1].job.name} takes over its {left} trial(s) (restart {self.restarts} of "
                    f"{settings.worker_restarts})"
                )
            else:
                limit = "restarts are off (--worker-restarts 0)" if settings.worker_restarts == 0 else (
                    f"all {settings.worker_restarts} restarts are used"
                )
                line += f"; {limit}, so {left} trial(s) are not run"
                self.report.gave_up = f"workers could not be kept alive ({limit}): {left} trial(s) of {worker.job.name} not run"
        line += f" (log: {worker.job.log_path})"
        self.report.events.append(line)
        self.feed.worker_event(line)

    def _stop_after_interrupt(self) -> None:
        """Ctrl-C reached every worker too: give them time to mark their trials, then make
        sure nothing they ran is left RUNNING."""
        for worker in self.workers:
            worker.process.join(timeout=STOP_GRACE_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        for worker in self.workers:
            for trial in self._trials_of(worker):
                if trial.state.name == R.RUNNING:
                    lose_trial(self.study, self.storage, trial, INTERRUPTED_BY_USER, max_attempts=self.plan.settings.max_attempts)


class LocalBackend:
    name = "local"

    @contextmanager
    def opened(self, settings: SearchSettings, display: Display) -> Iterator[None]:
        display.note(f"data: {settings.evaluator.dataset().describe()}")
        mode = "in this process" if settings.workers <= 1 else f"{settings.workers} worker processes"
        display.note(f"local backend: {mode} x {settings.threads or 'default'} torch thread(s) each")
        if settings.evaluator.epochs > 0:
            from nas.evaluation.accelerator import describe_plan

            evaluator = settings.evaluator
            display.note(f"training on: {describe_plan(evaluator.accelerator, evaluator.train_precision, settings.workers)}")
        yield

    def run(
        self, plan: StudyPlan, study: optuna.Study, storage: optuna.storages.BaseStorage, feed: TrialFeed
    ) -> BackendReport:
        if plan.settings.workers <= 1:
            return self._in_process(plan, study, feed)
        log_dir = Path(tempfile.mkdtemp(prefix=f"shufflenas-{plan.study_name}-workers-"))
        report = None
        try:
            report = _Pool(plan, study, storage, feed, log_dir).run()
            return report
        finally:  # our own temporary folder; kept only when a worker died, for the log its report names
            if report is None or not report.events:
                shutil.rmtree(log_dir, ignore_errors=True)

    @staticmethod
    def _in_process(plan: StudyPlan, study: optuna.Study, feed: TrialFeed) -> BackendReport:
        settings = plan.settings
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        runner = make_runner(settings, plan.budget, worker="in-process", on_step=feed.training_step)

        def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            feed.trial_finished(record_from_trial(study.study_name, trial))
            raise_if_interrupted()  # a Ctrl-C while the trial was stored: stop before the next one

        try:
            with deferred_interrupts():  # a Ctrl-C stops the trial at its next step, never inside Optuna
                study.optimize(
                    runner, n_trials=plan.remaining, timeout=plan.timeout, callbacks=[finished], catch=(Exception,),
                    gc_after_trial=False,
                )
        except KeyboardInterrupt:
            return BackendReport(interrupted=True)
        return BackendReport()
