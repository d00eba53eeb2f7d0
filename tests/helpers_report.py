"""Opening the report in Debian's headless Chromium: how many of its images really decoded."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_TIMEOUT_S = 60


def chromium() -> str:
    """The chromium binary; a clear failure (never a skip) when it is missing."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    assert found, "headless Chromium is not installed (Debian package `chromium`): run `make test`, which installs it"
    return found


def _command(index: Path, profile: Path) -> list[str]:
    return [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--virtual-time-budget=5000",
        f"--user-data-dir={profile}",  # its own: never the user's profile, never inside the report folder
        "--dump-dom",
        index.resolve().as_uri(),
    ]


def _counts(index: Path, returncode: int, stdout: str, stderr: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", stdout)
    assert returncode == 0 and body, f"chromium failed on {index} ({returncode}): {stderr[-2000:]}"
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    assert loaded and total, f"the page's image check did not run: {body.group(0)}"
    return int(loaded.group(1)), int(total.group(1))


def images_loaded(*indexes: Path) -> list[tuple[int, int]]:
    """Per page, (images loaded, images on the page) as the page's own load-time script counted them in
    Chromium. The pages open in parallel, one browser each: a browser's start is most of the cost."""
    profiles = tempfile.TemporaryDirectory(prefix="report-chromium-")
    browsers = [
        subprocess.Popen(_command(index, Path(profiles.name) / str(n)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n, index in enumerate(indexes)
    ]
    results = []
    try:
        for index, browser in zip(indexes, browsers, strict=True):
            stdout, stderr = browser.communicate(timeout=CHROMIUM_TIMEOUT_S)
            results.append(_counts(index, browser.returncode, stdout, stderr))
    finally:
        for browser in browsers:
            if browser.poll() is None:
                browser.kill()
                browser.wait()
        profiles.cleanup()
    return results
