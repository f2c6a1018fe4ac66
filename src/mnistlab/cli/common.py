"""What the verbs' parsers share: one flag per TrainConfig field, `--set KEY=VALUE`, and the server's
limit flags, each with its help taken from the field it sets."""

from __future__ import annotations

import argparse
import dataclasses

from ..serving.limits import Limits
from ..training import config


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (dest cfg_FIELD), its help taken from the field's metadata."""
    group = p.add_argument_group("run config (each overrides the recipe; see also --set)")
    for name, f in config.FIELDS.items():
        if name == "recipe":  # set by --recipe itself
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default!r})".replace("%", "%%")
        if config.field_type(name) is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=f"cfg_{name}", metavar=name.upper(), default=None, help=help_text)


def add_trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="a run whose model, optimizer or loss is your own code, changed or missing since: run the "
                   "copy the run recorded (in its code/ folder: read it first)")


def add_set_flag(p: argparse.ArgumentParser, help: str = "override any config key (repeatable)") -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)


def settings(args) -> dict:
    """The config settings a command line gave: its config flags, then --set on top."""
    out = {name: getattr(args, f"cfg_{name}") for name in config.FIELDS if getattr(args, f"cfg_{name}", None)
           is not None}
    out.update(config.parse_set(getattr(args, "set", None) or []))
    return out


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """One flag per field of serving.limits.Limits (dest limit_FIELD), its help from the field's metadata."""
    group = p.add_argument_group("limits (what one request or client may cost the server)")
    for f in dataclasses.fields(Limits):
        kind = int if isinstance(f.default, int) else float
        group.add_argument("--" + f.name.replace("_", "-"), dest=f"limit_{f.name}", type=kind, default=None,
                           metavar=f.name.upper(), help=f"{f.metadata['help']} (default: {f.default})")


def limits(args) -> dict:
    return {k[len("limit_"):]: v for k, v in vars(args).items() if k.startswith("limit_") and v is not None}
