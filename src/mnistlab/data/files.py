"""Finding a dataset's files, and the one function that reads and verifies each of them.

`read_file` is what `load`, `mnistlab data verify` and the download check all call: it reads a
file (or an archive member) with its size capped by the registry, decompresses it with the same
cap, checks it against what is pinned, and returns the content with a `FileRecord` saying how it
was checked:

- "sha256": the SHA-256 of the decompressed content is pinned and matched (MNIST, Fashion-MNIST);
- "md5": the file as its publisher distributes it matched the publisher's MD5;
- "archive md5": the archive holding it matched its MD5 (checked by `check_archive`);
- "unpinned": nothing is pinned for this copy (an unpacked archive, a re-compressed file), so
  nothing could be checked: it loads, but `mnistlab data verify` does not call it ok;
- "unverified": the caller asked for no verification (`verify=False`, `--no-verify`).

Pinned files' verified content is also kept decompressed in the cache ("decoded"), so a warm load
skips gunzip; it is re-hashed on every read, and keyed by the source file's identity.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import atomic
from ..errors import MnistlabError
from . import formats, paths
from .registry import ArchiveSpec, DatasetSpec, FileSpec

GZIP_SLACK = 1 << 16  # a gzip file of content N is at most about N + N/1000 + 64 KB long


class HashMismatch(MnistlabError):
    """A file that reads fine but is not the one pinned: corrupt, altered, or another version."""


@dataclass(frozen=True)
class Located:
    """Where one data file was found: a plain file, or a member of an archive."""

    file: FileSpec
    path: Path  # the file itself, or the archive holding it
    origin: str  # "data-dir", "cache", "system", "bundled" or "download"
    member: str | None = None  # path inside the archive at `path`
    as_distributed: bool | None = None  # the publisher's file itself (its MD5 applies); None: judge by name

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def is_as_distributed(self) -> bool:
        if self.as_distributed is not None:
            return self.as_distributed
        return self.member is None and self.path.name == self.file.name


@dataclass(frozen=True)
class FileRecord:
    """What was read for one file: where from, its content hash, and how it was verified."""

    name: str
    location: str
    origin: str
    sha256: str  # SHA-256 of the decompressed content actually read
    verified: str  # "sha256", "md5", "archive md5", "unpinned" or "unverified" (see the module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


def search_roots(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The directories to look in for `spec`'s files, in order, each with its origin label."""
    roots: list[tuple[str, Path]] = []
    user = paths.user_data_dir(data_dir)
    if user is not None:
        roots += [("data-dir", user / spec.directory), ("data-dir", user)]
    roots.append(("cache", paths.cache_dir() / spec.directory))
    for system in paths.system_data_dirs():
        for name in (spec.directory, *spec.system_dirnames):
            roots.append(("system", system / name))
    if spec.bundled:
        roots.append(("bundled", paths.BUNDLED_DIR / spec.directory))
    return roots


