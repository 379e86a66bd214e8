"""Measured latencies on disk, keyed by (device, config, runtime, threads).

One JSON file (default ~/.cache/shufflenas/latency.json, or SHUFFLENAS_LATENCY_CACHE). Writes
take an exclusive lock and replace the file atomically, so parallel search workers neither
lose nor corrupt entries; a damaged file is set aside, never silently emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LatencyCache", "default_cache_path", "cache_key"]

CACHE_FORMAT = "shufflenas-latency-cache"
CACHE_VERSION = 1


def default_cache_path() -> Path:
    override = os.environ.get("SHUFFLENAS_LATENCY_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shufflenas" / "latency.json"


def device_fingerprint(info: dict[str, Any]) -> dict[str, Any]:
    """What identifies the hardware a number was measured on."""
    return {key: info.get(key) for key in ("spec", "kind", "hostname", "arch", "cpu_model", "cores")}


def cache_key(info: dict[str, Any], config_dict: dict[str, Any], threads: int) -> str:
    material = {
        "device": device_fingerprint(info),
        "config": config_dict,
        "runtime": info.get("onnxruntime") or info.get("runtime"),
        "threads": threads,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


class LatencyCache:
    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()

    def get(self, key: str, *, min_runs: int = 1) -> dict[str, Any] | None:
        entry = self._read().get(key)
        if entry is None or int(entry.get("runs", 0)) < min_runs:
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self._locked():
            entries = self._read()
            entries[key] = {**entry, "stored_at": time.time()}
            self._write(entries)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            self._set_aside()
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            self._set_aside()
            return {}
        return dict(data.get("entries", {}))

    def _write(self, entries: dict[str, Any]) -> None:
        payload = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True))
        os.replace(temporary, self.path)

    def _set_aside(self) -> None:
        """Keep an unreadable cache for inspection instead of overwriting it."""
        with contextlib.suppress(OSError):
            self.path.rename(self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
