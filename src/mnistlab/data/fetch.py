"""Downloading a dataset's files from its mirrors, verified and atomic.

    mnistlab data fetch kmnist          # or mnistlab.data.fetch("kmnist"); load() calls it when files are missing

For each file (or archive) and each mirror in turn: stream it into a temporary file beside its
destination (a progress bar on a terminal, one line per file elsewhere); reject an HTTP error, an
HTML page served in place of data, a short body, a body larger than the file can be, or a hash
mismatch (checked by the same `files.read_file` / `files.check_archive` a load uses); retry
transient failures (connection errors, time-outs, 5xx, short bodies) with exponential backoff;
rename into place only after the check passes. Whatever fails, the temporary file is deleted, so
nothing half-written is ever left where a loader would find it. If every mirror fails, the error
lists each URL tried and why.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import atomic
from .._version import __version__
from ..errors import MnistlabError
from ..progress import on_terminal, progress_bar
from . import files, paths
from .registry import DatasetSpec, get_spec

CHUNK = 1 << 20  # bytes read per iteration


class _Attempt(Exception):
    """One failed attempt at one URL; `transient` says whether retrying the same URL may help."""

    def __init__(self, reason: str, transient: bool):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def fetch(name: str, *, data_dir=None, progress: bool | None = None, files_wanted: Sequence[str] | None = None,
          force: bool = False, retries: int = 2, backoff: float = 0.5, timeout: float = 30.0) -> list[Path]:
    """Download the dataset's missing files into the user cache, with a progress bar.

    Each file is checked against its pinned hash before it is renamed into place.

    Args:
        name: dataset name (`mnistlab data list` shows them)
        data_dir: directory to look in first (default: $MNISTLAB_DATA_DIR)
        progress: Python only: a progress bar (default: on a terminal)
        files_wanted: Python only: these of the dataset's files only
        force: download again even if the files are present
        retries: Python only: tries per mirror after the first
        backoff: Python only: seconds before the first retry, doubled each time
        timeout: Python only: seconds a connection may stay silent
    """
    spec = get_spec(name)
    target_dir = paths.cache_dir() / spec.directory
    mirrors = paths.extra_mirrors(spec.directory) + list(spec.mirrors)
    options = dict(mirrors=mirrors, progress=progress, retries=retries, backoff=backoff, timeout=timeout,
                   manual_hint=f"{spec.title} home page: {spec.homepage}")
    fetched: list[Path] = []
    for fname in _to_download(spec, files_wanted, data_dir, force):
        file = spec.files[fname]
        if file.archive:
            archive = spec.archives[file.archive]
            check = (lambda path, archive=archive: files.check_archive(spec, path, archive, remember=False))
            fetched.append(download(archive.name, target_dir / archive.name, check=check,
                                    max_bytes=archive.size or (1 << 34), **options))
        else:
            check = (lambda path, file=file: files.read_file(
                spec, files.Located(file, path, "download", as_distributed=True), use_cache=False))
            fetched.append(download(file.name, target_dir / file.name, check=check,
                                    max_bytes=spec.max_content_size(fname) + files.GZIP_SLACK, **options))
    return fetched


def _to_download(spec: DatasetSpec, wanted: Sequence[str] | None, data_dir, force: bool) -> list[str]:
    """The files to download: those not found (all, with `force`), one per archive."""
    out, archives = [], set()
    for fname in (wanted if wanted is not None else spec.files):
        file = spec.files[fname]
        if not force and files.locate(spec, file, data_dir) is not None:
            continue
        if file.archive:
            if file.archive in archives:
                continue
            archives.add(file.archive)
        out.append(fname)
    return out


def download(filename: str, dest: Path, *, mirrors: Sequence[str], check: Callable[[Path], object],
             max_bytes: int, retries: int = 2, backoff: float = 0.5, timeout: float = 30.0,
             progress: bool | None = None, manual_hint: str = "") -> Path:
    """Fetch `filename` from the first mirror that serves it intact, into `dest` (atomically).

    `check(path)` verifies the downloaded bytes and raises MnistlabError if they are wrong; a body
    past `max_bytes` is refused. `retries` is the number of extra attempts per mirror for transient
    failures; the waits are backoff, 2*backoff, 4*backoff... seconds.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(dest.parent)
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith(filename) else mirror.rstrip("/") + "/" + filename
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, dest, check=check, timeout=timeout, max_bytes=max_bytes, progress=progress)
                return dest
            except _Attempt as failed:
                failures.append(f"{url}: {failed.reason}")
                if not failed.transient or attempt == retries:
                    break
                time.sleep(backoff * 2**attempt)
    tried = "\n".join(f"  - {line}" for line in failures)
    raise MnistlabError(
        f"could not download {filename}; every mirror failed:\n{tried}",
        hint=f"check the network, or download the file by hand and place it at {dest}"
        + (f" ({manual_hint})" if manual_hint else ""),
    )


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": f"mnistlab/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _Attempt(f"HTTP {exc.code} {exc.reason}", transient=exc.code >= 500 or exc.code == 429) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        raise _Attempt(f"connection failed ({getattr(exc, 'reason', exc)})", transient=True) from None


def _fetch_once(url: str, dest: Path, *, check, timeout: float, max_bytes: int, progress: bool | None) -> None:
    show = progress is not False
    with atomic.replacing(dest) as tmp, open(tmp, "wb") as out, _open(url, timeout) as response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower():
            raise _Attempt(f"served an HTML page ({content_type}), not the data file", transient=False)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total is not None and total > max_bytes:
            raise _Attempt(f"declares {total:,} bytes, more than the {max_bytes:,} this file can be", transient=False)
        if show and not on_terminal():
            print(f"downloading {url}", file=sys.stderr, flush=True)
        t0, received = time.perf_counter(), 0
        with progress_bar(total, dest.name, unit="B", unit_scale=True, enabled=show) as bar:
            while chunk := _read(response, received):
                if received == 0 and _looks_like_html(chunk):
                    raise _Attempt("served an HTML page, not the data file", transient=False)
                received += len(chunk)
                if received > max_bytes:
                    raise _Attempt(f"sent more than the {max_bytes:,} bytes this file can be", transient=False)
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise _Attempt(f"body ended after {received} of {total} bytes", transient=True)
        out.close()
        try:
            check(tmp)
        except MnistlabError as exc:
            raise _Attempt(f"downloaded file failed verification: {exc.message}", transient=False) from None
        if show and not on_terminal():
            print(f"{dest.name}: {received:,} bytes in {time.perf_counter() - t0:.1f} s, verified",
                  file=sys.stderr, flush=True)


def _read(response, received: int) -> bytes:
    try:
        return response.read(CHUNK)
    except (socket.timeout, ConnectionError, OSError) as exc:
        raise _Attempt(f"connection broke after {received} bytes ({exc})", transient=True) from None


def _looks_like_html(first_chunk: bytes) -> bool:
    head = first_chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))
