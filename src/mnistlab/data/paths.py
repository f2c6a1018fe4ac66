"""Where mnistlab looks for data and keeps its cache, in the order it looks.

1. a directory the user names: `--data-dir` or $MNISTLAB_DATA_DIR
2. the user cache: $MNISTLAB_CACHE_DIR, else $XDG_CACHE_HOME/mnistlab, else ~/.cache/mnistlab
3. system directories: /usr/share/datasets, /usr/local/share/datasets (Debian's dataset-* packages)
4. the copy bundled inside the package (MNIST only)
Then, if allowed, a download into the user cache: from $MNISTLAB_MIRROR first (a base URL that
holds `<dataset dir>/<file>`, e.g. an organisation's own mirror), then the dataset's official mirrors.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))
BUNDLED_DIR = Path(__file__).parent.parent / "_data"


def user_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The directory the user named, by argument or $MNISTLAB_DATA_DIR; None if neither."""
    chosen = data_dir if data_dir is not None else os.environ.get("MNISTLAB_DATA_DIR")
    return Path(chosen).expanduser() if chosen else None


def cache_dir() -> Path:
    """The user cache, where downloads and decoded copies go (created on first write)."""
    if os.environ.get("MNISTLAB_CACHE_DIR"):
        return Path(os.environ["MNISTLAB_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mnistlab"


def system_data_dirs() -> tuple[Path, ...]:
    """System-wide dataset roots; $MNISTLAB_SYSTEM_DATA_DIRS (colon-separated) replaces the defaults."""
    override = os.environ.get("MNISTLAB_SYSTEM_DATA_DIRS")
    if override is not None:
        return tuple(Path(p) for p in override.split(os.pathsep) if p)
    return SYSTEM_DATA_DIRS


def extra_mirrors(dataset_dir: str) -> list[str]:
    """Base URLs to try before the official mirrors: $MNISTLAB_MIRROR/<dataset dir>/, if set."""
    base = os.environ.get("MNISTLAB_MIRROR")
    return [f"{base.rstrip('/')}/{dataset_dir}/"] if base else []
