"""The search engine and the ``nas`` command."""

from __future__ import annotations

from nas.errors import UserError

__all__ = ["UserError", "__version__"]

__version__ = "0.1.0"
