"""The Gradio demo, end to end: ``app.py`` launched as a real server process with the shipped
model, driven through its API with ``gradio_client``; plus the same wiring launched in this
process around a counting service, to prove re-rendering never re-runs the model.

One server is shared by the module (start-up loads torch and the model: tens of seconds on
busy cores). The model is the shipped one, so nothing here asserts prediction quality.
"""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
STARTUP_TIMEOUT_S = 300  # torch + gradio imports and the model load, on shared cores
CALL_TIMEOUT_S = 300  # one prediction of a BraTS case on a busy 2-core CPU, with margin
SEGMENTED_LINE = re.compile(r"bratseg\.gradio INFO: segmented ")

pytestmark = [
    pytest.mark.slow,
    # Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


# --------------------------------------------------------------------- server helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppProcess:
    """A running ``app.py``: its URL and the file its log goes to."""

    url: str
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def predictions(self) -> int:
        """How many times the server ran the model (it logs one line per prediction)."""
        return len(SEGMENTED_LINE.findall(self.log_text()))


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with code {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"app.py did not answer at {url} within {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def running_app(workdir: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Iterator[AppProcess]:
    """Start ``python app.py *args`` with its temp files under ``workdir``; host and port come
    from ``env`` (default: ``BRATSEG_HOST``/``BRATSEG_PORT`` on a free port). Stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "app.log"
    full_env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio"),  # uploads and outputs, not /tmp/gradio
        "TMPDIR": str(workdir),
        "PYTHONUNBUFFERED": "1",
        **(env if env is not None else {"BRATSEG_HOST": "127.0.0.1", "BRATSEG_PORT": str(free_port())}),
    }
    port = args[args.index("--port") + 1] if "--port" in args else full_env["BRATSEG_PORT"]
    url = f"http://127.0.0.1:{port}/"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(APP), *args], cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_up(url, process, log, STARTUP_TIMEOUT_S)
        yield AppProcess(url, log, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def call(client: Client, *args, api_name: str):
    """``client.predict`` with a time limit, so a hung server fails the test instead of the run."""
    return client.submit(*args, api_name=api_name).result(timeout=CALL_TIMEOUT_S)


def _image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[AppProcess]:
    with running_app(tmp_path_factory.mktemp("gradio_app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app: AppProcess, tmp_path_factory) -> Client:
    """One API session: the prediction it makes is kept server-side for the later calls."""
    return Client(app.url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)


@pytest.fixture(scope="module")
def segmented(client: Client, app: AppProcess, brats18_case: Path) -> dict:
    """The real case segmented once through ``/segment`` (FLAIR and T1ce only)."""
    flair = next(brats18_case.glob("*_flair.nii.gz"))
    t1ce = next(brats18_case.glob("*_t1ce.nii.gz"))
    before = app.predictions()
    result = call(
        client, handle_file(flair), handle_file(t1ce), None, None, None, "all_the_tumor", "axial", api_name="/segment"
    )
    overlay, legend, slider, volumes, download, seconds, status, viewer, confidence, report = result
    return {
        "overlay": overlay,
        "legend": legend,
        "slider": slider,
        "volumes": volumes,
        "download": download,
        "seconds": seconds,
        "status": status,
        "viewer": viewer,
        "confidence": confidence,
        "report": report,
        "flair": flair,
        "predictions_before": before,
    }


# ------------------------------------------------------------------------------ tests


def test_api_has_stable_endpoint_names(client: Client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/segment", "/render", "/view", "/load_example"} <= set(endpoints)
    assert [p["parameter_name"] for p in endpoints["/render"]["parameters"]] == ["region", "view", "index"]
    # The follow-up mode: each time point's FLAIR, T1ce, zip and optional label map, then preprocess.
    assert [p["parameter_name"] for p in endpoints["/followup"]["parameters"]] == [
        f"{point}_{field}" for point in ("baseline", "followup") for field in ("flair", "t1ce", "zip", "seg")
    ] + ["preprocess"]


def test_segment_real_case(segmented: dict, app: AppProcess, brats18_case: Path):
    from bratseg.data.labels import REGION_LABELS, region_volumes
    from bratseg.reporting.render import best_slice

    assert app.predictions() == segmented["predictions_before"] + 1

    # The segmentation download: the input's grid and affine, BraTS labels.
    seg = nib.load(segmented["download"])
    flair = nib.load(segmented["flair"])
    assert Path(segmented["download"]).name == f"{brats18_case.name}_seg.nii.gz"
    assert seg.shape == flair.shape == (240, 240, 155)
    np.testing.assert_allclose(seg.affine, flair.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj).astype(np.uint8)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}

    # The volume table: every region, in cm3, agreeing with the downloaded labels.
    table = segmented["volumes"]
    assert table["headers"] == ["region", "volume (cm³)"]
    assert [row[0] for row in table["data"]] == list(REGION_LABELS)
    expected = region_volumes(labels, tuple(float(z) for z in seg.header.get_zooms()[:3]))
    for name, value in table["data"]:
        assert float(value) == pytest.approx(expected[name], abs=1e-3)

    # The slider opens on the axial slice with the most tumour.
    brain = np.asarray(flair.dataobj) != 0
    best = best_slice(labels, "axial", region="whole tumour", affine=flair.affine, brain=brain)
    assert segmented["slider"]["value"] == best
    assert (segmented["slider"]["minimum"], segmented["slider"]["maximum"]) == (0, 154)

    # The overlay is an axial slice in colour, with the whole tumour's three-colour key.
    image = _image(segmented["overlay"])
    assert image.shape == (240, 240, 3)
    for name in ("necrotic core", "edema", "enhancing tumour"):
        assert name in segmented["legend"]

    assert segmented["seconds"] > 0
    assert brats18_case.name in segmented["status"]
    assert "synthetic" not in segmented["status"].lower()


def test_viewer_is_embedded_and_served_by_the_demo(segmented: dict, app: AppProcess, brats18_case: Path):
    """gr.HTML runs no scripts, so the viewer is the Flask page in an iframe, served by the
    demo's own server (one port, offline), with the files of this very prediction."""
    src = re.search(r'<iframe id="viewer-frame" src="([^"]+)"', segmented["viewer"])[1]
    assert re.fullmatch(r"bratseg/viewer/[A-Za-z0-9_-]{22}", src)  # relative: works behind a proxy path
    with urllib.request.urlopen(app.url + src, timeout=30) as response:
        page = response.read().decode()
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "/bratseg/static/niivue/niivue.umd.js" in page and brats18_case.name in page
    key = src.rsplit("/", 1)[1]
    with urllib.request.urlopen(f"{app.url}bratseg/api/result/{key}/labels.nii.gz", timeout=30) as response:
        served = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(response.read())).dataobj)
    np.testing.assert_array_equal(served, np.asarray(nib.load(segmented["download"]).dataobj))
    with urllib.request.urlopen(f"{app.url}bratseg/api/result/{key}/flair.nii.gz", timeout=30) as response:
        assert response.read() == segmented["flair"].read_bytes()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{app.url}bratseg/api/result/{key}/../../app.py", timeout=30)
    assert err.value.code == 404


