"""The README is an entrance and the manual lives in docs/: every link leads somewhere, every verb
the README names is a real one, and the README stays short."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mnistlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_every_relative_link_in_the_readme_and_docs_exists():
    broken = []
    for page in PAGES:
        for target, _ in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)


def test_the_readme_is_an_entrance_whose_verbs_are_real():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    named = set(re.findall(r"^\| ((?:`[a-z-]+`(?:, )?)+) \|", text, re.M))
    verbs = {v for cell in named for v in re.findall(r"`([a-z-]+)`", cell)}
    assert verbs and verbs <= set(sub.choices), verbs - set(sub.choices)
    missing = set(sub.choices) - verbs
    assert not missing, f"verbs the README's tour does not name: {sorted(missing)}"
    for page in (ROOT / "docs").glob("*.md"):  # each manual page is linked from the README
        assert f"docs/{page.name}" in text, page.name


def _command_lines():
    """Every `mnistlab ...` line in a fenced block of the README and docs/ (comments cut, `\\` joined)."""
    import shlex

    for page in PAGES:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S)
        for block in blocks:
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.strip()
                for start in ("mnistlab ", ".venv/bin/mnistlab "):
                    if line.startswith(start):
                        words = shlex.split(line.split(" #", 1)[0], comments=False)
                        yield page.relative_to(ROOT), line, words[1:]


def test_every_command_line_in_the_docs_parses_with_the_real_parser(capsys):
    parser = build_parser()
    bad, seen = [], 0
    for page, line, args in _command_lines():
        seen += 1
        try:
            parser.parse_args(args)
        except SystemExit:
            bad.append(f"{page}: {line}\n    {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert seen > 50 and not bad, "\n".join(bad)


def test_the_readme_python_tour_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    tour = text.split("## Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # as a script of its own, in this process
    exec(compile(tour, "README.md (the Python tour)", "exec"), {"__name__": "__main__"})
