"""Code of the user's own (a model, an optimizer, a loss), named by a reference, recorded by hash.

A reference is `path/to/file.py:Name` or `package.module:Name` (Name may be dotted, `Outer.Inner`),
or an object handed over from Python (`mnistlab.train(model=MyNet)`), which gets a reference of
its own (its file, or `__main__:Name` for a class defined in a notebook). Every run that uses one
records it: the reference, the file (absolute), the SHA-256 of its source and the source itself (in
every checkpoint's metadata and as a file in the run's `code/`).

When user code runs (see `consent`): when the user names it (training, `check`), or when a run's
record of it was signed by this user on this machine (`train` signs what it records; `mnistlab trust
RUN` signs a run from elsewhere after showing it). Then the file at the recorded place runs if it
still has the recorded hash, and the recorded copy (the code that was signed) otherwise. A record
nobody here signed is refused before anything is imported or even looked up, naming the code and
where to read it, unless the user opts in for one command with `trust_code` (the convention Hugging
Face uses for `trust_remote_code`): then exactly the copy in the run's `code/` folder runs, the file
a person can read, and only if it is the code the checkpoint carries. Nothing is unpickled.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import consent
from .errors import MnistlabError
from .names import did_you_mean
from .tables import printable

MAX_SOURCE = 1 << 20  # bytes of one source file a run records
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
FIELDS = ("ref", "kind", "name", "path", "sha256", "source")  # a record's, all strings
SESSION = "__main__"  # where a notebook's or a REPL's classes live: no file to read again

_trust = contextvars.ContextVar("mnistlab_trust_code", default=False)
_pinned = contextvars.ContextVar("mnistlab_pinned_code", default={})  # ref -> (object, Code), see pinned()
_live: dict[str, tuple[object, Code]] = {}  # references to objects handed over in this process
_modules: dict[tuple[str, str], types.ModuleType] = {}  # (file, sha256) -> the module run from it


@dataclass(frozen=True)
class Code:
    """Where one piece of user code came from, as a run records it."""

    ref: str  # as the config holds it
    kind: str  # file | module | session (defined in a notebook or REPL) | instance (an object, not a recipe)
    name: str  # the attribute path inside the module
    path: str  # the source file, absolute ("" for a session without one)
    sha256: str  # of the source text, UTF-8
    source: str

    def record(self) -> dict:
        return {"ref": self.ref, "kind": self.kind, "name": self.name, "path": self.path, "sha256": self.sha256,
                "source": self.source}


def is_reference(text) -> bool:
    """Whether a model/optimizer/loss setting names user code (`where:Name`) rather than a built-in."""
    if not isinstance(text, str) or ":" not in text:
        return False
    where, name = text.rsplit(":", 1)
    return bool(where) and bool(IDENTIFIER.match(name.split("@", 1)[0]))  # Name@id: an adopted object


@contextmanager
def trusting(flag: bool = True) -> Iterator[None]:
    """Within this block, a run's recorded copy of changed or missing user code may run."""
    token = _trust.set(bool(flag) or _trust.get())
    try:
        yield
    finally:
        _trust.reset(token)


@contextmanager
def pinned(records: dict[str, dict], source: str, copies: dict[str, Path] | None = None) -> Iterator[None]:
    """Within this block a reference a run recorded resolves to the recorded code, not to whatever the
    file holds by then: a new run keeps what it began with (`copies` None: the records were just made
    from the references the user named), a resumed one the code it recorded (loaded as any run's is;
    `copies`: by role, the run's code/ copy of each, what --trust-code may run)."""
    table = dict(_pinned.get())
    for role, record in records.items():
        code = Code(**{k: record[k] for k in FIELDS})
        if copies is None:
            obj, now = resolve(record["ref"], role)
            if now.sha256 != code.sha256:
                raise MnistlabError(f"{role} {record['ref']!r}: {now.path} changed while the run started",
                                    hint="run the command again")
        else:
            obj = from_record(Carried(record, source, copies.get(role)), role)
        table[record["ref"]] = (obj, code)
    token = _pinned.set(table)
    try:
        yield
    finally:
        _pinned.reset(token)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------
