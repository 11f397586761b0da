"""The result viewer in a real browser: headless Debian Chromium with software WebGL2
(SwiftShader), NiiVue served by our own Flask app on a real waitress server.

A real BraTS case is predicted by the shipped model, then the test opens its viewer and
checks what NiiVue reports (``window.bratsegViewer``): the scan and the label map loaded
with the very voxels the server wrote; the canvas is not blank and shows the label colours;
hiding a region removes its colour; a click moves the crosshair and the readout gives that
voxel's coordinates, intensity and label, as the files have them; the uncertainty map loads
as an overlay; the multiplanar + 3-D layout draws. Screenshots go to ``tests/artifacts/``;
with ``BRATSEG_VIEWER_SCREENSHOT=PATH`` the test uses the whole case (not the tumour slab it
otherwise cuts, for speed in software rendering) and also saves the README's picture::

    BRATSEG_VIEWER_SCREENSHOT=docs/viewer.png pytest tests/serving/test_viewer_browser.py
"""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pytest
from serving_cases import crop_case

# The browser helpers are shared with the demo's browser test (test_gradio_app_browser.py, beside this file).
from .test_gradio_app_browser import LOCAL_HOSTS, REPO, _find_browser, _requested_hosts, chromium_options

webdriver = pytest.importorskip("selenium.webdriver")
httpx = pytest.importorskip("httpx")
waitress = pytest.importorskip("waitress")
from PIL import Image  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"
SCREENSHOT_ENV = "BRATSEG_VIEWER_SCREENSHOT"
# Software WebGL on a busy 2-core machine: loading and each redraw take seconds.
LOAD_TIMEOUT_S = 240
REDRAW_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(one_torch_thread) -> Iterator[str]:
    _find_browser()  # skip before paying for the model
    from bratseg.serving.flask_app import create_app
    from bratseg.serving.service import InferenceService

    app = create_app(InferenceService(max_concurrent=1))
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(10)


@pytest.fixture(scope="module")
def result(server: str, brats18_case: Path, tmp_path_factory) -> dict:
    """The case predicted through the API, and the label map and FLAIR as the server has them."""
    modalities = ("flair", "t1ce")
    if os.environ.get(SCREENSHOT_ENV):
        files = {m: next(brats18_case.glob(f"*_{m}.nii.gz")) for m in modalities}
    else:
        files = crop_case(brats18_case, tmp_path_factory.mktemp("viewer_browser"), slices=32, modalities=modalities)
    res = httpx.post(
        f"{server}/api/predict", files={m: (p.name, p.read_bytes()) for m, p in files.items()}, timeout=600
    )
    assert res.status_code == 200, res.text
    body = res.json()
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(httpx.get(server + body["labels_url"], timeout=60).content))
    return {
        **body,
        "url": server + body["viewer_url"],
        "labels": np.asarray(labels.dataobj),
        "flair": np.asarray(nib.load(files["flair"]).dataobj),
    }


@pytest.fixture(scope="module")
def driver(server: str, tmp_path_factory) -> Iterator[webdriver.Chrome]:
    """Chromium, quit before the server closes (it holds connections open)."""
    browser, chromedriver = _find_browser()
    options = chromium_options(browser, tmp_path_factory.mktemp("chromium-viewer"), "1300,860")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(chromedriver), options=options)
    chrome.set_script_timeout(LOAD_TIMEOUT_S)  # software rendering can keep the page busy
    try:
        yield chrome
    finally:
        chrome.quit()


def _state(driver) -> dict:
    return driver.execute_script("return JSON.parse(JSON.stringify(window.bratsegViewer || null))")


def _canvas(driver) -> np.ndarray:
    png = driver.find_element(By.ID, "gl").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _coloured(image: np.ndarray, label: str) -> int:
    """Pixels of a label's colour as the viewer blends it over the grey scan (at opacity 0.6
    every channel keeps 0.4 of the grey, so the differences between channels tell)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    if label == "edema":  # green (0, 200, 83); the cyan crosshair has more blue than green
        return int(((g - r > 40) & (g - b > 40)).sum())
    if label == "necrotic":  # red (230, 41, 55)
        return int(((r - g > 60) & (r - b > 60)).sum())
    raise ValueError(label)


def _wait(driver, value, accept, timeout: float, what: str):
    """Poll ``value(driver)`` until ``accept`` takes it (page and canvas redraw slowly in
    software); return it, or fail with the viewer's state."""
    deadline = time.monotonic() + timeout
    while True:
        got = value(driver)
        if got is not None and accept(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"viewer: {what} within {timeout:.0f} s; state {json.dumps(_state(driver))[:800]}")
        time.sleep(0.5)


