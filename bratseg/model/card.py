"""The model card of a model folder (its ``README.md``), as the Hugging Face Hub reads it.

Built with ``huggingface_hub.ModelCard``/``ModelCardData``: a YAML metadata header (library,
tags, licence, datasets and a ``model-index`` with the Dice figures the run measured, so that
the Hub page shows them) above a Markdown description. :func:`check_card` parses a card back
the way the Hub does and refuses one without the metadata a model page needs; the Hub's own
validation runs when a folder is published (:func:`bratseg.model.hub.push_model_folder`).

Example:
    >>> from bratseg.model.card import check_card, model_index_dice
    >>> card = check_card(model_card_text({"target": "regions", "regions": ["WT", "TC", "ET"],
    ...     "train_config": {"encoder": "resnet18", "epochs": 2, "patience": 2, "lr": 0.001, "batch_size": 8,
    ...     "modality_dropout": 0.0}, "checkpoint": "best", "epoch": 2,
    ...     "validation_slice_dice": {"WT": 0.81, "TC": 0.7, "ET": None}},
    ...     modalities=["flair", "t1ce"], crop_size=(64, 64), resize=None))
    >>> card.data.library_name, model_index_dice(card)
    ('segmentation-models-pytorch', {'WT': 0.81, 'TC': 0.7})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.errors import BratsegError
from bratseg.model.metadata import InferenceSettings

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

LIBRARY_NAME = "segmentation-models-pytorch"  # the weights and config.json are SMP's format
LICENSE = "mit"
TAGS = ["bratseg", "medical-imaging", "brain-tumour", "brats", "mri", "image-segmentation", "research-only"]
DATASETS = ["BraTS"]
PIPELINE_TAG = "image-segmentation"
# Metadata a card must carry for the Hub page (and for check_card).
REQUIRED_METADATA = ("library_name", "license", "tags")


def model_card_text(
    meta: dict, modalities: list[str], crop_size: tuple[int, int], resize: tuple[int, int] | None, repo_id: str = ""
) -> str:
    """The card of an exported model folder, from its ``bratseg.json`` (``meta``) and
    preprocessing: metadata header with a ``model-index`` of the validation Dice the run
    measured (none for a run trained on every case), then the description."""
    from huggingface_hub import EvalResult, ModelCardData

    tc = meta["train_config"]
    name = repo_id or f"bratseg U-Net ({tc['encoder']} encoder)"
    dice = {k: v for k, v in (meta.get("validation_slice_dice") or {}).items() if v is not None}
    epoch = meta.get("epoch")
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Brain tumour segmentation",
            dataset_type="brats",
            dataset_name="BraTS cases held out from training (the run's validation split)",
            dataset_split="validation",
            metric_type="dice",
            metric_name=f"Dice {region} (slices, epoch {epoch})",
            metric_value=round(float(value), 4),
        )
        for region, value in dice.items()
    ]
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=LICENSE,
        tags=list(TAGS),
        datasets=list(DATASETS),
        pipeline_tag=PIPELINE_TAG,
        model_name=name,
        eval_results=results or None,
    )
    return f"---\n{data.to_yaml()}\n---\n{_description(meta, modalities, crop_size, resize, dice, repo_id)}"


def _description(
    meta: dict,
    modalities: list[str],
    crop_size: tuple[int, int],
    resize: tuple[int, int] | None,
    dice: dict[str, float],
    repo_id: str,
) -> str:
    tc = meta["train_config"]
    resized = f", resized to {resize[0]} x {resize[1]}" if resize else ""
    output = "sigmoid maps of the overlapping regions " + ", ".join(meta["regions"])
    dice_line = ", ".join(f"{k} {v:.3f}" for k, v in dice.items()) or "n/a"
    validation_line = (
        'Trained on every case of its cache, none held out (nnU-Net\'s fold "all"), so the run measured no '
        "held-out Dice."
        if tc.get("all_cases")
        else f"Validation Dice on the cached slices of the held-out cases at that epoch (mean over slices, "
        f"measured by the training run; the `model-index` above): {dice_line}."
    )
    settings = InferenceSettings.from_metadata(meta)
    removal = (
        f"connected components of the whole tumour smaller than {settings.min_component_fraction * 100:g} % of "
        "the largest are removed"
        if settings.min_component_fraction
        else "no connected components are removed"
    )
    tta = "predictions averaged over the in-plane flips" if settings.flip_tta else "no test-time augmentation"
    threshold = meta.get("confidence_threshold")
    threshold_line = f"\n- Cases with a confidence score below {threshold} are flagged for review." if threshold else ""
    where = repo_id or "path/to/this/folder"
    return f"""
