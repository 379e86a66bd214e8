"""Fused training BatchNorm kernels for the CPU (``csrc/``), built once per machine.

A ShuffleNet unit's BNs with what follows them (ReLU, the residual add, the channel shuffle)
run as 2 passes over memory forward and 2 backward instead of 6 and 6; the stem (conv, BN,
ReLU, max pool) is one kernel each way (``csrc/fused_stem.cpp``,
:mod:`shufflenet_core.fused_stem`), and so is the 3x3 depthwise conv (``csrc/fused_depthwise.cpp``).
A proxy training step runs 1.22-1.37x faster with them than with PyTorch's ops (README,
"Performance"). The same library holds the eval-mode kernels (``csrc/inference.cpp``,
:mod:`shufflenet_core.inference`). The source is compiled with the
C++ compiler and ninja that ``torch.utils.cpp_extension`` uses, in a private temporary folder
by a child process, and the library is moved into ``~/.cache/shufflenas/kernels``
(``$XDG_CACHE_HOME``) in one rename: parallel workers never see half a file and a killed
build leaves no lock behind. Where the
build fails (no compiler), :func:`available` is false, one warning says why, and training runs
PyTorch's own ops (same results, slower). ``SHUFFLENAS_FUSED_KERNELS=0`` switches them off.
``python -m shufflenet_core.fused`` builds them and says which path training takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

__all__ = ["SWITCH", "available", "build", "library_path", "ops", "status"]

SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in (
    "fused_batch_norm.cpp", "fused_stem.cpp", "fused_depthwise.cpp", "inference.cpp"))
HEADERS = tuple(Path(__file__).with_name("csrc").glob("*.h"))
"""Included by the sources: part of the library's hash, so a change rebuilds it."""
SWITCH = "SHUFFLENAS_FUSED_KERNELS"
"""Environment variable: ``0`` keeps training on PyTorch's own ops (workers inherit it)."""

_VECTOR_FLAGS = {"AVX2": ["-mavx2", "-mfma"], "AVX512": ["-mavx2", "-mfma"]}
"""Compiler flags per CPU capability PyTorch detects (x86); elsewhere the compiler's baseline."""

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried in this process
_failure = ""

STALE_BUILD_SECONDS = 3600
BUILD_TIMEOUT_SECONDS = 600
"""A build takes about 15 s here; a stuck compiler is given up on after this."""


def _flags() -> list[str]:
    return ["-O3", *_VECTOR_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]


def library_path() -> Path:
    """Where the built library lives: one file per version of the sources and headers, flags,
    torch and Python."""
    texts = [path.read_text() for path in (*SOURCES, *sorted(HEADERS))]
    material = "\n".join([*texts, *_flags(), torch.__version__, sysconfig.get_config_var("SOABI") or ""])
    digest = hashlib.sha256(material.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shufflenas" / "kernels" / f"fused_batch_norm-{digest}.so"


_BUILD_SCRIPT = """
import os
import sys
from torch.utils.cpp_extension import load
load(name=sys.argv[1], sources=sys.argv[2].split(os.pathsep), build_directory=sys.argv[3], extra_cflags=sys.argv[4:],
     is_python_module=False, verbose=False)
"""


def build() -> Path:
    """Compile the kernels into :func:`library_path` unless already there; raise ``RuntimeError``
    with the compiler's last words if the build fails."""
    target = library_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target.parent)
    name = target.stem.replace("-", "_")
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as folder:
        returncode, output = _compile(name, folder)
        built = Path(folder) / f"{name}.so"
        if returncode != 0 or not built.exists():
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            raise RuntimeError((errors or lines or ["no output"])[-1][:300])
        os.replace(built, target)  # atomic: a parallel build of the same file simply wins or loses
    return target




def _compile(name: str, folder: str) -> tuple[int, str]:
    """Run the build script in its own process group, so that an interrupt or a timeout stops
    the compiler it starts (ninja, cc1plus) too, not only the Python child."""
    child = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, name, os.pathsep.join(map(str, SOURCES)), folder,
                              *_flags()],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=BUILD_TIMEOUT_SECONDS)
    except BaseException as stopped:  # a timeout, or Ctrl-C in the parent
        # SIGTERM first: ninja passes it on to the compilers it runs in process groups of their own.
        for sent in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sent)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
                break
        if isinstance(stopped, subprocess.TimeoutExpired):
            raise RuntimeError(f"the build took over {BUILD_TIMEOUT_SECONDS} s") from stopped
        raise
    return child.returncode, output


def _remove_stale_builds(folder: Path) -> None:
    """Build folders of ours (``build-*`` in the kernels folder) left by a killed build over an
    hour ago; a build takes seconds, so nobody is still using them."""
    for stale in folder.glob("build-*"):
        with contextlib.suppress(OSError):
            if stale.is_dir() and time.time() - stale.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(stale)


def _load() -> None:
    """Load the library, building it first if needed; a cached file that no longer loads (a
    torch rebuilt under the same version, say) is ours to replace: it is built again once."""
    path = library_path()
    if not path.exists():
        print("shufflenas: building the fused BatchNorm kernels for this machine (once, ~15 s)", file=sys.stderr,
              flush=True)
        torch.ops.load_library(str(build()))
        return
    try:
        torch.ops.load_library(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        print("shufflenas: rebuilding the fused BatchNorm kernels (the cached library did not load)",
              file=sys.stderr, flush=True)
        torch.ops.load_library(str(build()))


def available() -> bool:
    """Whether the fused kernels can run in this process (built, or built now, and loaded)."""
    global _loaded, _failure
    if os.environ.get(SWITCH) == "0":
        return False
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            try:
                _load()
                _loaded = True
            except (OSError, RuntimeError) as error:
                _loaded, _failure = False, str(error)
                warnings.warn(f"fused BatchNorm kernels unavailable ({_failure}); training uses PyTorch's own ops "
                              f"(same results; a step takes 1.2-1.4x as long). Set {SWITCH}=0 to silence this.",
                              stacklevel=2)
    return bool(_loaded)


def ops():
    """The loaded kernels (``torch.ops.shufflenas_fused``); call :func:`available` first."""
    return torch.ops.shufflenas_fused


def status() -> str:
    """One line saying which path training takes here and why."""
    if os.environ.get(SWITCH) == "0":
        return f"fused BatchNorm kernels: off ({SWITCH}=0); training uses PyTorch's own ops"
    if available():
        return f"fused BatchNorm kernels: on ({library_path()})"
    return f"fused BatchNorm kernels: unavailable ({_failure}); training uses PyTorch's own ops"


if __name__ == "__main__":
    try:
        print(status())
    except KeyboardInterrupt:
        print("interrupted: nothing was built", file=sys.stderr)
        sys.exit(130)
    sys.exit(1 if os.environ.get(SWITCH) != "0" and not available() else 0)
