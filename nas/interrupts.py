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

And one of Optuna's: an interrupt inside ``study.optimize`` but outside the objective (while
the trial is created, its heartbeat thread started, or its result told) can leave the trial
RUNNING and the heartbeat thread alive, so the interpreter never exits. Within
:func:`deferred_interrupts` the first Ctrl-C is therefore held until the next check point
(:func:`raise_if_interrupted`: every training step, and the start and end of each trial); a
second Ctrl-C is raised at once.
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
_pending = threading.Event()
_deferring = 0
"""Depth of :func:`deferred_interrupts` in the main thread (the only thread signals reach)."""
REDELIVER_AFTER_S = 0.01


def interrupt_received() -> bool:
    """True once a SIGINT reached this process while :func:`catching_interrupts` was active."""
    return _received.is_set()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _received.set()
    if _deferring and not _pending.is_set():
        _pending.set()  # raised by the next raise_if_interrupted
        return
    _pending.clear()
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """A check point: raise the Ctrl-C that :func:`deferred_interrupts` held, if any."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold a Ctrl-C until the next :func:`raise_if_interrupted` (a second one is raised at once).

    For code that calls into a library at points where an exception would leave its state
    broken (Optuna's trial loop). One still held when the block ends is raised after it.
    """
    global _deferring
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    install = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if install:
        signal.signal(signal.SIGINT, _on_sigint)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_if_interrupted()


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
    _pending.clear()
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
