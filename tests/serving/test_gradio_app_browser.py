"""The Gradio demo in a real browser: headless Debian Chromium driven by Selenium.

Launches ``app.py`` (port from ``--port``, host from ``BRATSEG_HOST``), uploads a real case's
FLAIR and T1ce through the page's file inputs, segments it, picks a region, moves the slice
slider and checks what the page shows, and that the embedded viewer's page runs in its
iframe (software WebGL2). Saves a screenshot to ``tests/artifacts/``; with
``BRATSEG_DEMO_SCREENSHOT=PATH`` also to PATH (the README's ``docs/demo.png``)::

    BRATSEG_DEMO_SCREENSHOT=docs/demo.png pytest tests/serving/test_gradio_app_browser.py -m browser

Only the system's browser and driver are used (``/usr/bin/chromium``, ``/usr/bin/chromedriver``
or whatever ``PATH`` has); Selenium Manager is kept offline, so nothing is downloaded. The
test skips when no browser or driver is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The launcher is shared with the API tests (test_gradio_app.py, beside this file).
from .test_gradio_app import REPO, AppProcess, free_port, running_app

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"
PREDICT_TIMEOUT_S = 300  # one BraTS case on a busy 2-core CPU, with margin
UI_TIMEOUT_S = 30
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _find_browser() -> tuple[str, str]:
    """Paths of Chromium and chromedriver, or skip: never let Selenium download its own."""
    browser = next(
        (
            p
            for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
            if p and Path(p).exists()
        ),
        None,
    )
    driver = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and Path(p).exists()), None)
    if browser is None or driver is None:
        pytest.skip(
            "no Chromium and chromedriver found (apt-get install chromium chromium-driver); "
            f"found browser={browser}, driver={driver}"
        )
    return browser, driver


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[AppProcess]:
    _find_browser()  # skip before paying for the server start
    port = str(free_port())
    with running_app(
        tmp_path_factory.mktemp("browser_app"), ("--port", port), {"BRATSEG_HOST": "127.0.0.1"}
    ) as running:
        yield running


def chromium_options(browser: str, profile: Path, window: str) -> webdriver.ChromeOptions:
    """Headless Chromium that reaches no other host, with software WebGL2 (SwiftShader) for
    NiiVue, a fresh profile and a ``window`` size such as ``"1400,1000"``."""
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-angle=swiftshader",  # software WebGL2: no GPU here
        "--enable-unsafe-swiftshader",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    return options


@pytest.fixture
def driver(tmp_path) -> Iterator[webdriver.Chrome]:
    browser, chromedriver = _find_browser()
    options = chromium_options(browser, Path(tempfile.mkdtemp(dir=tmp_path, prefix="chromium-")), "1400,1000")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list every request
    chrome = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def _overlay_src(driver) -> str | None:
    try:
        images = driver.find_elements(By.CSS_SELECTOR, "#overlay img")
        return images[0].get_attribute("src") if images else None
    except StaleElementReferenceException:  # Svelte replaced the element between calls
        return None


def _text(driver, elem_id: str) -> str:
    try:
        return driver.find_element(By.ID, elem_id).text
    except StaleElementReferenceException:
        return ""


def _requested_hosts(driver) -> set[str]:
    """Hosts of every http(s) request the page made (from Chrome's performance log)."""
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlsplit(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                hosts.add(url.hostname)
    return hosts


def _screenshot(driver, path: Path) -> None:
    """The whole page: make the viewport as tall as the document first (the window's size
    includes the browser's own bars, hence the outer - inner difference)."""
    height, bars = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1400, min(height + bars, 4000))
    time.sleep(0.5)  # let the layout settle at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def test_upload_segment_pick_region_and_move_slider(app: AppProcess, driver, brats18_case: Path):
    wait = WebDriverWait(driver, UI_TIMEOUT_S)
    driver.get(app.url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#flair input[type=file]"))
    assert "synthetic" in driver.find_element(By.ID, "example").text.lower()

    # Upload FLAIR and T1ce through the file inputs; done once each shows its download link.
    for modality in ("flair", "t1ce"):
        path = next(brats18_case.glob(f"*_{modality}.nii.gz"))
        driver.find_element(By.CSS_SELECTOR, f"#{modality} input[type=file]").send_keys(str(path))
        wait.until(lambda d, m=modality: d.find_elements(By.CSS_SELECTOR, f"#{m} a[download]"))
        assert path.name in driver.find_element(By.CSS_SELECTOR, f"#{modality} a[download]").get_attribute("download")

    driver.find_element(By.ID, "segment").click()
    WebDriverWait(driver, PREDICT_TIMEOUT_S).until(
        lambda d: _overlay_src(d) and "whole tumour" in _text(d, "volumes") and brats18_case.name in _text(d, "status")
    )
    volumes = _text(driver, "volumes")
    for region in ("whole tumour", "tumour core", "enhancing tumour", "necrotic core", "edema", "volume (cm³)"):
        assert region in volumes
    assert float(driver.find_element(By.CSS_SELECTOR, "#seconds input").get_attribute("value")) > 0
    download = driver.find_element(By.CSS_SELECTOR, "#download a[download]")
    assert download.get_attribute("download") == f"{brats18_case.name}_seg.nii.gz"
    legend = _text(driver, "legend")
    assert "necrotic core" in legend and "edema" in legend
    first = _overlay_src(driver)
    slider = driver.find_element(By.CSS_SELECTOR, "#slice input[type=range]")
    start = int(slider.get_attribute("value"))
    assert int(slider.get_attribute("max")) == 154

    # Pick a region in the dropdown: the picture and the key change.
    driver.find_element(By.CSS_SELECTOR, "#region input").click()
    option = wait.until(
        lambda d: next(
            (li for li in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li") if "BraTS TC" in li.text), None
        )
    )
    option.click()
    wait.until(lambda d: _overlay_src(d) not in (None, first))
    wait.until(lambda d: _text(d, "legend").strip() == "tumour core")
    after_region = _overlay_src(driver)

    # Move the slider with the keyboard: another slice is drawn, the model does not run again.
    slider = driver.find_element(By.CSS_SELECTOR, "#slice input[type=range]")
    for _ in range(6):
        slider.send_keys(Keys.ARROW_LEFT)
    wait.until(
        lambda d: int(d.find_element(By.CSS_SELECTOR, "#slice input[type=range]").get_attribute("value")) < start
    )
    wait.until(lambda d: _overlay_src(d) not in (None, after_region))
    assert _text(driver, "volumes") == volumes
    assert app.predictions() == 1

    status = _text(driver, "status")
    assert "Error" not in status and "Traceback" not in status
    assert "Confidence:" in _text(driver, "confidence")
    assert driver.find_element(By.CSS_SELECTOR, "#report").is_enabled()

    # The interactive viewer: the Flask page in an iframe, its script running (gr.HTML alone
    # would not run one), NiiVue attached to its canvas.
    frame = driver.find_element(By.CSS_SELECTOR, "#viewer iframe#viewer-frame")
    assert "/bratseg/viewer/" in frame.get_attribute("src")
    driver.execute_script("arguments[0].scrollIntoView()", frame)
    driver.switch_to.frame(frame)
    try:
        WebDriverWait(driver, UI_TIMEOUT_S).until(
            lambda d: d.execute_script("return window.bratsegViewer && window.bratsegViewer.renderer")
        )
        assert driver.execute_script("return window.bratsegViewer.error") is None
        assert driver.find_element(By.ID, "case-name").text == brats18_case.name
    finally:
        driver.switch_to.default_content()
    assert _requested_hosts(driver) <= LOCAL_HOSTS, "the page fetched something from the network"

    _screenshot(driver, ARTIFACTS / "browser-demo.png")
    if target := os.environ.get("BRATSEG_DEMO_SCREENSHOT"):
        _screenshot(driver, REPO / target if not Path(target).is_absolute() else Path(target))
