"""The device interface every kind implements, and the registry that opens a spec.

A device spec is a string the user types: ``local``, ``ssh://[user@]host[:port]`` (or a bare
host alias from ~/.ssh/config), ``adb`` or ``adb:SERIAL``, or ``lut`` (no device: predictions
from a lookup table only). Its scheme is the part before ``://`` or ``:``, or the whole spec;
:func:`open_device` looks the scheme up among the kinds registered with
:func:`register_device` and gives a spec that no kind claims to the default kind (ssh, whose
bare aliases have no scheme). Each kind is one module in nas/latency/kinds/ that registers
itself, so adding a kind is adding a file there::

    @register_device("myboard")
    class MyBoardDevice(Device):
        usage = "myboard"
        def _probe(self) -> dict[str, Any]: ...
        def measure(self, models, settings, *, input_file=None) -> list[Timing]: ...

This module imports no kind: nas/latency/kinds/__init__.py imports every module of its folder,
and nas/latency/__init__.py imports that package, so every kind is registered once anything
in nas.latency has been imported.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas.errors import UserError
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.timing import RunSettings, Stats, Timing, summarize

__all__ = [
    "Device",
    "DeviceError",
    "DeviceUnavailableError",
    "RunSettings",
    "Stats",
    "Timing",
    "device_kinds",
    "open_device",
    "register_device",
    "summarize",
]


class Device(ABC):
    """Something that can run an ONNX model and time it: what measure_config, build_lut,
    validate_lut, LatencyEvaluator and ``nas latency`` call, and all they call."""

    kind: ClassVar[str] = "device"
    """The scheme the kind is registered under (set by :func:`register_device`)."""
    usage: ClassVar[str] = ""
    """How a spec of this kind is written, for messages: ``adb[:serial]``."""
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    """The keyword options the kind takes; :func:`open_device` drops the others."""
    runtimes: ClassVar[tuple[str, ...]] = ("onnxruntime", "executorch")
    """Runtimes the kind can time models with (see :data:`nas.latency.measure.RUNTIMES`)."""
    measures: ClassVar[bool] = True
    """False for a kind that cannot time anything (``lut``): a lookup table then predicts
    every config, and a config it lacks fails instead of being measured."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._info: dict[str, Any] | None = None

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> Device:
        """The device ``spec`` names (its scheme is this kind's); ``options`` are already
        narrowed to :attr:`OPTIONS`. Kinds whose spec says more (a host, a serial) override it."""
        if spec != cls.kind:
            raise UserError(f"device {spec!r}: {cls.kind} takes nothing after its name (write {cls.usage or cls.kind})")
        return cls(spec, **options)

    def probe(self) -> dict[str, Any]:
        """Architecture, CPU model, cores and runtime versions (cached per object)."""
        if self._info is None:
            info = self._probe()
            self._info = {"spec": self.spec, "kind": self.kind, **info}
        return self._info

    @abstractmethod
    def _probe(self) -> dict[str, Any]:
        """What :meth:`probe` returns, less spec and kind; ``onnxruntime`` is falsy when the
        device has no runtime to time models with."""

    @abstractmethod
    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        """Time each ONNX file; one upload and one runtime start for all of them."""

    def require_runtime(self, runtime: str = "onnxruntime") -> dict[str, Any]:
        """The probe, or :class:`DeviceUnavailableError` when the device cannot time models
        with ``runtime``."""
        if runtime not in self.runtimes:
            raise DeviceUnavailableError(
                f"{self.spec}: {self.kind} devices time models with {', '.join(self.runtimes)} only"
                + ("; for ExecuTorch on a phone, push a cross-built executor_runner and time it there (see README)"
                   if runtime == "executorch" else "")
            )
        info = self.probe()
        if runtime == "executorch" and not info.get("executorch"):
            raise DeviceUnavailableError(
                f"{self.spec}: the device ({info.get('arch', '?')}) has no ExecuTorch Python runtime "
                "(pip install executorch, which needs torch there; else a cross-built executor_runner, see README)"
            )
        if not info.get("onnxruntime") and runtime == "onnxruntime":
            raise DeviceUnavailableError(self.missing_runtime_message(info))
        return info

    def missing_runtime_message(self, info: dict[str, Any]) -> str:
        """One line: the runtime is missing, and how to install it."""
        return f"{self.spec}: the device ({info.get('arch', '?')}) has no runtime to time ONNX models"

    def close(self) -> None:  # noqa: B027 - optional hook: most kinds hold nothing to release
        """Release connections (nothing to do for most kinds)."""


DeviceKind = TypeVar("DeviceKind", bound=type[Device])

_KINDS: dict[str, type[Device]] = {}
_DEFAULT: list[str] = []
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def register_device(scheme: str, *, default: bool = False) -> Callable[[DeviceKind], DeviceKind]:
    """Class decorator: specs whose scheme is ``scheme`` open this kind. ``default``: specs
    whose scheme no kind claims open it too (one kind only: ssh, for bare host aliases)."""
    if not _SCHEME.match(scheme):
        raise ValueError(f"device scheme {scheme!r} must be lower-case letters, digits, '+', '.' or '-'")

    def register(cls: DeviceKind) -> DeviceKind:
        known = _KINDS.get(scheme)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"device scheme {scheme!r} is taken by {known.__module__}.{known.__qualname__}")
        if default and _DEFAULT and _DEFAULT[0] != scheme:
            raise ValueError(f"the default device kind is already {_DEFAULT[0]!r}")
        cls.kind = scheme
        _KINDS[scheme] = cls
        if default:
            _DEFAULT[:] = [scheme]
        return cls

    return register


def device_kinds() -> dict[str, type[Device]]:
    """The registered kinds by scheme."""
    return dict(_KINDS)


def scheme_of(spec: str) -> str:
    """``ssh`` for ``ssh://pi@board``, ``adb`` for ``adb:SERIAL``, ``local`` for ``local``."""
    return spec.split("://", 1)[0] if "://" in spec else spec.split(":", 1)[0]


def _usage() -> str:
    forms = [cls.usage or scheme for scheme, cls in sorted(_KINDS.items())]
    return ", ".join(forms[:-1]) + f" or {forms[-1]}" if len(forms) > 1 else "".join(forms)


def open_device(spec: str, **options: Any) -> Device:
    """The device a spec names. Options go to the device kind (e.g. known_hosts for SSH); the
    CLI passes every kind's options, so those of other kinds and those that are None are
    dropped.

    >>> open_device("local").kind
    'local'
    """
    text = (spec or "").strip()
    if not text:
        raise UserError(f"--device is empty; use {_usage()}")
    kind = _KINDS.get(scheme_of(text)) or (_KINDS[_DEFAULT[0]] if _DEFAULT else None)
    if kind is None:
        raise UserError(f"device {text!r}: unknown kind; use {_usage()}")
    return kind.from_spec(text, **{key: value for key, value in options.items()
                                   if value is not None and key in kind.OPTIONS})
