"""Every device kind, one module each; importing this package registers them all.

A module here defines a :class:`nas.latency.devices.Device` subclass decorated with
``@register_device("scheme")`` (see nas/latency/devices.py); adding a kind is adding a module
here, nothing else changes. Modules whose name starts with ``_`` are helpers, not imported.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _found in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
    if not _found.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_found.name}")
        __all__.append(_found.name)
