"""Native scans through the web front ends (bratseg.serving.web_prediction): the raw TCGA-FG-6692 case
(with skull, FLAIR and T1ce each on their own 5.5 mm grid) uploaded as NIfTI to the Flask API,
and the same scans as a zipped DICOM study to the Gradio demo. Both must take the native
pipeline under the default ``preprocess=auto``, say which steps ran, and return labels on the
patient's T1ce grid, with the viewer's files on that grid too."""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from gradio_demo import demo_client
from pydicom.uid import generate_uid

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),  # Gradio's queue, not ours
]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _scans(native_dir: Path) -> dict[str, Path]:
    return {"flair": next(native_dir.glob("*_fla.nii.gz")), "t1ce": next(native_dir.glob("*_t1c.nii.gz"))}


def _nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


@pytest.fixture(scope="module")
def segmenter():
    import bratseg

    return bratseg.from_pretrained()


def test_flask_takes_native_nifti_through_the_native_pipeline(segmenter, native_dir: Path) -> None:
    from bratseg.serving.flask_app import create_app
    from bratseg.serving.service import InferenceService

    app = create_app(InferenceService(segmenter=segmenter, max_concurrent=1), max_upload_bytes=200 * 1024 * 1024)
    client = app.test_client()
    scans = _scans(native_dir)
    data = {m: (io.BytesIO(p.read_bytes()), p.name) for m, p in scans.items()}
    res = client.post("/api/predict", data=data, content_type="multipart/form-data")
    assert res.status_code == 200, res.get_data(as_text=True)
    body = res.get_json()
    t1ce = nib.load(scans["t1ce"])
    info = body["preprocessing"]
    assert info["path"] == "native" and info["reference"] == "t1ce"
    assert any(step.startswith("native preprocessing: ") for step in info["steps"])
    for name in ("read", "skull-strip", "co-register", "atlas", "to BraTS space", "segment", "back to the patient"):
        assert any(step.startswith(name) for step in info["steps"]), (name, info["steps"])
    assert body["shape"] == list(t1ce.shape) and body["volumes_cm3"]["whole tumour"] > 1.0
    assert np.allclose(body["spacing"], t1ce.header.get_zooms()[:3], atol=1e-3)
    labels = _nifti(client.get(body["labels_url"]).data)
    assert labels.shape == t1ce.shape and np.allclose(labels.affine, t1ce.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(labels.dataobj)).tolist()) <= {0, 1, 2, 4}
    # The viewer draws the labels over the patient's scans, both on the T1ce grid.
    viewer_t1ce = _nifti(client.get(f"{body['viewer_url'].replace('/viewer/', '/api/result/')}/t1ce.nii.gz").data)
    flair = _nifti(client.get(f"{body['viewer_url'].replace('/viewer/', '/api/result/')}/flair.nii.gz").data)
    assert viewer_t1ce.shape == flair.shape == t1ce.shape and np.allclose(flair.affine, t1ce.affine, atol=1e-4)
    np.testing.assert_allclose(np.asanyarray(viewer_t1ce.dataobj), np.asanyarray(t1ce.dataobj), atol=1e-3)
    assert body["confidence"] is not None and 0.0 <= body["confidence"]["score"] <= 1.0
    # The PDF report lists the native steps before the model's own.
    from pypdf import PdfReader

    text = " ".join(PdfReader(io.BytesIO(client.get(body["report_url"]).data)).pages[0].extract_text().split())
    assert "skull-strip" in text and "back to the patient" in text and "z-score" in text, text
    # The HTML page states the preprocessing too.
    data = {m: (io.BytesIO(p.read_bytes()), p.name) for m, p in scans.items()}
    page = client.post("/outpg", data=data, content_type="multipart/form-data").get_data(as_text=True)
    assert "Preprocessing: native scans, skull-stripped and registered" in page and "skull-strip" in page


def _write_dicom_series(image: sitk.Image, folder: Path, description: str, number: int, study_uid: str) -> None:
    """``image`` as a DICOM MR series, one file per slice, with its real geometry."""
    folder.mkdir(parents=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    series_uid = generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))
        tags = {
            "0008|0016": MR_IMAGE_STORAGE,
            "0008|0018": generate_uid(),
            "0008|0060": "MR",
            "0008|103e": description,
            "0018|0050": f"{image.GetSpacing()[2]:.4f}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0011": str(number),
            "0020|0013": str(k + 1),
            "0020|0032": position,
            "0020|0037": orientation,
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k + 1:04d}.dcm"))
        writer.Execute(plane)


@pytest.fixture(scope="module")
def dicom_zip(native_dir: Path, tmp_path_factory) -> Path:
    """The native FLAIR and T1ce as a zipped DICOM study, one subfolder per series."""
    root = tmp_path_factory.mktemp("dicom")
    study = root / "TCGA-FG-6692-DICOM"
    study_uid = generate_uid()
    scans = _scans(native_dir)
    _write_dicom_series(sitk.ReadImage(str(scans["flair"])), study / "s5", "AX FLAIR", 5, study_uid)
    _write_dicom_series(sitk.ReadImage(str(scans["t1ce"])), study / "s13", "AX T1 POST GAD", 13, study_uid)
    path = root / "TCGA-FG-6692-DICOM.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(study.rglob("*.dcm")):
            zf.write(file, file.relative_to(root).as_posix())
    return path


def test_gradio_takes_a_zipped_dicom_study(segmenter, dicom_zip: Path, native_dir: Path, tmp_path_factory) -> None:
    pytest.importorskip("gradio_client")
    from gradio_client import handle_file

    downloads = str(tmp_path_factory.mktemp("downloads"))
    with demo_client(segmenter, tmp_path_factory.mktemp("gradio"), download_files=downloads) as client:
        job = client.submit(
            None, None, None, None, handle_file(dicom_zip), "whole tumour", "axial", api_name="/segment"
        )
        overlay, _legend, _slice, volumes, labels_file, _seconds, status, viewer, *_ = job.result(timeout=600)
    assert "Segmented **TCGA-FG-6692-DICOM**" in status
    assert "Native scans: skull-stripped, co-registered and registered to BraTS space" in status
    assert re.search(r"flair: series 5 'AX FLAIR' \(SeriesDescription", status), status
    assert re.search(r"t1ce: series 13 'AX T1 POST GAD'", status), status
    t1ce = nib.load(_scans(native_dir)["t1ce"])
    labels = nib.load(labels_file)
    # The DICOM series rebuild the T1ce's voxels at the same world positions; DICOM readers stack
    # slices along the slice normal, which this NIfTI's slice order runs against.
    assert labels.shape == t1ce.shape
    reverse_slices = np.diag([1.0, 1.0, -1.0, 1.0])
    reverse_slices[2, 3] = t1ce.shape[2] - 1
    assert np.allclose(labels.affine, t1ce.affine @ reverse_slices, atol=1e-3)
    assert (np.asanyarray(labels.dataobj) > 0).sum() > 0
    assert "viewer" in viewer
    whole = [row for row in volumes["data"] if row[0].lower().startswith("whole")]
    assert whole and float(whole[0][1]) > 1.0, volumes
