"""What tests build and share (conftest.py holds only fixtures): small datasets written in the real file
formats, mnistlab in a new process, the real `mnistlab serve` in its own, a plain HTTP server on
127.0.0.1, snapshots of a folder.

`write_tiny(spec, root)` writes a few examples of `spec`'s splits in its own format (gzip IDX,
QMNIST's int32 label rows, EMNIST's zip of transposed images, CIFAR-10's binary tar.gz) and returns
a copy of the spec pinned to those files' hashes, ready to `register`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from mnistlab.data.registry import ArchiveSpec, DatasetSpec, SplitSpec


def mnistlab(*args, cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`mnistlab ARGS` in a new process, as a user's next command is (its output captured as text)."""
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: to show that a failed operation wrote nothing."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def keep_artifact(path: Path) -> None:
    """Copy a screenshot to $MNISTLAB_TEST_ARTIFACTS, when set, for people to look at."""
    dest = os.environ.get("MNISTLAB_TEST_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / Path(path).name)


# ---------- the HTTP server, started for real ----------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mnistlab serve` started for real in its own process, its log in a file."""

    def __init__(self, log: Path, *flags: str):
        port = free_port()
        self.url, self.log = f"http://127.0.0.1:{port}", log
        self.proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(port), *flags],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
        self.proc.kill()
        raise RuntimeError("server did not start within 60 s")

    def memory_mb(self) -> tuple[int, int]:
        """(resident now, peak resident) of the server process, MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines())
              if k in ("VmRSS", "VmHWM")}
        return kb["VmRSS"] // 1024, kb["VmHWM"] // 1024

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


MAX_BODY = 300_000  # the shared server's body limit (small, so the limit is cheap to test)


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """The IDX encoding of `array`: magic, big-endian dims, big-endian data."""
    dtype = {0x08: ">u1", 0x0C: ">i4"}[dtype_code]
    header = struct.pack(">I", (dtype_code << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array).astype(dtype).tobytes()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def tiny_examples(spec: DatasetSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images whose pixel (0,0) encodes the label (so a test can check images and labels stay paired)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % spec.num_classes
    images = rng.integers(0, 256, size=(n, *spec.image_shape), dtype=np.uint8)
    if images.ndim == 3:
        images[:, 0, 0] = labels
    else:
        images[:, 0, 0, 0] = labels
    return images, labels


def write_tiny(spec: DatasetSpec, root: Path, *, name: str | None = None, n_train: int = 24, n_test: int = 12):
    """Write a small copy of `spec` in its real format under root/<dir>; return (spec', expected arrays)."""
    name = name or f"{spec.name}-tiny"
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    expected, contents = {}, {}  # contents: file name -> (decompressed content, bytes on disk)
    counts = {"train": n_train, "test": n_test}
    for split_name, split in spec.splits.items():
        images, labels = tiny_examples(spec, counts[split_name], seed=len(split_name))
        expected[split_name] = (images, labels)
        stored = labels + spec.label_offset
        if spec.format == "cifar10-bin":
            records = np.concatenate([stored[:, None].astype(np.uint8), images.reshape(len(images), -1)], axis=1)
            chunks = np.array_split(records, len(split.files))
            for fname, chunk in zip(split.files, chunks):
                contents[fname] = chunk.tobytes()
            continue
        on_disk = images.transpose(0, 2, 1) if spec.transpose else images
        image_file, label_file = split.files
        contents[image_file] = idx_bytes(on_disk)
        if spec.format == "qmnist":
            rows = np.zeros((len(stored), 8), dtype=np.int64)
            rows[:, 0] = stored
            rows[:, 1] = 7  # the other QMNIST columns (writer id etc.) must be ignored
            contents[label_file] = idx_bytes(rows, 0x0C)
        else:
            contents[label_file] = idx_bytes(stored)

    files, archives = {}, {}
    archive_name = next(iter(spec.archives), None)
    if archive_name:
        buf = io.BytesIO()
        if archive_name.endswith(".zip"):
            with zipfile.ZipFile(buf, "w") as zf:
                for fname, content in contents.items():
                    zf.writestr(spec.files[fname].member, gz(content) if fname.endswith(".gz") else content)
        else:
            with tarfile.open(fileobj=buf, mode="w:gz") as tf:
                for fname, content in contents.items():
                    info = tarfile.TarInfo(spec.files[fname].member)
                    info.size = len(content)
                    tf.addfile(info, io.BytesIO(content))
        data = buf.getvalue()
        (directory / archive_name).write_bytes(data)
        archives[archive_name] = ArchiveSpec(archive_name, md5=hashlib.md5(data).hexdigest(), size=len(data))
        for fname in contents:
            files[fname] = dataclasses.replace(spec.files[fname])
    else:
        for fname, content in contents.items():
            on_disk = gz(content) if fname.endswith(".gz") else content
            (directory / fname).write_bytes(on_disk)
            original = spec.files[fname]
            # Pin the same kind of hash the real spec pins, so the same verification path runs.
            files[fname] = dataclasses.replace(
                original,
                sha256=hashlib.sha256(content).hexdigest() if original.sha256 else None,
                md5=hashlib.md5(on_disk).hexdigest() if original.md5 else None,
            )
    splits = {s: SplitSpec(counts[s], sp.files) for s, sp in spec.splits.items()}
    # mirrors: a closed local port, so no test can reach for the internet by accident
    tiny = dataclasses.replace(spec, name=name, dirname=name, files=files, splits=splits, archives=archives,
                               bundled=False, system_dirnames=(), mirrors=("http://127.0.0.1:9/",))
    return tiny, expected


class FileServer:
    """A real HTTP server on 127.0.0.1 with a few misbehaving mirrors, for download tests.

    /good/<path>        serves files under `root`
    /missing/<path>     404
    /html/<path>        200 with an HTML error page (what captive portals and some CDNs do)
    /htmlsniff/<path>   200, Content-Type octet-stream, but an HTML body
    /flaky/<path>       503 the first time each path is asked for, then the file
    /short/<path>       declares the full length, sends half, closes
    /corrupt/<path>     the file with one byte flipped
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self._seen: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append(self.path)
                kind, _, rel = self.path.lstrip("/").partition("/")
                target = server.root / rel
                if kind == "missing" or not target.is_file():
                    return self.send_error(404, "Not Found")
                if kind == "html":
                    return self._send(b"<!DOCTYPE html><html><body>Error: quota exceeded</body></html>",
                                      "text/html; charset=utf-8")
                if kind == "htmlsniff":
                    return self._send(b"<html><body>Access denied</body></html>", "application/octet-stream")
                if kind == "flaky" and self.path not in server._seen:
                    server._seen.add(self.path)
                    return self.send_error(503, "Service Unavailable")
                body = target.read_bytes()
                if kind == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                if kind == "short":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                return self._send(body, "application/octet-stream")

            def _send(self, body: bytes, content_type: str):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def mirror(self, kind: str, subdir: str) -> str:
        return f"{self.url}/{kind}/{subdir}/"


# .ci/run installs the Debian packages some tests use and sets this: there a missing package fails the
# tests that need it instead of skipping them (a CI run that skipped them would pass having tried nothing).
PACKAGES_REQUIRED = os.environ.get("MNISTLAB_REQUIRE_DEBIAN_PACKAGES") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FASHION_DEB = Path("/usr/share/datasets/fashion-mnist")


def needs_package(present: bool, package: str, what: str):
    """A test that needs Debian `package`: skipped where it is absent, saying why and how to install it;
    under .ci/run (MNISTLAB_REQUIRE_DEBIAN_PACKAGES=1) it runs, and fails, instead."""
    return pytest.mark.skipif(not present and not PACKAGES_REQUIRED,
                              reason=f"{what} needs Debian's {package}, which is not installed here "
                              f"(apt-get install {package}; .ci/run installs it and then requires it)")


def skip_without_package(present: bool, package: str, what: str) -> None:
    """`needs_package` inside a fixture."""
    if not present and not PACKAGES_REQUIRED:
        pytest.skip(f"{what} needs Debian's {package}, which is not installed here (apt-get install {package}; "
                    ".ci/run installs it and then requires it)")
