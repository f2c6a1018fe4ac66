"""The verbs of `mnistlab`, built from the Python API: each verb's parser is made from its function's
signature (names, types, defaults, `Literal` choices) and docstring (the help of each parameter under
`Args:`, the description, the examples), so no parameter is declared twice. A handler parses, calls the
function of the verb's name and prints what it returned; the few verbs that print or ask otherwise say
how below (`show`, `extra`), beside the table.

    VERBS = [Verb("evaluate", api.evaluate, positional=("model",)), ...]
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from .. import api
from ..errors import MnistlabError
from ..lists import OneOf
from ..models import carried_code
from ..studies.tuning import list_spaces
from ..tables import printable
from .common import (
    add_config_flags,
    add_limit_flags,
    add_set_flag,
    add_trust_flag,
    limits,
    settings,
)

SECTION = re.compile(r"^\s*(Args|Examples):\s*$")


@dataclass(frozen=True)
class Verb:
    """A command: its API function, and what the command line needs beyond the function's signature."""

    name: str  # as typed: transfer-curve
    function: Callable  # api.<name>, whose signature and docstring declare the flags
    positional: tuple[str, ...] = ()  # parameters given without a flag, in order
    settings: str = "set"  # what **settings becomes: "config" (a flag per TrainConfig field, and --set) or "set"
    extra: Callable[[argparse.ArgumentParser], None] | None = None  # flags about printing or asking, not the call's
    before: Callable | None = None  # (args) -> exit status to stop with, or None to go on and call the function
    show: Callable | None = None  # (args, result) -> exit status; default: print the result (if it says anything)
    run: Callable | None = None  # (args, call) -> exit status, where the verb asks before it calls

    @property
    def doc(self) -> Doc:
        return Doc.of(self.function)


@dataclass(frozen=True)
class Doc:
    """A function's docstring, read for the command line: first line, description, `Args:`, `Examples:`."""

    summary: str
    description: str
    args: dict[str, str]
    examples: list[str]

    @classmethod
    def of(cls, fn) -> Doc:
        lines = inspect.cleandoc(fn.__doc__ or "").splitlines()
        summary = lines[0].rstrip(".") if lines else ""
        body, args, examples, section, name = [], {}, [], None, None
        for line in lines[1:]:
            heading = SECTION.match(line)
            if heading:
                section = heading[1]
                continue
            if section is None:
                body.append(line)
            elif section == "Examples" and line.strip():
                examples.append(line.strip())
            elif section == "Args":
                entry = re.match(r"^    (\w+): (.*)$", line)
                if entry:
                    name = entry[1]
                    args[name] = entry[2].strip()
                elif name and line.strip():
                    args[name] += " " + line.strip()
        return cls(summary, " ".join(" ".join(body).split()), args, examples)


def python_only(help_text: str) -> bool:
    return help_text.startswith("Python only")


def add_verb(verbs, verb: Verb) -> None:
    doc = verb.doc
    epilog = ("examples:\n" + "\n".join(f"  {e}" for e in doc.examples)) if doc.examples else None
    p = verbs.add_parser(verb.name, help=doc.summary, description=doc.description or None,
                         epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(getattr(verb.function, "__wrapped__", verb.function), include_extras=True)
    for name, param in inspect.signature(verb.function).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            if name == "settings" and verb.settings == "config":
                add_set_flag(p)
                add_config_flags(p)
            elif name == "settings":
                add_set_flag(p, "a setting of every run, e.g. epochs=2 or dataset=fashion-mnist (repeatable)")
            elif name == "limits":
                add_limit_flags(p)
            continue
        if name == "trust_code":
            add_trust_flag(p)
            continue
        help_text = doc.args.get(name)
        if help_text is None:
            raise AssertionError(f"api.{verb.function.__name__}: parameter {name!r} has no help under Args:")
        if python_only(help_text):
            continue
        add_argument(p, name, param, hints.get(name), help_text, positional=name in verb.positional)
    if verb.extra is not None:
        verb.extra(p)
    p.set_defaults(func=lambda args: handle(verb, args))


def add_argument(p, name: str, param: inspect.Parameter, hint, help_text: str, *, positional: bool) -> None:
    """One parameter as argparse takes it: its type, choices and default from the signature."""
    kind, choices, many = _kind(hint)
    default = None if param.default is param.empty else param.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    if not (shown is None or isinstance(shown, bool) or shown == "") and "default:" not in help_text:
        help_text += f" (default: {shown})"
    help_text = help_text.replace("%", "%%")
    if positional:
        optional = param.default is not param.empty
        nargs = ("*" if optional else "+") if many else ("?" if optional else None)
        p.add_argument(name, nargs=nargs, type=kind, choices=choices, help=help_text,
                       **({"default": default} if optional else {}))
        return
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        if default:  # the flag turns it off: its help is what the docstring says of --no-NAME
            said = re.search(r"\(--no-[\w-]+: (.*)\)", help_text)
            p.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                           help=said[1] if said else help_text)
        else:
            p.add_argument(flag, dest=name, action="store_true", help=help_text)
        return
    p.add_argument(flag, dest=name, type=kind, choices=choices, default=default, help=help_text,
                   required=param.default is param.empty and param.kind is param.KEYWORD_ONLY,
                   metavar=None if choices else name.upper())


