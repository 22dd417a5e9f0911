"""Model cards a hub can read: YAML metadata (license, library_name, tags, datasets, model-index
with the validation metrics) over the Markdown a person reads.

Built with huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`, so the metadata is
exactly what the Hub parses. The metrics come from the checkpoint's header: `info.metrics` (what
`mkcnet evaluate` measured when the model was bundled) and the calibration scores that
`mkcnet calibrate` stored; nothing is re-measured here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD, OLD_CARD = "README.md", "MODEL.md"  # a model folder's card; its name before the hub layout
LIBRARY = "mkcnet"
LICENSE = "mit"
BASE_TAGS = ("mkcnet", "medical-imaging", "image-classification", "image-quality", "calibration",
             "out-of-distribution-detection")
TASK = ("image-classification", "Image quality-aware diagnosis")
# (metric key in `info.metrics`, model-index type, shown name); the paper's table: AUC and the
# binary "hard" AUC on all, good-quality and low-quality images.
METRICS = (
    ("diagnosis.auc", "roc_auc", "AUC (all)"),
    ("diagnosis.HQ.auc", "roc_auc", "AUC (HQ)"),
    ("diagnosis.LQ.auc", "roc_auc", "AUC (LQ)"),
    ("diagnosis.auc_hard", "roc_auc", "hard AUC (all)"),
    ("diagnosis.HQ.auc_hard", "roc_auc", "hard AUC (HQ)"),
    ("diagnosis.LQ.auc_hard", "roc_auc", "hard AUC (LQ)"),
)
ECE = ("diagnosis.after.ECE", "ece", "ECE (diagnosis, calibrated)")


def card_metrics(header: dict[str, Any]) -> dict[str, float]:
    """The shown name → value of every model-index metric this checkpoint's header has (finite only).

    Example:
        >>> card_metrics({"info": {"metrics": {"diagnosis.auc": 0.9, "diagnosis.LQ.auc": float("nan")}},
        ...               "calibration": {"scores": {"diagnosis.after.ECE": 0.04}}})
        {'AUC (all)': 0.9, 'ECE (diagnosis, calibrated)': 0.04}
    """
    metrics = header.get("info", {}).get("metrics", {})
    scores = header.get("calibration", {}).get("scores", {})
    found = {name: metrics.get(key) for key, _, name in METRICS} | {ECE[2]: scores.get(ECE[0])}
    return {name: float(v) for name, v in found.items() if v is not None and v == v and abs(v) != float("inf")}


def card_data(header: dict[str, Any], name: str) -> ModelCardData:
    """The YAML metadata for a checkpoint's header (config, info, calibration)."""
    info, config = header.get("info", {}), header.get("config", {})
    dataset = info.get("dataset") or config.get("data", {}).get("preset") or "custom"
    split = info.get("split") or config.get("data", {}).get("val_split") or "val"
    values = card_metrics(header)
    types = {shown: kind for _, kind, shown in (*METRICS, ECE)}
    results = [EvalResult(task_type=TASK[0], task_name=TASK[1], dataset_type=dataset, dataset_name=dataset,
                          dataset_split=split, metric_type=types[shown], metric_name=shown, metric_value=value)
               for shown, value in values.items()]
    modality = info.get("modality")
    tags = sorted({*BASE_TAGS, *(t for t in (modality, dataset, config.get("model", {}).get("method")) if t)})
    return ModelCardData(license=LICENSE, library_name=LIBRARY, tags=tags, datasets=[dataset],
                         pipeline_tag="image-classification", model_name=name,
                         eval_results=results or None)


def default_body(header: dict[str, Any], name: str) -> str:
    """The Markdown of a card for a checkpoint that has none of its own (a training run's)."""
    info, model = header.get("info", {}), header.get("config", {}).get("model", {})
    lines = [f"# {info.get('title') or name}", "",
             f"MKCNet checkpoint (method `{model.get('method')}`, backbone `{model.get('backbone')}`, "
             f"{model.get('image_size')} px, {model.get('in_chans')} channel(s)); diagnosis classes: "
             f"{', '.join(model.get('diagnosis_names') or [])}; quality classes: "
             f"{', '.join(model.get('quality_names') or [])}.", "",
             "```python", "import mkcnet", "", f"model = mkcnet.load({name!r})",
             "print(model.predict(['scan.png'])[0])", "```", "",
             "A research model, not a medical device: never base a clinical decision on it."]
    return "\n".join(lines) + "\n"


def model_card(header: dict[str, Any], name: str, body: str | None = None) -> ModelCard:
    """A card with hub metadata over `body` (default: a short generated description).

    Example:
        >>> card = model_card({"info": {"dataset": "ct-iqad", "metrics": {"diagnosis.auc": 0.96}}}, "demo")
        >>> card.data.library_name, card.data.eval_results[0].metric_value
        ('mkcnet', 0.96)
    """
    data = card_data(header, name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body if body is not None else default_body(header, name)}")


def strip_front_matter(text: str) -> str:
    """A card's Markdown without its YAML block (what the workbench shows under the model)."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[end + 4:].lstrip("\n")
    return text


def folder_card(folder: Path) -> str | None:
    """The Markdown of a model folder's own card, without its metadata: README.md (the hub layout)
    stripped of its YAML block, else MODEL.md (a folder saved before it); None if it has neither."""
    for name in (CARD, OLD_CARD):
        if (Path(folder) / name).is_file():
            return strip_front_matter((Path(folder) / name).read_text(encoding="utf-8"))
    return None


__all__ = ["card_data", "card_metrics", "folder_card", "model_card", "strip_front_matter"]
