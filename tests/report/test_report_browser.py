"""The report in a real browser: Debian's chromium, headless and offline, renders report.html (the page has no
script: test_report.py checks that), the rendered DOM shows the run's numbers, and a screenshot is written and is
not blank."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_chromium_renders_the_run_numbers(report_run: Path, browser):
    url = (report_run / "report" / "report.html").as_uri()
    res = browser("--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "<h2>Before / after results</h2>" in dom and "<h2>Example answers</h2>" in dom
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    log = _rows(report_run / "train" / "log.jsonl")
    final = [r["loss"] for r in log if "loss" in r][-1]
    assert f"final logged train loss {final:.4g}" in text
    after = json.loads((report_run / "eval" / "after" / "results.json").read_text())
    assert f"{100 * after['benchmarks']['ifeval']['inst_level_loose_acc']:.1f}%" in text
    dist = json.loads((report_run / "distill" / "manifest.json").read_text())
    assert f"{dist['cost']['total']['prompt_tokens']:,} in" in text
    assert dom.count('<img src="data:image/png;base64,') == 5


def test_chromium_screenshot_is_written_and_not_blank(report_run: Path, browser):
    shot = report_run.parent / "screenshot.png"  # beside the run, for people to look at
    shot.unlink(missing_ok=True)
    res = browser(f"--screenshot={shot}", "--window-size=1280,4000",
                  (report_run / "report" / "report.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 50_000
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (4000, 1280, 3)
    # Not blank: many colours (text, tables, plots), and the page background is not all there is.
    packed = (img[..., 0].astype(np.uint32) << 16) | (img[..., 1].astype(np.uint32) << 8) | img[..., 2]
    assert len(np.unique(packed)) > 500
    background = np.all(img == img[-1, -1], axis=-1).mean()
    assert background < 0.6
    # The dark header band and the light page around the sections are where the CSS puts them.
    assert img[20, 640].max() < 80 and img[400, 40].min() > 240