# From a reference the user typed, or an object they handed over, to the object


def resolve(ref: str, role: str) -> tuple[object, Code]:
    """The object `ref` names and its record; a clear one-line error for a missing file or module, an
    import that raises, or a name that is not there. `role` (model, optimizer, loss) names it."""
    if ref in _pinned.get():
        return _pinned.get()[ref]
    if ref in _live:
        return _live[ref]
    if not is_reference(ref) or "\0" in ref or len(ref) > 4096:
        raise MnistlabError(f"{role} {ref[:200]!r}: expected path/to/file.py:Name or package.module:Name")
    where, name = ref.rsplit(":", 1)
    if "@" in name:
        raise MnistlabError(f"{role} {ref!r}: an object made in another Python session",
                            hint="an instance cannot be rebuilt elsewhere: pass a class or a function in a .py file")
    if where == SESSION:
        raise MnistlabError(f"{role} {ref!r}: {name} was defined in another Python session",
                            hint="pass the class itself from Python, or put it in a .py file and name that")
    if where.endswith(".py") or "/" in where or "\\" in where:
        try:
            path = Path(where).expanduser().resolve()
            is_file = path.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long, a loop of links
            raise MnistlabError(f"{role} {ref[:200]!r}: cannot look at {where[:200]!r} ({exc})") from None
        if not is_file:
            raise MnistlabError(f"{role} {ref!r}: no file {path}")
        source = _read_source(path, role, ref)
        module = _run_source(source, str(path), role, ref)
        code = Code(ref, "file", name, str(path), sha256_text(source), source)
    else:
        module = _import(where, role, ref)
        path = Path(getattr(module, "__file__", "") or "")
        source = _read_source(path, role, ref) if path.is_file() else ""
        code = Code(ref, "module", name, str(path) if path.is_file() else "", sha256_text(source), source)
    return _attribute(module, name, role, ref), code


def adopt(obj, role: str) -> str:
    """A reference for an object handed over from Python (a class, a function, an instance), kept for
    this process: the config holds the reference, the run records where the object came from."""
    instance = not isinstance(obj, type) and not _is_function(obj)
    target = type(obj) if instance else obj  # an instance (an nn.Module, a loss object): its class's source
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    name = getattr(target, "__qualname__", getattr(target, "__name__", "object"))
    if "<locals>" in name:
        name = name.replace("<locals>.", "")
    file = getattr(module, "__file__", None) if module is not None else None
    if file and Path(file).is_file() and getattr(target, "__module__", "") != SESSION:
        path = Path(file).resolve()
        source = _read_source(path, role, name)
        kind, ref = "file", f"{path}:{name}"
    else:  # a notebook or REPL: the object's own source where Python can find it
        path, kind, ref = None, "session", f"{SESSION}:{name}"
        source = _object_source(target)
    if instance:  # an instance stands for itself: it has no recipe another process could follow
        kind, ref = "instance", f"{ref.rsplit(':', 1)[0]}:{name}@{id(obj):x}"
    code = Code(ref, kind, name, str(path) if path else "", sha256_text(source), source)
    _live[ref] = (obj, code)
    return ref


def code_of(ref: str, role: str) -> Code:
    """The record of a reference already resolved or adopted in this process (resolving it if not)."""
    return resolve(ref, role)[1]


# ----------------------------------------------------------------------------------------------
# From a run's record back to the object