def test_confidence_flag_and_report_download(segmented: dict, brats18_case: Path):
    from pypdf import PdfReader

    confidence = segmented["confidence"]
    score = float(re.search(r"\*\*Confidence:\*\* ([0-9.]+)", confidence)[1])
    assert 0.0 <= score <= 1.0
    assert ("low confidence: review carefully" in confidence) == (score < _threshold())
    report = segmented["report"]
    path = report["value"] if isinstance(report, dict) else report
    assert Path(path).name == f"{brats18_case.name}_report.pdf"
    reader = PdfReader(path)
    assert brats18_case.name in reader.pages[0].extract_text()
    # The RANO measurement of the label map downloaded, on the report's first page.
    from bratseg.measurement.rano import measure_file

    spd = measure_file(segmented["download"]).spd_mm2
    assert f"RANO: SPD {spd:.1f} mm²" in " ".join(reader.pages[0].extract_text().split())


def _threshold() -> float:
    from bratseg.inference.confidence import LOW_CONFIDENCE_THRESHOLD

    return LOW_CONFIDENCE_THRESHOLD


def test_region_and_slice_changes_rerender_without_predicting(segmented: dict, client: Client, app: AppProcess):
    predictions = app.predictions()
    best = int(segmented["slider"]["value"])
    first = _image(segmented["overlay"])

    other_slice, legend = call(client, "all_the_tumor", "axial", best - 10, api_name="/render")
    assert not np.array_equal(_image(other_slice), first)
    assert "edema" in legend

    edema, legend = call(client, "EDEMA", "axial", best - 10, api_name="/render")
    assert _image(edema).shape == (240, 240, 3)
    assert "edema" in legend and "necrotic" not in legend

    # Another view: the slider gets that axis's range and its best slice.
    coronal, legend, slider = call(client, "tumour core", "coronal", api_name="/view")
    assert slider["maximum"] == 239 and 0 <= slider["value"] <= 239
    assert _image(coronal).shape == (155, 240, 3)
    assert "tumour core" in legend

    with pytest.raises(AppError, match=r"239"):  # the slider now ends at the last coronal slice
        call(client, "tumour core", "coronal", 400, api_name="/render")

    assert app.predictions() == predictions, "changing region, view or slice ran the model again"


