"""Ctrl-C ends every command the same way: exit 130, finished work kept.

A plain ``except KeyboardInterrupt`` is not enough, because of two CPython behaviours that a
kill-mid-run loop of the real command shows a few times in a hundred:

1. An interrupt that lands in a weakref callback or a ``__del__`` (garbage collection runs them
   anywhere, e.g. in SQLAlchemy's class registry) is printed as "Exception ignored" and dropped:
   the command ran on to the end and exited 0. :func:`catching_interrupts` hands such a lost
   interrupt back to the main thread as a fresh SIGINT, where it is raised as usual.
2. An interrupt that lands inside a string ``exec``/``eval`` (``dataclasses`` builds its methods
   that way while a module is imported) sets an interpreter flag that, under ``python -m``,
   turns the exit status into death by SIGINT (-2) even after the interrupt was handled.
   :func:`forget_handled_interrupt` clears it once the command has handled the interrupt.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_received = threading.Event()
REDELIVER_AFTER_S = 0.01


def interrupt_received() -> bool:
    """True once a SIGINT reached this process while :func:`catching_interrupts` was active."""
    return _received.is_set()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _received.set()
    raise KeyboardInterrupt


def _redeliver_lost_interrupt(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            if callable(signal.getsignal(signal.SIGINT)):
                # Raised from here it would be swallowed again. A timer thread marks SIGINT
                # pending a moment later, when the main thread is back in ordinary code (if it
                # is swallowed once more, this hook runs again and so on until it lands).
                try:
                    timer = threading.Timer(REDELIVER_AFTER_S, _thread.interrupt_main, args=(signal.SIGINT,))
                    timer.daemon = True
                    timer.start()
                except RuntimeError:  # the interpreter is shutting down: nothing left to stop
                    pass
            return
        previous(unraisable)

    return hook


@contextmanager
def catching_interrupts() -> Iterator[None]:
    """Record every SIGINT and re-raise the ones garbage collection would swallow.

    A SIGINT that the parent set to be ignored (``nohup``, a background job of a shell) stays
    ignored. Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    handler = signal.getsignal(signal.SIGINT)
    ours = handler is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_lost_interrupt(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        if ours:
            signal.signal(signal.SIGINT, handler)


def forget_handled_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag after the command handled it.

    The flag is set when a string ``exec``/``eval`` ends in KeyboardInterrupt, even if a caller
    catches it, and ``Py_RunMain`` then kills the process with SIGINT instead of returning the
    exit code; every string ``exec`` resets it at its start. Call this only after an interrupt
    was caught, so it can never hide one that was not. On an interpreter without the flag it
    is a harmless no-op.
    """
    exec("pass", {})  # noqa: S102 - a constant string: the reset is the point
