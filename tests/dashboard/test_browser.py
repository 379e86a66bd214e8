"""`nas dashboard` in a real browser: Debian's chromium driven by Playwright over loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.data import load_study_data
from dashboard.figures import search_front
from tests.conftest import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/system-deps.sh)"),
]

# The plotly graph div holding the Pareto front, and its front trace's index among scatter traces.
_FRONT_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const gd = plots.find(g => (g.data || []).some(t => t.meta && t.meta.role === 'front'));
  if (!gd) return null;
  const index = gd.data.findIndex(t => t.meta && t.meta.role === 'front');
  const traces = gd.querySelectorAll('.scatterlayer .trace');
  const points = [...traces[index].querySelectorAll('.point')];
  return {drawn: points.length, numbers: gd.data[index].customdata.map(c => c[1]), traces: traces.length};
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


@pytest.fixture
def dashboard_server(search_storage):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "dashboard", "--storage", str(search_storage.path), "--port", str(port)],
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


def test_dashboard_in_chromium(dashboard_server, search_storage, artifacts_dir):
    from playwright.sync_api import sync_playwright

    data = load_study_data(str(search_storage.path), search_storage.study)
    expected = search_front(data)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(dashboard_server)
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=90_000)
            page.wait_for_function(f"({_FRONT_JS})() !== null", timeout=30_000)
            front = page.evaluate(_FRONT_JS)
            assert front["drawn"] == len(expected)
            assert front["numbers"] == [r.number for r in expected]
            page.screenshot(path=str(artifacts_dir / "dashboard.png"))
            # Clicking a point opens that trial in the detail section (which starts on the front's
            # most accurate trial, so click another one).
            opened_first = expected[-1].number
            candidates = page.evaluate("""() => { const gd = [...document.querySelectorAll('.js-plotly-plot')]
                .find(g => (g.data || []).some(t => t.meta && t.meta.role === 'front'));
                return gd.data.flatMap((t, i) => (t.customdata || []).map((c, j) => [i, j, c[1]])); }""")
            trace, position, number = next(c for c in candidates if c[2] != opened_first)
            point = page.locator(".js-plotly-plot .scatterlayer .trace").nth(trace).locator(".point").nth(position)
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