def check_record(record, source: str, role: str) -> dict:
    """A recorded piece of code, its fields checked (it comes from a file someone may have edited): the
    source has the recorded hash, a file is named by an absolute path, a module by a dotted name."""
    fields = dict.fromkeys(FIELDS, str)
    altered = "the file was altered; use one mnistlab wrote"
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in fields.items()):
        raise MnistlabError(f"{source}: the record of its {role}'s code: expected an object with "
                            f"{', '.join(fields)} (strings)", hint=altered)
    if record["kind"] not in ("file", "module", "session", "instance") or not IDENTIFIER.match(record["name"]):
        raise MnistlabError(f"{source}: the record of its {role}'s code: kind {record['kind']!r} / name "
                            f"{record['name'][:80]!r} is not one mnistlab writes", hint=altered)
    if any("\0" in record[k] for k in ("ref", "path", "name")) or len(record["path"]) > 4096:
        raise MnistlabError(f"{source}: the record of its {role}'s code names an impossible path", hint=altered)
    if len(record["source"].encode("utf-8", "surrogatepass")) > MAX_SOURCE or len(record["ref"]) > 4096:
        raise MnistlabError(f"{source}: the recorded {role} source is over {MAX_SOURCE} bytes")
    where, _, named = record["ref"].rpartition(":")
    if named.split("@", 1)[0] != record["name"] or not _placed(record["kind"], where, record["path"]):
        raise MnistlabError(f"{source}: the record of its {role}'s code: reference {record['ref'][:200]!r}, "
                            f"{record['kind']} {record['path'][:200]!r} do not go together (a file is recorded "
                            "by its absolute path, a module by its dotted name)", hint=altered)
    if sha256_text(record["source"]) != record["sha256"]:
        raise MnistlabError(f"{source}: the recorded source of its {role} {record['ref']!r} does not have the "
                            "recorded SHA-256", hint=altered)
    return record


def _placed(kind: str, where: str, path: str) -> bool:
    """Whether a record's reference and path are ones mnistlab writes for its kind: nothing in a record
    may be resolved against the current folder or found by importing."""
    if kind == "file":
        return Path(path).is_absolute()
    if kind == "module":
        return bool(IDENTIFIER.match(where)) and (not path or Path(path).is_absolute())
    if kind == "session":
        return where == SESSION and not path
    return True  # an instance: refused whenever it is loaded


def trust_hint(copy: Path | None, source: str) -> str:
    """How to approve a record's code: read the copy, then `mnistlab trust`, or --trust-code once."""
    if copy is None:  # no code/ copy to read, so no --trust-code either: trust shows the code itself
        return f"`mnistlab trust {source.split(' member ')[0]}` shows the code it carries and approves it"
    return (f"read it in {copy}, then approve it with `mnistlab trust {copy.parent.parent}` (or pass "
            "--trust-code, Python trust_code=True, to run that copy for this command only)")


@dataclass(frozen=True)
class Carried:
    """A record of user code as a file carries it."""

    record: dict  # checked (check_record)
    source: str  # the file (or ensemble member) that carries it, for messages
    copy: Path | None = None  # the run's code/ copy of it: what a person reads, and what --trust-code runs


def from_record(carried: Carried, role: str):
    """The object a run recorded: the same object in this process; under this user's signature the file
    if it still has the recorded hash, else the recorded copy; under `trusting()` the copy in the run's
    code/ folder, if it is the code the record carries; otherwise a refusal that says why."""
    record, source, copy = carried.record, carried.source, carried.copy
    ref, want = record["ref"], record["sha256"]
    if ref in _live and _live[ref][1].sha256 == want:  # handed over in this process: that very object
        return _live[ref][0]
    if record["kind"] == "instance":
        raise MnistlabError(f"{source}: its {role} was an object made in another Python session ({ref})",
                            hint="an instance cannot be rebuilt elsewhere: define it as a class or a function "
                            "in a .py file (or a notebook cell) and pass that")
    # the decision comes first, from the record alone: nothing is imported, found or read before it
    how = consent.signed(record)
    if how == "recorded":
        return _recorded_here(record, source, role)
    if how == "approved":  # read and approved: exactly the source that was shown, nothing beside it
        return _recorded_copy(record, record["source"], f"<{source}: approved copy of {record['ref']}>", role)
    if not _trust.get():
        raise MnistlabError(f"{source}: its {role} is code you did not record or approve on this machine "
                            f"({record['kind']} {ref!r}), so it does not run", hint=trust_hint(copy, source))
    if copy is None:
        raise MnistlabError(f"{source}: its {role} {ref!r} is carried by a file outside any run directory, with no "
                            "code/ copy to read, so --trust-code does not run it",
                            hint=f"`mnistlab trust {source.split(' member ')[0]}` shows the code it carries and "
                            "approves it")
    try:
        readable = _read_source(copy, role, ref) if copy.is_file() and not copy.is_symlink() else None
    except MnistlabError:
        readable = None
    if readable is None:
        raise MnistlabError(f"{source}: its {role} {ref!r}: the copy to read, {copy}, is missing or not a plain "
                            "file, so --trust-code does not run it",
                            hint="use the run as mnistlab wrote it (its code/ folder holds what runs)")
    if sha256_text(readable) != record["sha256"]:
        raise MnistlabError(f"{source}: its {role} {ref!r}: {copy} is not the code the checkpoint carries (SHA-256 "
                            f"{sha256_text(readable)[:12]}... there, {record['sha256'][:12]}... in the checkpoint): "
                            "--trust-code runs only the code you can read", hint="the run was altered; ask its "
                            "sender for the run as mnistlab wrote it")
    return _recorded_copy(record, readable, str(copy), role)


