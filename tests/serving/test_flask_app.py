"""The Flask app with the real shipped model, real files and a real waitress server.

One service (one model load) is shared by the module. Every request's temp folder must be
gone afterwards: ``tempfile.tempdir`` points at a folder of our own that each test checks is
empty, after successes and failures alike.
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import bratseg.serving.form as form
import bratseg.serving.service as service_module
from bratseg.serving.flask_app import create_app
from bratseg.serving.service import InferenceService
from bratseg.synthetic import write_synthetic_case

httpx = pytest.importorskip("httpx")  # installed with gradio

MAX_UPLOAD = 40 * 1024 * 1024
MAX_UNZIPPED = 64 * 1024 * 1024
SMALL = (48, 48, 16)  # small and few slices: fast predictions
REGIONS = ("whole tumour", "tumour core", "enhancing tumour", "necrotic core", "edema")


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def temp_root(tmp_path_factory):
    """Where the app's request folders (and any stray temp file) must go, and not stay."""
    tmp_path_factory.getbasetemp()  # pin pytest's own folders before redirecting tempfile
    root = tmp_path_factory.mktemp("request-tmp")
    patch = pytest.MonkeyPatch()
    patch.setattr(tempfile, "tempdir", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(max_concurrent=2)  # the shipped model, loaded once


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """A data root holding a small synthetic case, plus a symlink pointing outside it."""
    base = tmp_path_factory.mktemp("served")
    root = base / "root"
    write_synthetic_case(root / "SYNTHETIC_SRV", shape=SMALL)
    (base / "secret_flair.nii.gz").write_bytes((root / "SYNTHETIC_SRV" / "SYNTHETIC_SRV_flair.nii.gz").read_bytes())
    (root / "escape_flair.nii.gz").symlink_to(base / "secret_flair.nii.gz")
    return root


@pytest.fixture(scope="module")
def small_case(small_root: Path) -> dict[str, Path]:
    folder = small_root / "SYNTHETIC_SRV"
    return {m: folder / f"SYNTHETIC_SRV_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")}


@pytest.fixture(scope="module")
def app(service, small_root, temp_root):
    return create_app(service, data_root=small_root, max_upload_bytes=MAX_UPLOAD, max_unzipped_bytes=MAX_UNZIPPED)


@pytest.fixture
def client(app, temp_root: Path):
    yield app.test_client()
    assert sorted(p.name for p in temp_root.iterdir()) == [], "a request left files in the temp folder"


def _upload(paths: dict[str, Path], **fields) -> dict:
    data = {m: (io.BytesIO(p.read_bytes()), p.name) for m, p in paths.items()}
    data.update(fields)
    return data


def _real(case_dir: Path, modalities=("flair", "t1ce")) -> dict[str, Path]:
    return {m: next(case_dir.glob(f"*_{m}.nii.gz")) for m in modalities}


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _check_volumes(volumes: dict[str, float]) -> None:
    assert set(volumes) == set(REGIONS)
    assert all(v >= 0 for v in volumes.values())
    assert volumes["whole tumour"] >= volumes["tumour core"] >= volumes["enhancing tumour"]
    tol = 0.01  # each is rounded to 0.001 cm3
    assert volumes["whole tumour"] == pytest.approx(volumes["tumour core"] + volumes["edema"], abs=tol)
    assert volumes["tumour core"] == pytest.approx(volumes["necrotic core"] + volumes["enhancing tumour"], abs=tol)


def _download(client, url: str) -> nib.Nifti1Image:
    res = client.get(url)
    assert res.status_code == 200 and res.mimetype == "application/gzip"
    assert "attachment" in res.headers["Content-Disposition"]
    return nib.Nifti1Image.from_bytes(gzip.decompress(res.data))


# ------------------------------------------------------------------------------ the form


def test_index_is_the_original_form(client):
    res = client.get("/")
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    assert 'action="/outpg"' in page and 'enctype="multipart/form-data"' in page
    assert 'type="file" name="flair"' in page and 'type="file" name="t1ce"' in page
    assert '<select name="part_of_tumor">' in page
    for value in ("all_the_tumor", "NECROTIC/CORE", "EDEMA", "ENHANCING"):
        assert f'value="{value}"' in page
    assert 'value="all_the_tumor" selected' in page
    assert 'name="flair_path"' in page and 'name="ce_path"' in page  # a data root is configured
    assert client.get("/static/style.css").status_code == 200


