"""Safe to open what others send you: run directories, studies, recipes and checkpoints written by
someone else. Every page mnistlab writes from them (report, map, study) shows their strings as text,
embeds only its own PNGs, and runs no script it did not bring (parsed, and in a real browser); names
that are paths are refused; malformed files end in one line; the server says how pages may be used."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from builders import CHROMIUM, needs_package
from fuzzing import case, fuzz
from hypothesis import given
from hypothesis import strategies as st

from mnistlab import pages
from mnistlab.cli import main as cli_main
from mnistlab.errors import MnistlabError
from mnistlab.rundir import RunDir
from mnistlab.training.config import resolve
from mnistlab.training.engine import train

# Markup a hostile run might carry in any string field; each sets window.__pwned if it ever runs.
PAYLOADS = ['<img src=x onerror="window.__pwned=1">', '"><svg onload=window.__pwned=2>',
            "</script><script>window.__pwned=3</script>", "' onmouseover='window.__pwned=4' x='",
            "</style><iframe srcdoc=x>", "</textarea></title><script>window.__pwned=5</script>"]
FILE_PAYLOAD = "<img src=x onerror=window.__pwned=6>"  # no '/': it can name a file


class Tags(HTMLParser):
    """Every element, attribute and text a page holds, as a browser's parser reads them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "main", "section", "h1", "h2", "h3", "p",
             "div", "table", "tr", "th", "td", "figure", "img", "figcaption", "ul", "li", "dl", "dt", "dd", "code",
             "pre", "small", "a", "b", "canvas", "button", "label", "input", "script"}


