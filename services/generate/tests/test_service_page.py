"""The web page in a real headless browser (Debian's chromium driven by Playwright) against the real service."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT_ENV = "INFINITY_SERVICE_SCREENSHOT"
"""Set to a path (e.g. docs/images/service_page.png) to keep the screenshot of the finished generation."""


def _data_url_image(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


@pytest.mark.timeout(300)
def test_page_streams_previews_then_the_final_image(service_url: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian package `chromium`; .ci/install-system-deps installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: uv sync (infinity-service[browser])"
    )

    prompt = "two red circles to the left of a blue square"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(120_000)
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: console_errors.append(str(err)))
            page.goto(service_url + "/")
            page.get_by_test_id("model").filter(has_text="tiny-model").wait_for()
            # The controls were filled from /v1/models.
            assert page.get_by_test_id("resolution").input_value() == "0.06M"
            assert page.get_by_test_id("aspect").input_value() == "1:1"
            assert page.locator("#aspect option").count() == 15

            page.get_by_label("Prompt").fill(prompt)
            page.get_by_test_id("aspect").select_option("4:3")
            page.get_by_test_id("seed").fill("5")
            page.get_by_test_id("generate").click()
            page.wait_for_selector("body[data-generated='1']")

            # Every scale's preview arrived, coarse (1x1 tokens) to fine, then the final image.
            previews = page.locator("[data-testid=strip] li.done img")
            assert previews.count() == 7
            assert previews.first.get_attribute("alt") == "scale 1: 1×1 tokens"
            assert previews.last.get_attribute("alt") == "scale 7: 15×20 tokens"
            final = page.get_by_test_id("final-image")
            assert final.is_visible()
            shown = _data_url_image(final.get_attribute("src") or "")
            assert shown.shape == (240, 320, 3)
            assert np.array_equal(_data_url_image(previews.last.get_attribute("src") or ""), shown)
            assert "done in" in page.get_by_test_id("status").inner_text()
            # The gallery lists the result (newest first).
            first_item = page.locator("[data-testid=gallery] li img").first
            first_item.wait_for()
            assert first_item.get_attribute("alt") == prompt
            shot = tmp_path / "service_page.png"
            page.screenshot(path=str(shot), full_page=True)

            # The page's image is what the JSON API returns for the same request.
            api = httpx.post(f"{service_url}/v1/images", json={"prompt": prompt, "seed": 5, "aspect_ratio": "4:3",
                                                               "cfg": 3.0}, timeout=300)  # fmt: skip
            assert api.status_code == 200, api.text
            expected = np.asarray(
                Image.open(io.BytesIO(base64.b64decode(api.json()["images"][0]["png_base64"]))).convert("RGB")
            )
            assert np.array_equal(shown, expected)

            # Invalid input shows the service's message instead of failing silently.
            page.get_by_test_id("seed").fill("99999999999999999999")
            page.get_by_test_id("generate").click()
            page.get_by_test_id("status").filter(has_text="'seed' must be in").wait_for(timeout=30_000)
            assert all("status of 422" in e for e in console_errors), console_errors
        finally:
            browser.close()
    assert Image.open(shot).size[0] == 1100
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
