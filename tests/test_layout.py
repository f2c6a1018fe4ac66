"""The package's floors: each module imports only from its own floor's package or from floors below,
and no import circle exists anywhere, function-local imports included. Read from the source (ast),
so nothing is run. The floor order is written once, here; docs/layout.md describes it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mnistlab"

# Bottom first. A module belongs to the first entry its dotted path (below mnistlab) starts with;
# the single modules of the bottom floor are named one by one.
FLOORS = [
    ("base", ["_version", "errors", "atomic", "names", "schema", "machine", "precision", "allocator", "progress",
              "pages", "pictures", "stats", "lists", "tables", "result_base", "rundir", "consent", "user_code"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("attacks", ["attacks"]),
    ("training", ["training"]),
    ("analysis", ["analysis"]),
    ("studies", ["studies"]),
    ("reporting", ["reporting"]),
    ("serving", ["serving"]),
    ("api", ["api", "results"]),
    ("bench", ["bench"]),
    ("cli", ["cli", "__main__"]),
    ("package", ["__init__"]),  # mnistlab/__init__.py: the public names, above everything
]


def floor_of(module: str) -> int:
    rel = module.removeprefix("mnistlab").lstrip(".") or "__init__"
    for level, (_, prefixes) in enumerate(FLOORS):
        if any(rel == p or rel.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"mnistlab.{rel} is on no floor: add it to FLOORS in tests/test_layout.py")


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The mnistlab modules `name` imports, anywhere in it (functions included)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from . import x` may name a module x of the package, or a name inside it
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t.startswith("mnistlab") and t != name:
                found.add(t)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_imports_only_its_own_floor_and_below(graph):
    upward = [f"{a} (floor {FLOORS[floor_of(a)][0]}) imports {b} (floor {FLOORS[floor_of(b)][0]})"
              for a, targets in graph.items() for b in targets
              if floor_of(b) > floor_of(a) and not (b == "mnistlab" and a.startswith("mnistlab"))]
    assert not upward, "\n".join(sorted(upward))


def test_no_module_imports_the_package_root(graph):
    """`from .. import __version__` made every module depend on the public API above it (_version.py)."""
    offenders = sorted(a for a, targets in graph.items() if "mnistlab" in targets and a not in ("mnistlab.__main__",))
    assert not offenders, offenders


def test_there_is_no_import_circle(graph):
    seen, stack, circles = set(), [], []

    def visit(node):
        if node in stack:
            circles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt != "mnistlab":  # the root is above everything (checked above)
                visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