# bratseg U-Net ({tc["encoder"]} encoder)

A 2-D segmentation-models-pytorch U-Net that segments brain tumours in axial slices of
skull-stripped, co-registered BraTS-space MRI; it runs with the bratseg package.
**Research and teaching use only; not a medical device.**

- Input channels, in order: {", ".join(modalities)} (z-scored inside the brain,
  window {crop_size[0]} x {crop_size[1]} centred on the brain{resized});
  missing optional modalities are fed as zeros (trained with modality dropout
  {tc["modality_dropout"]}).
- Output: {output};
  written as BraTS 2020 labels 0/1/2/4.
- Post-processing (`bratseg.json`'s `postprocessing` and `tta`):
  {removal}; {tta}.
- Training: {tc["epochs"]} epochs at most, early stopping patience {tc["patience"]}, AdamW lr
  {tc["lr"]}, batch {tc["batch_size"]}, Dice + cross-entropy; weights of epoch {meta.get("epoch")}
  ({meta.get("checkpoint", "best")}).
- {validation_line}
  Whole-volume figures come from `bratseg evaluate` on cases the model never saw.{threshold_line}

Load it with:

```python
import bratseg
segmenter = bratseg.from_pretrained("{where}")
labels = segmenter.predict("path/to/case_folder")
```

or `bratseg predict CASE_DIR --output seg.nii.gz --model {where}`.
"""


def card_for_folder(model_dir: str | Path) -> str:
    """The card to publish with a model folder: its ``README.md`` when that carries Hub
    metadata (a library name), else one built from its ``bratseg.json``."""
    from huggingface_hub import ModelCard

    from bratseg.preprocessing.config import PreprocessingConfig

    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        try:
            if ModelCard(text, ignore_metadata_errors=True).data.library_name:
                return text
        except ValueError:
            pass  # no usable metadata: build the card instead
    try:
        meta = json.loads((model_dir / "bratseg.json").read_text())
        prep = PreprocessingConfig.from_json(model_dir / "preprocessing.json")
        return model_card_text(meta, list(prep.modalities), tuple(prep.crop_size), prep.resize)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BratsegError(f"{model_dir}: cannot build a model card from bratseg.json ({exc})") from None


def check_card(text: str, source: str = "model card") -> ModelCard:
    """``text`` parsed as the Hub parses a card (``ModelCard``); refuses, naming ``source``, a
    card without a metadata header, without :data:`REQUIRED_METADATA`, or whose
    ``model-index`` does not parse into results."""
    from huggingface_hub import ModelCard

    if not text.startswith("---"):
        raise BratsegError(f"{source}: the model card has no YAML metadata header (--- ... ---)")
    try:
        card = ModelCard(text)  # parses the YAML and the model-index, raising on what it cannot read
    except (ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BratsegError(f"{source}: the model card's metadata does not parse ({first})") from None
    data = card.data.to_dict()
    missing = [key for key in REQUIRED_METADATA if not data.get(key)]
    if missing:
        raise BratsegError(f"{source}: the model card's metadata lacks {', '.join(missing)}")
    if "model-index" in data and not card.data.eval_results:
        raise BratsegError(f"{source}: the model card's model-index holds no results")
    return card


def model_index_dice(card: ModelCard) -> dict[str, float]:
    """The Dice figures of a card's ``model-index``, by region (the first word after Dice)."""
    return {
        result.metric_name.split()[1]: result.metric_value
        for result in card.data.eval_results or []
        if result.metric_type == "dice" and result.metric_name
    }
