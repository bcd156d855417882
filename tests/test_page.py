"""The page at / in a real headless Chromium: it loads, speaks a text and plays it while it streams."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from .test_stream import SIXTY_SECONDS

pytestmark = [pytest.mark.service, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (scripts/install.sh --dev installs both). Missing in CI
    is a failure, not a skip."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        message = "the page test needs Playwright (dev extra) and Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def test_page_speaks_a_text_and_plays_it_while_it_streams(default_server, browser, astronaut, tmp_path):
    from PIL import Image

    portrait = tmp_path / "me.png"
    Image.fromarray(astronaut[:, ::-1].copy()).save(portrait)  # a portrait the page uploads
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(default_server.url + "/")
    page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=30_000)
    assert page.locator("#backend").text_content() == "meshwarp"
    assert page.locator("#voice option").count() >= 1
    page.set_input_files("#portrait", str(portrait))
    page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/png')")
    page.fill("#text", SIXTY_SECONDS)
    page.click("#speak")

    samples = []  # (video.currentTime, still streaming) every 100 ms
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sample = page.evaluate("[document.getElementById('video').currentTime, window.avatarState.streaming, "
                               "window.avatarState.error]")
        assert sample[2] is None, sample[2]
        samples.append(sample[:2])
        advancing = [t for t, streaming in samples if streaming and t > 0]
        if len(advancing) >= 2 and advancing[-1] > advancing[0] + 0.5:
            break
        time.sleep(0.1)
    advancing = [t for t, streaming in samples if streaming and t > 0]
    assert len(advancing) >= 2 and advancing[-1] > advancing[0] + 0.5, f"video did not play while streaming: {samples}"
    first_frame_ms = page.evaluate("window.avatarState.firstFrameMs")
    assert first_frame_ms is not None and page.locator("#first-frame").text_content().endswith("ms")

    shot = tmp_path / "video.png"
    page.locator("#video").screenshot(path=str(shot))
    shutil.copy(shot, Path(os.environ.get("PAGE_SCREENSHOT", tmp_path / "kept.png")))
    frame = np.asarray(Image.open(shot).convert("RGB").resize((256, 256))).astype(np.float32)
    expected = np.asarray(Image.fromarray(astronaut[:, ::-1].copy()).resize((256, 256))).astype(np.float32)
    # The video shows the uploaded portrait (mirrored astronaut), not a blank or the default.
    assert np.abs(frame - expected).mean() < 25
    assert np.abs(frame - expected).mean() < np.abs(frame - expected[:, ::-1]).mean() - 5
    assert not errors, errors
