"""A model folder (``bratseg export`` output, or a Hub repo's snapshot) loaded for inference:
its network with BatchNorm folded, its metadata, and the version of its weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from bratseg.errors import ModelLoadError
from bratseg.inference.network_cache import load_folded_network, store_description
from bratseg.model.hub import resolve_model

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "brats18-unet-resnet18"
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessing.json", "bratseg.json")


def load_model(model_dir: str | Path, **hub_kwargs) -> tuple[torch.nn.Module, dict, dict]:
    """The network of a model folder (or Hub repo id: :func:`bratseg.model.hub.resolve_model`
    with ``hub_kwargs``), ready for inference, its ``bratseg.json`` metadata and SMP's
    ``config.json``.

    BatchNorm is folded into the convolution before it, which saves a pass over each feature
    map (BENCHMARKS.md). The first load of a model goes through SMP's ``from_pretrained``
    (safetensors only: nothing is unpickled) and torch.fx; it stores the folded network's
    structure in a cache so that later loads, in any process, rebuild it with torch alone
    (:mod:`bratseg.inference.network_cache`: about 3 CPU-s less per CLI call).
    """
    model_dir = resolve_model(model_dir, **hub_kwargs) or SHIPPED_MODEL
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: missing {', '.join(missing)}; export the run with `bratseg export`")
    try:
        meta = json.loads((model_dir / "bratseg.json").read_text())
        config = json.loads((model_dir / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{model_dir}: unreadable model metadata ({exc})") from None
    network = load_folded_network(model_dir)
    if network is not None:
        return network, meta, config
    import segmentation_models_pytorch as smp
    from safetensors import SafetensorError

    try:
        model = smp.from_pretrained(str(model_dir)).float().eval()
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as exc:
        raise ModelLoadError(f"{model_dir}: the model files do not agree ({exc})") from None
    return store_description(model_dir, model) or model, meta, config


def weights_version(model_dir: str | Path) -> str:
    """``sha256:`` and the first 12 hex digits of a model folder's weights file."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:12]}"
