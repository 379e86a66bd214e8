"""Start a local Ray or connect to a running cluster; a bad address is one clear line, fast."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from nas.errors import UserError

__all__ = ["check_reachable", "parse_address", "ray_session"]

CONNECT_TIMEOUT_S = 3.0


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT (the GCS address `ray start --head` prints) -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UserError(f"--ray-address {address!r}: use auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    return host, int(port_text)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Ray's own connect retries for a long time; a plain TCP check answers in seconds."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise UserError(
            f"no Ray cluster at {address} ({reason}); start one with `ray start --head --port={port}` "
            "or leave out --ray-address to use a local Ray"
        ) from None


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, num_gpus: int | None = None) -> Iterator[dict]:
    """Ray for the duration of the search; yields the cluster's resources."""
    if address is None:
        # A private, loopback-only Ray for this run (see ../shared/STACK.md).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    elif address != "auto":
        check_reachable(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    try:
        if address is None:
            ray.init(
                num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                logging_level=logging.WARNING, log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = "a running Ray cluster (address auto)" if address == "auto" else (address or "a local Ray")
        raise UserError(f"cannot connect to {where}: {first}") from None
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()