def _save(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def test_viewer_loads_draws_toggles_and_reads_voxels(driver, result: dict):
    driver.get(result["url"])
    state = _wait(driver, _state, lambda s: s["loaded"] or s["error"], LOAD_TIMEOUT_S, "not loaded")
    assert state["error"] is None, state["error"]

    # NiiVue holds the scan and the label map, with the very voxels the server wrote.
    shape = list(result["labels"].shape)
    assert [v["name"] for v in state["volumes"]] == ["flair.nii.gz", "labels.nii.gz"]
    assert all(v["dims"] == shape for v in state["volumes"])
    counts = {str(v): int((result["labels"] == v).sum()) for v in (1, 2, 4)}
    assert state["labelCounts"] == counts and counts["2"] > 0
    assert "SwiftShader" in state["renderer"]
    assert state["layout"] == "multiplanar"  # software rendering opens on the planes
    assert result["case"] in driver.find_element(By.ID, "case-name").text
    assert "Confidence" in driver.find_element(By.ID, "confidence").text

    # The canvas is not blank: anatomy in grey, the tumour in the label colours.
    image = _wait(driver, _canvas, lambda im: im.std() > 10, REDRAW_TIMEOUT_S, "blank canvas")
    assert (image.sum(axis=2) > 60).mean() > 0.05
    edema_before, necrotic_before = _coloured(image, "edema"), _coloured(image, "necrotic")
    assert edema_before > 50 and necrotic_before > 50, (edema_before, necrotic_before)
    _save(driver, "viewer-loaded.png")

    # Hide the edema: its colour goes, the necrotic core's stays.
    driver.find_element(By.ID, "region-2").click()
    assert _state(driver)["regions"]["2"] is False
    image = _wait(
        driver, _canvas, lambda im: _coloured(im, "edema") < edema_before * 0.2, REDRAW_TIMEOUT_S, "edema drawn"
    )
    assert _coloured(image, "necrotic") > necrotic_before * 0.5
    driver.find_element(By.ID, "region-2").click()  # and back

    # In the axial layout a click moves the crosshair; the readout is that voxel's, as the
    # files have it.
    driver.find_element(By.CSS_SELECTOR, "#layouts button[data-layout=axial]").click()
    assert _state(driver)["layout"] == "axial"
    canvas = driver.find_element(By.ID, "gl")
    readouts = []
    for dx, dy in ((-20, 10), (25, -15)):  # pixels from the canvas centre: inside the brain
        before = _state(driver)["locationEvents"]
        ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).click().perform()
        state = _wait(driver, _state, lambda s, b=before: s["locationEvents"] > b, 60, "no readout")
        readouts.append((state["readout"], driver.find_element(By.ID, "readout").text))
    (first, first_text), (second, second_text) = readouts
    assert first["vox"] != second["vox"] and first_text != second_text
    for readout, text in readouts:
        x, y, z = readout["vox"]
        assert all(0 <= c < n for c, n in zip(readout["vox"], shape))
        assert readout["label"] == int(result["labels"][x, y, z])
        assert readout["intensity"] == pytest.approx(float(result["flair"][x, y, z]), abs=1e-3)
        assert f"voxel ({x}, {y}, {z})" in text and f"label {readout['label']}" in text

    # The uncertainty map as a third, optional overlay.
    driver.find_element(By.ID, "uncertainty").click()
    state = _wait(driver, _state, lambda s: s["uncertaintyShown"], REDRAW_TIMEOUT_S, "no uncertainty map")
    assert [v["name"] for v in state["volumes"]][-1] == "uncertainty.nii.gz"
    _save(driver, "viewer-uncertainty.png")
    driver.find_element(By.ID, "uncertainty").click()

    # Multiplanar + 3-D: the render tile draws the brain too.
    driver.find_element(By.CSS_SELECTOR, "#layouts button[data-layout=multiplanar3d]").click()
    assert _state(driver)["layout"] == "multiplanar3d"
    time.sleep(1)
    image = _wait(driver, _canvas, lambda im: im.std() > 10, REDRAW_TIMEOUT_S, "blank 3-D canvas")
    assert (image.sum(axis=2) > 60).mean() > 0.05
    _save(driver, "viewer-3d.png")
    if target := os.environ.get(SCREENSHOT_ENV):
        path = REPO / target if not Path(target).is_absolute() else Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))

    hosts = _requested_hosts(driver)
    assert hosts <= LOCAL_HOSTS, f"the viewer fetched from {hosts - LOCAL_HOSTS}"
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not severe, severe
    assert urlsplit(driver.current_url).path == result["viewer_url"]