def locate(spec: DatasetSpec, file: FileSpec, data_dir=None) -> Located | None:
    """The first copy of `file` in the search roots, compressed, uncompressed or in its archive."""
    for origin, root in search_roots(spec, data_dir):
        for candidate in (file.name, file.stem):
            if (root / candidate).is_file():
                return Located(file, root / candidate, origin)
        if file.member and (root / file.member).is_file():  # an archive the user unpacked
            return Located(file, root / file.member, origin)
        if file.archive and (root / file.archive).is_file():
            return Located(file, root / file.archive, origin, member=file.member)
    return None


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(formats.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive(spec: DatasetSpec, path: Path, archive: ArchiveSpec | None = None, *,
                  remember: bool = True) -> None:
    """Check an archive (by default the one named like `path`) against its pinned MD5; with
    `remember`, a success is kept in a stamp file beside it (keyed by size and mtime) so the next
    load skips the hashing."""
    archive = archive or spec.archives.get(path.name)
    if archive is None:
        return
    stat = path.stat()
    stamp = path.with_name(path.name + ".verified")
    key = f"{archive.md5} {stat.st_size} {stat.st_mtime_ns}"
    if remember and stamp.is_file() and stamp.read_text().strip() == key:
        return
    actual = md5_of(path)
    if actual != archive.md5:
        raise HashMismatch(
            f"{path}: MD5 is {actual}, expected {archive.md5} for {archive.name}",
            hint="the archive is corrupt, truncated or another version: delete it and fetch it again",
        )
    if remember:
        try:
            atomic.write_bytes(stamp, key.encode())
        except OSError:
            pass  # a read-only location: verification just runs again next time


def read_raw(spec: DatasetSpec, located: Located) -> bytes:
    """The bytes of a plain file as stored, refused unread if it is larger than its content can be."""
    limit = spec.max_content_size(located.file.name) + GZIP_SLACK
    try:
        size = located.path.stat().st_size
        if size > limit:
            raise MnistlabError(f"{located}: {size:,} bytes, more than the {limit:,} that "
                                f"{spec.describe_file(located.file.name)} can take",
                                hint="this is not the file expected here: check --data-dir, or fetch it again")
        return located.path.read_bytes()
    except OSError as exc:
        raise MnistlabError(f"{located}: cannot read ({exc.strerror})", hint="check the file's permissions") from None


def read_file(spec: DatasetSpec, located: Located, *, verify: bool = True, use_cache: bool = True,
              raw: bytes | None = None) -> tuple[bytes | mmap.mmap, FileRecord]:
    """The decompressed, verified content of one located file, and a record of how it was checked.

    `raw`: the file's bytes when the caller already has them (archive members, read in one pass).
    Raises MnistlabError for anything unreadable, oversized, corrupt or not matching its pin.
    """
    file = located.file
    if verify and use_cache and file.sha256:
        cached = _read_decoded_cache(located)
        if cached is not None:
            return cached, FileRecord(file.name, str(located), located.origin, file.sha256, "sha256")
    if raw is None:
        raw = read_raw(spec, located)
    content = formats.decompress(raw, str(located), limit=spec.max_content_size(file.name),
                                 what=spec.describe_file(file.name))
    digest = sha256(content)
    how = "unverified"
    if verify:
        how = _check_pins(spec, located, raw, digest)
    return content, FileRecord(file.name, str(located), located.origin, digest, how)


def _check_pins(spec: DatasetSpec, located: Located, raw: bytes, content_sha256: str) -> str:
    """How `located` verifies ("sha256", "md5", "archive md5" or "unpinned"); an error if it does not."""
    file = located.file
    if file.sha256:
        if content_sha256 != file.sha256:
            raise HashMismatch(
                f"{located}: SHA-256 of the decompressed content is {content_sha256}, expected {file.sha256} "
                f"for {spec.name}'s {file.stem}",
                hint="the file is corrupt or a different file: delete it and run "
                f"`mnistlab data fetch {spec.name}`, or point --data-dir at a good copy",
            )
        return "sha256"
    if located.member is not None:
        return "archive md5"  # the caller checked the archive (check_archive) before reading its members
    if file.md5 and located.is_as_distributed:
        actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if actual != file.md5:
            raise HashMismatch(
                f"{located}: MD5 is {actual}, expected {file.md5} for the file as {spec.title} distributes it",
                hint="the file is corrupt, truncated or re-compressed: fetch it again; if you re-compressed "
                "it yourself, load with verify=False (CLI: --no-verify)",
            )
        return "md5"
    return "unpinned"


def read_members(spec: DatasetSpec, archive: Path, located: list[Located], *, verify: bool) -> dict[str, bytes]:
    """The raw bytes of several members of one archive (by file name), after checking the archive."""
    if verify:
        check_archive(spec, archive)
    limits = {loc.member: spec.max_content_size(loc.file.name) + GZIP_SLACK for loc in located}
    data = formats.read_members(archive, limits)
    return {loc.file.name: data[loc.member] for loc in located}


# ----------------------------------------------------------------------------------------------
# The decoded cache


def _decoded_cache_path(located: Located) -> Path:
    """Where the verified decompressed copy of this exact source file (path, size, mtime) is kept.

    Keyed by the source's identity as well as its pinned hash, so that a corrupt file the user
    points at is read (and rejected), never masked by an earlier good copy.
    """
    stat = located.path.stat()
    identity = f"{located.path.resolve()}|{located.member}|{stat.st_size}|{stat.st_mtime_ns}"
    return paths.cache_dir() / "decoded" / f"{located.file.sha256[:16]}-{sha256(identity.encode())[:16]}"


def _read_decoded_cache(located: Located) -> mmap.mmap | None:
    """The cached decompressed content of `located`, but only if it still hashes to the pin.

    Memory-mapped copy-on-write: no zero-filled buffer to allocate, and arrays over it are writable.
    """
    try:
        path = _decoded_cache_path(located)
        with open(path, "rb") as f:
            content = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # missing, unreadable, or empty (mmap refuses length 0)
        return None
    return content if sha256(content) == located.file.sha256 else None


def remember_decoded(contents: dict[str, bytes], located: dict[str, Located]) -> None:
    """Keep verified decompressed copies of pinned files, so the next load skips gunzip.

    Called only after the whole dataset decoded without error: a failed load leaves the cache as it
    was. Temporary files a killed process left behind are removed first.
    """
    directory = paths.cache_dir() / "decoded"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale(directory)
    except OSError:
        return  # the cache is an optimisation only
    for name, content in contents.items():
        loc = located[name]
        if loc.file.sha256 and not isinstance(content, mmap.mmap):  # an mmap came from the cache already
            try:
                atomic.write_bytes(_decoded_cache_path(loc), content)
            except OSError:
                pass