def test_form_without_data_root_offers_no_path_fields(service, temp_root):
    page = create_app(service).test_client().get("/").get_data(as_text=True)
    assert 'name="flair_path"' not in page and 'type="file" name="flair"' in page


def test_get_outpg_goes_back_to_the_form(client):
    res = client.get("/outpg")
    assert res.status_code == 302 and res.headers["Location"].endswith("/")


# ----------------------------------------------------------------------------- /healthz


def test_healthz_is_200_when_the_model_is_loaded(client, service):
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json["status"] == "ok" and res.json["max_concurrent"] == service.max_concurrent


def test_healthz_is_503_while_the_model_loads(service, monkeypatch, temp_root):
    gate = threading.Event()

    def slow_load(model_dir):
        gate.wait(60)
        return service.segmenter

    monkeypatch.setattr(service_module, "from_pretrained", slow_load)
    loading = InferenceService(background=True)
    client = create_app(loading).test_client()
    res = client.get("/healthz")
    assert res.status_code == 503 and res.json["status"] == "loading"
    gate.set()
    assert loading.wait_ready(30)
    assert client.get("/healthz").status_code == 200


def test_healthz_is_503_with_the_reason_when_loading_fails(tmp_path, temp_root):
    client = create_app(model_dir=tmp_path / "no-model").test_client()
    for _ in range(100):
        res = client.get("/healthz")
        if res.json["status"] != "loading":
            break
        time.sleep(0.1)
    assert res.status_code == 503 and res.json["status"] == "error"
    assert "model folder not found" in res.json["error"]
    res = client.post("/api/predict", data={})
    assert res.status_code in (400, 503)  # refused, not a crash


# --------------------------------------------------------------------- real predictions


@pytest.fixture(scope="module")
def real_prediction(app, brats18_case, temp_root):
    """/api/predict on a real case's FLAIR and T1ce (one prediction shared by tests)."""
    client = app.test_client()
    res = client.post("/api/predict", data=_upload(_real(brats18_case)))
    assert res.status_code == 200, res.json
    return res.json, client


def test_api_predict_on_a_real_case(real_prediction, brats18_case):
    body, _ = real_prediction
    assert body["case"] == "Brats18_2013_11_1"
    assert body["region"] == "whole tumour" and body["axis"] == "axial"
    assert body["modalities"] == ["flair", "t1ce"] and body["shape"] == [240, 240, 155]
    assert 0 <= body["slice"] < 155 and body["slices"] == 155
    assert body["seconds"] > 0
    _check_volumes(body["volumes_cm3"])
    image = _png(body["overlay_png_base64"])
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[1] == 240 and image.shape[0] > 240  # + legend
    assert body["labels_url"].startswith("/api/result/") and body["labels_url"].endswith(".nii.gz")


def test_label_map_download_matches_the_input_and_the_volumes(real_prediction, brats18_case):
    body, client = real_prediction
    img = _download(client, body["labels_url"])
    ref = nib.load(next(brats18_case.glob("*_flair.nii.gz")))
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    labels = np.asarray(img.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 4}
    # The reported volumes are those of the downloaded map (1 mm voxels: cm3 = count / 1000).
    counts = {v: int((labels == v).sum()) for v in (1, 2, 4)}
    assert body["volumes_cm3"]["whole tumour"] == pytest.approx(sum(counts.values()) / 1000, abs=1e-3)
    assert body["volumes_cm3"]["enhancing tumour"] == pytest.approx(counts[4] / 1000, abs=1e-3)
    # The slice shown is the one with the most tumour (or the brain's middle if none).
    if counts[1] + counts[2] + counts[4]:
        assert body["slice"] == int(np.argmax((labels != 0).sum(axis=(0, 1))))


