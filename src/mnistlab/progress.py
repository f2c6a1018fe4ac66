"""Progress bars on a terminal or in a notebook (tqdm.auto draws a widget there), and nothing where
nobody watches one redraw.

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


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (its stderr is no terminal, but a bar shows)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def bar(total: int | None, desc: str, *, unit: str = "it", unit_scale: bool = False, enabled: bool = True) -> tqdm:
    """A tqdm bar when `enabled` and someone watches (a terminal on stderr, or a notebook); a disabled
    (silent) one otherwise."""
    watched = on_terminal() or in_notebook()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False,
                file=None if in_notebook() else sys.stderr, disable=not (enabled and watched))
