"""The demo in a real browser: Debian's chromium driven by Playwright, with Chromium's fake camera.

Starts `python app.py` (the bundled model, no network), uploads a photo, streams the fake webcam,
uses the feature viewer, an ablation and feature matching (stopped midway, then run to the end),
and screenshots each tab (into $RECON_SCREENSHOTS when set:
that is how the README's screenshots are made).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--disable-gpu",
        "--disable-background-networking"]
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while f"127.0.0.1:{port}" not in log.read_text():
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "app did not start in 180 s"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
        page = context.new_page()
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_selector("#upload-image", timeout=60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("RECON_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_text(page, selector: str, pattern: str, timeout: float = 60.0) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.25)
    raise AssertionError(f"{selector} never showed {pattern!r}; last text: {text!r}")


def wait_for_images(page, selector: str, count: int) -> None:
    """Until the first `count` images under `selector` have loaded (Gradio galleries load lazily)."""
    page.wait_for_function(
        "([sel, n]) => { const imgs = [...document.querySelectorAll(sel)].slice(0, n);"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count], timeout=60_000)


def test_upload_shows_reconstruction_and_metrics(page, shots):
    page.set_input_files("#upload-image input[type=file]", str(ROOT / "examples" / "grace_hopper.jpg"))
    status = wait_for_text(page, "#upload-status", r"Reconstructed at 224×224")
    assert "block3_conv3" in status
    metrics = wait_for_text(page, "#metrics", r"psnr")
    psnr = float(re.search(r"psnr\W+([\d.]+)", metrics).group(1))
    assert 12 < psnr < 40
    wait_for_images(page, "#slider img", 1)
    wait_for_images(page, "#error-map img", 1)
    page.screenshot(path=shots / "upload.png")


def test_feature_viewer_and_ablation(page, shots):
    page.get_by_role("tab", name="Features").click()
    summary = wait_for_text(page, "#feature-summary", r"sparsity")
    assert "56 × 56 × 256" in summary and "(rank 1 of 256)" in summary  # the strongest channel is shown large
    wait_for_images(page, "#feature-grid img", 8)
    wait_for_images(page, "#channel-large img", 1)
    page.screenshot(path=shots / "features.png")

    page.get_by_role("tab", name="Ablation").click()
    page.click("#ablate-button")
    metrics = wait_for_text(page, "#ablation-metrics", r"kept the 8 strongest")
    assert "altered" in metrics
    wait_for_images(page, "#ablation-altered img", 1)
    page.screenshot(path=shots / "ablation.png")


def test_refine_streams_and_stops(page, shots):
    page.get_by_role("tab", name="Refine").click()
    steps = page.locator("#refine-steps input[type=number]")
    steps.fill("300")
    steps.press("Enter")
    page.click("#refine-button")
    wait_for_text(page, "#refine-status", r"Step 4 / 300", timeout=120)  # streamed, not only at the end
    page.click("#refine-stop")
    time.sleep(3)
    stopped = page.inner_text("#refine-status")
    time.sleep(5)
    assert page.inner_text("#refine-status") == stopped and "300 / 300" not in stopped

    steps.fill("20")
    steps.press("Enter")
    page.click("#refine-button")
    status = wait_for_text(page, "#refine-status", r"Step 20 / 20", timeout=120)
    assert re.search(r"PSNR [\d.]+ → [\d.]+ dB", status)
    wait_for_images(page, "#refine-output img", 1)
    wait_for_images(page, "#refine-change img", 1)
    page.screenshot(path=shots / "refine.png")


def test_webcam_streams_reconstructed_frames(page, shots):
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.get_by_role("button", name="capture photo").click()  # Gradio labels the record button so
    stats = wait_for_text(page, "#webcam-stats", r"frame ([3-9]|\d\d+)\b", timeout=120)
    assert re.search(r"PSNR [\d.]+ dB · SSIM [\d.]+ · [\d.]+ fps", stats)
    assert page.locator("#webcam-output img").count() == 1
    page.screenshot(path=shots / "webcam.png")
    page.get_by_role("button", name="capture photo").click()  # stop


def test_model_panel(page, shots):
    page.get_by_role("tab", name="Model").click()
    info = wait_for_text(page, "#model-info", r"Held-out metrics")
    assert "imagenet-torchvision" in info and "338,819 parameters" in info and "LPIPS" in info
    assert re.search(r"Precision\s+(bfloat16|float32)", info)
    page.screenshot(path=shots / "model.png")
