"""Shared fixtures: the real BraTS data beside the checkout, synthetic cases, models.

The real scans are read from ``$BRATSEG_DATA`` (default ``../shared/data`` beside the
repository) and never copied into it; tests that need them skip with a clear message when
they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real BraTS data not found at {path} (set BRATSEG_DATA to the data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the real data (brats18/, tcga/, unlabeled/, metrics/)."""
    return _need(DATA_DIR)


@pytest.fixture(scope="session")
def brats18_dir(data_dir: Path) -> Path:
    return _need(data_dir / "brats18")


@pytest.fixture(scope="session")
def brats18_case(brats18_dir: Path) -> Path:
    """One labelled BraTS 2018 case folder (a validation case of the shipped model)."""
    return _need(brats18_dir / "Brats18_2013_11_1")


@pytest.fixture(scope="session")
def tcga_case(data_dir: Path) -> Path:
    return _need(data_dir / "tcga" / "TCGA-DU-7294")


@pytest.fixture(scope="session")
def native_dir(data_dir: Path) -> Path:
    """The raw clinical TCGA-FG-6692 scans (with skull, each sequence on its own grid) and the
    reference pipeline's outputs beside them."""
    return _need(data_dir / "native" / "TCGA-FG-6692")


@pytest.fixture(scope="session")
def brats2023_case(data_dir: Path) -> Path:
    return _need(data_dir / "unlabeled" / "BraTS-GLI-00001-000")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Four small synthetic cases (96 x 96 x 48) in BraTS 2020 naming."""
    from bratseg.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, 4, shape=(96, 96, 48))
    return root


@pytest.fixture(scope="session")
def synthetic_case(tmp_path_factory):
    """One full-size (240 x 240 x 155) synthetic case."""
    from bratseg.synthetic import write_synthetic_case

    return write_synthetic_case(tmp_path_factory.mktemp("synthetic_full") / "SYNTHETIC_FULL", seed=3)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a busy 2-core machine two threads contend with the
    other processes and run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache(synthetic_root: Path, tmp_path_factory) -> Path:
    """The synthetic cases cached as 64 x 64 slices (shared by the training test modules)."""
    from bratseg.preprocessing.cache import build_cache
    from bratseg.preprocessing.config import PreprocessingConfig

    out = tmp_path_factory.getbasetemp() / "tiny_cache_64"
    if not (out / "split.json").exists():
        build_cache(synthetic_root, out, PreprocessingConfig(crop_size=(64, 64)), workers=1, progress=False)
    return out


# Two short epochs of a tiny network: teachers whose probabilities are not all near 0.5.
TINY_TRAINING = dict(
    epochs=2, batch_size=8, max_train_batches=4, num_workers=0, augment=False, modality_dropout=0.0, threads=1
)


@pytest.fixture(scope="session")
def tiny_teachers(tiny_cache: Path, tmp_path_factory) -> list[Path]:
    """Two teachers of fold 0 (of 2) of the tiny cache, each trained on one inner fold of its
    training cases (float32 model folders)."""
    from bratseg.training.config import TrainConfig
    from bratseg.training.export import export_run
    from bratseg.training.trainer import train

    root = tmp_path_factory.mktemp("teachers")
    folders = []
    for inner in range(2):
        config = TrainConfig(**TINY_TRAINING, fold=0, num_folds=2, inner_fold=inner, inner_num_folds=2, seed=inner)
        run = train(tiny_cache, root / f"inner_{inner}", config)
        folders.append(export_run(run, root / f"model_{inner}", dtype="float32", checkpoint="last"))
    return folders


@pytest.fixture(scope="session")
def tiny_soft_targets(tiny_cache: Path, tiny_teachers: list[Path], tmp_path_factory) -> Path:
    """Teacher probabilities of ``tiny_teachers`` for the training cases of fold 0 (of 2)."""
    from bratseg.inference.teacher import write_soft_targets
    from bratseg.training.config import TrainConfig
    from bratseg.training.trainer import load_split

    cases = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))["train"]
    out = tmp_path_factory.mktemp("soft") / "fold_0.npy"
    return write_soft_targets(tiny_cache, tiny_teachers, out, cases=cases, progress=False)
