"""Fuzzing your own code and data: code references and records, class names, arrays and image folders (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from fuzzing import (
    JSON_VALUES,
    case,
    expect_clean,
    fuzz,
    mutated,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

OWN_SOURCE = (b"import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
              b"        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n"
              b"    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
SAFE_MODULES = ["json", "math", "no_such_module", "mnistlab.stats", "json.decoder", ""]  # nothing with side effects


def hostile_records(root) -> list[dict]:
    """The records with which a received run ran code before consent existed (issue 43): an unchanged
    library file with its true hash, paths relative to the current folder, packages a lookup imports.
    Each plants `root/MARKER` if it ever runs (fuzzpkg's __init__, evil.py)."""
    import torch.utils.collect_env as library

    marker = f"open({str(root / 'MARKER')!r}, 'w').close()\n"
    (root / "fuzzpkg").mkdir(exist_ok=True)
    (root / "fuzzpkg" / "__init__.py").write_text(marker)
    (root / "code").mkdir(exist_ok=True)
    evil = marker + OWN_SOURCE.decode()
    (root / "code" / "evil.py").write_text(evil)
    lib = Path(library.__file__).resolve()
    rows = [("module", "torch.utils.collect_env:run", str(lib), lib.read_text()),
            ("file", "code/evil.py:Net", "code/evil.py", evil), ("file", f"{root}/code/evil.py:Net", f"{root}/code/evil.py", evil),
            ("module", "fuzzpkg.nothing:Net", "", evil), ("module", "this.x:Net", "", evil),
            ("session", "__main__:Net", "", evil), ("file", "fuzzpkg/__init__.py:Net", "fuzzpkg/__init__.py", marker)]
    from mnistlab.user_code import sha256_text

    return [{"ref": ref, "kind": kind, "name": ref.rsplit(":", 1)[1], "path": path, "sha256": sha256_text(src),
             "source": src} for kind, ref, path, src in rows]


@fuzz(share=0.1)
@given(st.data())
def test_code_references_and_records(tmp_path_factory, data):
    """A model reference typed by a user, and a run's record of its code (crafted as the received runs of
    issue 43 were, hash-consistent or not, trusted or not, with a code/ copy or not), loaded where this
    user signed nothing: the object, or a MnistlabError; never another exception, and never the code of
    a record nobody here approved (no marker, no package imported), unless --trust-code ran exactly the
    copy a person can read."""
    case("code references and records")
    import sys

    from mnistlab import consent, user_code
    from mnistlab.models.registry import create_model

    root = tmp_path_factory.getbasetemp() / "fuzz-code"
    root.mkdir(exist_ok=True)
    os.environ[consent.ENV] = str(root / "nobody-signed-here")  # another user: no key, no signatures
    old_cwd = os.getcwd()
    try:
        os.chdir(root)  # where the relative records would resolve, were anything resolved against it
        sys.path.insert(0, str(root))
        source = data.draw(st.one_of(st.just(OWN_SOURCE), mutated([OWN_SOURCE], max_ops=3)))
        (root / "net.py").write_bytes(source)
        where = data.draw(st.one_of(st.just(str(root / "net.py")), st.sampled_from(SAFE_MODULES),
                                    st.text(max_size=12).map(lambda t: str(root / t))))
        name = data.draw(st.one_of(st.sampled_from(["Net", "nn", "torch.nn.Linear", "Net@1", "dumps", "x.y"]),
                                   st.text(max_size=8)))
        ref = f"{where}:{name}"
        expect_clean(create_model, ref)  # typed by the user: runs (their consent), or one clear error
        text = source.decode("utf-8", "replace")
        hostile = hostile_records(root)
        record = data.draw(st.one_of(
            st.sampled_from(hostile),
            st.builds(lambda kind: {"ref": ref, "kind": kind, "name": name, "path": where,
                                    "sha256": user_code.sha256_text(text), "source": text},
                      st.sampled_from(["file", "module", "session", "instance", "other"]))))
        record = dict(record)
        for _ in range(data.draw(st.integers(0, 2))):
            record[data.draw(st.sampled_from(sorted(record)))] = data.draw(JSON_VALUES)
        copy = data.draw(st.sampled_from([None, root / "code" / "net.py"]))
        if copy is not None:  # what a person would read: the record's own source, or something else
            copy.write_text(record["source"] if isinstance(record.get("source"), str) and data.draw(st.booleans())
                            else text, errors="surrogateescape")
        trusted = data.draw(st.booleans())
        before = set(sys.modules)
        with user_code.trusting(trusted):
            checked = expect_clean(user_code.check_record, record, "fuzz", "model")
            obj = None if checked is None else expect_clean(user_code.from_record,
                                                            user_code.Carried(checked, "fuzz", copy), "model")
        imported = {m for m in set(sys.modules) - before if m.split(".")[0] in ("fuzzpkg", "this")}
        assert not imported, f"looking at a record imported {imported}"
        ran_copy = (obj is not None and trusted and copy is not None
                    and user_code.sha256_text(copy.read_text(errors="surrogateescape")) == checked["sha256"])
        assert obj is None or ran_copy, f"a record nobody approved ran: {record['ref']!r}"
        assert ran_copy or not (root / "MARKER").exists(), "a hostile record's code ran"
        (root / "MARKER").unlink(missing_ok=True)  # the approved copy may be evil.py's text: it ran as asked
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(root))
        os.environ.pop(consent.ENV, None)


