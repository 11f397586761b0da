"""The Decathlon Task01 layout, written by the test from a real BraTS 2018 case: found, split
into modalities and relabelled into the same volumes and labels as the original case."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.decathlon import split_case
from bratseg.data.io import load_case, load_decathlon_case
from bratseg.data.layout import case_from_folder, decathlon_cases, is_decathlon_folder
from bratseg.errors import InvalidCaseError

# BraTS 2020 value -> Decathlon value: NCR 1 -> 2 (non-enhancing), ED 2 -> 1 (edema), ET 4 -> 3.
TO_DECATHLON = {0: 0, 1: 2, 2: 1, 4: 3}


def _write_task(brats18_case: Path, root: Path, order: tuple[str, ...]) -> Path:
    case = case_from_folder(brats18_case)
    stack = np.stack([np.asanyarray(nib.load(case.images[m]).dataobj) for m in order], axis=-1)
    reference = nib.load(case.images["flair"])
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(stack, reference.affine), root / "imagesTr" / "BRATS_001.nii.gz")
    seg = np.asanyarray(nib.load(case.label).dataobj).astype(np.uint8)
    lut = np.zeros(256, dtype=np.uint8)
    for brats, decathlon in TO_DECATHLON.items():
        lut[brats] = decathlon
    nib.save(nib.Nifti1Image(lut[seg], reference.affine), root / "labelsTr" / "BRATS_001.nii.gz")
    names = {"flair": "FLAIR", "t1": "T1w", "t1ce": "t1gd", "t2": "T2w"}
    meta = {"name": "BRATS", "modality": {str(i): names[m] for i, m in enumerate(order)}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("order", [("flair", "t1", "t1ce", "t2"), ("t2", "t1ce", "flair", "t1")])
def test_decathlon_case_split_and_relabelled(brats18_case: Path, tmp_path: Path, order) -> None:
    root = _write_task(brats18_case, tmp_path / "Task01_BrainTumour", order)
    assert is_decathlon_folder(root)
    (case,) = decathlon_cases(root)
    assert case.case_id == "BRATS_001" and case.label_scheme == "decathlon"
    assert case.channels == {m: i for i, m in enumerate(order)}
    volumes = load_decathlon_case(case)
    original = load_case(case_from_folder(brats18_case))
    assert sorted(volumes.images) == sorted(original.images)
    for modality, data in original.images.items():
        assert np.array_equal(volumes.images[modality], data), modality
    assert np.array_equal(volumes.label, original.label)
    assert np.allclose(volumes.affine, original.affine) and volumes.shape == original.shape
    # Split into BraTS naming, the case reads back through the ordinary layout.
    split = case_from_folder(split_case(case, tmp_path / "split").folder)
    again = load_case(split)
    assert np.array_equal(again.label, original.label)
    assert np.array_equal(again.images["t1ce"], original.images["t1ce"])


def test_decathlon_bad_input(brats18_case: Path, tmp_path: Path) -> None:
    root = _write_task(brats18_case, tmp_path / "Task01", ("flair", "t1", "t1ce", "t2"))
    seg_path = root / "labelsTr" / "BRATS_001.nii.gz"
    seg = nib.load(seg_path)
    bad = np.asanyarray(seg.dataobj).copy()
    bad[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(bad, seg.affine), seg_path)
    (case,) = decathlon_cases(root)
    with pytest.raises(InvalidCaseError, match=r"BRATS_001.nii.gz: label values \[5\] are not in \[0, 1, 2, 3\]"):
        load_decathlon_case(case)
    image_path = root / "imagesTr" / "BRATS_001.nii.gz"
    image = nib.load(image_path)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[..., 0], image.affine), image_path)
    with pytest.raises(InvalidCaseError, match="expected a 4-D image with 4 modalities"):
        load_decathlon_case(case)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "T1w", "1": "T2w"}}))
    with pytest.raises(InvalidCaseError, match="dataset.json: its modalities .* lack flair, t1ce"):
        decathlon_cases(root)
    with pytest.raises(InvalidCaseError, match="is not a Decathlon task folder"):
        decathlon_cases(tmp_path)


def test_predict_a_decathlon_task(brats18_case: Path, tmp_path: Path) -> None:
    from bratseg.cli import main

    task = _write_task(brats18_case, tmp_path / "Task01_BrainTumour", ("flair", "t1", "t1ce", "t2"))
    out = tmp_path / "pred"
    assert main(["predict", str(task), "--output", str(out), "--quiet"]) == 0
    labels = np.asanyarray(nib.load(out / "BRATS_001.nii.gz").dataobj)
    reference = np.asanyarray(nib.load(case_from_folder(brats18_case).label).dataobj)
    # The model sees the same four sequences as in BraTS naming: the tumour is found.
    wt, ref = labels > 0, reference > 0
    assert 2 * (wt & ref).sum() / (wt.sum() + ref.sum()) > 0.7
    assert (out / "volumes.csv").is_file()