def _recorded_here(record: dict, source: str, role: str):
    """Code this user recorded (trained) here: from the file it was recorded from if that still holds
    the same source (its neighbours importable, as in training), else the recorded copy (the very code
    signed). The file is read once: what is hashed is what runs."""
    ref, name, want, kind = record["ref"], record["name"], record["sha256"], record["kind"]
    if kind == "session":
        return _recorded_copy(record, record["source"], f"<{source}: recorded {role} {name}>", role)
    path = Path(record["path"]) if record["path"] else None
    try:
        text = _read_source(path, role, ref) if path is not None and path.is_file() else None
    except (MnistlabError, OSError):
        text = None
    if text is not None and sha256_text(text) == want:
        if kind == "file":
            return _attribute(_run_source(text, str(path), role, ref), name, role, ref)
        obj, code = resolve(ref, role)
        if code.sha256 == want:  # a module name could lead elsewhere now (another folder first on the path)
            return obj
    what = "has changed since the run recorded it" if text is not None else "does not exist here"
    print(printable(f"mnistlab: note: {path or ref} {what}: running the copy {source} recorded (SHA-256 "
                    f"{want[:12]}...), which you signed"), file=sys.stderr)
    return _recorded_copy(record, record["source"], f"<{source}: recorded copy of {path or ref}>", role)


def _recorded_copy(record: dict, text: str, filename: str, role: str):
    """The recorded source run as a module of its own (its folder not importable: nothing beside it runs)."""
    if record["kind"] == "session":  # what a notebook cell had around it
        text = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n" + text
    module = _run_source(text, filename, role, record["ref"], importable=False)
    return _attribute(module, record["name"], role, record["ref"])


# ----------------------------------------------------------------------------------------------
# Running a source file as a module


def _read_source(path: Path, role: str, ref: str) -> str:
    try:
        data = path.read_bytes() if path.stat().st_size <= MAX_SOURCE else None
    except OSError as exc:
        raise MnistlabError(f"{role} {ref!r}: cannot read {path}: {exc.strerror}") from None
    if data is None:
        raise MnistlabError(f"{role} {ref!r}: {path} is over {MAX_SOURCE} bytes; a model file should be small")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MnistlabError(f"{role} {ref!r}: {path} is not UTF-8 text (byte {exc.start})") from None


def raised(role: str, ref: str, doing: str, exc: BaseException) -> MnistlabError:
    """One line for an exception raised inside user code: what, and the user's own line."""
    frames = _own_frames(exc)
    at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return MnistlabError(f"{role} {ref!r}: {doing} raised {type(exc).__name__}: {message}{at}")


