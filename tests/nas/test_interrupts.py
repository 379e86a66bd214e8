"""Ctrl-C ends the real CLI with exit 130 however unluckily it lands.

A SIGINT lands wherever the main thread happens to be; a loop that killed the real search a few
dozen times found it inside a string ``exec`` (exit -2) and inside a weakref callback (dropped,
exit 0). Each probe below raises the KeyboardInterrupt exactly there, as the signal would, so
the failure is deterministic; the probe command is added to the real ``nas`` app and the
interpreter is started with ``python -m``, as the tests and many users start it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROBE = """
import sys, time, weakref
from nas import cli

@cli.app.command("probe")
def probe(where: str) -> None:
    if where == "string-exec":
        exec("raise KeyboardInterrupt", {})
    elif where == "weakref-callback":
        class Thing: pass
        def callback(_):
            raise KeyboardInterrupt
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs here; Python prints "Exception ignored" and goes on
        for _ in range(200):
            time.sleep(0.01)
        print("finished")
    elif where == "caught":
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        print("finished")

if __name__ == "__main__":
    cli.entry_point()
"""


def _probe(tmp_path: Path, where: str) -> subprocess.CompletedProcess:
    (tmp_path / "probe_cli.py").write_text(textwrap.dedent(PROBE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "probe_cli", "probe", where], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["string-exec", "weakref-callback"])
def test_an_interrupt_landing_in_an_awkward_place_still_exits_130(tmp_path, where) -> None:
    done = _probe(tmp_path, where)
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert "finished" not in done.stdout  # the interrupt stopped the command
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_keyboard_interrupt_that_code_catches_itself_is_not_a_ctrl_c(tmp_path) -> None:
    done = _probe(tmp_path, "caught")
    assert done.returncode == 0 and "finished" in done.stdout, (done.stdout, done.stderr)
