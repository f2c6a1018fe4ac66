"""Consent to run user code: a secret key of this user's, and the code records it has signed.

A run's record of user code (`user_code.Code`) runs without asking only where this user, on this
machine, signed it: `train` signs what it records, and `mnistlab trust RUN` signs what a run from
elsewhere carries, after showing it. A file that is unchanged proves nothing about who chose to run
it (anyone knows the hash of a library's file); a signature only this user's key can make does. This
is how `jupyter trust` decides which notebooks' outputs it shows.

A signature is an HMAC-SHA256, under the key, of how it was given and the record's identity (reference,
kind, name, file and the SHA-256 of its source), kept as an empty file named by it: writers running
at once (seeds, tuning workers) need no lock, and a look-up is one `stat`. How it was given matters:
code this user *recorded* (`train`) may run from the file it was recorded from, beside the files it
imports; code *approved* after reading it (`mnistlab trust`) runs only as the copy that was shown,
never from a path the record names (which a sender chooses) nor with its neighbours importable.

    $MNISTLAB_CONFIG_DIR, else $XDG_CONFIG_HOME/mnistlab, else ~/.config/mnistlab:
      trust/key            64 hex digits (32 random bytes), mode 0600, made on first signature
      trust/signed/HMAC    one empty file per signed record
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from . import atomic
from .errors import MnistlabError

IDENTITY = ("ref", "kind", "name", "path", "sha256")  # what a signature covers (sha256 covers the source)
HOW = ("recorded", "approved")  # trained here by this user | read and approved here (see above)
ENV = "MNISTLAB_CONFIG_DIR"


def config_dir() -> Path:
    """The user's mnistlab config folder (see the module docstring)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "mnistlab"


def trust_dir() -> Path:
    return config_dir() / "trust"


def key_file() -> Path:
    return trust_dir() / "key"


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistlabError(f"{path}: cannot read the key that signs your code ({exc})",
                            hint=f"delete it; your own runs then need `mnistlab trust RUN` once ({ENV} moves it)") from None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise MnistlabError(f"{path}: expected 64 hex digits (the key that signs your code)",
                            hint=f"delete it; your own runs then need `mnistlab trust RUN` once ({ENV} moves it)")
    return bytes.fromhex(text)


def _key(create: bool) -> bytes | None:
    """This user's key; made (0600, in a 0700 folder) when `create` and there is none yet."""
    path = key_file()
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        (path.parent / "signed").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".key.{os.getpid()}.{secrets.token_hex(4)}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise MnistlabError(f"{path}: cannot make the key that signs your code ({exc.strerror})",
                            hint=f"set {ENV} to a folder of yours that can be written") from None
    return _read_key(path)


def identity(record: dict) -> bytes:
    return json.dumps([record[k] for k in IDENTITY], ensure_ascii=True).encode()


def _signature_file(record: dict, key: bytes, how: str) -> Path:
    if how not in HOW:
        raise ValueError(f"how={how!r}")
    digest = hmac.new(key, how.encode() + b"\0" + identity(record), hashlib.sha256).hexdigest()
    return trust_dir() / "signed" / digest


def signed(record: dict) -> str | None:
    """How this user signed `record` (a checked code record) on this machine: "recorded", "approved",
    or None."""
    key = _key(create=False)
    if key is None:
        return None
    return next((how for how in HOW if _signature_file(record, key, how).is_file()), None)


def is_signed(record: dict) -> bool:
    return signed(record) is not None


def sign(record: dict, how: str = "recorded") -> None:
    """Sign `record` (see HOW): from now on its code runs here without asking."""
    target = _signature_file(record, _key(create=True), how)
    if target.is_file():
        return
    try:
        atomic.write_bytes(target, b"")
    except OSError as exc:
        raise MnistlabError(f"{target.parent}: cannot record your consent ({exc.strerror})",
                            hint=f"set {ENV} to a folder of yours that can be written") from None


def revoke(record: dict) -> bool:
    """Remove `record`'s signatures; whether there was one."""
    key = _key(create=False)
    if key is None:
        return False
    existed = False
    for how in HOW:
        target = _signature_file(record, key, how)
        existed = existed or target.is_file()
        target.unlink(missing_ok=True)
    return existed