def assert_inert(page: str, own_scripts: int = 0) -> Tags:
    """The page holds only mnistlab's own elements: no event-handler attribute, no element the input
    could have made, images only as embedded PNGs, exactly its own scripts, and a strict CSP."""
    t = Tags()
    t.feed(page)
    for tag, attrs in t.tags:
        assert tag in SAFE_TAGS, tag
        assert not [a for a in attrs if a.startswith("on") or a in ("srcdoc", "formaction")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:40]
        if tag == "a":
            assert attrs["href"].startswith("file://"), attrs["href"]
    scripts = [a for tag, a in t.tags if tag == "script"]
    assert sum(1 for a in scripts if a.get("type") != "application/json") == own_scripts
    (policy,) = [a["content"] for tag, a in t.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert ("script-src 'none'" in policy) == (own_scripts == 0)
    return t


# ---------- a hostile run directory: every string field markup, picture paths anywhere ----------


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A real run whose files were then rewritten by someone hostile."""
    out = tmp_path_factory.mktemp("hostile")
    s = train(resolve(None, {"model": "mlp", "train_subset": 600, "validation": 200, "epochs": 1, "progress": False,
                             "out": str(out), "name": "run"}), quiet=True)
    run = RunDir(s["run_dir"])
    assert cli_main(["evaluate", str(run.path)]) == 0
    outside = out / "outside.png"
    shutil.copy(run.eval_dir / "test-confusion.png", outside)
    p = iter(PAYLOADS * 10)
    cfg = run.read_json(RunDir.CONFIG)
    for key in ("recipe", "optimizer", "schedule", "augment", "dataset", "name", "prepare"):
        cfg[key] = next(p)
    run.write_json(RunDir.CONFIG, cfg)
    summary = json.loads(run.summary.read_text())
    summary.update(model=next(p), dataset=next(p), recipe=next(p), device=next(p))
    summary["precision"]["reason"] = next(p)
    summary["transfer"] = {"source": next(p), "source_model": next(p), "source_dataset": next(p), "loaded": 3,
                           "head": next(p), "frozen": 1, "trainable_params": 10}
    summary["labelled"] = {"per_class": 5, "count": 50, "seed": 0}
    run.write_json(RunDir.SUMMARY, summary)
    ev = json.loads(run.eval_file("test").read_text())
    ev["dataset"] = next(p)
    for c in ev["per_class"]:
        c["class"] = next(p)
    for m in ev["most_confused"]:
        m["true"], m["predicted"] = next(p), next(p)
    ev["pictures"]["per_class"] = "/etc/passwd"  # what a report once embedded
    ev["pictures"]["reliability"] = str(outside)  # a PNG, but not this run's
    ev["pictures"]["mistakes"] = str(run.path / "config.json")  # this run's, but not a PNG
    run.eval_file("test").write_text(json.dumps(ev))
    return run


@pytest.mark.slow
def test_a_report_of_a_hostile_run_is_text_and_embeds_only_its_own_pngs(hostile_run, tmp_path):
    assert cli_main(["report", str(hostile_run.path), "--out", str(tmp_path / "r"), "--title", PAYLOADS[0]]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    t = assert_inert(page)
    text = "".join(t.text)
    for payload in PAYLOADS:
        assert payload in text  # shown, as the text it is
    assert "root:" not in page and pages.picture("/etc/passwd", hostile_run.path, "")["missing"]
    embedded = [a["src"] for tag, a in t.tags if tag == "img"]
    assert len(embedded) == 2  # confusion and curves; the three others left out, and said so
    assert "outside run/, not embedded" in text and "not a PNG, not embedded" in text


def test_every_page_generator_fed_hostile_strings_makes_inert_pages(tmp_path):
    """report, map and study pages from strings that are all markup, parsed: nothing of theirs is markup."""
    import numpy as np
    import torch

    from mnistlab.analysis.maps import write_page

    page = write_page(tmp_path / "map.html", np.random.default_rng(0).random((30, 2)), np.arange(30) % 3,
                      np.arange(30) % 2, PAYLOADS[:3], torch.zeros(30, 28, 28, dtype=torch.uint8), np.arange(30),
                      PAYLOADS[2] + PAYLOADS[0]).read_text()
    t = assert_inert(page, own_scripts=1)
    (data,) = [d for d in t.text if d.lstrip().startswith("{")]
    assert json.loads(data)["classes"] == PAYLOADS[:3]  # the data arrives whole, as JSON, to be read as text


@pytest.mark.slow
@fuzz(share=1 / 60)
@given(data=st.data())
def test_fuzzed_run_files_make_an_inert_report_or_one_clear_error(hostile_run, tmp_path_factory, data):
    """The report from run files with generated strings (markup characters included) and generated
    wrong types: an inert page, or a MnistlabError naming the file and field."""
    from mnistlab.reporting.run_report import report

    case("report pages from generated run files")
    run = RunDir(tmp_path_factory.mktemp("fuzz-run") / "r")
    shutil.copytree(hostile_run.path, run.path)
    strings = st.text(alphabet="<>&\"'/=x; \n\tabc\u2028\u0000é", max_size=40)
    anything = st.one_of(strings, st.integers(-5, 10**6), st.floats(allow_nan=True), st.none(), st.booleans(),
                         st.lists(strings, max_size=3), st.dictionaries(strings, strings, max_size=2))
    for name in (RunDir.SUMMARY, RunDir.CONFIG, f"{RunDir.EVAL}/test.json"):
        doc = json.loads((run.path / name).read_text())
        for _ in range(data.draw(st.integers(1, 6))):
            key = data.draw(st.sampled_from(sorted(doc)))
            doc[key] = data.draw(st.one_of(strings, anything) if data.draw(st.booleans()) else strings)
        (run.path / name).write_text(json.dumps(doc))
    try:
        r = report([run.path], out=run.path.parent / "out", title=data.draw(strings))
    except MnistlabError as exc:
        assert exc.message and "\n" not in exc.message.split(":")[0]
        return
    assert_inert(Path(r["html"]).read_text())


# ---------- a hostile checkpoint name (map) and hostile recipe and space names (study) ----------


def test_a_map_of_a_checkpoint_with_a_hostile_name_is_inert(tmp_path):
    from test_checkpoints import rewritten

    from mnistlab.analysis.maps import build_map
    from mnistlab.models.checkpoint import read_header
    from mnistlab.serving.prediction import DEFAULT_MODEL

    meta, _ = read_header(DEFAULT_MODEL)
    meta = {**meta, "name": PAYLOADS[2] + PAYLOADS[0]}  # the title once went in raw, via a marker inside it
    evil = rewritten(DEFAULT_MODEL, tmp_path / "evil.safetensors", meta=meta)
    m = build_map(str(evil), method="tsne", n=40, seed=0, out=str(tmp_path / "map"), quiet=True)
    t = assert_inert(Path(m["files"]["html"]).read_text(), own_scripts=1)
    assert PAYLOADS[2] in "".join(t.text)


@pytest.fixture(scope="module")
def hostile_study(tmp_path_factory):
    """A two-trial study of a recipe and a space whose file names are markup."""
    pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp("study")
    recipe = root / f"{FILE_PAYLOAD}.toml"
    recipe.write_text('model = "mlp"\nepochs = 1\ntrain_subset = 500\nvalidation = 200\n')
    space = root / f"{FILE_PAYLOAD}-space.toml"
    space.write_text("[params.lr]\nlow = 0.0005\nhigh = 0.005\nlog = true\n")
    assert cli_main(["tune", "--recipe", str(recipe), "--space", str(space), "--trials", "2", "--study", "s",
                     "--out", str(root / "t"), "--quiet"]) == 0
    return root / "t" / "s"


@pytest.mark.slow
def test_a_study_page_of_hostile_names_is_inert_and_its_trials_report(hostile_study, tmp_path):
    t = assert_inert((hostile_study / "study.html").read_text())
    assert FILE_PAYLOAD in "".join(t.text)
    trial = sorted((hostile_study / "trials").iterdir())[0]
    assert cli_main(["report", str(trial), "--out", str(tmp_path / "r")]) == 0
    assert_inert((tmp_path / "r" / "report.html").read_text())


@pytest.mark.slow
@needs_package(Path(CHROMIUM).exists(), "chromium", "opening hostile pages in a real browser")
def test_chromium_runs_nothing_from_hostile_report_map_and_study_pages(hostile_run, hostile_study, tmp_path):
    """Opened in a real browser: no payload runs, and the map's own script still does."""
    from playwright.sync_api import sync_playwright

    from mnistlab.analysis.maps import build_map

    assert cli_main(["report", str(hostile_run.path), "--out", str(tmp_path / "r"), "--title", PAYLOADS[3]]) == 0
    shutil.copy(hostile_run.path / "best.safetensors", tmp_path / "m.safetensors")
    m = build_map(str(hostile_run.path), method="tsne", n=40, seed=0, out=str(tmp_path / "map"), quiet=True,
                  features="pixels")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update",
                                          "--disable-sync"])
        for path, own in ((tmp_path / "r" / "report.html", False), (Path(m["files"]["html"]), True),
                          (hostile_study / "study.html", False)):
            page = browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.resolve().as_uri())
            page.wait_for_timeout(300)
            # onmouseover/onfocus payloads: the events are dispatched to every element in the page
            # (a real hover per element timed out on a loaded CI machine; an inline handler fires either way)
            hit = page.evaluate("""() => { let n = 0;
                for (const el of document.body.querySelectorAll('*')) { n++;
                  for (const t of ['mouseover', 'mouseenter', 'mousemove'])
                    el.dispatchEvent(new MouseEvent(t, {bubbles: t !== 'mouseenter'}));
                  el.dispatchEvent(new FocusEvent('focus')); }
                return n; }""")
            assert hit > 10, path.name
            assert page.evaluate("window.__pwned") is None and not dialogs, path.name
            if own:  # the page's own (hashed) script ran: the policy blocks only what is not its own
                page.wait_for_function("document.body.dataset.ready === '1'")
                assert page.evaluate("window.mapView.n") == 40
            page.close()
        browser.close()


