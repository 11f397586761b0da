"""The result viewer's server side: the API's new fields, the result files, the viewer page,
what the viewer routes refuse, and bad geometry through the Flask app.

One real BraTS case, cut by the test to the axial slab around its tumour (seconds to
predict), is segmented once by the shipped model; the browser side is
``test_viewer_browser.py``.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from serving_cases import crop_case

from bratseg.serving.flask_app import create_app
from bratseg.serving.results import RESULT_FILES, Result, ResultStore, StoredFile
from bratseg.serving.service import InferenceService

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "bratseg" / "serving" / "static"


@pytest.fixture(scope="module")
def service(one_torch_thread) -> InferenceService:
    return InferenceService(max_concurrent=1)


@pytest.fixture(scope="module")
def client(service):
    return create_app(service).test_client()


@pytest.fixture(scope="module")
def case_files(brats18_case: Path, tmp_path_factory) -> dict[str, Path]:
    return crop_case(brats18_case, tmp_path_factory.mktemp("viewer_case"), slices=24, modalities=("flair", "t1ce"))


def _upload(files: dict[str, Path], **fields) -> dict:
    return {**{m: (io.BytesIO(p.read_bytes()), p.name) for m, p in files.items()}, **fields}


@pytest.fixture(scope="module")
def predicted(client, case_files) -> dict:
    res = client.post("/api/predict", data=_upload(case_files))
    assert res.status_code == 200, res.json
    return res.json


def _nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


# ------------------------------------------------------------------------------ the API


def test_api_reports_confidence_warnings_and_the_result_urls(predicted, brats18_case):
    assert predicted["case"] == brats18_case.name
    confidence = predicted["confidence"]
    assert set(confidence) == {"score", "low"}
    assert 0.0 <= confidence["score"] <= 1.0 and isinstance(confidence["low"], bool)
    assert isinstance(predicted["warnings"], list) and all(isinstance(w, str) for w in predicted["warnings"])
    assert ("low confidence: review carefully" in predicted["warnings"]) == confidence["low"]
    key = predicted["viewer_url"].removeprefix("/viewer/")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", key)  # 128 random bits
    assert predicted["labels_url"] == f"/api/result/{key}.nii.gz"
    assert predicted["uncertainty_url"] == f"/api/result/{key}/uncertainty.nii.gz"
    assert predicted["report_url"] == f"/api/result/{key}/report.pdf"


def test_uncertainty_map_is_on_the_input_grid_in_zero_to_one(client, predicted, case_files):
    res = client.get(predicted["uncertainty_url"])
    assert res.status_code == 200 and res.mimetype == "application/gzip"
    assert "_uncertainty.nii.gz" in res.headers["Content-Disposition"]
    img = _nifti(res.data)
    flair = nib.load(case_files["flair"])
    assert img.shape == flair.shape == (240, 240, 32)
    np.testing.assert_allclose(img.affine, flair.affine, atol=1e-4)
    data = np.asarray(img.dataobj, dtype=np.float32)
    assert 0.0 <= data.min() and data.max() <= 1.0 and data.max() > 0.0  # some doubt at the borders
    labels = np.asarray(_nifti(client.get(predicted["labels_url"]).data).dataobj)
    brain = (np.asarray(flair.dataobj) != 0) | (np.asarray(nib.load(case_files["t1ce"]).dataobj) != 0)
    assert data[~brain].max() == 0.0  # no doubt outside the brain
    assert data[labels != 0].mean() > data[brain & (labels == 0)].mean()  # the doubt is at the tumour


def test_report_is_a_pdf_naming_the_case(client, predicted, brats18_case):
    from pypdf import PdfReader

    res = client.get(predicted["report_url"])
    assert res.status_code == 200 and res.mimetype == "application/pdf" and res.data[:5] == b"%PDF-"
    reader = PdfReader(io.BytesIO(res.data))
    text = "".join(page.extract_text() for page in reader.pages)
    assert 1 <= len(reader.pages) <= 2 and brats18_case.name in text


def test_viewer_serves_the_uploaded_scans_unchanged(client, predicted, case_files):
    key = predicted["viewer_url"].removeprefix("/viewer/")
    for modality, path in case_files.items():
        res = client.get(f"/api/result/{key}/{modality}.nii.gz")
        assert res.status_code == 200 and res.data == path.read_bytes()
    assert client.get(f"/api/result/{key}/t2.nii.gz").status_code == 404  # not uploaded


def test_viewer_page_loads_vendored_niivue_and_its_manifest(client, predicted, case_files):
    res = client.get(predicted["viewer_url"])
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    csp = res.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp  # nothing from elsewhere
    assert 'src="/static/niivue/niivue.umd.js"' in page and 'src="/static/viewer.js"' in page
    manifest = json.loads(html.unescape(re.search(r'id="bratseg-manifest"[^>]*>(.*?)</script>', page, re.S)[1]))
    assert manifest["case"] == predicted["case"] and manifest["confidence"] == predicted["confidence"]
    assert sorted(manifest["scans"]) == ["flair", "t1ce"]
    assert [label["value"] for label in manifest["labels"]] == [1, 2, 4]
    assert manifest["labels"][0]["name"].startswith("necrotic")
    for url in (manifest["labels_file_url"], manifest["scans"]["flair"]["url"], manifest["uncertainty_url"]):
        assert client.get(url).status_code == 200
    assert client.get(predicted["viewer_url"].replace("/viewer/", "/api/result/") + "/summary.json").json == manifest


def test_viewer_gets_the_rano_diameters_on_the_label_maps_grid(client, predicted):
    """The manifest carries the measurement with both diameters' ends in voxels of the served
    label map: each end lies in the lesion's slice, and its length is the distance in mm."""
    page = client.get(predicted["viewer_url"]).get_data(as_text=True)
    manifest = json.loads(html.unescape(re.search(r'id="bratseg-manifest"[^>]*>(.*?)</script>', page, re.S)[1]))
    assert manifest["rano"] == predicted["rano"] and 'id="rano-box"' in page
    labels_img = _nifti(client.get(predicted["labels_url"]).data)
    labels = np.asarray(labels_img.dataobj)
    targets = [lesion for lesion in manifest["rano"]["lesions"] if lesion["target"]]
    assert targets, "the cropped case's prediction has a measurable enhancing lesion"
    for lesion in targets:
        assert (labels[:, :, lesion["slice"]] == 4).any()
        for kind in ("longest", "perpendicular"):
            line = lesion[kind]
            assert line["start"][2] == line["end"][2] == lesion["slice"]
            ends = [labels_img.affine @ [*point, 1.0] for point in (line["start"], line["end"])]
            assert np.linalg.norm(ends[0][:3] - ends[1][:3]) == pytest.approx(line["length_mm"], abs=0.1)
            assert line["length_mm"] == pytest.approx(lesion[f"{kind}_mm"], abs=0.1)


