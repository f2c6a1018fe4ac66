"""Reports: the HTML page and the Markdown of runs and seed groups, rendered by a real headless Chromium.
(Pages from hostile runs: test_hostile_input.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from builders import CHROMIUM, keep_artifact, needs_package
from PIL import Image

from mnistlab.reporting.run_report import report

# ---------- report, in a real browser ----------



@pytest.mark.slow
@needs_package(Path(CHROMIUM).exists(), "chromium", "rendering the report in a real browser")
def test_report_renders_in_headless_chromium(seed_runs, tmp_path):
    group, runs = seed_runs
    result = report([group, runs[0]], out=tmp_path / "report")
    html = Path(result["html"]).read_text()
    assert "<img src=\"data:image/png;base64," in html and "http" not in html.split("<body>")[1][:2000]
    md = Path(result["markdown"]).read_text()
    assert "| run | model |" in md and "±" in md  # the group row shows mean ± std over its 3 seeds
    assert result["rows"][0]["seeds"] == [0, 1, 2]
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}",
                    Path(result["html"]).as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", Path(result["html"]).as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Headline" in dom and "Model card" in dom and dom.count("<img") >= 10
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    assert img.std() > 20  # a rendered page with figures, not a blank or error screen
    keep_artifact(shot)