def _write_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, brats18_case: Path) -> dict[str, Path]:
    """Small broken files, one per way an upload can be wrong."""
    root = tmp_path_factory.mktemp("bad_inputs")
    good = np.random.default_rng(0).uniform(1, 100, (32, 32, 16)).astype(np.float32)
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    real_gz = next(brats18_case.glob("*_flair.nii.gz")).read_bytes()
    files = {
        "good": _write_nifti(root / "good_flair.nii.gz", good),
        "good_t1ce": _write_nifti(root / "good_t1ce.nii.gz", good),
        "text": root / "notes_flair.nii.gz",
        "truncated": root / "cut_flair.nii.gz",
        "flat": _write_nifti(root / "flat_flair.nii.gz", good[:, :, 0]),
        "other_shape": _write_nifti(root / "small_t1ce.nii.gz", good[:, :, :8]),
        "nan": _write_nifti(root / "nan_flair.nii.gz", nan),
        "not_zip": root / "case.zip",
        "zip_without_t1ce": root / "no_t1ce.zip",
    }
    files["text"].write_text("these are my notes, not a scan\n")
    files["truncated"].write_bytes(real_gz[: len(real_gz) // 3])
    files["not_zip"].write_bytes(gzip.compress(b"not a zip"))
    with zipfile.ZipFile(files["zip_without_t1ce"], "w") as z:
        z.write(files["good"], "CASE_1/CASE_1_flair.nii.gz")
    return files


def _write_odd(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_qform(None, code=0)  # a degenerate matrix has no quaternion form: sform only
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


ODD_GEOMETRY = {
    "singular affine": (slice(None), np.zeros((4, 4))),
    "rank-2 affine": (slice(None), np.diag([1.0, 1.0, 0.0, 1.0])),
    "one axial slice": (slice(7, 8), np.eye(4)),
}


@pytest.mark.parametrize("kind", list(ODD_GEOMETRY))
def test_odd_geometry_gets_a_clear_message(client: Client, app: AppProcess, bad_inputs, tmp_path: Path, kind):
    """Refused with the file named, or segmented and drawn: never Gradio's bare "Error"."""
    axial, affine = ODD_GEOMETRY[kind]
    good = np.asarray(nib.load(bad_inputs["good"]).dataobj)[:, :, axial]
    flair = _write_odd(tmp_path / "odd_flair.nii.gz", good, affine)
    t1ce = _write_odd(tmp_path / "odd_t1ce.nii.gz", good, affine)
    try:
        result = call(
            client, handle_file(flair), handle_file(t1ce), None, None, None, "EDEMA", "axial", api_name="/segment"
        )
    except AppError as exc:
        text = str(exc)
        assert re.search(r"odd_(flair|t1ce)\.nii\.gz: ", text), text
        assert "Traceback" not in text and "has raised an exception" not in text
    else:
        assert Path(result[0]).is_file() and result[2]["maximum"] > result[2]["minimum"]
    assert app.process.poll() is None


def test_a_one_slice_view_gets_a_fixed_slider():
    """A slider from 0 to 0 breaks Gradio's page: one slice gets a fixed, valid one."""
    from bratseg.serving.gradio_parts import slider

    one = slider("axial", 1, 0)
    assert one.minimum < one.maximum and one.value == 0 and one.interactive is False
    many = slider("coronal", 240, 100)
    assert (many.minimum, many.maximum, many.value, many.interactive) == (0, 239, 100, True)


# (label, flair, t1ce, zip, pattern the message must match)
BAD_CASES = [
    ("not NIfTI", "text", "good_t1ce", None, r"notes_flair\.nii\.gz: not a NIfTI file"),
    ("truncated gzip", "truncated", "good_t1ce", None, r"cut_flair.*(truncated|unreadable|not a readable)"),
    ("2-D image", "flat", "good_t1ce", None, r"flat_flair.*expected a 3-D volume"),
    ("shape mismatch", "good", "other_shape", None, r"small_t1ce.*shape .* differs"),
    ("NaN voxels", "nan", "good_t1ce", None, r"nan_flair.*NaN"),
    ("missing T1ce", "good", None, None, r"no T1CE image uploaded"),
    ("nothing uploaded", None, None, None, r"Upload the FLAIR and T1ce images"),
    ("not a zip", None, None, "not_zip", r"case\.zip: not a readable zip"),
    ("zip without T1ce", None, None, "zip_without_t1ce", r"no T1CE image found"),
    ("files and a zip", "good", "good_t1ce", "zip_without_t1ce", r"either NIfTI files or one \.zip"),
]


@pytest.mark.parametrize(
    ("flair", "t1ce", "zip_file", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_input_gives_a_clear_message(client: Client, app: AppProcess, bad_inputs, flair, t1ce, zip_file, message):
    def upload(key: str | None):
        return None if key is None else handle_file(bad_inputs[key])

    with pytest.raises(AppError) as info:
        # On the fast path (preprocess none): under auto, grids that differ go native.
        call(
            client,
            upload(flair),
            upload(t1ce),
            None,
            None,
            upload(zip_file),
            "EDEMA",
            "axial",
            "none",
            api_name="/segment",
        )
    text = str(info.value)
    assert re.search(message, text), text
    assert "Traceback" not in text and 'File "' not in text
    # ...and the server is still serving.
    assert app.process.poll() is None
    with urllib.request.urlopen(app.url, timeout=10) as response:
        assert response.status == 200


def test_example_button_loads_a_synthetic_case(client: Client):
    *files, zip_file, status = call(client, api_name="/load_example")
    names = [Path(f).name for f in files]
    assert names == [f"SYNTHETIC_EXAMPLE_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")]
    assert zip_file is None
    assert "synthetic" in status.lower()
    assert nib.load(files[0]).shape == (240, 240, 155)


# --------------------------------------------------------- in-process: counted model runs


class CountingService:
    """The real :class:`InferenceService`, counting how often the model is asked to run."""

    def __init__(self, service):
        self.service = service
        self.calls = 0
        self._lock = threading.Lock()

    def segment(self, case, preprocess="none", progress=None):
        with self._lock:
            self.calls += 1
        return self.service.segment(case, preprocess, progress=progress)


def test_rerendering_never_calls_the_service(tmp_path, monkeypatch):
    from bratseg.serving.gradio_app import build_demo, launch
    from bratseg.serving.service import InferenceService
    from bratseg.synthetic import write_synthetic_case

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    case = write_synthetic_case(tmp_path / "SYNTHETIC_COUNT", shape=(96, 96, 40), seed=1)
    service = CountingService(InferenceService(max_concurrent=1))
    demo = build_demo(service, concurrency=1)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", download_files=str(tmp_path / "dl"), verbose=False)
        result = call(
            client,
            handle_file(case.images["flair"]),
            handle_file(case.images["t1ce"]),
            handle_file(case.images["t1"]),
            handle_file(case.images["t2"]),
            None,
            "whole tumour",
            "axial",
            api_name="/segment",
        )
        assert service.calls == 1
        assert "synthetic" in result[6].lower()  # the status line
        images = [result[0]]
        for region in ("NECROTIC/CORE", "enhancing tumour", "tumour core"):
            images.append(call(client, region, "axial", 20, api_name="/render")[0])
        for index in (5, 10, 35):
            images.append(call(client, "EDEMA", "axial", index, api_name="/render")[0])
        images.append(call(client, "EDEMA", "sagittal", api_name="/view")[0])
        assert all(Path(p).is_file() for p in images)
        assert service.calls == 1, "re-rendering ran the model"
    finally:
        demo.close()


# ------------------------------------------------------------------- pieces of the demo


def test_region_choices_are_the_original_four_then_the_brats_regions():
    from bratseg.data.labels import ORIGINAL_PARTS, resolve_region
    from bratseg.serving.gradio_page import REGION_CHOICES

    values = [value for _label, value in REGION_CHOICES]
    assert values == [*ORIGINAL_PARTS, "whole tumour", "tumour core", "enhancing tumour"]
    assert {resolve_region(v) for v in values} == {
        "whole tumour",
        "tumour core",
        "enhancing tumour",
        "necrotic core",
        "edema",
    }


def test_session_keeps_labels_and_flair_only(tmp_path):
    from bratseg.data.io import load_case
    from bratseg.inference.predictor import Prediction
    from bratseg.serving.gradio_parts import slim as _slim
    from bratseg.serving.gradio_parts import volumes_table
    from bratseg.synthetic import write_synthetic_case

    volumes = load_case(write_synthetic_case(tmp_path / "SYNTHETIC_SLIM", shape=(32, 32, 16)), with_label=False)
    labels = np.zeros(volumes.shape, dtype=np.uint8)
    labels[4:8, 4:8, 4:6] = 4
    slim = _slim(Prediction(labels, volumes, 1.5))
    assert list(slim.volumes.images) == ["flair"]
    assert slim.volumes.images["flair"] is volumes.images["flair"]  # not copied
    table = volumes_table(slim)
    assert table.set_index("region")["volume (cm³)"].to_dict() == {
        "whole tumour": 0.032,
        "tumour core": 0.032,
        "enhancing tumour": 0.032,
        "necrotic core": 0.0,
        "edema": 0.0,
    }


def test_host_and_port_come_from_env_and_flags_override_them(monkeypatch):
    import importlib.util

    # app.py sets these defaults on import; pre-set them so the test leaves os.environ as it was.
    for var, value in (
        ("GRADIO_ANALYTICS_ENABLED", "False"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
    ):
        monkeypatch.setenv(var, os.environ.get(var, value))
    spec = importlib.util.spec_from_file_location("bratseg_app_launcher", APP)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)

    # The variables a Hugging Face Space (or CI) may set stand in when BRATSEG_* are absent.
    for var in ("BRATSEG_HOST", "BRATSEG_PORT", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT", "BRATSEG_MODEL"):
        monkeypatch.delenv(var, raising=False)
    args = launcher.parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, None)

    monkeypatch.setenv("BRATSEG_HOST", "0.0.0.0")
    monkeypatch.setenv("BRATSEG_PORT", "9001")
    args = launcher.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 9001)
    args = launcher.parse_args(["--host", "127.0.0.2", "--port", "9002", "--model", "some/model"])
    assert (args.host, args.port, args.model) == ("127.0.0.2", 9002, Path("some/model"))


# ------------------------------------------------------------------ uploads are patient data


def test_uploads_and_outputs_go_with_the_process_on_sigterm(tmp_path: Path, bad_inputs):
    """Uploads land in a folder of this process inside GRADIO_TEMP_DIR; SIGTERM removes it."""
    with running_app(tmp_path / "run") as running:
        client = Client(running.url, download_files=str(tmp_path / "dl"), verbose=False)
        with pytest.raises(AppError):  # a text file: refused, but uploaded first
            call(
                client,
                handle_file(bad_inputs["text"]),
                handle_file(bad_inputs["good_t1ce"]),
                None,
                None,
                None,
                "EDEMA",
                "axial",
                api_name="/segment",
            )
        call(client, api_name="/load_example")  # writes the synthetic example into it too
        gradio_dir = tmp_path / "run" / "gradio"
        (private,) = [p for p in gradio_dir.iterdir() if p.name.startswith(f"bratseg-demo-{running.process.pid}-")]
        uploaded = {p.name for p in private.rglob("*") if p.is_file()}
        assert {"notes_flair.nii.gz", "good_t1ce.nii.gz", "SYNTHETIC_EXAMPLE_flair.nii.gz"} <= uploaded
        running.process.terminate()  # SIGTERM
        assert running.process.wait(timeout=60) == 0
    assert not private.exists()
    assert not [p for p in (tmp_path / "run").rglob("*.nii.gz")], "a scan outlived the demo"


def test_output_folder_prunes_files_older_than_its_age(tmp_path: Path, monkeypatch):
    import bratseg.serving.demo_files as demo_files

    monkeypatch.setattr(demo_files, "_cache", None)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    outputs = demo_files.OutputFolder(max_age=0.5)
    first = outputs.new_file("a_seg.nii.gz")
    first.write_bytes(b"x")
    assert first.is_relative_to(demo_files.private_cache()) and demo_files.private_cache().parent == tmp_path
    time.sleep(1.0)
    second = outputs.new_file("b_seg.nii.gz")
    assert not first.parent.exists() and second.parent.is_dir()
    monkeypatch.setattr(demo_files, "_cache", None)
