"""Benchmarks are scripts, not a package: tests load them by path."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import REPO_ROOT


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