def test_niivue_is_vendored_with_its_licence_and_pinned_hash(client):
    import hashlib

    folder = STATIC / "niivue"
    version = (folder / "VERSION").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f"VERSION={version}" in (REPO / "scripts" / "vendor_niivue.sh").read_text(encoding="utf-8")
    build = (folder / "niivue.umd.js").read_bytes()
    assert hashlib.sha256(build).hexdigest() == (folder / "niivue.umd.js.sha256").read_text(encoding="utf-8").split()[0]
    assert "BSD 2-Clause License" in (folder / "LICENSE").read_text(encoding="utf-8")
    res = client.get("/static/niivue/niivue.umd.js")
    assert res.status_code == 200 and res.data == build
    assert client.get("/static/niivue/LICENSE").status_code == 200
    # Our page and script name no other host: everything comes from this server.
    for path in (STATIC / "viewer.js", REPO / "bratseg" / "serving" / "templates" / "viewer.html"):
        assert not re.search(r"https?://", path.read_text(encoding="utf-8")), path


def test_outpg_links_to_the_viewer_and_shows_the_confidence(client, case_files):
    res = client.post("/outpg", data=_upload(case_files, part_of_tumor="EDEMA"))
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    viewer = re.search(r'href="(/viewer/[A-Za-z0-9_-]+)"', page)[1]
    assert "Open the interactive 3-D viewer" in page and "Confidence" in page
    assert client.get(viewer).status_code == 200
    assert re.search(r'href="/api/result/[A-Za-z0-9_-]+/report.pdf"', page)


# ------------------------------------------------------------- nothing else is reachable


