"""Short renderings of long lists for one-line error messages."""

from typing import Sequence

__all__ = ["preview"]


def preview(items: Sequence[str], limit: int = 6) -> str:
    """The first ``limit`` items, comma-separated, then ``... (N in total)`` if there are more.

    Args:
        items: e.g. state-dict keys.
        limit: how many to show.
    """
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in total)" if len(items) > limit else "")