def test_api_rano_is_the_measurement_of_the_returned_label_map(real_prediction):
    from bratseg.measurement.rano import measure

    body, client = real_prediction
    rano = body["rano"]
    assert {"spd_mm2", "lesions", "volumes_cm3"} <= set(rano)
    contract = {"longest_mm", "perpendicular_mm", "product_mm2", "volume_cm3", "measurable", "slice", "target"}
    assert rano["lesions"] and all(contract <= set(lesion) for lesion in rano["lesions"])
    img = _download(client, body["labels_url"])
    expected = measure(np.asarray(img.dataobj), img.affine)
    assert rano == expected.to_json()
    # This case's prediction has a measurable enhancing rim: the SPD is its targets' products.
    targets = [lesion for lesion in rano["lesions"] if lesion["target"]]
    assert 1 <= len(targets) <= 3 and rano["spd_mm2"] > 100
    assert rano["spd_mm2"] == pytest.approx(sum(t["product_mm2"] for t in targets), abs=0.2)
    assert set(rano["volumes_cm3"]) == set(REGIONS)


def test_api_predict_with_all_four_modalities(client, brats18_case):
    res = client.post("/api/predict", data=_upload(_real(brats18_case, ("flair", "t1ce", "t1", "t2")), region="EDEMA"))
    assert res.status_code == 200, res.json
    body = res.json
    assert body["modalities"] == ["flair", "t1", "t1ce", "t2"] and body["region"] == "edema"
    _check_volumes(body["volumes_cm3"])
    assert _png(body["overlay_png_base64"]).shape[1] == 240
    labels = np.asarray(_download(client, body["labels_url"]).dataobj)
    assert labels.shape == (240, 240, 155) and set(np.unique(labels)) <= {0, 1, 2, 4}


def test_outpg_renders_inputs_and_overlay_for_uploads(client, brats18_case):
    res = client.post("/outpg", data=_upload(_real(brats18_case), part_of_tumor="ENHANCING"))
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    assert "Brats18_2013_11_1" in page and "enhancing tumour" in page
    images = [_png(chunk.split('"', 1)[0]) for chunk in page.split("data:image/png;base64,")[1:]]
    assert len(images) == 2
    inputs, overlay = images
    assert inputs.shape == (240, 2 * 240 + 4, 3) and overlay.shape[1] == 240
    assert 'class="legend"' in page and "/api/result/" in page
    assert "static/" not in page.split("<main>")[1]  # pictures inline: no shared output files


def test_zip_upload_with_axis_slice_and_region(client, small_case, tmp_path):
    zipped = tmp_path / "case.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for modality in ("flair", "t1ce", "t2"):  # synthetic T1 and T1ce do not differ as real ones do
            zf.write(small_case[modality], f"SYNTHETIC_SRV/{small_case[modality].name}")
    data = {"zip": (io.BytesIO(zipped.read_bytes()), "case.zip"), "axis": "sagittal", "slice": "7", "region": "ET"}
    res = client.post("/api/predict", data=data)
    assert res.status_code == 200, res.json
    body = res.json
    assert (body["case"], body["axis"], body["slice"], body["region"]) == (
        "SYNTHETIC_SRV",
        "sagittal",
        7,
        "enhancing tumour",
    )
    assert body["modalities"] == ["flair", "t1ce", "t2"]
    assert _png(body["overlay_png_base64"]).shape[:2][1] == SMALL[1]  # sagittal: width = anterior-posterior
    _check_volumes(body["volumes_cm3"])


def test_outpg_with_original_path_fields_beneath_the_data_root(client, small_root):
    data = {
        "flair_path": "SYNTHETIC_SRV/SYNTHETIC_SRV_flair.nii.gz",
        "ce_path": str(small_root / "SYNTHETIC_SRV" / "SYNTHETIC_SRV_t1ce.nii.gz"),
        "part_of_tumor": "NECROTIC/CORE",
    }
    res = client.post("/outpg", data=data)
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    assert "SYNTHETIC_SRV" in page and "necrotic core" in page


