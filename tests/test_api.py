"""The Python API mirrors the CLI: one public function per verb, of the verb's name, whose keyword
arguments are the verb's flags; unknown settings suggest the nearest name; results display themselves."""

from __future__ import annotations

import argparse
import inspect

import pytest

import mnistlab
from mnistlab.cli import build_parser
from mnistlab.training.config import FIELDS

# Verbs that are listings or tools rather than one function: where their Python lives instead.
ELSEWHERE = {"data": "mnistlab.data (list_datasets, info, show, verify, fetch)", "models": "mnistlab.models.list_models",
             "recipes": "mnistlab.training.config.list_recipes", "bench": "mnistlab.bench.bench"}
# Flags about how the command prints or asks, or a listing instead of the verb's work: not arguments of the
# function (calling mnistlab.trust is itself the consent that `mnistlab trust` asks for unless --yes).
PRINTING = {"predict": {"json"}, "tune": {"list_spaces"}, "trust": {"yes"}}


def verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_verb_has_a_same_named_function_whose_keywords_are_its_flags(verb):
    if verb in ELSEWHERE:
        return
    fn = getattr(mnistlab, verb.replace("-", "_"))
    params = inspect.signature(fn).parameters
    takes_settings = any(p.kind is p.VAR_KEYWORD for p in params.values())
    parser = verbs()[verb]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in PRINTING.get(verb, ()):
            continue
        dest = action.dest
        if dest.startswith("cfg_") or dest == "set" or dest.startswith("limit_"):  # settings and limits: **kwargs
            assert takes_settings, f"{verb}: {dest} needs **settings"
            continue
        assert dest in params, f"mnistlab.{fn.__name__} lacks {dest!r}, the {verb} verb's {action.option_strings or dest}"
        if action.option_strings and action.default is not None and params[dest].default is not inspect.Parameter.empty:
            default = params[dest].default
            assert default == action.default or str(default) == str(action.default) or (
                isinstance(default, tuple) and ",".join(map(str, default)) == action.default), (verb, dest)


def test_train_takes_every_config_key_and_suggests_the_nearest_for_a_typo(tmp_path):
    with pytest.raises(mnistlab.MnistlabError, match="unknown config key 'epoch'") as err:
        mnistlab.train(recipe="seed-mlp", epoch=1, out=str(tmp_path))
    assert "did you mean 'epochs'" in err.value.hint
    assert set(FIELDS) - {"recipe"} <= {a.dest[4:] for a in verbs()["train"]._actions if a.dest.startswith("cfg_")}


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
