"""The one way mnistlab puts text into HTML: autoescaping templates, data as JSON, a strict CSP.

Every page mnistlab writes (the report, a study's page, a map) is a Jinja2 template rendered with
autoescaping on (`render`), so a value read from a run's files (a run name, a class name, a config
field) is text on the page, never markup. Data a page's script needs goes in as JSON inside
`<script type="application/json">` (`json_data`, escaped so no `</script>` can end it early) and is
read with `textContent`. Each page carries a Content-Security-Policy (`csp`) that allows only its
own inline style and script, by their SHA-256 hashes: inline event handlers and injected scripts do
not run, and nothing is fetched from anywhere. Pictures are embedded only from inside the directory
the page describes, only PNG (by signature), and only up to `MAX_PICTURE_BYTES` (`picture`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import schema
from .errors import MnistlabError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PICTURE_BYTES = 8 << 20  # one embedded picture (mnistlab's own are at most a few hundred KB)

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("mnistlab", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def asset(name: str) -> Markup:
    """A packaged style sheet or script (templates/NAME), trusted: it is mnistlab's own file."""
    return Markup((resources.files("mnistlab") / "templates" / name).read_text())


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp(styles: tuple[str, ...] = (), scripts: tuple[str, ...] = ()) -> str:
    """A policy that allows nothing but these inline styles and scripts (by hash) and data: images."""
    script = " ".join(_sha256(s) for s in scripts) or "'none'"
    style = " ".join(_sha256(s) for s in styles) or "'none'"
    return (f"default-src 'none'; img-src data:; style-src {style}; script-src {script}; base-uri 'none'; "
            "form-action 'none'")


def render(template: str, *, styles: tuple[str, ...] = (), scripts: tuple[str, ...] = (), **values) -> str:
    """The page `templates/<template>` with `values` (escaped), its CSP allowing exactly `styles` and
    `scripts`, which the template places with `{{ style }}` / `{{ script }}` (index 0) or by index."""
    return _ENV.get_template(template).render(
        csp=csp(styles, scripts), styles=[Markup(s) for s in styles], scripts=[Markup(s) for s in scripts],
        **values)


def fragment(template: str, **values) -> Markup:
    """A piece of a page (a notebook display) from `templates/<template>`, every value escaped."""
    return Markup(_ENV.get_template(template).render(**values))


def json_data(value) -> Markup:
    """`value` as JSON safe to place inside `<script type="application/json">`: <, >, & and ' escaped."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
                  .replace("'", "\\u0027"))


def picture(path, root: str | os.PathLike, caption: str) -> dict:
    """{"src": a data: URI, "caption"} for a PNG inside `root`; {"missing": why, "caption"} otherwise.

    A picture path comes from a run's JSON files, which anyone may have written: it is embedded only
    when it resolves inside the directory the page describes, is a PNG, and is not too large."""
    try:
        file = Path(path).resolve()
        base = Path(root).resolve()
    except (OSError, RuntimeError, TypeError, ValueError):
        return {"missing": "not a path", "caption": caption}
    if not file.is_relative_to(base):
        return {"missing": f"outside {base.name}/, not embedded", "caption": caption}
    if not file.is_file():  # not a regular file (a pipe would block the page's writer): not embedded
        return {"missing": "not found", "caption": caption}
    try:
        data = schema.read_bytes(file, MAX_PICTURE_BYTES)
    except MnistlabError as exc:
        return {"missing": "larger than the limit, not embedded" if "more than" in exc.message else "not found",
                "caption": caption}
    if not data.startswith(PNG_SIGNATURE):
        return {"missing": "not a PNG, not embedded", "caption": caption}
    if len(data) > MAX_PICTURE_BYTES:
        return {"missing": f"larger than {MAX_PICTURE_BYTES >> 20} MB, not embedded", "caption": caption}
    return {"src": "data:image/png;base64," + base64.b64encode(data).decode(), "caption": caption}


def file_link(path, root: str | os.PathLike) -> str | None:
    """A file:// link to `path` if it lies inside `root` (a page links only to what belongs to it)."""
    try:
        file, base = Path(path).resolve(), Path(root).resolve()
    except (OSError, RuntimeError, TypeError, ValueError):
        return None
    return file.as_uri() if file.is_relative_to(base) and file.is_file() else None
