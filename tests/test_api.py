"""The Python API mirrors the CLI: one public function per verb, of the verb's name, whose keyword
arguments are the verb's flags; unknown settings suggest the nearest name; results display themselves."""

from __future__ import annotations

import argparse
import inspect

import pytest

import mnistlab
import mnistlab.bench
from mnistlab.cli import build_parser
from mnistlab.cli.data import ACTIONS as DATA_ACTIONS
from mnistlab.cli.verbs import VERBS
from mnistlab.training.config import FIELDS

# Flags about how the command prints or asks, not arguments of the function (calling mnistlab.trust is
# itself the consent that `mnistlab trust` asks for unless --yes; `data fetch --quiet` is progress=False).
PRINTING = {"predict": {"json"}, "tune": {"list_spaces"}, "trust": {"yes"}, "data list": {"json"},
            "data info": {"json"}, "data fetch": {"quiet"}}


def commands() -> dict[str, tuple[argparse.ArgumentParser, object]]:
    """Every command ("evaluate", "data info", "bench") -> (its parser, the function it calls)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, parser in sub.choices.items():
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if actions:  # data: one function per action
            for action, p in actions[0].choices.items():
                out[f"{name} {action}"] = p
        else:
            out[name] = parser
    functions = {v.name: v.function for v in VERBS} | {f"data {v.name}": v.function for v in DATA_ACTIONS}
    functions["bench"] = mnistlab.bench.bench
    return {name: (parser, functions[name]) for name, parser in out.items()}


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_command_is_built_from_one_function_whose_keywords_are_its_flags(command):
    """Every flag is a parameter of the function the command calls, with the same default: declared once
    (the verbs' parsers are made from the signatures); a verb is `mnistlab.<verb>` where it is one
    function, `mnistlab.data.<action>` for the datasets."""
    parser, fn = commands()[command]
    if " " not in command and command != "bench":  # mnistlab.models and .recipes: packages that call api's
        assert fn is getattr(mnistlab.api, command.replace("-", "_")) and callable(getattr(mnistlab, fn.__name__))
    params = inspect.signature(fn).parameters
    takes_settings = any(p.kind is p.VAR_KEYWORD for p in params.values())
    flags = 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in PRINTING.get(command, ()):
            continue
        dest = action.dest
        if dest.startswith("cfg_") or dest == "set" or dest.startswith("limit_"):  # settings and limits: **kwargs
            assert takes_settings, f"{command}: {dest} needs **settings"
            continue
        flags += 1
        assert dest in params, f"{fn.__name__} lacks {dest!r}, the {command} command's {action.option_strings or dest}"
        if action.option_strings and action.default is not None and params[dest].default is not inspect.Parameter.empty:
            default = params[dest].default
            assert default == action.default or str(default) == str(action.default) or (
                isinstance(default, tuple) and ",".join(map(str, default)) == action.default), (command, dest)
    assert flags or not params, command


def test_data_results_print_as_tables_and_read_as_dicts():
    info = mnistlab.data.info("mnist")
    assert info["num_classes"] == 10 and info.splits["test"]["count"] == 10_000
    assert "label  class  train  test" in str(info) and "content hash" in str(info)
    verified = mnistlab.data.verify_all("mnist")
    assert verified["ok"] and str(verified).count(" ok ") == 4 and not verified["verdict"]
    listing = mnistlab.data.status_all()
    assert [r["name"] for r in listing["rows"]][0] == "mnist" and "aliases:" in str(listing)


def test_train_takes_every_config_key_and_suggests_the_nearest_for_a_typo(tmp_path):
    with pytest.raises(mnistlab.MnistlabError, match="unknown config key 'epoch'") as err:
        mnistlab.train(recipe="seed-mlp", epoch=1, out=str(tmp_path))
    assert "did you mean 'epochs'" in err.value.hint
    train_flags = commands()["train"][0]._actions
    assert set(FIELDS) - {"recipe"} <= {a.dest[4:] for a in train_flags if a.dest.startswith("cfg_")}


def test_results_carry_the_figures_and_display_themselves(tmp_path):
    run = mnistlab.train(model="logreg", train_subset=800, validation=200, epochs=1, out=str(tmp_path), progress=False,
                         quiet=True)
    assert 0.5 < run.test_acc <= 1 and run["test_errors"] == run.test_errors and run.run_dir.is_dir()
    html = run._repr_html_()
    assert "test accuracy" in html and "data:image/png;base64," in html  # the learning curves, inline
    ev = mnistlab.evaluate(run.run_dir, pictures=True)
    assert ev.errors == run.test_errors and ev.confusion_matrix.shape == (10, 10)
    assert ev.confusion_matrix.sum() == ev.n and "data:image/png;base64," in ev._repr_html_()
    assert "Evaluation(" in repr(ev)
    seeds = mnistlab.train(model="logreg", train_subset=400, validation=100, epochs=1, out=str(tmp_path),
                           seeds=[0, 1], progress=False, quiet=True)
    assert len(seeds.runs) == 2 and seeds.test_acc["n"] == 2 and " ± " in seeds._repr_html_()
