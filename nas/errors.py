"""Errors that reach the user as one line and exit code 2, never as a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user (arguments, files, storage, devices): say what to change."""
