"""The demo in a real browser: Debian's chromium driven by Playwright, with Chromium's fake camera.

Starts `python app.py` (the bundled model, no network), uploads photos (the newest input must win,
errors must reach the page as toasts), switches models, streams the fake webcam, uses the feature
viewer, an ablation, feature matching (stopped midway, then run to the end) and the layer
comparison, and screenshots each tab (into $RECON_SCREENSHOTS when set:
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


def until_summary_shows(page, act, attempts: int = 3) -> str:
    """Run `act(attempt)`, which returns the pattern it expects in #feature-summary, until that shows
    (each attempt once the grid is idle); the summary's text."""
    for attempt in range(attempts):
        idle(page, "#feature-grid")
        pattern = act(attempt)
        try:
            return wait_for_text(page, "#feature-summary", pattern, timeout=20)
        except AssertionError:
            if attempt == attempts - 1:
                raise


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


def idle(page, selector: str, timeout_ms: int = 180_000) -> None:
    """Until no event is pending on the component (its progress overlay takes the clicks meanwhile)."""
    page.wait_for_function(
        "sel => !document.querySelector(sel + ' [data-testid=status-tracker]:not(.hide)')",
        arg=selector, timeout=timeout_ms)


def selected_tiles(page) -> list:
    """[index, channel] of the highlighted feature tiles."""
    return page.evaluate("""() => [...document.querySelectorAll('#feature-grid .thumbnail-item')]
        .map((e, i) => [i, e.classList.contains('selected'), (e.innerText.match(/ch (\\d+)/) || [])[1]])
        .filter(t => t[1]).map(t => [t[0], t[2]])""")


def upload_status(page, pattern: str) -> str:
    return wait_for_text(page, "#upload-status", pattern)


def test_the_newest_upload_and_resolution_win(page):
    files = "#upload-image input[type=file]"
    page.get_by_label("the image's own size").check()  # slower runs, so the second input arrives mid-run
    upload_status(page, r"Reconstructed at 436×512")  # grace_hopper from the first test, at own size
    page.set_input_files(files, str(ROOT / "examples" / "astronaut.jpg"))
    time.sleep(0.3)
    page.set_input_files(files, str(ROOT / "examples" / "chelsea.jpg"))
    upload_status(page, r"upload 451×300")
    time.sleep(4)  # nothing stale arrives afterwards
    assert "upload 451×300" in page.inner_text("#upload-status") and "chelsea" in page.inner_text("#download")

    page.get_by_label("trained size (square crop)").check()
    time.sleep(0.2)
    page.get_by_label("whole image at the model's scale").check()  # changed while the first runs
    upload_status(page, r"Reconstructed at 336×224")
    time.sleep(4)
    assert "336×224" in page.inner_text("#upload-status")


def test_a_model_switch_refreshes_the_upload_result(page):
    page.click("#model-picker input")
    page.get_by_role("option", name="vgg16-block1_conv2").click()
    upload_status(page, r"from block1_conv2 features")
    page.click("#model-picker input")
    page.get_by_role("option", name="vgg16-block3_conv3").click()
    upload_status(page, r"from block3_conv3 features")


