"""`nas dashboard` in a real browser: Debian's chromium driven by Playwright over loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.data import load_study_data
from dashboard.figures import study_front
from nas.records import TrialRecord
from tests.conftest import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/system-deps.sh)"),
]

# The plotly graph div holding the Pareto front; its traces on the main axes (a strip below may
# hold untrained trials on a second y axis) are drawn, in order, in the ".subplot.xy" layer.
_FRONT_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const gd = plots.find(g => (g.data || []).some(t => t.meta && t.meta.role === 'front'));
  if (!gd) return null;
  const main = gd.data.filter(t => !t.yaxis || t.yaxis === 'y');
  const index = main.findIndex(t => t.meta && t.meta.role === 'front');
  const traces = gd.querySelectorAll('.subplot.xy .scatterlayer .trace');
  const points = [...traces[index].querySelectorAll('.point')];
  const all = main.flatMap((t, i) => (t.customdata || []).map((c, j) => [i, j, c[1]]));
  return {drawn: points.length, numbers: main[index].customdata.map(c => c[1]), traces: traces.length, all: all};
}"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"nas dashboard exited: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("nas dashboard did not answer in time")


@contextlib.contextmanager
def _serve(storage: Path):
    """`nas dashboard` on a free loopback port, stopped (SIGTERM) afterwards."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "dashboard", "--storage", str(storage), "--port", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_until_up(port, server)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def dashboard_server(search_storage):
    with _serve(search_storage.path) as url:
        yield url


def _launch(playwright):  # noqa: ANN001, ANN202
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_dashboard_in_chromium(dashboard_server, search_storage, artifacts_dir):
    from playwright.sync_api import sync_playwright

    data = load_study_data(str(search_storage.path), search_storage.study)
    expected = study_front(data)
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(dashboard_server)
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=90_000)
            page.wait_for_function(f"({_FRONT_JS})() !== null", timeout=30_000)
            front = page.evaluate(_FRONT_JS)
            assert front["drawn"] == len(expected)
            assert front["numbers"] == [r.number for r in expected]
            # The toolbar has no "Deploy" button (Streamlit shows it on loopback by default).
            page.get_by_test_id("stToolbar").wait_for(timeout=10_000)
            assert page.get_by_test_id("stAppDeployButton").count() == 0
            assert page.get_by_role("button", name="Deploy").count() == 0
            page.screenshot(path=str(artifacts_dir / "dashboard.png"))
            # Clicking a point opens that trial in the detail section (which starts on the front's
            # most accurate trial, so click another one).
            opened_first = expected[-1].number
            trace, position, number = next(c for c in front["all"] if c[2] != opened_first)
            point = page.locator(".js-plotly-plot .subplot.xy .scatterlayer .trace").nth(trace).locator(".point").nth(position)
            box = point.bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            target = next(r for r in data.records if r.number == number)
            command = f"--study {data.name} --trial {target.number} "
            page.wait_for_function(
                f"() => [...document.querySelectorAll('code')].some(c => c.innerText.includes({command!r}))",
                timeout=60_000,
            )
            page.get_by_text("Trial detail").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts_dir / "dashboard-full.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts_dir / "dashboard.png").stat().st_size > 20_000


def _add_trial(storage: Path, study_name: str, template: TrialRecord) -> None:
    """What a running search does: one more completed trial, written by another process's storage handle."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{storage}")
    study.add_trial(optuna.trial.create_trial(
        values=[template.score, template.mflops], user_attrs=dict(template.attrs), constraints={"flops": -1.0},
    ))


def test_refresh_follows_a_running_search(search_storage, tmp_path):
    from playwright.sync_api import sync_playwright

    storage = tmp_path / "running.db"
    shutil.copy(search_storage.path, storage)
    data = load_study_data(str(storage), search_storage.study)
    total = len(data.records)
    complete = len(data.completed)
    with _serve(storage) as url, sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector(f"text={complete} of {total} trials complete", timeout=90_000)
            page.get_by_text("refresh while a search runs").click()
            page.wait_for_timeout(500)
            _add_trial(storage, data.name, data.completed[0])
            page.wait_for_selector(f"text={complete + 1} of {total + 1} trials complete", timeout=60_000)
        finally:
            browser.close()