def _own_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of a traceback that are none of mnistlab's, torch's or an installed library's: the user's."""
    installed = {str(Path(p)) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    libraries = (str(Path(__file__).parent), str(Path(torch_dir()).parent) if torch_dir() else "\0", *installed)
    return [f for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith(libraries) and not f.filename.startswith("<frozen")]


def own_error(exc: BaseException) -> MnistlabError | None:
    """One line for any exception whose traceback runs through code of the user's own (a model's forward
    while evaluating, say), naming their file and line; None for anything else (mnistlab's own bugs keep
    their traceback)."""
    frames = _own_frames(exc)
    if not frames:
        return None
    message = str(exc).splitlines()[0] if str(exc) else ""
    return MnistlabError(f"your code raised {type(exc).__name__}: {message} (at {frames[-1].filename}:"
                         f"{frames[-1].lineno})", hint="fix it there, then run the same command again")


def raised_in_own_code(exc: BaseException, refs: dict[str, str], doing: str) -> MnistlabError | None:
    """One line for an exception that came out of the user's own code (`refs`: role -> reference of the
    code a run uses), naming its file and line; None where no frame of theirs is in the traceback."""
    frames = _own_frames(exc)
    if not frames or not refs:
        return None
    role = next((r for r, ref in refs.items() if ref.rsplit(":", 1)[0] in frames[-1].filename), next(iter(refs)))
    return raised(role, refs[role], doing, exc)


def keras_backend_first(source: str = "") -> None:
    """Before user code runs: Keras, if it imports it, on the PyTorch backend (a Keras 3 model is then a
    torch module mnistlab trains as it is; see models/keras_bridge.py). Nothing changes once Keras is
    imported: a model made under another backend is refused where it is used, saying how to fix it."""
    if "keras" in sys.modules:
        return
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen and chosen != "torch" and "keras" in source:
        print(f"mnistlab: note: KERAS_BACKEND={printable(chosen)} set; mnistlab runs Keras on torch "
              "(KERAS_BACKEND=torch) for this process", file=sys.stderr)
    os.environ["KERAS_BACKEND"] = "torch"


def _run_source(source: str, filename: str, role: str, ref: str, importable: bool = True) -> types.ModuleType:
    """`source` run as a new module named for its hash; `importable`: its file's folder is on the path
    while it runs (a model file the user named may import its neighbours)."""
    key = (filename, sha256_text(source))
    if key in _modules:
        return _modules[key]
    keras_backend_first(source)
    module = types.ModuleType(f"mnistlab_user_{key[1][:16]}")
    module.__file__ = filename
    sys.modules[module.__name__] = module  # dataclasses and typing look their module up by name
    folder = str(Path(filename).parent) if importable and Path(filename).is_file() else None
    if folder:
        sys.path.insert(0, folder)  # a model file may import its neighbours
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - the user named this code
    except SyntaxError as exc:
        del sys.modules[module.__name__]
        raise MnistlabError(f"{role} {ref!r}: {filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except (Exception, SystemExit) as exc:  # user code: whatever it raises is theirs to see, in one line
        del sys.modules[module.__name__]
        raise raised(role, ref, f"importing {filename}", exc) from None
    finally:
        if folder:
            sys.path.remove(folder)
    _modules[key] = module
    return module


def _import(where: str, role: str, ref: str) -> types.ModuleType:
    if not IDENTIFIER.match(where):
        raise MnistlabError(f"{role} {ref!r}: {where!r} is neither a .py file nor a module name")
    keras_backend_first()
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise MnistlabError(f"{role} {ref!r}: no module named {exc.name!r}",
                                hint="name a .py file (path/to/file.py:Name) or a module on the Python path") from None
        raise raised(role, ref, f"importing {where}", exc) from None
    except (Exception, SystemExit) as exc:
        raise raised(role, ref, f"importing {where}", exc) from None


def _attribute(module: types.ModuleType, name: str, role: str, ref: str):
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise MnistlabError(f"{role} {ref!r}: {getattr(obj, '__file__', None) or getattr(obj, '__name__', obj)} "
                                f"has no {part!r}", hint=did_you_mean(part, public) or None)
        obj = getattr(obj, part)
    return obj


def torch_dir() -> str:
    """Where torch is installed (its frames are not the user's line), without importing it here."""
    spec = importlib.util.find_spec("torch")
    return spec.origin if spec is not None and spec.origin else ""


def _is_function(obj) -> bool:
    return isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType))


def _object_source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