# ---------- names are names ----------


@pytest.mark.parametrize("flags, words", [
    (["--name", "../../escaped"], "a path, not a name"),
    (["--name", "/tmp/anywhere"], "a path, not a name"),
    (["--name", "x" * 300], "300 characters"),
    (["--name", ".."], "a path, not a name"),
])
def test_run_names_that_are_paths_are_refused_before_anything_is_written(flags, words, tmp_path, capsys):
    out = tmp_path / "deep" / "runs"
    code = cli_main(["train", "--model", "logreg", "--train-subset", "100", "--validation", "50", "--epochs", "1",
                     "--out", str(out), "--no-progress", *flags])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not any(tmp_path.rglob("config.json"))  # nothing written, above or inside runs/


def test_a_recipe_naming_its_run_outside_out_is_refused(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "logreg"\nname = "../../x"\nepochs = 1\n')
    assert cli_main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "runs")]) == 2
    assert "a path, not a name" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert not any(tmp_path.rglob("config.json"))


def test_a_recipe_field_that_is_a_path_names_a_run_inside_out(tmp_path):
    """A default run name takes the last part of a path-like recipe or model setting (names.short)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "logreg"\nrecipe = "../../x"\nepochs = 1\ntrain_subset = 100\nvalidation = 50\n'
                      'progress = false\n')
    assert cli_main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert [p.parent.name for p in tmp_path.rglob("config.json")] == ["x-mnist-s0"]
    assert (tmp_path / "runs" / "x-mnist-s0").is_dir() and not (tmp_path / "x").exists()


# ---------- malformed files the tools read back: one line each ----------


BAD_TOML = [b"model = \"mlp\"\nname = \"\xff\xfe\"\n", b"x = " + b"[" * 50_000 + b"]" * 50_000,
            b"x = {a = " * 3000 + b"1" + b"}" * 3000, b"epochs = 1\n" * 200_000]


@pytest.mark.parametrize("data", BAD_TOML, ids=["invalid UTF-8", "50,000-deep array", "deep tables", "2 MB"])
@pytest.mark.parametrize("kind", ["recipe", "space"])
def test_recipe_and_space_files_that_are_not_sane_toml_get_one_line(data, kind, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    argv = (["train", "--recipe", str(path)] if kind == "recipe" else
            ["tune", "--recipe", "seed-mlp", "--space", str(path), "--out", str(tmp_path / "t")])
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and len(err.splitlines()) <= 2


def test_a_deep_plan_and_a_malformed_throughput_file_get_one_line(tmp_path):
    from mnistlab.studies.sota_study import Plan, run_study

    study = tmp_path / "s"
    study.mkdir()
    (study / "plan.json").write_text('{"overrides": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(MnistlabError, match="plan.json: (nested more than|not valid JSON)"):
        run_study(study, Plan(models=["logreg"], seeds=[0]), quiet=True)
    plan = Plan(models=["logreg"], seeds=[0], protocols=["paper"],
                overrides={"epochs": "1", "train_subset": "200", "device": "cpu"})
    (study / "plan.json").write_text(json.dumps({"overrides": plan.overrides}))
    (study / "throughput.json").write_text('{"not": "a list"}')
    with pytest.raises(MnistlabError, match=r"throughput.json: field '\(the document\)': expected a list"):
        run_study(study, plan, quiet=True, throughput_steps=1)  # after the whole study trained: one line


def test_an_audit_cache_declaring_huge_or_nonfinite_arrays_is_recomputed_not_read(tmp_path):
    import io
    import zipfile

    import numpy as np

    from mnistlab.analysis.data_audit import read_cache

    key = {"n": 10, "folds": 2}
    (tmp_path / "oof.json").write_text(json.dumps({"key": key, "seconds": 1.0, "accuracy": 0.5}))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10, 20_000)})
    with zipfile.ZipFile(tmp_path / "oof.npz", "w", zipfile.ZIP_DEFLATED) as z:
        np_bytes = io.BytesIO()
        np.save(np_bytes, np.zeros((10, 3), np.float32))
        z.writestr("probs.npy", np_bytes.getvalue())
        np.save(np_bytes := io.BytesIO(), np.zeros(10, np.int64))
        z.writestr("fold.npy", np_bytes.getvalue())
        with z.open("features.npy", "w", force_zip64=True) as f:  # 800 MB declared, a few KB stored
            f.write(header.getvalue())
            for _ in range(10):
                f.write(bytes(80_000_000 // 10))
    assert (tmp_path / "oof.npz").stat().st_size < 2_000_000
    assert read_cache(tmp_path, key, 3) is None  # refused from the header: nothing decompressed
    np.savez(tmp_path / "oof.npz", probs=np.zeros((10, 3), np.float32), fold=np.zeros(10, np.int64),
             features=np.full((10, 4), np.nan, np.float32))
    assert read_cache(tmp_path, key, 3) is None
    np.savez(tmp_path / "oof.npz", probs=np.zeros((10, 3), np.float32), fold=np.zeros(10, np.int64),
             features=np.zeros((10, 4), np.float32))
    assert read_cache(tmp_path, key, 3) is not None  # a sane cache is still used


def test_tune_with_an_in_memory_sqlite_url_gets_one_line(tmp_path, capsys):
    assert cli_main(["tune", "--recipe", "seed-mlp", "--space", "seed-mlp", "--storage", "sqlite://",
                     "--out", str(tmp_path / "t"), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "--storage 'sqlite://'" in err and "Traceback" not in err


# ---------- the server says how its pages may be used ----------


def test_the_page_docs_and_api_send_a_strict_policy_nosniff_and_no_framing(server):
    import httpx

    for path in ("/", "/docs", "/api/health", "/static/app.js", "/nosuchpage"):
        r = httpx.get(server + path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    r = httpx.post(server + "/api/predict", content=b"not an image", headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY"
