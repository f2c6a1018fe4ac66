"""Every `mnistlab ...` line in a fenced block of docs/ is run, not only parsed: page by page, in order, in
a folder of its own, at tiny scale (one epoch of a few hundred images, a few attacked images, two
trials), so what one line writes the next can read, as a reader typing the page would. Placeholders a
page leaves to the reader (MODEL, RUN, path/to/folder, mynet.py...) are filled with things of the
same kind; where a line's comment names a folder it writes, the folder must be there after it.

A few lines are not run here, each for a reason of its own and each covered elsewhere: a server that
runs until stopped, benchmarks of minutes, the state-of-the-art study at full scale, a download, a
PostgreSQL server, torchrun, and the label audit of a whole dataset (no flag makes it small)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
TINY = ["--set", "train_subset=600", "--set", "validation=200", "--set", "epochs=1"]

# verb (or "verb sub") -> flags appended to make the line tiny; later flags win in argparse and --set
SHRINK = {
    "train": [*TINY, "--no-progress", "--quiet"],
    "pretrain": ["--epochs", "1", "--set", "train_subset=600", "--quiet"],
    "check": ["--quick", "--seeds", "0"],
    "attack": ["--n", "40", "--check-n", "20", "--steps", "5", "--quiet"],
    "map": ["--n", "150", "--quiet"],
    "transfer-curve": ["--labels", "1,5", "--seeds", "0", "--steps", "20", "--quiet"],
    "tune": ["--trials", "2", "--workers", "1", *TINY, "--quiet"],
    "audit": ["--folds", "2"],
    "ensemble": ["--quiet"],
    "shift": ["--n", "100", "--no-pictures", "--quiet"],  # every set, its first 100 images (test_shift: the rest)
}
NOT_RUN = {  # the line's start -> why it is not run here (and where it is)
    "mnistlab serve": "a server runs until stopped (test_serve, test_browser start it for real)",
    "mnistlab bench": "benchmarks of minutes (test_bench runs each suite's quick form)",
    "mnistlab sota --out sota-study": "the full study (test_sota trains it at smoke scale, as the next line does)",
    "mnistlab sota --out smoke": "7 minutes on 2 cores: twelve runs of the An et al. CNNs, each read on all 10,000 test "
                                 "images (test_sota trains a smaller one)",
    "mnistlab data fetch": "a download (test_fetch serves the files from a local HTTP server)",
    "mnistlab tune --recipe seed-mlp --space my.toml --storage postgresql": "a PostgreSQL server (test_tune starts one)",
    "torchrun": "two processes (test_train compares them with one)",
    "mnistlab audit mnist --split all": "all 70,000 images, whatever the flags (test_audit audits a slice)",
    "mnistlab audit fashion-mnist": "10,000 images, whatever the flags (test_audit audits a slice)",
}

NETS = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 64), nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


MyNet = Net


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                p.mul_(1 - g["lr"] * g["weight_decay"]).add_((b1 * m + (1 - b1) * p.grad).sign(), alpha=-g["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def focal(logits, labels, gamma=2.0):
    logp = F.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
    return (-(1 - logp.exp()) ** gamma * logp).mean()


focal_loss = focal
'''


def lines_of(page: Path) -> list[tuple[str, str]]:
    """(command, its comment) of each mnistlab line in the page's fenced blocks, in order."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
        for line in block.splitlines():
            text = line.strip()
            if text.startswith(("mnistlab ", "torchrun ")):
                command, _, comment = text.partition(" #")
                found.append((command.strip(), comment.strip()))
    return found


