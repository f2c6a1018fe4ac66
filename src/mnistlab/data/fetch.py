"""Downloading one file from a list of mirrors, verified and atomic.

For each mirror in turn: stream the file into a temporary file beside its destination, with a
progress bar; reject an HTTP error, an HTML page served in place of data, a short body or a hash
mismatch; retry transient failures (connection errors, time-outs, 5xx, short bodies) with
exponential backoff; rename into place only after `check` accepts the bytes. Whatever fails, the
temporary file is deleted, so nothing half-written is ever left where a loader would find it.
If every mirror fails, the error lists each URL tried and why.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__, atomic
from ..errors import MnistlabError

CHUNK = 1 << 20  # bytes read per iteration


class _Attempt(Exception):
    """One failed attempt at one URL; `transient` says whether retrying the same URL may help."""

    def __init__(self, reason: str, transient: bool):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def download(
    filename: str,
    mirrors: Sequence[str],
    dest: Path,
    *,
    check: Callable[[Path], None],
    retries: int = 2,
    backoff: float = 0.5,
    timeout: float = 30.0,
    progress: bool | None = None,
    manual_hint: str = "",
) -> Path:
    """Fetch `filename` from the first mirror that serves it intact, into `dest` (atomically).

    `check(path)` verifies the downloaded bytes and raises MnistlabError if they are wrong.
    `retries` is the number of extra attempts per mirror for transient failures; the waits are
    backoff, 2*backoff, 4*backoff... seconds.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith(filename) else mirror.rstrip("/") + "/" + filename
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, dest, check=check, timeout=timeout, progress=progress)
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


def _fetch_once(url: str, dest: Path, *, check, timeout: float, progress: bool | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"mnistlab/{__version__}"})
    with atomic.replacing(dest) as tmp:
        with open(tmp, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise _Attempt(f"HTTP {exc.code} {exc.reason}", transient=exc.code >= 500 or exc.code == 429)
            except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise _Attempt(f"connection failed ({reason})", transient=True)
            with response:
                content_type = response.headers.get("Content-Type", "")
                if "text/html" in content_type.lower():
                    raise _Attempt(f"served an HTML page ({content_type}), not the data file", transient=False)
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                received = 0
                show = sys.stderr.isatty() if progress is None else progress
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not show,
                          leave=False, file=sys.stderr) as bar:
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except (socket.timeout, ConnectionError, OSError) as exc:
                            raise _Attempt(f"connection broke after {received} bytes ({exc})", transient=True)
                        if not chunk:
                            break
                        if received == 0 and _looks_like_html(chunk):
                            raise _Attempt("served an HTML page, not the data file", transient=False)
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if total is not None and received != total:
                    raise _Attempt(f"body ended after {received} of {total} bytes", transient=True)
        try:
            check(tmp)
        except MnistlabError as exc:
            raise _Attempt(f"downloaded file failed verification: {exc.message}", transient=False)


def _looks_like_html(first_chunk: bytes) -> bool:
    head = first_chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
