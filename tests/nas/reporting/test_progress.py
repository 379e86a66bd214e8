"""What a search prints while it runs, on a narrow pipe as CI and log files see it."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any, cast

from rich.console import Console

from nas.records import ACCURACY, StudyInfo
from nas.reporting.progress import RichDisplay

LONG_PATH = "/tmp/pytest-of-root/pytest-28/test_a_killed_worker_is_report0/shufflenas-kill-workers-sx84c1p2/worker-1.log"


def test_a_worker_event_keeps_its_log_path_whole_on_a_narrow_console() -> None:
    """Regression: rich wrapped the event at the console width and split the log path."""
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=80), quiet=True)
    plan = cast(Any, SimpleNamespace(study_name="s", target=6, counted_before=0, settings=SimpleNamespace(workers=2)))
    info = StudyInfo(name="s", budget_macs=None, budget_label=None, objectives=(ACCURACY,), latency_budget_ms=None, attrs={})
    with display.study(plan, info, []) as feed:
        feed.worker_event(f"worker 1 (pid 4242) died with exit code -9 (killed by SIGKILL); its trial #3 is marked FAIL "
                          f"(log: {LONG_PATH}) [not markup]")
    text = out.getvalue()
    assert f"(log: {LONG_PATH}) [not markup]" in text
