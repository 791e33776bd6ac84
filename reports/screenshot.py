"""Render an HTML file to PNG with headless Chromium, so tests can check what a report draws.

Chromium comes from the system (`apt-get install -y chromium` on Debian); `chromium()` says
whether there is one, for tests to skip with a reason when there is not. `color_pixels` counts
the pixels of a colour (Pillow, from the test extra), e.g. of reports.figures.PARETO_COLOR to
see that the Pareto plot drew its front.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Virtual milliseconds the page's scripts get before the shot: plotly draws after parsing ~4 MB
# of inlined JavaScript. Virtual time ends early once the page is idle.
SCRIPT_BUDGET_MS = 10_000


def chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def render(html: Path, png: Path, width: int = 1280, height: int = 1024, timeout_s: float = 120.0) -> Path:
    """Screenshot the top `width` x `height` pixels of the page; returns `png`."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("headless Chromium is not installed: apt-get install -y chromium")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    # A profile of its own: two renders at once must not share (and lock) one.
    with tempfile.TemporaryDirectory(prefix="revati-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--virtual-time-budget={SCRIPT_BUDGET_MS}", f"--screenshot={png}",
                   Path(html).resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (status {result.returncode}): {result.stderr[-2000:]}")
    return png


def color_pixels(png: Path, hex_color: str, tolerance: int = 30) -> int:
    """Pixels within `tolerance` (sum of absolute RGB differences) of `hex_color` ("#d62728")."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    color = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - color).sum(axis=2) < tolerance).sum())
