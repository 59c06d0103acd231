"""report.html rendered by a real headless browser: Debian's ``chromium`` (``make sysdeps`` installs it, so
CI runs this) takes a screenshot, which must be a PNG of the window's size with the page's text, tables
and plots on it, not a blank or an error page.  Without a browser installed the test is skipped, saying so."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

from lmpipe.pipelines.report import write_report

from .test_report import _report_with_curves

WIDTH, HEIGHT = 1200, 1500


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no headless browser installed (apt-get install chromium, or `make sysdeps`)")


def test_report_html_screenshot_in_headless_chromium(tmp_path):
    from PIL import Image

    browser = _browser()
    report, _ = _report_with_curves(tmp_path)
    write_report(report, tmp_path / "out")
    shot = tmp_path / "shot.png"
    argv = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}",
        (tmp_path / "out" / "report.html").as_uri(),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    ink = (pixels < 200).any(axis=2)  # dark text, grid lines and bars
    assert 0.02 < ink.mean() < 0.6, ink.mean()  # not blank, not an all-dark error page
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows.max() - rows.min() > HEIGHT // 2  # the page runs down past the tables into the plots
    blue = (np.abs(pixels - np.array([31, 119, 180])).sum(axis=2) < 30).mean()  # matplotlib's C0
    assert blue > 0.01, blue  # the embedded plots were decoded and drawn
