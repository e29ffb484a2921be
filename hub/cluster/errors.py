"""What goes wrong between nodes."""

from __future__ import annotations

from hub.errors import HubError

__all__ = ["LeaseLostError", "TopicElsewhereError"]


class LeaseLostError(HubError):
    """Another node took the lease of a topic this node ran (it ends here: one owner)."""


class TopicElsewhereError(HubError):
    """What was asked of a topic run on another node failed there, or can be done only there."""
