"""Upload handling: NIfTI sniffing, safe zip extraction, data-root paths, request folders."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.io import load_case
from bratseg.errors import InvalidCaseError
from bratseg.serving.uploads import (
    UploadError,
    case_from_uploads,
    request_workdir,
    resolve_under_root,
    sniff_nifti,
)
from bratseg.serving.zips import DicomStudy, case_from_zip
from bratseg.synthetic import write_synthetic_case


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    """A small synthetic case in BraTS 2020 naming."""
    return write_synthetic_case(tmp_path_factory.mktemp("uploads") / "SYNTHETIC_UP", shape=(48, 48, 24))


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------ case_from_uploads


def test_uploads_with_arbitrary_names_are_recognised_by_content(brats18_case: Path, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    flair = shutil.copy(next(brats18_case.glob("*_flair.nii.gz")), tmp_path / "upload-1.part")
    t1ce = shutil.copy(next(brats18_case.glob("*_t1ce.nii.gz")), tmp_path / "whatever.bin")
    case = case_from_uploads({"flair": Path(flair), "t1ce": Path(t1ce)}, case_id="Brats18_x", workdir=work)
    assert case.case_id == "Brats18_x"
    assert sorted(case.images) == ["flair", "t1ce"]
    # nibabel needs the suffix: the files are linked into the work folder, suffix added.
    assert case.images["flair"] == work / "flair" / "upload-1.part.nii.gz"
    assert case.images["t1ce"] == work / "t1ce" / "whatever.bin.nii.gz"
    assert Path(flair).is_file()  # the upload itself is left alone
    volumes = load_case(case)
    assert volumes.shape == (240, 240, 155)


def test_uncompressed_nifti_named_gz_is_renamed_to_nii(small_case, tmp_path: Path):
    raw = tmp_path / "flair.nii.gz"  # lies: the content is not gzipped
    nib.save(nib.load(small_case.images["flair"]), str(tmp_path / "real.nii"))
    os.replace(tmp_path / "real.nii", raw)
    assert sniff_nifti(raw) == (False, (48, 48, 24))
    case = case_from_uploads({"flair": raw, "t1ce": small_case.images["t1ce"]}, workdir=tmp_path / "w")
    assert case.images["flair"] == tmp_path / "w" / "flair" / "flair.nii"
    assert case.images["t1ce"] == small_case.images["t1ce"]  # correctly named: used as is
    assert load_case(case).shape == (48, 48, 24)


def test_case_id_comes_from_the_flair_name(small_case):
    case = case_from_uploads({"flair": small_case.images["flair"], "t1ce": small_case.images["t1ce"]})
    assert case.case_id == "SYNTHETIC_UP"


def test_text_file_named_nii_gz_is_refused_as_not_nifti(small_case, tmp_path: Path):
    fake = tmp_path / "scan_flair.nii.gz"
    fake.write_text("this is not an image\n" * 40)
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": fake, "t1ce": small_case.images["t1ce"]})
    assert err.value.status == 415
    assert "scan_flair.nii.gz" in str(err.value) and "not a NIfTI" in str(err.value)


def test_gzip_of_something_else_is_refused(small_case, tmp_path: Path):
    fake = tmp_path / "x.nii.gz"
    fake.write_bytes(gzip.compress(b"<html>" * 200))
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": small_case.images["flair"], "t1ce": fake})
    assert err.value.status == 415


def test_gzip_cut_inside_the_header_is_refused(small_case, tmp_path: Path):
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(small_case.images["flair"].read_bytes()[:60])
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": cut, "t1ce": small_case.images["t1ce"]})
    assert err.value.status == 400 and "truncated" in str(err.value)


def test_missing_required_modality_is_a_400(small_case):
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": small_case.images["flair"], "t2": small_case.images["t2"]})
    assert err.value.status == 400 and "T1CE" in str(err.value)


def test_unknown_modality_key_is_a_400(small_case):
    with pytest.raises(UploadError, match="unknown modality"):
        case_from_uploads({"flair": small_case.images["flair"], "t1ce": small_case.images["t1ce"], "dwi": Path("x")})


def test_header_declaring_a_huge_image_is_refused_before_loading(small_case, tmp_path: Path):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))  # header only: data never read
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": bomb, "t1ce": small_case.images["t1ce"]})
    assert err.value.status == 413 and "4000x4000x4000" in str(err.value)


def test_sniff_reads_big_endian_and_nifti2_headers(tmp_path: Path):
    data = np.ones((5, 6, 7), dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4), nib.Nifti1Header(endianness=">")), str(tmp_path / "big.nii"))
    assert (tmp_path / "big.nii").read_bytes()[:4] == b"\x00\x00\x01\x5c"  # 348, big-endian
    nib.save(nib.Nifti2Image(data, np.eye(4)), str(tmp_path / "two.nii.gz"))
    assert sniff_nifti(tmp_path / "big.nii") == (False, (5, 6, 7))
    assert sniff_nifti(tmp_path / "two.nii.gz") == (True, (5, 6, 7))


# --------------------------------------------------------------------------- case_from_zip


def _zip_case(case, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in case.images.values():
            zf.write(path, f"{prefix}{path.name}")
    return zip_path


def test_zip_of_a_nested_case_folder_is_extracted_in_the_workdir(small_case, tmp_path: Path):
    zipped = _zip_case(small_case, tmp_path / "case.zip", prefix="outer/SYNTHETIC_UP/")
    with zipfile.ZipFile(zipped, "a") as zf:  # what macOS Finder adds; it must not count as a case
        zf.writestr("__MACOSX/outer/SYNTHETIC_UP/._SYNTHETIC_UP_flair.nii.gz", b"resource fork")
    work = tmp_path / "work"
    work.mkdir()
    case = case_from_zip(zipped, work, max_uncompressed_bytes=50_000_000)
    assert case.case_id == "SYNTHETIC_UP"
    assert sorted(case.images) == ["flair", "t1", "t1ce", "t2"]
    assert all(p.resolve().is_relative_to(work.resolve()) for p in case.images.values())
    assert not list(work.rglob("__MACOSX"))
    assert load_case(case).shape == (48, 48, 24)


def test_zip_in_brats2023_naming(tmp_path: Path):
    case = write_synthetic_case(tmp_path / "BraTS-GLI-00009-000", shape=(32, 32, 16), naming="brats2023")
    work = tmp_path / "work"
    work.mkdir()
    got = case_from_zip(_zip_case(case, tmp_path / "c.zip"), work, 50_000_000)
    assert got.label_scheme == "brats2023" and sorted(got.images) == ["flair", "t1", "t1ce", "t2"]


@pytest.mark.parametrize("member", ["../evil.nii.gz", "a/../../evil.nii.gz", "/tmp/evil.nii.gz", "C:/evil.nii.gz"])
def test_zip_member_escaping_its_folder_is_refused(small_case, tmp_path: Path, member: str):
    zipped = _zip_case(small_case, tmp_path / "evil.zip")
    with zipfile.ZipFile(zipped, "a") as zf:
        zf.writestr(zipfile.ZipInfo(member), b"x")
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    with pytest.raises(UploadError) as err:
        case_from_zip(zipped, work, 50_000_000)
    assert err.value.status == 400 and "outside" in str(err.value)
    assert not (tmp_path / "deep" / "evil.nii.gz").exists() and not (tmp_path / "evil.nii.gz").exists()
    assert _listing(work) == []  # refused before anything was written


def test_zip_symlink_member_is_refused(small_case, tmp_path: Path):
    zipped = _zip_case(small_case, tmp_path / "link.zip")
    link = zipfile.ZipInfo("SYNTHETIC_UP_t2.nii.gz.lnk")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(zipped, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="symbolic link") as err:
        case_from_zip(zipped, tmp_path, 50_000_000)
    assert err.value.status == 400


def test_zip_bomb_over_the_declared_limit_is_refused(tmp_path: Path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"case/c_{i}_flair.nii", bytes(8_000_000))
    assert bomb.stat().st_size < 100_000
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UploadError) as err:
        case_from_zip(bomb, work, max_uncompressed_bytes=10_000_000)
    assert err.value.status == 413 and "zip bomb" in str(err.value)
    assert _listing(work) == []


def test_highly_compressed_member_under_the_limit_is_refused(tmp_path: Path):
    bomb = tmp_path / "ratio.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("case/c_flair.nii", bytes(5_000_000))
    with pytest.raises(UploadError, match="compressed") as err:
        case_from_zip(bomb, tmp_path, max_uncompressed_bytes=1_000_000_000)
    assert err.value.status == 413


def test_zip_whose_directory_understates_sizes_is_refused(tmp_path: Path):
    """The central directory may lie; extraction counts the bytes and checks the CRC."""
    liar = tmp_path / "liar.zip"
    payload = os.urandom(3_000_000)
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("case/c_flair.nii", payload)
    blob = bytearray(liar.read_bytes())
    # Patch the uncompressed size in the local header (offset 22) and central directory (24).
    struct.pack_into("<I", blob, 22, 1000)
    central = blob.rfind(b"PK\x01\x02")
    struct.pack_into("<I", blob, central + 24, 1000)
    liar.write_bytes(bytes(blob))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UploadError) as err:
        case_from_zip(liar, work, max_uncompressed_bytes=2_000_000)
    assert err.value.status in (400, 413)
    assert sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) <= 2_000_000


def test_too_many_members_is_refused(tmp_path: Path):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(10):
            zf.writestr(f"f{i}.txt", b"x")
    with pytest.raises(UploadError, match="members") as err:
        case_from_zip(many, tmp_path, 1_000_000, max_members=5)
    assert err.value.status == 400


def test_zipped_dicom_study_is_extracted_as_a_study(data_dir: Path, tmp_path: Path):
    from bratseg.native.inputs import dicom_inputs

    series = data_dir / "dicom" / "siemens" / "series"
    if not series.is_dir():
        pytest.skip(f"DICOM series not found at {series}")
    path = tmp_path / "Study 7.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(series.iterdir()):
            zf.write(file, f"scans/{file.name}")
    work = tmp_path / "work"
    work.mkdir()
    study = case_from_zip(path, work, 50_000_000)
    assert isinstance(study, DicomStudy) and study.case_id == "Study_7"
    assert study.folder.is_relative_to(work) and len(list(study.folder.rglob("*"))) == 1 + len(list(series.iterdir()))
    # What the native pipeline then reads: one series (a FLAIR by its tags), named after the zip.
    with pytest.raises(InvalidCaseError, match=r"Study_7: no series recognised as T1CE \(series 4 -> flair\)"):
        dicom_inputs(study.folder)
    # Memory is bounded by what the pixels decode to (float32), as for NIfTI uploads.
    with pytest.raises(UploadError, match="once loaded, more than") as err:
        case_from_zip(path, work, 50_000_000, max_case_bytes=100_000)
    assert err.value.status == 413


def test_zip_without_a_case_or_with_two_cases_is_refused(small_case, tmp_path: Path):
    empty = tmp_path / "none.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", b"no scans here")
    with pytest.raises(UploadError, match="no case found"):
        case_from_zip(empty, tmp_path, 1_000_000)
    two = tmp_path / "two.zip"
    _zip_case(small_case, two, prefix="A/")
    with zipfile.ZipFile(two, "a") as zf:
        for path in small_case.images.values():
            zf.write(path, f"B/{path.name.replace('SYNTHETIC_UP', 'OTHER')}")
    with pytest.raises(UploadError, match="2 cases"):
        case_from_zip(two, tmp_path, 50_000_000)


def test_zip_case_without_t1ce_names_the_missing_modality(small_case, tmp_path: Path):
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.write(small_case.images["flair"], f"SYNTHETIC_UP/{small_case.images['flair'].name}")
    with pytest.raises(InvalidCaseError, match="T1CE"):
        case_from_zip(partial, tmp_path, 50_000_000)


def test_not_a_zip_is_refused(tmp_path: Path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(UploadError, match="not a readable zip") as err:
        case_from_zip(bad, tmp_path, 1_000_000)
    assert err.value.status == 400


# ---------------------------------------------------------------------- resolve_under_root


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "case").mkdir(parents=True)
    (root / "case" / "a_flair.nii.gz").write_bytes(b"x")
    (tmp_path / "secret.nii.gz").write_bytes(b"secret")
    (root / "case" / "inside_link.nii.gz").symlink_to(root / "case" / "a_flair.nii.gz")
    (root / "out_link.nii.gz").symlink_to(tmp_path / "secret.nii.gz")
    (root / "out_dir").symlink_to(tmp_path, target_is_directory=True)
    return root


def test_paths_beneath_the_root_are_accepted(data_root: Path):
    target = (data_root / "case" / "a_flair.nii.gz").resolve()
    assert resolve_under_root("case/a_flair.nii.gz", data_root) == target
    assert resolve_under_root(str(data_root / "case" / "a_flair.nii.gz"), data_root) == target
    assert resolve_under_root("case/inside_link.nii.gz", data_root) == target


@pytest.mark.parametrize("path", ["../secret.nii.gz", "case/../../secret.nii.gz", "case/../a_flair.nii.gz"])
def test_dot_dot_is_refused(data_root: Path, path: str):
    with pytest.raises(UploadError, match=r"'\.\.'") as err:
        resolve_under_root(path, data_root)
    assert err.value.status == 400


def test_absolute_path_outside_the_root_is_refused(data_root: Path):
    for path in ("/etc/passwd", str(data_root.parent / "secret.nii.gz")):
        with pytest.raises(UploadError, match="outside the data root") as err:
            resolve_under_root(path, data_root)
        assert err.value.status == 403


@pytest.mark.parametrize("path", ["out_link.nii.gz", "out_dir/secret.nii.gz"])
def test_symlink_resolving_outside_the_root_is_refused(data_root: Path, path: str):
    with pytest.raises(UploadError, match="outside the data root") as err:
        resolve_under_root(path, data_root)
    assert err.value.status == 403


def test_missing_or_empty_path_is_a_400(data_root: Path):
    for path in ("case/none.nii.gz", "", "   ", "case"):
        with pytest.raises(UploadError) as err:
            resolve_under_root(path, data_root)
        assert err.value.status == 400


# ------------------------------------------------------------------------ request_workdir


def test_request_workdir_is_removed_after_success_and_failure(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with request_workdir() as work:
        assert work.parent == tmp_path and work.is_dir()
        (work / "sub").mkdir()
        (work / "sub" / "f.bin").write_bytes(b"1")
    assert not work.exists()
    with pytest.raises(RuntimeError), request_workdir() as work2:
        (work2 / "g.bin").write_bytes(b"1")
        raise RuntimeError("request failed")
    assert not work2.exists()
    assert list(tmp_path.iterdir()) == []
    other = tmp_path / "root"
    other.mkdir()
    with request_workdir(other) as work3:
        assert work3.parent == other and work3 != work
    assert list(other.iterdir()) == []


# ----------------------------------------------------------------- memory bound per case


def _header_only(path: Path, shape: tuple[int, ...], dtype, slope: float | None = None) -> Path:
    """A gzipped NIfTI whose header declares ``shape`` x ``dtype`` with no voxel data: what
    a decompression-bomb upload looks like before anything is loaded."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    if slope is not None:
        header.set_slope_inter(slope, 0.0)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    return path


