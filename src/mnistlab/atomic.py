"""Atomic file writes: write a temporary file beside the target, rename it into place on success.

A reader never sees a half-written file. A failure removes the temporary file; a kill cannot, so
temporary files are named `.NAME.<pid>.<random>.part` and `remove_stale(directory)` deletes those
whose writer is gone (or that are a day old), which the cache writers call before they write.
Files get the usual permissions (0666 less the umask), not mkstemp's private 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import MnistlabError

STALE_AFTER_S = 24 * 3600  # a temporary file this old is stale whoever wrote it (a pid may be reused)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s directory; on success, rename it onto `path`."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():  # a rename would fail only after all the work
        raise MnistlabError(f"{path} is a folder, where mnistlab writes a file",
                            hint="move the folder away (or write elsewhere), then run the command again")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data) -> Path:
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `directory` that no live process is writing; return them."""
    removed = []
    now = time.time()
    for tmp in Path(directory).glob(".*.part"):
        parts = tmp.name.rsplit(".", 3)  # [".NAME", "<pid>", "<random>", "part"]
        pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
        try:
            if (pid is not None and not _alive(pid)) or now - tmp.stat().st_mtime > STALE_AFTER_S:
                tmp.unlink()
                removed.append(tmp)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to judge
    return removed