def test_errors_reach_the_page_as_a_toast_with_the_reason(page, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    page.set_input_files("#upload-image input[type=file]", str(tmp_path / "broken.png"))
    toast = page.locator("[data-testid=toast-body].error", has_text="Cannot use this file: broken.png")
    toast.first.wait_for(timeout=60_000)  # a red error toast with the reason
    upload_status(page, r"Cannot use this file: broken\.png")  # the status line too, not the previous image
    from PIL import Image
    Image.new("RGB", (6, 6), (200, 30, 30)).save(tmp_path / "tiny.png")
    page.get_by_label("the image's own size").check()
    page.set_input_files("#upload-image input[type=file]", str(tmp_path / "tiny.png"))
    status = upload_status(page, r"upload 6×6")
    assert "too small for some metrics" in status
    page.get_by_label("trained size (square crop)").check()
    page.set_input_files("#upload-image input[type=file]", str(ROOT / "examples" / "grace_hopper.jpg"))
    upload_status(page, r"Reconstructed at 224×224 \(upload 437×512\)")


def test_feature_viewer_and_ablation(page, shots):
    page.get_by_role("tab", name="Features").click()
    # (the model switches above already refreshed this tab for the photo then shown; now grace_hopper at 224)
    summary = wait_for_text(page, "#feature-summary", r"56 × 56 × 256 .*sparsity")
    assert "(rank 1 of 256)" in summary  # the strongest channel is shown large
    wait_for_images(page, "#feature-grid img", 8)
    wait_for_images(page, "#channel-large img", 1)
    page.screenshot(path=shots / "features.png")
    # each step retried: a refresh still under way (the model switches above) may overwrite it
    def click_third_tile(attempt):
        page.locator("#feature-grid .thumbnail-item").nth(2).click(timeout=180_000)  # past a refresh still queued
        return r"rank 3 of 256"
    clicked = until_summary_shows(page, click_third_tile)
    assert selected_tiles(page) == [[2, re.search(r"Channel (\d+):", clicked).group(1)]]
    channel = page.locator("#channel input[type=number]")

    def type_200(attempt):
        if attempt:  # the box may already read 200: move it off, so that typing 200 is a change again
            channel.fill("0")
            channel.press("Enter")
            idle(page, "#feature-grid")
        channel.fill("200")
        channel.press("Enter")  # typed and entered: the picture follows, the clicked tile lets go
        return r"Channel 200:"
    until_summary_shows(page, type_200)
    assert selected_tiles(page) == []  # channel 200 is not among the 16 strongest here

    def arrow_right(attempt):  # the arrow keys too, one channel on from whatever a late refresh left
        shown = int(channel.input_value())
        page.locator("#channel input[type=range]").press("ArrowRight")
        return rf"Channel {shown + 1}:"
    until_summary_shows(page, arrow_right)
    page.click("#model-picker input")  # another model: the view follows, not the old layer's tiles
    page.get_by_role("option", name="vgg16-block1_conv2").click()
    page.wait_for_function(  # the switch's refresh is queued or running ...
        "sel => document.querySelector(sel + ' [data-testid=status-tracker]:not(.hide)')",
        arg="#feature-grid", timeout=30_000)
    channel.fill("5")  # ... when the visitor picks a channel: the pick must win
    channel.press("Enter")
    wait_for_text(page, "#feature-summary", r"block1_conv2 features: 224 × 224 × 64(.|\n)*Channel 5:")
    idle(page, "#feature-grid")
    time.sleep(3)  # long enough for a late refresh to land, which would show the strongest channel
    assert re.search(r"block1_conv2(.|\n)*Channel 5:", page.inner_text("#feature-summary"))
    assert channel.input_value() == "5"
    page.click("#model-picker input")
    page.get_by_role("option", name="vgg16-block3_conv3").click()
    wait_for_text(page, "#feature-summary", r"block3_conv3 features")

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
    stopped = wait_for_text(page, "#refine-status", r"Stopped at step \d+ / 300", timeout=30)
    time.sleep(5)
    assert page.inner_text("#refine-status") == stopped  # nothing ran on behind it

    steps.fill("20")
    steps.press("Enter")
    page.click("#refine-button")
    status = wait_for_text(page, "#refine-status", r"Step 20 / 20", timeout=120)
    assert re.search(r"PSNR [\d.]+ → [\d.]+ dB", status)
    wait_for_images(page, "#refine-output img", 1)
    wait_for_images(page, "#refine-change img", 1)
    page.screenshot(path=shots / "refine.png")


def test_layers_side_by_side(page, shots):
    page.get_by_role("tab", name="Layers").click()
    table = wait_for_text(page, "#layers-table", r"block5_conv3", timeout=120)
    assert [line.split()[0] for line in table.splitlines() if line.startswith("block")] == \
        ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]
    wait_for_images(page, "#layers-grid img", 6)
    page.locator("#layers-plot img, #layers-plot svg, #layers-plot canvas").first.wait_for(timeout=30_000)
    page.screenshot(path=shots / "layers.png", full_page=True)


def test_webcam_streams_reconstructed_frames(page, shots):
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#webcam-start").click()
    stats = wait_for_text(page, "#webcam-stats", r"frame ([3-9]|\d\d+)\b", timeout=120)
    assert re.search(r"PSNR [\d.]+ dB · SSIM ([\d.]+|…) · [\d.]+ fps shown · \d+ ms camera to screen", stats), stats
    stages = page.inner_text("#webcam-stages")
    assert re.search(r"model [\d.]+", stages) and "upload, wait and download" in stages, stages
    assert page.locator("#webcam-output img").evaluate("img => img.naturalWidth") == 224
    page.screenshot(path=shots / "webcam.png")
    page.locator("#webcam-start").click()  # stop
    assert page.locator("#webcam-start").inner_text() == "Start the camera"


def test_model_panel(page, shots):
    page.get_by_role("tab", name="Model").click()
    info = wait_for_text(page, "#model-info", r"Held-out metrics")
    assert "imagenet-torchvision" in info and "442,739 parameters" in info and "LPIPS" in info
    assert re.search(r"Precision\s+(int8 encoder(, (bfloat16|float32) decoder| and residual blocks, (bfloat16|float32) upsampling"
                     r"| and decoder \(OpenVINO\), (bfloat16|float32) where not quantized)|bfloat16|float32)", info)
    page.screenshot(path=shots / "model.png")
