"""The startup suite: how long a new process takes to its first answer (issue 50's goals).

    mnistlab bench startup           # each command the median of 5 new processes (1 warm-up discarded)
    mnistlab bench startup --quick   # 2 each

A person who tries a CLI types `--help` first, a notebook starts with `import mnistlab`, and a class
runs `predict` on a picture each: each is timed as a new Python process, beside the floors it cannot
go below on this machine (the interpreter alone, and `import torch`, which every command pays today).
Goals: `--help` <= 0.3 s, `import mnistlab` <= 0.5 s, `predict picture.png` <= 1.0 s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .. import data
from .registry import suite, timeit

# name, arguments after `python`, the goal in seconds (None: a floor, not a goal)
COMMANDS = [
    ("python (the interpreter alone)", ["-c", "pass"], None),
    ("import torch (today's floor)", ["-c", "import torch"], None),
    ("import mnistlab", ["-c", "import mnistlab"], 0.5),
    ("mnistlab --help", ["-m", "mnistlab", "--help"], 0.3),
    ("mnistlab predict picture.png", ["-m", "mnistlab", "predict", "picture.png"], 1.0),
]


def picture(folder: Path) -> Path:
    """An MNIST test digit as a PNG, as a person would save one."""
    test = data.load("mnist", download=False).test
    path = folder / "picture.png"
    Image.fromarray(np.asarray(test.images[0])).save(path)
    return path


def run_once(args: list[str], folder: Path) -> None:
    done = subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"`python {' '.join(args)}` exited {done.returncode}: {done.stderr[-500:]}")


@suite
def bench_startup(quick: bool = False) -> list[dict]:
    """Seconds to first answer of a new process: import, --help, predict (module docstring)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-startup-") as tmp:
        folder = Path(tmp)
        picture(folder)
        for name, args, goal in COMMANDS:
            # the warm-up run fills the OS file cache and the packaged model's not-a-digit cache
            timed = timeit(lambda: run_once(args, folder), repeat=2 if quick else 5)
            rows.append({"name": name, **timed, "goal_s": goal,
                         "meets_goal": None if goal is None else timed["median_s"] <= goal})
            print(f"  {name}: {timed['median_s']:.2f} s", flush=True)  # a line per command as it goes
    floor = next(r["median_s"] for r in rows if r["name"].startswith("import torch"))
    for row in rows:
        row["ratio_to_import_torch"] = row["median_s"] / floor
    return rows
