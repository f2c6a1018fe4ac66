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


def progress_bar(total: int | None, desc: str, *, unit: str = "it", unit_scale: bool = False, enabled: bool = True) -> tqdm:
    """A tqdm bar when `enabled` and someone watches (a terminal on stderr, or a notebook); a disabled
    (silent) one otherwise."""
    watched = on_terminal() or in_notebook()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False,
                file=None if in_notebook() else sys.stderr, disable=not (enabled and watched))


class Stages:
    """A long verb's progress, as `train` shows its own: a bar over its units of work where someone
    watches (a terminal, a notebook), and a line per stage always, unless quiet; on a pipe or in a log
    only the lines (a bar's redraws would be noise there).

        with Stages(total=len(eps) * batches, desc="attack", unit="batch", quiet=quiet) as show:
            show.update()                        # one unit done
            show.say("eps 0.1: robust 45.0%")    # a stage done: a line above the bar
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", quiet: bool = False):
        self.quiet = quiet
        self.bar = progress_bar(total, desc, unit=unit, enabled=not quiet)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def say(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text, file=None if in_notebook() else sys.stderr)

    def __enter__(self) -> Stages:
        return self

    def close(self) -> None:
        self.bar.close()

    def __exit__(self, *exc) -> None:
        self.close()
