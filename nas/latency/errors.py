"""The errors a device raises: one-line reasons that reach the user as ``nas: error: ...``."""

from __future__ import annotations

from nas.errors import UserError

__all__ = ["DeviceError", "DeviceUnavailableError"]


class DeviceError(UserError):
    """A device could not be reached or could not measure; the message is one line."""


class DeviceUnavailableError(DeviceError):
    """The device cannot measure anything (unreachable, refused, unknown host key, no runtime):
    a search should stop rather than fail every trial. Other DeviceErrors concern one model."""
