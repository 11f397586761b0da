"""The Python inference API: :class:`bratseg.Segmenter`, model loading and BatchNorm folding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import bratseg
from bratseg.data.io import load_case
from bratseg.data.layout import case_from_folder
from bratseg.errors import ModelLoadError
from bratseg.inference.predictor import SHIPPED_MODEL, Segmenter, load_model
from bratseg.model.precision import cpu_has_bf16
from bratseg.synthetic import write_synthetic_case

BRATS2020_LABELS = {0, 1, 2, 4}


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return bratseg.from_pretrained()


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    return write_synthetic_case(tmp_path_factory.mktemp("small") / "SYNTHETIC_SMALL", shape=(96, 96, 40), seed=1)


def _shipped_smp():
    import segmentation_models_pytorch as smp

    return smp.from_pretrained(str(SHIPPED_MODEL)).eval()


def test_folded_model_matches_smp_on_shipped_weights():
    """BatchNorm folding must not change what the shipped network computes."""
    reference = _shipped_smp()
    folded, meta, config = load_model(SHIPPED_MODEL)
    assert meta["target"] == "regions"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert config["in_channels"] == 4
    x = torch.randn(2, 4, 160, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = reference(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)


def test_folding_uses_the_running_statistics(tmp_path, monkeypatch):
    """Folding must use the running statistics, not only the affine parameters: on the first
    load (fx) and on the network rebuilt from the cache."""
    import segmentation_models_pytorch as smp

    from bratseg.inference import network_cache

    monkeypatch.setenv("BRATSEG_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    reference = smp.Unet("resnet34", encoder_weights=None, in_channels=4, classes=3)
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    reference.eval()
    reference.save_pretrained(tmp_path / "model")
    folded = network_cache.store_description(tmp_path / "model", reference)
    rebuilt = network_cache.load_folded_network(tmp_path / "model")
    x = torch.randn(1, 4, 96, 64)
    for network in (folded, rebuilt):
        assert network is not None and not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
        with torch.inference_mode():
            expected, got = reference(x), network(x)
        assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)


def test_other_architectures_load_and_predict(tmp_path, small_case):
    import segmentation_models_pytorch as smp

    model_dir = tmp_path / "scse"
    smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=3, decoder_attention_type="scse").save_pretrained(
        model_dir
    )
    for name in ("preprocessing.json", "bratseg.json"):
        shutil.copy(SHIPPED_MODEL / name, model_dir / name)
    seg = Segmenter.from_pretrained(model_dir)
    labels = seg.predict(small_case)
    assert labels.shape == (96, 96, 40) and set(np.unique(labels)) <= BRATS2020_LABELS


def test_segment_returns_labels_volumes_and_time(segmenter, small_case, tmp_path):
    pred = segmenter.segment(small_case)
    assert pred.labels.shape == (96, 96, 40) and pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= BRATS2020_LABELS
    assert pred.seconds > 0
    volumes = pred.region_volumes()
    assert volumes["whole tumour"] == pytest.approx(np.isin(pred.labels, (1, 2, 4)).sum() / 1000, abs=1e-3)
    out = pred.save(tmp_path / "pred.nii.gz")
    img = nib.load(out)
    src = nib.load(small_case.images["flair"])
    assert np.array_equal(np.asanyarray(img.dataobj), pred.labels)
    assert np.allclose(img.affine, src.affine)
    assert img.header.get_zooms() == src.header.get_zooms()


def test_predict_accepts_folder_case_and_volumes(segmenter, small_case):
    from_case = segmenter.predict(small_case)
    assert np.array_equal(segmenter.predict(small_case.folder), from_case)
    assert np.array_equal(segmenter.predict(str(small_case.folder)), from_case)
    assert np.array_equal(segmenter.predict(load_case(small_case, with_label=False)), from_case)


def test_batches_cover_every_brain_slice_once(segmenter):
    zs = np.arange(3, 150)
    batches = segmenter._batches(zs)
    assert np.array_equal(np.concatenate(batches), zs)
    sizes = {len(b) for b in batches}
    assert max(sizes) <= segmenter.batch_size and max(sizes) - min(sizes) <= 1
    assert segmenter._batches(np.array([], dtype=np.int64)) == []


def test_batch_size_does_not_change_the_result(small_case):
    """Batching is a speed setting: in fp32 the labels do not depend on it."""
    a = bratseg.from_pretrained(batch_size=3, precision="fp32").predict(small_case)
    b = bratseg.from_pretrained(batch_size=64, precision="fp32").predict(small_case)
    assert (a != b).mean() < 1e-4


def test_precision_choice():
    auto = bratseg.from_pretrained()
    assert auto.precision == ("bf16" if cpu_has_bf16() else "fp32")
    assert bratseg.from_pretrained(precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        bratseg.from_pretrained(precision="fp16")


def test_bf16_labels_agree_with_fp32(small_case):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    fp32 = bratseg.from_pretrained(precision="fp32").predict(small_case)
    bf16 = bratseg.from_pretrained(precision="bf16").predict(small_case)
    brain = load_case(small_case, with_label=False).images["flair"] != 0
    assert (fp32[brain] == bf16[brain]).mean() > 0.98


def test_flip_tta_output(segmenter, small_case):
    tta = Segmenter(segmenter.model, segmenter.preprocessing, flip_tta=True)
    labels = tta.predict(small_case)
    assert labels.shape == (96, 96, 40) and set(np.unique(labels)) <= BRATS2020_LABELS


def test_model_folder_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Segmenter.from_pretrained(tmp_path / "absent")
    partial = tmp_path / "partial"
    shutil.copytree(SHIPPED_MODEL, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        Segmenter.from_pretrained(partial)
    mismatch = tmp_path / "mismatch"
    shutil.copytree(SHIPPED_MODEL, mismatch)
    prep = json.loads((mismatch / "preprocessing.json").read_text())
    prep["modalities"] = ["flair", "t1ce"]
    (mismatch / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(ModelLoadError, match="4 input channels"):
        Segmenter.from_pretrained(mismatch)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(SHIPPED_MODEL, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="do not agree"):
        Segmenter.from_pretrained(corrupt)


def _folder_with(tmp_path: Path, name: str, **meta_changes) -> Path:
    """A copy of the shipped model folder whose bratseg.json has ``meta_changes`` (None removes)."""
    folder = tmp_path / name
    shutil.copytree(SHIPPED_MODEL, folder)
    meta = json.loads((folder / "bratseg.json").read_text())
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    (folder / "bratseg.json").write_text(json.dumps(meta))
    return folder


def test_shipped_folder_states_the_post_processing_cross_validation_chose():
    meta = json.loads((SHIPPED_MODEL / "bratseg.json").read_text())
    assert meta["postprocessing"] == {"min_component_fraction": 0.1} and meta["tta"] == "none"
    segmenter = Segmenter.from_pretrained()
    assert segmenter.min_component_fraction == 0.1 and not segmenter.flip_tta


def test_post_processing_and_tta_come_from_the_model_folder(tmp_path, segmenter, small_case):
    """A folder whose bratseg.json says otherwise gets that behaviour; a folder without the
    block gets the defaults; arguments given to from_pretrained win over the folder."""
    other = _folder_with(tmp_path, "other", postprocessing={"min_component_fraction": 0.0}, tta="flips")
    loaded = Segmenter.from_pretrained(other)
    assert loaded.min_component_fraction == 0.0 and loaded.flip_tta
    explicit = Segmenter(segmenter.model, segmenter.preprocessing, flip_tta=True, min_component_fraction=0.0)
    assert np.array_equal(loaded.predict(small_case), explicit.predict(small_case))
    overridden = Segmenter.from_pretrained(other, flip_tta=False, min_component_fraction=0.2)
    assert overridden.min_component_fraction == 0.2 and not overridden.flip_tta
    bare = Segmenter.from_pretrained(_folder_with(tmp_path, "bare", postprocessing=None, tta=None))
    assert bare.min_component_fraction == 0.1 and not bare.flip_tta


def test_model_folder_metadata_errors(tmp_path):
    """What this bratseg cannot apply is refused at load, naming the folder and the entry."""
    cases = {
        "classes": ({"target": "classes"}, "target 'classes' is not supported"),
        "unknown": ({"postprocessing": {"relabel_small_enhancing": 50}}, "unknown keys"),
        "fraction": ({"postprocessing": {"min_component_fraction": 1.5}}, "min_component_fraction"),
        "tta": ({"tta": "rotations"}, "tta must be one of"),
    }
    for name, (changes, message) in cases.items():
        with pytest.raises(ModelLoadError, match=f"{name}: bratseg.json's .*{message}"):
            Segmenter.from_pretrained(_folder_with(tmp_path, name, **changes))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = pred.sum() + ref.sum()
    return 1.0 if denom == 0 else 2.0 * float((pred & ref).sum()) / float(denom)


@pytest.mark.slow
def test_shipped_model_quality_on_a_validation_case(segmenter, brats18_case: Path):
    """Only once the real model ships: the placeholder is trained for a few batches."""
    meta = json.loads((SHIPPED_MODEL / "bratseg.json").read_text())
    if (meta.get("epoch") or 0) < 5:
        pytest.skip(f"the shipped model is the placeholder (epoch {meta.get('epoch')})")
    case = case_from_folder(brats18_case)
    labels = segmenter.predict(case)
    ref = load_case(case).label  # internal 0..3
    assert _dice(labels > 0, ref > 0) > 0.8


# --------------------------------------------------------------------------------------------
# The network cache: a fresh process loads the folded network with torch alone
# --------------------------------------------------------------------------------------------


def test_cached_network_computes_exactly_what_smp_folded_computes(tmp_path, monkeypatch):
    from torch.fx.experimental.optimization import fuse

    from bratseg.inference import network_cache

    monkeypatch.setenv("BRATSEG_CACHE_DIR", str(tmp_path / "cache"))
    reference = fuse(_shipped_smp())  # what the SMP path folds with
    assert network_cache.load_folded_network(SHIPPED_MODEL) is None  # empty cache
    load_model(SHIPPED_MODEL)  # the SMP path stores the description
    assert len(list((tmp_path / "cache" / "networks").glob("*.json"))) == 1
    rebuilt = network_cache.load_folded_network(SHIPPED_MODEL)
    assert rebuilt is not None and not any(isinstance(m, torch.nn.BatchNorm2d) for m in rebuilt.modules())
    x = torch.randn(2, 4, 160, 192, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), reference(x))


def test_fresh_process_loads_without_smp_and_predicts_the_same(tmp_path, small_case, segmenter):
    import subprocess
    import sys

    env = {**__import__("os").environ, "BRATSEG_CACHE_DIR": str(tmp_path / "cache")}
    probe = (
        "import sys, numpy as np, bratseg; labels = bratseg.from_pretrained().predict(sys.argv[1]); "
        "np.save(sys.argv[2], labels); print('SMP', 'segmentation_models_pytorch' in sys.modules)"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe, str(small_case.folder), str(tmp_path / f"{i}.npy")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for i in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert "SMP True" in runs[0].stdout and "SMP False" in runs[1].stdout  # traced once, then cached
    expected = segmenter.predict(small_case)
    for i in range(2):
        assert np.array_equal(np.load(tmp_path / f"{i}.npy"), expected)


def test_damaged_or_undescribable_cache_falls_back_to_smp(tmp_path, monkeypatch, small_case):
    import segmentation_models_pytorch as smp

    from bratseg.inference import network_cache

    monkeypatch.setenv("BRATSEG_CACHE_DIR", str(tmp_path / "cache"))
    load_model(SHIPPED_MODEL)
    (stored,) = (tmp_path / "cache" / "networks").glob("*.json")
    stored.write_text('{"format": 1, "layers": {"encoder.conv1": {"class": "os.system"}}}')
    assert network_cache.load_folded_network(SHIPPED_MODEL) is None
    model, _, _ = load_model(SHIPPED_MODEL)  # loads through SMP again, and stores a sound one
    assert network_cache.load_folded_network(SHIPPED_MODEL) is not None
    # efficientnet's traced graph reads tensors outside its layers: not described, still folded.
    model_dir = tmp_path / "effnet"
    smp.Unet("efficientnet-b0", encoder_weights=None, in_channels=4, classes=3).save_pretrained(model_dir)
    for name in ("preprocessing.json", "bratseg.json"):
        shutil.copy(SHIPPED_MODEL / name, model_dir / name)
    Segmenter.from_pretrained(model_dir)
    assert network_cache.load_folded_network(model_dir) is None
    assert Segmenter.from_pretrained(model_dir).predict(small_case).shape == (96, 96, 40)
