"""The base of every result object: a verb's record that prints as its command prints it, shows itself in
a notebook (`_repr_html_`: the headline figures and the main picture) and still reads as the dict the
verb returned (`result["key"]`, `result.key`). Below every package, so that any floor's verbs (the
datasets' `info` and `verify` too) return results of one kind; `mnistlab.results` holds the verbs' own."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from . import atomic, pages
from .tables import format_table


class Result(Mapping):
    """A verb's result (see the module docstring). Subclasses name their headline and main pictures."""

    title = "result"

    def __init__(self, record: dict):
        self.record = dict(record)

    # the record as a mapping, and its keys as attributes
    def __getitem__(self, key):
        return self.record[key]

    def __iter__(self):
        return iter(self.record)

    def __len__(self) -> int:
        return len(self.record)

    def __getattr__(self, name):
        record = self.__dict__.get("record", {})
        if name in record:
            return record[name]
        raise AttributeError(f"{type(self).__name__} has no {name!r} (its record holds: {', '.join(record)})")

    def headline(self) -> list[tuple[str, str]]:
        """(label, value) pairs of what the result is about."""
        return []

    def pictures(self) -> dict[str, str]:
        """{caption: PNG path} of the pictures to show, the main one first."""
        return {}

    def __repr__(self) -> str:
        figures = ", ".join(f"{k} {v}" for k, v in self.headline()[:4])
        return f"{type(self).__name__}({figures})"

    def __str__(self) -> str:
        """What the verb's command prints: the headline, a line each (results override it)."""
        return "\n".join(f"{k}: {v}" for k, v in self.headline())

    def _repr_html_(self) -> str:
        figures = []
        for caption, path in list(self.pictures().items())[:2]:
            pic = pages.picture(path, Path(path).parent, caption) if path else {"missing": "not drawn"}
            if pic.get("src"):
                figures.append(pic)
        return pages.fragment("result.html", title=self.title, rows=[(k, str(v)) for k, v in self.headline()],
                              figures=figures)

    def save_page(self, path) -> Path:
        """The notebook display as a page of its own (values escaped, pictures embedded, nothing
        else allowed by its Content-Security-Policy), written atomically."""
        page = pages.render("result-page.html", title=self.title, body=self._repr_html_())
        return atomic.write_text(Path(path), page + "\n")


class Listing(Result):
    """A table of what there is (models, recipes): printed as a table, shown as one in a notebook."""

    title = "listing"

    def __str__(self) -> str:
        rows = [[r.get(k, "") for k in self.record["header"]] for r in self.record["rows"]]
        note = f"\n\n{self.record['note']}" if self.record.get("note") else ""
        return format_table(rows, list(self.record["header"]), width=shutil.get_terminal_size().columns) + note

    def __repr__(self) -> str:
        return f"Listing({len(self.record['rows'])} {self.record['title']})"

    def _repr_html_(self) -> str:
        header = list(self.record["header"])
        return pages.fragment("result.html", title=self.record["title"], header=header,
                              body=[[r.get(h, "") for h in header] for r in self.record["rows"]])