def prepare(folder: Path) -> None:
    """What a reader has at hand before a page: their own code, the repository's examples, pictures, an
    image folder."""
    shutil.copytree(DOCS.parent / "examples", folder / "examples")
    for name in ("mynet.py", "opt.py", "loss.py", "nets.py"):
        (folder / name).write_text(NETS)
    rng = np.random.default_rng(0)
    for i, name in enumerate(["my_digit.png", "a.jpg", "b.jpg"]):
        pixels = np.zeros((60, 60), np.uint8)
        pixels[10:50, 25 + i:32 + i] = 255  # a one, more or less
        Image.fromarray(255 - pixels if name.endswith(".jpg") else pixels).save(folder / name)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            d = folder / "path" / "to" / "folder" / split / label
            d.mkdir(parents=True)
            for k in range(150):
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8) // (2 if label == "cat" else 1)) \
                    .save(d / f"{k}.png")
    (folder / "my.toml").write_text("[params.lr]\nlow = 1e-4\nhigh = 1e-2\nlog = true\n")


def argv_of(command: str, folder: Path) -> list[str] | None:
    """The command as a list, its placeholders filled and its scale shrunk; None if it is not run here."""
    if any(command.startswith(start) for start in NOT_RUN):
        return None
    words = shlex.split(command)[1:]
    filled = []
    for w in words:
        if w in ("MODEL", "RUN", "MODEL_A"):
            filled.append("runs/seed-cnn-mnist-s0")
        elif w in ("MODEL_B", "MODEL_C"):
            filled.append("runs/seed-mlp-mnist-s0" if w == "MODEL_B" else "runs/fast-mnist-s0")
        elif w == "*.jpg":
            filled += sorted(str(p.name) for p in folder.glob("*.jpg"))
        else:
            filled.append(w)
    verb = filled[0]
    if verb == "train" and "--resume" in filled:  # "after any interruption": make it one
        run = folder / filled[filled.index("--resume") + 1]
        (run / "summary.json").unlink(missing_ok=True)
        return filled
    shrink = SHRINK.get(verb, [])
    if "--labels-per-class" in filled:  # it chooses the training examples itself: no train_subset beside it
        at = shrink.index("train_subset=600")
        shrink = shrink[:at - 1] + shrink[at + 1:]
    return filled + shrink


def needs(folder: Path, argv: list[str]) -> None:
    """Runs a line reads that its page never trains (a page starts mid-story): trained first, tiny."""
    for w in argv:
        match = re.fullmatch(r"runs/([a-z0-9-]+?)-mnist-s0", w)
        if match and not (folder / w).exists():
            recipe = match[1]
            assert main(["train", "--recipe", recipe, *SHRINK["train"]]) == 0, f"could not make {w} for the page"


def written(comment: str) -> list[str]:
    """Folders a line's comment says it writes (`writes runs/x/`, `maps/y/`)."""
    return re.findall(r"((?:RUN/|runs/|maps/)[\w./-]+/)", comment) if "writes" in comment or "maps/" in comment else []


PAGES = sorted(p.name for p in DOCS.glob("*.md") if lines_of(p))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_command_a_page_gives_runs_as_written(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path)
    ran, skipped = 0, []
    for command, comment in lines_of(DOCS / page):
        argv = argv_of(command, tmp_path)
        if argv is None:
            skipped.append(command)
            continue
        needs(tmp_path, argv)
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own errors
            status = exc.code
        out = capsys.readouterr()
        assert status in (0, 1) and "Traceback" not in out.err, f"{page}: `{command}` -> {status}\n{out.err[-2000:]}"
        if argv[0] == "check":  # 1 is its verdict "not works": a quick check of a tiny net may say so
            assert "verdict:" in out.out
        else:
            assert status == 0, f"{page}: `{command}` exited {status}"
        for folder in written(comment):
            path = folder.replace("RUN/", "runs/seed-cnn-mnist-s0/")
            assert (tmp_path / path).is_dir(), f"{page}: `{command}` says it writes {folder}"
        ran += 1
    assert ran or skipped, page
    assert all(any(c.startswith(s) for s in NOT_RUN) for c in skipped)


def test_every_line_not_run_has_a_reason_and_a_page():
    """The exceptions stay few and real: each still matches a line of the docs."""
    every = [c for p in DOCS.glob("*.md") for c, _ in lines_of(p)]
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in every), f"no docs line starts with {start!r} any more"