def _kind(hint) -> tuple[type, tuple | None, bool]:
    """(the type argparse converts to, the choices, whether it takes several values) of an annotation."""
    if typing.get_origin(hint) is typing.Annotated:  # choices kept in a registry: read them now
        base, *extras = typing.get_args(hint)
        one_of = next((e for e in extras if isinstance(e, OneOf)), None)
        kind, choices, many = _kind(base)
        return kind, (tuple(one_of()) if one_of else choices), many
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    for a in args:
        if typing.get_origin(a) is typing.Literal:
            values = typing.get_args(a)
            return type(values[0]), values, False
    for a in args:
        if a is bool:
            return bool, None, False
        if typing.get_origin(a) is list:
            return str, None, True
    for a in args:
        if a in (int, float):
            return a, None, False
    return str, None, False


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def handle(verb: Verb, args) -> int:
    """Parse (done), call the verb's function, print what it returned."""
    if verb.before is not None:
        status = verb.before(args)
        if status is not None:
            return status

    def call(**overrides):
        return verb.function(**{**arguments(verb, args), **overrides})

    if verb.run is not None:
        return verb.run(args, call)
    result = call()
    if verb.show is not None:
        return verb.show(args, result)
    text = str(result) if result is not None else ""
    if text:
        print(text)
    return 0


def arguments(verb: Verb, args) -> dict:
    """The function's keyword arguments from the parsed command line."""
    out = {}
    for name, param in inspect.signature(verb.function).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            out.update(settings(args) if name == "settings" else limits(args) if name == "limits" else {})
        elif hasattr(args, name):
            out[name] = getattr(args, name)
    return out


# ---------- the verbs that print or ask in a way of their own ----------

def printed_as_it_ran(args, result) -> int:  # the verb printed its own progress and conclusion as it went
    return 0


def _check_shown(args, result) -> int:
    print(result.conclusion())  # the checks were printed as each completed
    return 0 if result["status"] == "works" else 1


def _map_shown(args, result) -> int:
    if args.quiet:  # it said nothing as it went: the page's path alone, for a script
        print(result["files"]["html"])
    return 0


def _predict_flags(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _predict_shown(args, results) -> int:
    if args.json:  # how to print, not what to do: the function returns the same objects
        print(json.dumps([dict(r.as_dict(), file=str(f)) for f, r in zip(args.images, results)], indent=2))
        return 0
    for f, r in zip(args.images, results):
        print(printable(f"{f}: {r}"))  # class names come from a file
    if args.save_preprocessed:
        print(f"wrote the 28x28 images the model saw to {args.save_preprocessed}/")
    return 0


def _tune_flags(p) -> None:
    p.add_argument("--list-spaces", action="store_true", help="list the packaged search spaces and exit")


def _tune_before(args) -> int | None:
    if args.list_spaces:  # what there is to search: a listing, not a search
        print("\n".join(list_spaces()))
        return 0
    if not args.recipe or not args.space:
        raise MnistlabError("tune needs --recipe and --space", hint="e.g. mnistlab tune --recipe fast --space fast "
                            "--trials 40 (`mnistlab tune --list-spaces` names the packaged spaces)")
    return None


def _trust_flags(p) -> None:
    p.add_argument("--yes", action="store_true", help="approve without asking (after showing the code)")


def _trust_run(args, call) -> int:
    """Show the code, ask, and only then sign it (calling the function is the consent)."""
    found = carried_code.carried_code(args.path)  # shown before anything is signed
    if not found:
        print(f"{args.path}: no code of your own to approve: it uses only mnistlab's own models")
        return 0
    if not args.revoke:
        for item in found:
            print(item)
        if not all(item.signed for item in found) and not args.yes and not confirmed(
                "Run this code here from now on, without asking? [y/N] "):
            print("nothing approved")
            return 1
    print(call())
    return 0


def confirmed(question: str) -> bool:
    """A yes from a person at a terminal; no terminal, no yes (pass --yes)."""
    if not sys.stdin.isatty():
        raise MnistlabError("mnistlab trust asks before approving code, and no one is at a terminal to answer",
                            hint="read the code above, then pass --yes to approve it")
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


# The order `mnistlab --help` lists them in (data, whose actions are built the same way, and bench come
# from their own modules).
VERBS = [
    Verb("models", api.models),
    Verb("recipes", api.recipes),
    Verb("train", api.train, settings="config", show=printed_as_it_ran),
    Verb("lr-find", api.lr_find, settings="config"),
    Verb("pretrain", api.pretrain, show=printed_as_it_ran),
    Verb("trust", api.trust, positional=("path",), extra=_trust_flags, run=_trust_run),
    Verb("tune", api.tune, extra=_tune_flags, before=_tune_before, show=printed_as_it_ran),
    Verb("transfer-curve", api.transfer_curve, show=printed_as_it_ran),
    Verb("sota", api.sota, show=printed_as_it_ran),
    Verb("evaluate", api.evaluate, positional=("model",)),
    Verb("ensemble", api.ensemble, positional=("models",)),
    Verb("attack", api.attack, positional=("model",)),
    Verb("audit", api.audit, positional=("dataset",)),
    Verb("check", api.check, positional=("model",), show=_check_shown),
    Verb("shift", api.shift, positional=("model",)),
    Verb("inspect", api.inspect, positional=("model",)),
    Verb("map", api.map, positional=("model",), show=_map_shown),
    Verb("report", api.report, positional=("runs",)),
    Verb("predict", api.predict, positional=("images",), extra=_predict_flags, show=_predict_shown),
    Verb("serve", api.serve, show=printed_as_it_ran),
    Verb("export", api.export, positional=("model",)),
]


def add(verbs) -> None:
    for verb in VERBS:
        add_verb(verbs, verb)


