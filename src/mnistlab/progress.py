"""Progress bars on a terminal, and nothing where nobody watches one redraw.

Under CI, `nohup` or a redirect to a log file a bar's carriage-return updates are hundreds of
lines of noise; there the callers print one line per unit of work (an epoch, a file) instead.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def on_terminal() -> bool:
    """Whether stderr, where bars are drawn, is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar(total: int | None, desc: str, *, unit: str = "it", unit_scale: bool = False, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr when `enabled` and stderr is a terminal; a disabled (silent) one otherwise."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, file=sys.stderr,
                disable=not (enabled and on_terminal()))