CLASS_NAMES = ["7", "T-shirt/top", "=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(1)", "<img src=x onerror=1>",
               "a|b", "\x1b[2K\r7", "line\nbreak", "\ud800", "x" * 201, "", " ", "**bold**", "\u202eevil"]


@fuzz(share=0.05)
@given(st.lists(st.one_of(st.sampled_from(CLASS_NAMES), st.text(max_size=40)), min_size=0, max_size=12))
def test_class_names_into_pages_csv_and_terminals(tmp_path_factory, names):
    """Class names come from anyone's folders and checkpoints: refused where they cannot be shown safely,
    and where accepted, inert on every page, in every CSV cell and on every terminal line."""
    case("class names")
    import pandas as pd

    from mnistlab.analysis.data_audit import write_csv
    from mnistlab.analysis.maps import write_page
    from mnistlab.names import check_labels
    from mnistlab.reporting.run_report import md
    from mnistlab.tables import format_table

    accepted = expect_clean(check_labels, names, "fuzz")
    if accepted is None:
        return
    for name in accepted:
        assert name.isprintable() and 0 < len(name) <= 200
    line = format_table([[n, 0.5] for n in accepted], ["class", "recall"])
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in line)  # nothing a terminal acts on
    out = tmp_path_factory.getbasetemp() / "fuzz-names.csv"
    write_csv(pd.DataFrame({"label": list(accepted), "score": [0.5] * len(accepted)}), out)
    cells = pd.read_csv(out, dtype=str, keep_default_na=False)["label"]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)  # no spreadsheet formula
    for n in accepted:  # Markdown (report.md): every character it would act on escaped
        assert not re.search(r"(?<!\\)[<>|`*_\[\]]", md(n)), md(n)
    k = len(accepted)  # the map page: names travel as JSON data, never as markup
    page = write_page(tmp_path_factory.getbasetemp() / "fuzz-names.html", np.zeros((k, 2)), np.arange(k), None,
                      list(accepted), torch.zeros(k, 28, 28, dtype=torch.uint8), np.arange(k), "fuzz").read_text()
    assert not any("<" in n and n in page for n in accepted)


@fuzz(share=0.05)
@given(st.data())
def test_own_arrays_and_image_folders(tmp_path_factory, data):
    case("own arrays and image folders")
    from mnistlab.data import Dataset

    shape = data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=5))
    dtype = data.draw(st.sampled_from([np.uint8, np.float32, np.int64, np.bool_, np.float64]))
    x = np.asarray(data.draw(st.lists(st.one_of(st.floats(-2, 300), st.just(float("nan"))), min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape))))).astype(dtype, copy=False).reshape(shape) \
        if dtype != np.uint8 else np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    y = np.asarray(data.draw(st.lists(st.integers(-1, 3), max_size=8)))
    expect_clean(Dataset.from_arrays, x, y, x, y)
    root = tmp_path_factory.getbasetemp() / "fuzz-folder"
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "0.png").write_bytes(data.draw(st.one_of(st.just(buf.getvalue()),
                                                               mutated([buf.getvalue()], max_ops=3))))
    ds = expect_clean(Dataset.from_folder, root)
    if ds is not None:
        assert ds.train.images.dtype == torch.uint8 and ds.num_classes == 2
