"""Code of the user's own (a model, an optimizer, a loss), named by a reference, recorded by hash.

A reference is `path/to/file.py:Name` or `package.module:Name` (Name may be dotted, `Outer.Inner`),
or an object handed over from Python (`mnistlab.train(model=MyNet)`), which gets a reference of
its own (its file, or `__main__:Name` for a class defined in a notebook). Every run that uses one
records it: the reference, the file, the SHA-256 of its source and the source itself (in every
checkpoint's metadata and as a file in the run's `code/`).

When user code runs: when the user names it (training), or when a run that recorded it is loaded
and the file at the recorded place still has the recorded hash. Otherwise loading refuses, naming
the file and what changed, unless the user opts in with `trust_code` (the convention Hugging Face
uses for `trust_remote_code`): then the copy the run recorded is what runs. Nothing is unpickled.
"""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import MnistlabError

MAX_SOURCE = 1 << 20  # bytes of one source file a run records
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
TRUST_HINT = ("pass --trust-code (Python: trust_code=True) to run the copy the run recorded (its code/ folder "
              "holds it to read first), or restore the file")
FIELDS = ("ref", "kind", "name", "path", "sha256", "source")  # a record's, all strings
SESSION = "__main__"  # where a notebook's or a REPL's classes live: no file to read again

_trust = contextvars.ContextVar("mnistlab_trust_code", default=False)
_pinned = contextvars.ContextVar("mnistlab_pinned_code", default={})  # ref -> (object, Code), see pinned()
_live: dict[str, tuple[object, Code]] = {}  # references to objects handed over in this process
_loaded: dict[tuple[str, str], object] = {}  # (ref, sha256) -> the object a run's record gave, checked once
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
def pinned(records: dict[str, dict], source: str) -> Iterator[None]:
    """Within this block a reference a run recorded resolves to the recorded code (checked as a loaded
    run's is), not to whatever the file holds now: a resumed run continues with the code it began with."""
    table = dict(_pinned.get())
    for role, record in records.items():
        table[record["ref"]] = (from_record(record, source, role), Code(**{k: record[k] for k in FIELDS}))
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
    """A recorded piece of code, its fields checked (it comes from a file someone may have edited)."""
    fields = dict.fromkeys(FIELDS, str)
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in fields.items()):
        raise MnistlabError(f"{source}: the record of its {role}'s code: expected an object with "
                            f"{', '.join(fields)} (strings)", hint="the file was altered; use one mnistlab wrote")
    if record["kind"] not in ("file", "module", "session", "instance") or not IDENTIFIER.match(record["name"]):
        raise MnistlabError(f"{source}: the record of its {role}'s code: kind {record['kind']!r} / name "
                            f"{record['name'][:80]!r} is not one mnistlab writes")
    if any("\0" in record[k] for k in ("ref", "path", "name")) or len(record["path"]) > 4096:
        raise MnistlabError(f"{source}: the record of its {role}'s code names an impossible path",
                            hint="the file was altered; use one mnistlab wrote")
    if len(record["source"].encode("utf-8", "surrogatepass")) > MAX_SOURCE or len(record["ref"]) > 4096:
        raise MnistlabError(f"{source}: the recorded {role} source is over {MAX_SOURCE} bytes")
    if sha256_text(record["source"]) != record["sha256"]:
        raise MnistlabError(f"{source}: the recorded source of its {role} {record['ref']!r} does not have the "
                            "recorded SHA-256", hint="the file was altered; use one mnistlab wrote")
    return record


def from_record(record: dict, source: str, role: str):
    """The object a run recorded: the same object in this process, the file or module if it still has
    the recorded hash, the recorded copy under `trusting()`; otherwise a refusal that says why."""
    ref, want = record["ref"], record["sha256"]
    if ref in _live and _live[ref][1].sha256 == want:
        return _live[ref][0]
    if (ref, want) not in _loaded:
        _loaded[ref, want] = _from_record(record, source, role)
    return _loaded[ref, want]


def _from_record(record: dict, source: str, role: str):
    ref, name, want = record["ref"], record["name"], record["sha256"]
    trusted = _trust.get()
    if record["kind"] == "instance":
        raise MnistlabError(f"{source}: its {role} was an object made in another Python session ({ref})",
                            hint="an instance cannot be rebuilt elsewhere: define it as a class or a function "
                            "in a .py file (or a notebook cell) and pass that")
    if record["kind"] == "session":
        if not trusted:
            raise MnistlabError(f"{source}: its {role} {name} was defined in another Python session (a notebook, "
                                "or a script run as __main__)", hint=TRUST_HINT)
        prelude = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"  # what a cell had around it
        module = _run_source(prelude + record["source"], f"<{source}: recorded {role} {name}>", role, ref)
        return _attribute(module, name, role, ref)
    where = record["path"] if record["kind"] == "file" else ref.rsplit(":", 1)[0]
    now = None
    path = Path(record["path"]) if record["path"] else None
    if record["kind"] == "module":
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError):
            found = None
        path = Path(found.origin) if found is not None and found.origin else path
    try:
        present = path is not None and path.is_file()
    except OSError:
        present = False
    if present:
        try:
            now = sha256_text(_read_source(path, role, ref))
        except MnistlabError:
            now = "unreadable"
    if now == want:
        obj, _ = resolve(str(path) + ":" + name if record["kind"] == "file" else ref, role)
        return obj
    what = (f"{path} has changed since the run recorded it (SHA-256 {want[:12]}... then, {now[:12]}... now)"
            if now else f"{where} does not exist here")
    if not trusted:
        raise MnistlabError(f"{source}: its {role} is user code {ref!r}, and {what}", hint=TRUST_HINT)
    module = _run_source(record["source"], f"<{source}: recorded copy of {path or where}>", role, ref)
    return _attribute(module, name, role, ref)


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
    libraries = (str(Path(__file__).parent), str(Path(torch_dir()).parent) if torch_dir() else "\0")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(libraries)]
    at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return MnistlabError(f"{role} {ref!r}: {doing} raised {type(exc).__name__}: {message}{at}")


def _run_source(source: str, filename: str, role: str, ref: str) -> types.ModuleType:
    key = (filename, sha256_text(source))
    if key in _modules:
        return _modules[key]
    module = types.ModuleType(f"mnistlab_user_{key[1][:16]}")
    module.__file__ = filename
    sys.modules[module.__name__] = module  # dataclasses and typing look their module up by name
    folder = str(Path(filename).parent) if Path(filename).is_file() else None
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
            near = difflib.get_close_matches(part, public, n=1)
            raise MnistlabError(f"{role} {ref!r}: {getattr(obj, '__file__', None) or getattr(obj, '__name__', obj)} "
                                f"has no {part!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
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
