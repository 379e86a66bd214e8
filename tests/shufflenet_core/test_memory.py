"""keep_freed_memory: a step that frees and re-allocates its activations stops page-faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

STEP = """
import resource, sys, torch
from shufflenet_core.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
maps = [torch.ones(128, 64 * channels) for channels in (60, 120, 240, 480, 960)]

def step():  # activations kept for the backward pass, then gradients in reverse, all freed
    kept = [m * 2 for m in maps]
    grads = [k + 1 for k in reversed(kept)]
    del kept
    return sum(float(g[0, 0]) for g in grads)

for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _faults_per_step(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEP, mode], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults_per_step("default"), _faults_per_step("keep")
    assert default > 5000  # ~7.7 MiB of fresh pages a step: glibc gave the blocks back to the kernel
    assert kept < default / 20