def test_case_decoding_past_the_memory_bound_is_refused_from_its_headers(tmp_path: Path):
    """The issue's upload: a small gzip declaring 400 x 400 x 399 float64 (64 M voxels, under
    the voxel limit) decodes to 511 MB an image; two are refused before loading."""
    from bratseg.serving.uploads import DEFAULT_MAX_CASE_BYTES, DEFAULT_MAX_VOXELS

    shape = (400, 400, 399)
    assert np.prod(shape) < DEFAULT_MAX_VOXELS
    flair = _header_only(tmp_path / "big_flair.nii.gz", shape, np.float64)
    t1ce = _header_only(tmp_path / "big_t1ce.nii.gz", shape, np.float64)
    assert flair.stat().st_size < 1000
    with pytest.raises(UploadError) as err:
        case_from_uploads({"flair": flair, "t1ce": t1ce}, max_case_bytes=DEFAULT_MAX_CASE_BYTES)
    message = str(err.value)
    assert err.value.status == 413
    assert "1021 MB once loaded" in message and "big_flair.nii.gz 400x400x399 x 8 B" in message
    assert "500 MB" in message


def test_memory_bound_counts_loaded_bytes_not_stored_ones(tmp_path: Path):
    from bratseg.serving.uploads import read_nifti_header

    shape = (240, 240, 155)  # a BraTS grid
    cases = {
        "int16": (_header_only(tmp_path / "a.nii.gz", shape, np.int16), 4),  # held as float32
        "uint8": (_header_only(tmp_path / "b.nii.gz", shape, np.uint8), 4),
        "float64": (_header_only(tmp_path / "c.nii.gz", shape, np.float64), 8),
        "scaled int32": (_header_only(tmp_path / "d.nii.gz", shape, np.int32, slope=0.5), 8),
        "scaled int16": (_header_only(tmp_path / "e.nii.gz", shape, np.int16, slope=0.5), 4),
    }
    for name, (path, per_voxel) in cases.items():
        header = read_nifti_header(path)
        assert header.bytes_per_voxel == per_voxel, name
        assert header.decoded_bytes == 240 * 240 * 155 * per_voxel
    # Four BraTS images in float32 (143 MB) pass the default bound; a bound below them does not.
    files = {m: _header_only(tmp_path / f"case_{m}.nii.gz", shape, np.float32) for m in ("flair", "t1ce", "t1", "t2")}
    assert sorted(case_from_uploads(files).images) == ["flair", "t1", "t1ce", "t2"]
    with pytest.raises(UploadError, match="143 MB once loaded"):
        case_from_uploads(files, max_case_bytes=100_000_000)


def test_zipped_case_past_the_memory_bound_is_refused(tmp_path: Path):
    zipped = tmp_path / "big.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for m in ("flair", "t1ce"):
            zf.write(_header_only(tmp_path / f"BIG_{m}.nii.gz", (400, 400, 300), np.float64), f"BIG/BIG_{m}.nii.gz")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UploadError, match="once loaded") as err:
        case_from_zip(zipped, work, max_uncompressed_bytes=50_000_000)
    assert err.value.status == 413
