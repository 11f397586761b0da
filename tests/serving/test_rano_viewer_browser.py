"""The viewer draws the RANO diameters, in a real browser (headless Chromium, software WebGL2):
a real case's expert label, cut to its tumour slab, measured and served as a result (no model
runs), opens on its first target lesion with both diameters drawn as NiiVue measurement lines
on that axial slice; each target's button moves the crosshair to its slice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_cases import crop_case

from bratseg.measurement.rano import measure_file
from bratseg.serving.results import LABELS, SCANS, Result, ResultStore, StoredFile
from bratseg.serving.viewer import create_viewer_app

from .test_gradio_app_browser import _find_browser, chromium_options
from .test_viewer_browser import LOAD_TIMEOUT_S, REDRAW_TIMEOUT_S, _canvas, _state, _wait

webdriver = pytest.importorskip("selenium.webdriver")
waitress = pytest.importorskip("waitress")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _magenta(image: np.ndarray) -> int:
    """Pixels of the measurement lines' colour (255, 64, 242); no label or scan has it."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 200) & (b > 180) & (g < 120)).sum())


@pytest.fixture(scope="module")
def viewer_url(brats18_case: Path, tmp_path_factory) -> Iterator[tuple[str, dict]]:
    _find_browser()  # skip before building anything
    files = crop_case(brats18_case, tmp_path_factory.mktemp("rano_viewer"), slices=24, modalities=("flair", "seg"))
    rano = measure_file(files["seg"]).to_json()
    stored = {
        LABELS: StoredFile(files["seg"].read_bytes(), "application/gzip", "seg.nii.gz"),
        SCANS["flair"]: StoredFile(files["flair"].read_bytes(), "application/gzip", "flair.nii.gz"),
    }
    store = ResultStore()
    summary = {
        "case": brats18_case.name,
        "rano": rano,
        "warnings": [],
        "time_point": "baseline",  # as a follow-up comparison's time point is shown
        "followup": {"response": "complete response", "flagged": False},
    }
    key = store.put(Result(brats18_case.name, stored, summary))
    server = waitress.create_server(create_viewer_app(store), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}/viewer/{key}", rano
    finally:
        server.close()
        thread.join(10)


@pytest.fixture(scope="module")
def driver(viewer_url, tmp_path_factory) -> Iterator:
    browser, chromedriver = _find_browser()
    options = chromium_options(browser, tmp_path_factory.mktemp("chromium-rano"), "1300,860")
    chrome = webdriver.Chrome(service=Service(chromedriver), options=options)
    chrome.set_script_timeout(LOAD_TIMEOUT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_viewer_draws_each_target_lesions_diameters_on_its_slice(driver, viewer_url):
    url, rano = viewer_url
    targets = [lesion for lesion in rano["lesions"] if lesion["target"]]
    assert targets
    driver.get(url)
    state = _wait(driver, _state, lambda s: s["loaded"] or s["error"], LOAD_TIMEOUT_S, "not loaded")
    assert state["error"] is None, state["error"]
    lines = state["rano"]["lines"]
    assert len(lines) == 2 * len(targets) and state["rano"]["shownTarget"] == 1
    for line in lines:
        lesion = targets[line["lesion"] - 1]
        length = float(np.linalg.norm(np.subtract(line["startMM"], line["endMM"])))
        assert length == pytest.approx(lesion[f"{line['kind']}_mm"], abs=0.15)
    assert f"SPD {rano['spd_mm2']:.1f} mm²" in driver.find_element(By.ID, "rano-spd").text
    assert "RANO category (imaging only): complete response" in driver.find_element(By.ID, "time-point").text
    # Opened on target 1's slice, with its two lines drawn (nothing else is magenta).
    _wait(driver, _canvas, lambda im: _magenta(im) > 40, REDRAW_TIMEOUT_S, "no measurement lines drawn")
    driver.find_element(By.CSS_SELECTOR, "#layouts button[data-layout=axial]").click()
    for number, lesion in enumerate(targets, start=1):
        driver.find_element(By.ID, f"rano-target-{number}").click()
        state = _wait(driver, _state, lambda s, n=number: s["rano"]["shownTarget"] == n, 30, "no move")
        assert state["readout"]["vox"][2] == lesion["slice"]  # the crosshair is on the lesion's slice
        _wait(driver, _canvas, lambda im: _magenta(im) > 40, REDRAW_TIMEOUT_S, f"target {number} not drawn")