def test_results_are_a_bounded_lru(service, small_case, temp_root):
    client = create_app(service, max_results=1).test_client()
    urls = []
    for _ in range(2):
        res = client.post("/api/predict", data=_upload({m: small_case[m] for m in ("flair", "t1ce")}))
        urls.append(res.json["labels_url"])
    assert len(set(urls)) == 2
    assert client.get(urls[0]).status_code == 404  # evicted
    assert client.get(urls[0]).json["error"].startswith("unknown or expired")
    assert client.get(urls[1]).status_code == 200
    assert client.get("/api/result/nonexistent.nii.gz").status_code == 404


# ------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, small_case) -> dict[str, Path]:
    """One broken input of each kind, next to the small case it breaks."""
    d = tmp_path_factory.mktemp("bad")
    flair = nib.load(small_case["flair"])
    data = np.asarray(flair.dataobj).astype(np.float32)
    files = {}
    files["text"] = d / "notes_flair.nii.gz"
    files["text"].write_text("patient notes, not an image\n" * 50)
    files["truncated"] = d / "cut_flair.nii.gz"
    files["truncated"].write_bytes(small_case["flair"].read_bytes()[: small_case["flair"].stat().st_size // 2])
    files["2d"] = d / "flat_flair.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, 10], flair.affine), str(files["2d"]))
    files["mismatch"] = d / "small_t1ce.nii.gz"
    nib.save(nib.Nifti1Image(data[:40], flair.affine), str(files["mismatch"]))
    files["nan"] = d / "nan_flair.nii.gz"
    with_nan = data.copy()
    with_nan[20, 20, 10:13] = np.nan
    nib.save(nib.Nifti1Image(with_nan, flair.affine), str(files["nan"]))
    files["evil_zip"] = d / "evil.zip"
    with zipfile.ZipFile(files["evil_zip"], "w") as zf:
        for path in small_case.values():
            zf.write(path, f"SYNTHETIC_SRV/{path.name}")
        zf.writestr("../evil.nii.gz", b"gotcha")
    files["bomb_zip"] = d / "bomb.zip"
    with zipfile.ZipFile(files["bomb_zip"], "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BOMB/BOMB_flair.nii", bytes(MAX_UNZIPPED + 1_000_000))
    assert files["bomb_zip"].stat().st_size < 200_000
    return files


def _bad_request(kind: str, bad: dict[str, Path], case: dict[str, Path]) -> dict:
    pair = {"flair": case["flair"], "t1ce": case["t1ce"]}
    if kind == "not NIfTI":
        return _upload({**pair, "flair": bad["text"]})
    if kind == "truncated gzip":
        return _upload({**pair, "flair": bad["truncated"]})
    if kind == "2-D image":
        return _upload({**pair, "flair": bad["2d"]})
    if kind == "unknown preprocess":
        return _upload(pair, preprocess="magic")
    if kind == "shape mismatch":  # on the fast path; under auto, grids that differ go native
        return {**_upload({**pair, "t1ce": bad["mismatch"]}), "preprocess": "none"}
    if kind == "NaN voxels":
        return _upload({**pair, "flair": bad["nan"]})
    if kind == "missing T1ce":
        return _upload({"flair": case["flair"]})
    if kind == "nothing":
        return {"part_of_tumor": "EDEMA"}
    if kind == "unknown region":
        return _upload(pair, region="tumour-ish", part_of_tumor="tumour-ish")
    if kind == "unknown axis":
        return _upload(pair, axis="oblique")
    if kind == "bad slice":
        return _upload(pair, slice="middle")
    if kind == "slice out of range":
        return _upload(pair, slice="16")
    if kind == "zip escaping":
        return {"zip": (io.BytesIO(bad["evil_zip"].read_bytes()), "evil.zip")}
    if kind == "zip bomb":
        return {"zip": (io.BytesIO(bad["bomb_zip"].read_bytes()), "bomb.zip")}
    if kind == "dot-dot path":
        return {"flair_path": "../secret_flair.nii.gz", "ce_path": "SYNTHETIC_SRV/SYNTHETIC_SRV_t1ce.nii.gz"}
    if kind == "absolute path outside":
        return {"flair_path": "/etc/passwd", "ce_path": "SYNTHETIC_SRV/SYNTHETIC_SRV_t1ce.nii.gz"}
    if kind == "symlink out of the root":
        return {"flair_path": "escape_flair.nii.gz", "ce_path": "SYNTHETIC_SRV/SYNTHETIC_SRV_t1ce.nii.gz"}
    raise AssertionError(kind)


def _parts(message: str | tuple[str, ...]) -> tuple[str, ...]:
    return message if isinstance(message, tuple) else (message,)


BAD_INPUTS = [
    # kind, status, what the message must say (all parts of it)
    ("not NIfTI", 415, "notes_flair.nii.gz: not a NIfTI file"),
    ("truncated gzip", 400, ("cut_flair.nii.gz: ", "truncated")),
    ("2-D image", 400, "expected a 3-D volume"),
    ("shape mismatch", 400, "small_t1ce.nii.gz: shape (40, 48, 16) differs"),
    ("NaN voxels", 400, "3 voxels are NaN or infinite"),
    ("missing T1ce", 400, "no T1CE image uploaded"),
    ("nothing", 400, "no input"),
    ("unknown region", 400, "unknown region 'tumour-ish'"),
    ("unknown axis", 400, "unknown axis 'oblique'"),
    ("unknown preprocess", 400, "unknown preprocess 'magic'; choose one of auto, native, none"),
    ("bad slice", 400, "slice must be a whole number"),
    ("slice out of range", 400, "axial slice 16 is out of range 0..15"),
    ("zip escaping", 400, "'../evil.nii.gz' points outside"),
    ("zip bomb", 413, "zip bomb"),
    ("dot-dot path", 400, "'..' is not allowed"),
    ("absolute path outside", 403, "outside the data root"),
    ("symlink out of the root", 403, "outside the data root"),
]


@pytest.mark.parametrize(("kind", "status", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_api_refuses_bad_input_with_a_clear_json_error(client, bad_files, small_case, kind, status, message):
    res = client.post("/api/predict", data=_bad_request(kind, bad_files, small_case))
    assert res.status_code == status, res.json
    assert res.is_json and all(part in res.json["error"] for part in _parts(message))
    assert not (bad_files["evil_zip"].parent.parent / "evil.nii.gz").exists()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["active"] == 0  # still serving, no slot leaked


@pytest.mark.parametrize(("kind", "status", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_outpg_shows_a_readable_error(client, bad_files, small_case, kind, status, message):
    data = _bad_request(kind, bad_files, small_case)
    if "region" in data:
        data.pop("region")  # the form's field is part_of_tumor
    res = client.post("/outpg", data=data)
    assert res.status_code == status
    page = html.unescape(res.get_data(as_text=True))
    assert 'class="error"' in page and all(part in page for part in _parts(message))
    assert '<select name="part_of_tumor">' in page  # the form is back, ready for another try


def test_paths_are_refused_without_a_data_root(service, small_root, temp_root):
    client = create_app(service).test_client()
    data = {"flair_path": str(small_root / "SYNTHETIC_SRV" / "SYNTHETIC_SRV_flair.nii.gz"), "ce_path": "x"}
    res = client.post("/api/predict", data=data)
    assert res.status_code == 403 and "no data root" in res.json["error"]
    assert list(temp_root.iterdir()) == []


def test_upload_over_the_size_limit_is_413(service, brats18_case, temp_root):
    client = create_app(service, max_upload_bytes=1024 * 1024).test_client()
    data = _upload(_real(brats18_case))  # about 3 MB
    res = client.post("/api/predict", data=data)
    assert res.status_code == 413 and "upload too large: the limit is 1 MB" in res.json["error"]
    res = client.post("/outpg", data=_upload(_real(brats18_case)))
    assert res.status_code == 413 and "upload too large" in res.get_data(as_text=True)
    assert list(temp_root.iterdir()) == []


def test_uploads_are_spooled_into_the_request_folder_and_removed(client, small_case, temp_root, monkeypatch):
    seen: list[tuple[Path, list[str]]] = []
    spied_files: list[Path] = []
    real = form.case_from_uploads

    def spy(files, **kwargs):
        folder = kwargs["workdir"]
        seen.append((folder, sorted(p.name for p in folder.iterdir())))  # spool files were moved
        assert all(Path(p).is_relative_to(folder) for p in files.values())
        spied_files.extend(files.values())
        return real(files, **kwargs)

    monkeypatch.setattr(form, "case_from_uploads", spy)
    res = client.post("/api/predict", data=_upload({m: small_case[m] for m in ("flair", "t1ce")}))
    assert res.status_code == 200
    ((folder, names),) = seen
    assert folder.parent == temp_root and names == ["uploads"]
    assert [p.name for p in spied_files] == ["SYNTHETIC_SRV_flair.nii.gz", "SYNTHETIC_SRV_t1ce.nii.gz"]
    assert not folder.exists()


def test_busy_service_answers_503_after_its_wait(service, brats18_case, temp_root):
    """With every slot taken and a bounded wait, a request gets 503 instead of queueing."""
    busy = InferenceService(max_concurrent=1, segmenter=service.segmenter, wait_timeout=0.2)
    client = create_app(busy).test_client()
    holder = threading.Thread(target=busy.segment, args=(brats18_case,))
    holder.start()
    try:
        deadline = time.monotonic() + 30
        while busy.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert busy.active == 1
        res = client.post("/api/predict", data=_upload(_real(brats18_case)))
        assert res.status_code == 503 and "busy" in res.json["error"]
    finally:
        holder.join(120)
    assert busy.active == 0 and busy.peak_concurrency == 1


def test_api_404_and_405_are_json(client):
    assert client.get("/api/nothing").json["error"].startswith("404")
    assert client.get("/api/predict").status_code == 405 and "405" in client.get("/api/predict").json["error"]


# -------------------------------------------------------------------- real servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_eight_concurrent_predictions_on_a_waitress_server(app, service, brats18_dir, temp_root, tmp_path):
    import waitress
    from serving_cases import crop_case

    # Real cases cut to the 32 slices around their largest tumour section: the concurrency is
    # what is tested here, and full volumes would cost five times the time.
    cases = sorted(p for p in brats18_dir.iterdir() if p.is_dir())[:8]
    assert len(cases) == 8
    for case_dir in cases:
        crop_case(case_dir, tmp_path / "cropped", slices=32, modalities=("flair", "t1ce"))
    cases = [tmp_path / "cropped" / c.name for c in cases]
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    service.peak_concurrency = 0

    def predict(case_dir: Path) -> tuple[int, dict]:
        files = {m: (p.name, p.read_bytes()) for m, p in _real(case_dir).items()}
        res = httpx.post(f"{url}/api/predict", files=files, data={"region": "TC"}, timeout=900)
        return res.status_code, res.json()

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(predict, cases))
        health = httpx.get(f"{url}/healthz", timeout=30)
    finally:
        server.close()
        thread.join(10)
    assert [status for status, _ in results] == [200] * 8, [b.get("error") for _, b in results]
    assert [body["case"] for _, body in results] == [c.name for c in cases]
    for _, body in results:
        _check_volumes(body["volumes_cm3"])
        assert body["region"] == "tumour core"
    assert len({body["labels_url"] for _, body in results}) == 8
    # Eight requests in eight threads, but never more than the service's limit predicting.
    assert service.peak_concurrency <= service.max_concurrent
    assert service.peak_concurrency == 2  # the limit was reached: the requests did overlap
    assert health.status_code == 200 and health.json()["active"] == 0
    assert list(temp_root.iterdir()) == []


@pytest.mark.slow
def test_bratseg_serve_subprocess_answers_healthz(tmp_path):
    port = _free_port()
    exe = Path(sys.executable).with_name("bratseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bratseg"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                res = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                status = res.status_code
                if status == 200:
                    break
                assert status == 503 and res.json()["status"] == "loading"
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.5)
        assert status == 200, (tmp_path / "serve.log").read_text()
        assert res.json()["status"] == "ok"
        assert 'name="part_of_tumor"' in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_serve_refuses_a_missing_data_root(tmp_path, capsys):
    from bratseg.cli import main

    assert main(["serve", "--data-root", str(tmp_path / "nope"), "--port", str(_free_port())]) == 2
    assert "data root not found" in capsys.readouterr().err
