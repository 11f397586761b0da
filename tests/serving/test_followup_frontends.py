"""The follow-up mode of the web front ends, on a real case: the Flask API's ``/api/followup``
and the Gradio demo's ``/followup``, with label maps given (the expert label, and a copy whose
enhancing tumour is gone), so that no model runs and the categories are known: enhancing
tumour at baseline and none at follow-up is a complete response; the reverse, from a baseline
without measurable disease to a measurable lesion, is progressive disease.

The case is cut to the axial slab around its tumour (``serving_cases.crop_case``): a comparison
takes seconds.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import re
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from serving_cases import crop_case

from bratseg.measurement.rano import measure_file
from bratseg.serving.flask_app import create_app
from bratseg.serving.service import InferenceService

pypdf = pytest.importorskip("pypdf")
# Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

COMPLETE, PROGRESSIVE = "complete response", "progressive disease"


@pytest.fixture(scope="module")
def pair(brats18_case: Path, tmp_path_factory) -> dict[str, Path]:
    """A real case's FLAIR, T1ce and expert label (``seg``), cut to its tumour slab, and the
    label with its enhancing tumour relabelled necrotic core (``no_et``)."""
    root = tmp_path_factory.mktemp("followup_pair")
    files = crop_case(brats18_case, root, slices=24, modalities=("flair", "t1ce", "seg"))
    img = nib.load(files["seg"])
    labels = np.asarray(img.dataobj).astype(np.uint8)
    assert (labels == 4).sum() > 1000
    labels[labels == 4] = 1
    files["no_et"] = root / "no_et_seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, img.affine, img.header), files["no_et"])
    return files


@pytest.fixture(scope="module")
def service(one_torch_thread) -> InferenceService:
    return InferenceService(max_concurrent=1)


def _fields(pair: dict[str, Path], baseline_seg: str, followup_seg: str) -> dict:
    def upload(path: Path) -> tuple:
        return io.BytesIO(path.read_bytes()), path.name

    data = {}
    for name, seg in (("baseline", baseline_seg), ("followup", followup_seg)):
        data[f"{name}_flair"] = upload(pair["flair"])
        data[f"{name}_t1ce"] = upload(pair["t1ce"])
        data[f"{name}_seg"] = upload(pair[seg])
    return data


def _manifest(page: str) -> dict:
    return json.loads(html.unescape(re.search(r'id="bratseg-manifest"[^>]*>(.*?)</script>', page, re.S)[1]))


# -------------------------------------------------------------------------------- Flask


@pytest.fixture(scope="module")
def flask_followup(service, pair) -> tuple[dict, object]:
    client = create_app(service).test_client()
    res = client.post("/api/followup", data=_fields(pair, "seg", "no_et"))
    assert res.status_code == 200, res.json
    return res.json, client


def test_flask_followup_answers_the_category_and_the_measurements(flask_followup, pair):
    body, _ = flask_followup
    assert body["response"] == COMPLETE and body["change"]["spd_percent"] == -100.0
    assert body["change"]["volumes_percent"]["enhancing tumour"] == -100.0
    assert "confirmation" in body["criteria"] and "imaging" in body["criteria"]
    expected = measure_file(pair["seg"]).to_json()
    assert body["baseline"]["spd_mm2"] == expected["spd_mm2"] > 0
    assert body["baseline"]["lesions"] == expected["lesions"]
    assert body["followup"]["spd_mm2"] == 0 and body["followup"]["lesions"] == []
    assert body["confidence"] == {"baseline": None, "followup": None}  # label maps given: nothing scored


def test_flask_followup_files_and_viewers(flask_followup, pair):
    body, client = flask_followup
    res = client.get(body["json_url"])
    assert res.status_code == 200
    written = json.loads(res.data)
    assert written == {key: body[key] for key in written}  # followup.json is the answer's core
    report = client.get(body["report_url"])
    assert report.status_code == 200 and report.data[:5] == b"%PDF-"
    text = " ".join("".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(report.data)).pages).split())
    assert COMPLETE in text
    difference = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(body["difference_url"]).data))
    assert difference.shape == nib.load(pair["seg"]).shape
    for name, seg in (("baseline", "seg"), ("followup", "no_et")):
        labels = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(body["labels_urls"][name]).data))
        assert np.array_equal(np.asarray(labels.dataobj), np.asarray(nib.load(pair[seg]).dataobj))
        page = client.get(body["viewer_urls"][name])
        assert page.status_code == 200
        manifest = _manifest(page.get_data(as_text=True))
        assert manifest["rano"]["spd_mm2"] == body[name]["spd_mm2"]
        assert manifest["rano"]["lesions"] == body[name]["lesions"]
        assert manifest["followup"]["response"] == COMPLETE and "t1ce" in manifest["scans"]
        scan = client.get(manifest["scans"]["t1ce"]["url"])
        assert scan.status_code == 200 and scan.data == pair["t1ce"].read_bytes()  # on the label map's grid


def test_flask_followup_refuses_a_missing_time_point(service, pair):
    client = create_app(service).test_client()
    data = {k: v for k, v in _fields(pair, "seg", "no_et").items() if not k.startswith("followup_")}
    res = client.post("/api/followup", data=data)
    assert res.status_code == 400 and "follow-up" in res.json["error"]
    res = client.post(
        "/api/followup", data={**_fields(pair, "seg", "no_et"), "followup_seg": (io.BytesIO(b"x"), "s.txt")}
    )
    assert res.status_code == 415 and "s.txt" in res.json["error"]


# ------------------------------------------------------------------------------- Gradio


def test_gradio_followup_gives_the_category_report_and_viewers(service, pair, tmp_path_factory):
    from gradio_client import handle_file
    from gradio_demo import demo_client

    downloads = tmp_path_factory.mktemp("followup_downloads")
    scans = [handle_file(pair["flair"]), handle_file(pair["t1ce"]), None]
    with demo_client(service.segmenter, tmp_path_factory.mktemp("gradio"), download_files=str(downloads)) as client:
        result, table, report, summary, baseline_viewer, followup_viewer = client.submit(
            *scans, handle_file(pair["no_et"]), *scans, handle_file(pair["seg"]), "auto", api_name="/followup"
        ).result(timeout=300)
        # No enhancing tumour at baseline, a measurable lesion at follow-up: progression.
        assert f"RANO category (imaging only): {PROGRESSIVE}" in result
        written = json.loads(Path(summary).read_text())
        assert written["response"] == PROGRESSIVE and written["baseline"]["spd_mm2"] == 0
        assert written["followup"]["spd_mm2"] == measure_file(pair["seg"]).to_json()["spd_mm2"] > 0
        rows = {row[0]: row[1:] for row in table["data"]}
        assert rows["SPD (mm²)"][:2] == [0, written["followup"]["spd_mm2"]]
        assert Path(report).read_bytes()[:5] == b"%PDF-"
        for name, frame in (("baseline", baseline_viewer), ("followup", followup_viewer)):
            src = re.search(r'<iframe id="followup-viewer-' + name + r'" src="([^"]+)"', frame)[1]
            with urllib.request.urlopen(client.src.rstrip("/") + "/" + html.unescape(src), timeout=60) as page:
                manifest = _manifest(page.read().decode())
            assert manifest["rano"]["spd_mm2"] == written[name]["spd_mm2"]
            assert manifest["time_point"] == ("baseline" if name == "baseline" else "follow-up")
