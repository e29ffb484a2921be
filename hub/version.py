"""The installed triohub's version, for `hub --version` and the observer."""

from __future__ import annotations

import functools
import importlib.metadata

__all__ = ["version"]


@functools.cache
def version() -> str:
    """The version of the installed `triohub` distribution (`0.1.0`).

    A checkout run without being installed (`python -m hub` from the
    source tree, say) has no distribution to ask: `unknown (not installed)`.
    """
    try:
        return importlib.metadata.version("triohub")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"
