"""Fixtures for the latency tests: a real sshd on loopback, keys, a tiny model config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shufflenet_core import ShuffleNetConfig

from .sshd import keygen, start_sshd, sshd_unavailable_reason


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> dict[str, Path]:
    reason = sshd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("ssh-keys")
    return {"client": keygen(folder / "client_ed25519"), "stranger": keygen(folder / "stranger_ed25519")}


@pytest.fixture(scope="session")
def sshd(ssh_keys, tmp_path_factory):
    """A board over SSH whose python3 (this venv's, passed as remote_python) has onnxruntime."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"), ssh_keys["client"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def remote_python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def tiny_config() -> ShuffleNetConfig:
    """A few-hundred-microsecond network: the path is under test, not the speed."""
    return ShuffleNetConfig.from_width(3, 0.25, stage_depths=(1, 1, 1), input_size=64, num_classes=10)
