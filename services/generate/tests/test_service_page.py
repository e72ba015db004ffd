"""The web page in a real headless browser (Debian's chromium driven by Playwright) against the real service, serving
its default model (the packaged demo model) at the model's native size: generation, then the editor (reuse the image,
brush a mask, watch the edit fill in scale by scale; the page's result is what ``POST /v1/edits`` returns)."""

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
def test_page_streams_previews_then_the_final_image(demo_url: str, demo_model_dir: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian package `chromium`; .ci/install-system-deps installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: uv sync (infinity-service[browser])"
    )
    from bitwise_ar.pipeline import InfinityPipeline

    # The demo model's native size and schedule come from its own files (a retrained demo model still passes).
    pipe = InfinityPipeline.from_pretrained(demo_model_dir)
    height, width = pipe.defaults.image_size
    schedule = pipe.layout_for(image_size=(height, width)).schedule
    prompt = "a red circle to the left of a blue square"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(120_000)
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: console_errors.append(str(err)))
            page.goto(demo_url + "/")
            page.get_by_test_id("model").filter(has_text="demo_model").wait_for()
            # The controls were filled from /v1/models: the native size is the default and fixes the shape.
            assert page.get_by_test_id("resolution").input_value() == "native"
            assert page.locator("#resolution option").first.inner_text() == f"native {width}×{height}"
            assert page.get_by_test_id("aspect").is_disabled()
            assert page.locator("#aspect option").count() == 15

            page.get_by_label("Prompt").fill(prompt)
            page.get_by_test_id("seed").fill("5")
            page.get_by_test_id("generate").click()
            page.wait_for_selector("body[data-generated='1']")

            # Every scale's preview arrived, coarse (1x1 tokens) to fine, then the final image.
            previews = page.locator("[data-testid=strip] li.done img")
            assert previews.count() == len(schedule)
            assert previews.first.get_attribute("alt") == "scale 1: 1×1 tokens"
            last_h, last_w = schedule[-1]
            assert previews.last.get_attribute("alt") == f"scale {len(schedule)}: {last_h}×{last_w} tokens"
            final = page.get_by_test_id("final-image")
            assert final.is_visible()
            shown = _data_url_image(final.get_attribute("src") or "")
            assert shown.shape == (height, width, 3)
            assert np.array_equal(_data_url_image(previews.last.get_attribute("src") or ""), shown)
            assert "done in" in page.get_by_test_id("status").inner_text()
            # The gallery lists the result (newest first).
            first_item = page.locator("[data-testid=gallery] li img").first
            first_item.wait_for()
            assert first_item.get_attribute("alt") == prompt
            shot = tmp_path / "service_page.png"
            page.screenshot(path=str(shot), full_page=True)

            # The page's image is what the JSON API returns for the same request, and the pipeline called directly.
            api = httpx.post(f"{demo_url}/v1/images", json={"prompt": prompt, "seed": 5}, timeout=300)
            assert api.status_code == 200, api.text
            expected = np.asarray(
                Image.open(io.BytesIO(base64.b64decode(api.json()["images"][0]["png_base64"]))).convert("RGB")
            )
            assert np.array_equal(shown, expected)
            direct = pipe([prompt], seed=5, image_size=(height, width), sampling=None).images[0]
            assert np.array_equal(shown, np.asarray(direct))

            # No warning for a prompt the model knows; words its text encoder does not know are shown.
            assert page.get_by_test_id("warnings").is_hidden()
            page.get_by_label("Prompt").fill("a red zebra")
            page.get_by_test_id("generate").click()
            page.wait_for_selector("body[data-generated='2']")
            assert "'zebra'" in page.get_by_test_id("warnings").inner_text()
            assert page.get_by_test_id("warnings").is_visible()

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


def _b64_image(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.mark.timeout(300)
def test_page_edits_a_brushed_region_scale_by_scale(demo_url: str, demo_model_dir: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian package `chromium`; .ci/install-system-deps installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: uv sync (infinity-service[browser])"
    )
    from bitwise_ar.pipeline import InfinityPipeline

    pipe = InfinityPipeline.from_pretrained(demo_model_dir)
    height, width = pipe.defaults.image_size
    schedule = pipe.layout_for(image_size=(height, width)).schedule
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.set_default_timeout(120_000)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(demo_url + "/")
            page.get_by_test_id("model").filter(has_text="demo_model").wait_for()
            page.get_by_label("Prompt", exact=True).fill("a red circle to the left of a blue square")
            page.get_by_test_id("seed").fill("5")
            page.get_by_test_id("generate").click()
            page.wait_for_selector("body[data-generated='1']")
            generated = _data_url_image(page.get_by_test_id("final-image").get_attribute("src") or "")

            page.get_by_test_id("edit-reuse").click()
            canvas = page.get_by_test_id("edit-mask")
            canvas.wait_for(state="visible")
            box = canvas.bounding_box()
            # one stroke over the right half (where the square is), top to bottom
            page.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + 0.2 * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + 0.8 * box["height"], steps=12)
            page.mouse.up()
            page.get_by_test_id("edit-prompt").fill("a red circle to the left of a green square")
            page.get_by_test_id("edit-submit").click()
            page.wait_for_selector("body[data-edited='1']")

            previews = page.locator("[data-testid=strip] li.done img")
            assert previews.count() == len(schedule)
            shown = _data_url_image(page.get_by_test_id("final-image").get_attribute("src") or "")
            assert shown.shape == (height, width, 3)
            assert "done in" in page.get_by_test_id("status").inner_text()

            sent = page.evaluate("() => window.infinityPage.lastEdit")
            assert np.array_equal(_b64_image(sent["image_png_base64"])[..., :3], generated)  # the reused image
            mask = _b64_image(sent["mask_png_base64"])[..., 0]
            assert set(np.unique(mask)) == {0, 255}  # binary, as the service requires
            columns = np.flatnonzero(mask.any(axis=0))
            assert columns.min() >= width // 2 and (mask > 0).any(axis=1).sum() >= height // 2  # the brushed stroke
            assert errors == []
        finally:
            browser.close()
    api = httpx.post(f"{demo_url}/v1/edits", json=sent, timeout=300)
    assert api.status_code == 200, api.text
    assert np.array_equal(_b64_image(api.json()["images"][0]["png_base64"])[..., :3], shown)