@pytest.mark.parametrize(
    "suffix",
    [
        "config.json",
        "model.safetensors",
        "..%2F..%2Fpretrained%2Fbrats18-unet-resnet18%2Fconfig.json",
        "%2E%2E",
        "labels.nii.gz%00.png",
        "LABELS.NII.GZ",
        "flair.nii",
        "summary.json/..",
    ],
)
def test_viewer_routes_serve_the_result_files_only(client, predicted, suffix):
    base = predicted["viewer_url"].replace("/viewer/", "/api/result/")
    res = client.get(f"{base}/{suffix}")
    assert res.status_code == 404
    assert b"safetensors" not in res.data and b"encoder_name" not in res.data


def test_unknown_ids_get_404_on_every_route(client, predicted):
    key = predicted["viewer_url"].removeprefix("/viewer/")
    other = key[:-1] + ("A" if key[-1] != "A" else "B")  # one character off
    assert client.get(f"/viewer/{other}").status_code == 404
    assert "Unknown or expired result" in client.get(f"/viewer/{other}").get_data(as_text=True)
    for name in RESULT_FILES:
        res = client.get(f"/api/result/{other}/{name}")
        assert res.status_code == 404 and res.json["error"].startswith("unknown or expired")
    assert client.get(f"/api/result/{other}.nii.gz").status_code == 404
    assert client.get("/viewer/../static/style.css").status_code in (404, 308)


def test_each_id_serves_its_own_result(service, case_files, tmp_path, brats18_dir):
    """Two results side by side: each id returns its own case's scans, never the other's."""
    other = crop_case(brats18_dir / "Brats18_CBICA_ABM_1", tmp_path, slices=16, modalities=("flair", "t1ce"))
    client = create_app(service).test_client()
    keys = []
    for files in (case_files, other):
        res = client.post("/api/predict", data=_upload(files))
        assert res.status_code == 200, res.json
        keys.append(res.json["viewer_url"].removeprefix("/viewer/"))
    for key, files in zip(keys, (case_files, other)):
        assert client.get(f"/api/result/{key}/flair.nii.gz").data == files["flair"].read_bytes()


def test_results_expire_and_are_bounded_in_bytes():
    store = ResultStore(max_items=8, max_bytes=4000, max_age_s=0.2)

    def result(n: int) -> Result:
        return Result("c", {"labels.nii.gz": StoredFile(bytes(n), "application/gzip", "c_seg.nii.gz")})

    first = store.put(result(1500))
    second = store.put(result(1500))
    third = store.put(result(1500))  # 4500 bytes: the oldest goes
    assert store.get(first) is None and store.get(second) is not None and store.get(third) is not None
    assert store.max_result_bytes == 1000
    time.sleep(0.3)
    assert store.get(second) is None and store.get(third) is None and len(store) == 0


# ------------------------------------------------------ bad geometry through the Flask app


def _write_like(path: Path, data: np.ndarray, like: nib.Nifti1Image, affine: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(data, like.affine, like.header)
    if affine is not None:  # only the sform: a degenerate matrix has no quaternion form
        img.set_qform(None, code=0)
        img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


GEOMETRY = {
    "singular affine": lambda d: (d, np.zeros((4, 4))),
    "rank-2 affine": lambda d: (d, np.diag([1.0, 1.0, 0.0, 1.0])),
    "one axial slice": lambda d: (d[:, :, 16:17], None),
    "one sagittal slice": lambda d: (d[120:121], None),
}


@pytest.mark.parametrize("kind", list(GEOMETRY))
def test_bad_geometry_gets_a_clear_answer_not_a_500(client, case_files, tmp_path, kind):
    """Refused by the loader (400, naming the file) or predicted and drawn (200): never a 500,
    on the JSON API and on the form alike."""
    files = {}
    for modality, path in case_files.items():
        img = nib.load(path)
        data, affine = GEOMETRY[kind](np.asarray(img.dataobj))
        files[modality] = _write_like(tmp_path / f"odd_{modality}.nii.gz", data, img, affine)
    res = client.post("/api/predict", data=_upload(files))
    assert res.status_code in (200, 400), res.json
    if res.status_code == 400:
        assert "odd_flair.nii.gz" in res.json["error"] or "odd_t1ce.nii.gz" in res.json["error"]
    else:
        assert res.json["slices"] >= 1 and res.json["overlay_png_base64"]
    page = client.post("/outpg", data=_upload(files))
    assert page.status_code == res.status_code
    text = html.unescape(page.get_data(as_text=True))
    assert ("Could not segment this input" in text) == (page.status_code == 400)
    assert "Internal server error" not in text
