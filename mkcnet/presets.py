"""Data-set presets (the paper's configs) and training presets (`paper` for a GPU, `cpu`).

The data-set numbers (normalisation, meta_length, entropy weight, learning rates, LR step,
batch, epochs) are those of the official configs; the quality index is "higher is better".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from mkcnet.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mkcnet.errors import UserError
from mkcnet.methods import apply_method

# EyeQ and DeepDRiD carry DR grades 0-4; the paper folds them into NoDR / NPDR / PDR.
DR_GRADE_TO_CLASS = {0: 0, 1: 1, 2: 1, 3: 1, 4: 2}
DR_NAMES = ("NoDR", "NPDR", "PDR")
HQ_LQ = ("LQ", "HQ")
EYEQ_QUALITY = ("reject", "usable", "good")


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    channels: int
    diagnosis_names: tuple[str, ...]
    quality_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta_length: int
    entropy_weight: float
    meta_lr: float
    step_size: int
    epochs: int
    batch_size: int
    lr: float = 0.01
    diagnosis_map: dict[int, int] | None = None
    quality_map: dict[int, int] | None = None  # the split files' quality labels -> "higher is better"
    description: str = ""
    window: tuple[float, float] | None = None  # the model's default (centre, width) for DICOM/NIfTI inputs


# Which degradation families fit a data set (the simulator's modalities).
MODALITY_OF_PRESET = {"eyeq": "fundus", "deepdrid": "fundus", "synth-fundus": "fundus", "drac": "oct",
                      "ct-iqad": "ct", "cxr-iqad": "xray"}


def model_modality(config: RunConfig, info: dict | None = None) -> str:
    """The simulator's modality for a model: its card's, else its data set's, else by its channels."""
    return (info or {}).get("modality") or MODALITY_OF_PRESET.get(
        config.data.preset, "fundus" if config.model.in_chans == 3 else "ct")


DATASETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in (
        DatasetPreset("eyeq", 3, DR_NAMES, EYEQ_QUALITY, (0.4021, 0.2667, 0.1847), (0.2991, 0.2090, 0.1680),
                      meta_length=5, entropy_weight=0.2, meta_lr=0.001, step_size=25, epochs=100, batch_size=4,
                      diagnosis_map=DR_GRADE_TO_CLASS, description="EyeQ colour fundus, DR + 3-level quality"),
        DatasetPreset("deepdrid", 3, DR_NAMES, HQ_LQ, (0.3771, 0.2320, 0.1395), (0.1252, 0.0857, 0.0814),
                      meta_length=7, entropy_weight=0.3, meta_lr=0.001, step_size=20, epochs=200, batch_size=4,
                      diagnosis_map=DR_GRADE_TO_CLASS, description="DeepDRiD colour fundus, DR + HQ/LQ"),
        DatasetPreset("drac", 1, DR_NAMES, HQ_LQ, (0.4134,), (0.0595,),
                      meta_length=10, entropy_weight=0.5, meta_lr=0.01, step_size=50, epochs=200, batch_size=8,
                      description="DRAC 2022 OCTA, DR + quality"),
        DatasetPreset("ct-iqad", 1, ("non-COVID", "COVID-19"), HQ_LQ, (0.6269,), (0.2909,),
                      meta_length=5, entropy_weight=0.2, meta_lr=0.01, step_size=20, epochs=200, batch_size=4,
                      description="CT-IQAD chest CT, COVID-19 + HQ/LQ",
                      window=(-600.0, 1500.0)),  # a lung window: CT-IQAD's slices are shown in one
        # The official CXR-IQAD split files number quality 0 = HQ, 1 = LQ-C, 2 = LQ-A (2929 / 2927 /
        # 2431 images, Table 1's HQ / LQ-C / LQ-A): reversed here so that HQ is the top index.
        DatasetPreset("cxr-iqad", 1, ("normal", "pneumonia"), ("LQ-A", "LQ-C", "HQ"), (0.4813,), (0.2361,),
                      meta_length=7, entropy_weight=0.3, meta_lr=0.001, step_size=20, epochs=200, batch_size=8,
                      quality_map={0: 2, 1: 1, 2: 0},
                      description="CXR-IQAD chest X-ray, pneumonia + 3-level simulated quality (split: 0 = HQ)"),
        DatasetPreset("synth-fundus", 3, DR_NAMES, EYEQ_QUALITY, (0.45, 0.25, 0.12), (0.30, 0.18, 0.10),
                      meta_length=5, entropy_weight=0.2, meta_lr=0.001, step_size=25, epochs=100, batch_size=4,
                      description="the project's synthetic fundus set (mkcnet synth), EyeQ-style labels"),
    )
}


def dataset_from_file(path: str | Path) -> DatasetPreset:
    """A data set described without code: a JSON file of DatasetPreset fields (name defaults to
    the file's stem; fields left out take CT-IQAD's values)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data-set config not found: {path}")
    raw = json.loads(path.read_text())
    raw.setdefault("name", path.stem)
    for key in ("diagnosis_names", "quality_names", "mean", "std"):
        if key in raw:
            raw[key] = tuple(raw[key])
    for key in ("diagnosis_map", "quality_map"):
        if raw.get(key):
            raw[key] = {int(k): int(v) for k, v in raw[key].items()}
    base = DATASETS["ct-iqad"].__dict__ | {"description": "custom"}
    try:
        return DatasetPreset(**(base | raw))
    except TypeError as err:
        raise UserError(f"{path}: {err}") from None


# How a run is validated and selected. "official" is the official code's: no augmentation,
# validation every 20 epochs, the best epoch chosen on the metric the paper reports (for binary
# tasks roc_auc_score of hard predictions). "project" validates every epoch on probability AUC.
PROTOCOLS: dict[str, dict] = {
    "official": {"augment": "none", "val_every": 20, "select": "auc_hard"},
    "project": {"augment": "flip-shift", "val_every": 1, "select": "auc"},
}


@dataclass(frozen=True)
class TrainingPreset:
    """How big a run is: `paper` reproduces the paper on a GPU, `cpu` fits 2 CPU cores."""

    name: str
    backbone: str
    image_size: int
    batch_size: int | None  # None: the data set's paper batch
    epochs: int | None  # None: the data set's paper epochs
    meta_every: int
    output_stride: int | None = None
    backbone_args: dict | None = None  # settings for `backbone` only; another backbone gets its own defaults
    momentum: float = 0.9
    protocol: str = "project"
    meta_step: str = "pseudo"
    meta_scope: str = "network"
    meta_optimizer: str = "sgd"
    meta_lr: float | None = None  # None: the data set's
    meta_weight_decay: float = 5e-4
    meta_outer_weight: float = 1.0
    meta_outer_schedule: str = "fixed"
    description: str = ""


TRAINING: dict[str, TrainingPreset] = {
    # The official optimiser: SGD without momentum.
    "paper": TrainingPreset("paper", "vgg16_bn", 256, None, None, meta_every=1, momentum=0.0, protocol="official",
                            description="VGG16-BN from scratch at 256 px, the paper's batch and epochs (GPU job)"),
    # A ResNet-10-T with a 384-wide last stage at output stride 16: ~95 img/s at 128 px on 2
    # cores, 8x8 maps for the CAMs, ~8 MB in fp16 so the bundled models stay small. (Depthwise
    # nets such as MobileNetV3 train as fast, but their double backward is ~5x slower.)
    # Stage II with the first-order step around θ (`aligned_meta_gradients`: one extra forward
    # and backward), on every second batch: on every batch an MKCNet epoch costs 2.7-3.0x a
    # vanilla one, on every second 2.0x (benchmarks/train_speed.py). φ's raw meta gradient is
    # ~1e-3 of its weight decay and ~1e-2 of the regulariser's at this scale, so with the official
    # settings φ never left uniform labels: the outer term is weighted by 100 (= 1/α at the
    # starting LR), φ has no weight decay and takes Adam steps (docs/RESULTS.md). The meta term
    # reaches φ scaled by θ's rate and R does not, so the weight follows the rate (100 × lr₀/lr):
    # with it fixed, φ's labels faded back towards uniform as the rate decayed.
    "cpu": TrainingPreset("cpu", "resnet10t", 128, 32, 24, meta_every=2, output_stride=16,
                          backbone_args={"channels": [64, 128, 256, 384]}, meta_step="aligned",
                          meta_optimizer="adam", meta_lr=1e-3, meta_weight_decay=0.0, meta_outer_weight=100.0,
                          meta_outer_schedule="lr",
                          description="ResNet-10-T (384-wide top, stride 16) @128 px, 24 epochs, Stage II on "
                                      "every 2nd batch (first order around θ, Adam, outer weight × lr₀/lr)"),
}


def build_run_config(dataset: str | DatasetPreset, training: str = "cpu", method: str = "mkcnet",
                     root: str = "", **overrides) -> RunConfig:
    """A finished RunConfig from a data-set preset and a training preset, with the switches its
    method implies already set (`apply_method`); `overrides` are ModelConfig / TrainConfig /
    DataConfig field names (e.g. epochs=3, backbone="resnet10t").

    Example:
        >>> config = build_run_config("ct-iqad", "cpu", "multitask", epochs=3)
        >>> config.train.epochs, config.model.use_quality, config.model.use_auxiliary
        (3, True, False)
    """
    ds = DATASETS[dataset] if isinstance(dataset, str) else dataset
    tp = TRAINING[training]
    epochs = tp.epochs or ds.epochs
    # The LR step follows the paper's period, scaled to a shorter schedule.
    step = ds.step_size if tp.epochs is None else max(1, round(ds.step_size * epochs / ds.epochs * 2))
    # A backbone override drops the preset's settings for its own backbone (a ResNet's widths
    # and output stride mean nothing to VGG); an explicit output_stride override still applies.
    own = overrides.get("backbone") in (None, tp.backbone)
    model = ModelConfig(
        method=method, backbone=tp.backbone, output_stride=tp.output_stride if own else None,
        backbone_args=dict(tp.backbone_args or {}) if own else {}, in_chans=ds.channels,
        image_size=tp.image_size, mean=ds.mean, std=ds.std,
        num_diagnosis=len(ds.diagnosis_names), num_quality=len(ds.quality_names),
        diagnosis_names=ds.diagnosis_names, quality_names=ds.quality_names, meta_length=ds.meta_length,
        window=ds.window,
    )
    train = TrainConfig(
        epochs=epochs, batch_size=tp.batch_size or ds.batch_size, lr=ds.lr, meta_lr=tp.meta_lr or ds.meta_lr,
        step_size=step, entropy_weight=ds.entropy_weight, meta_every=tp.meta_every, momentum=tp.momentum,
        meta_step=tp.meta_step, meta_scope=tp.meta_scope, meta_optimizer=tp.meta_optimizer,
        meta_weight_decay=tp.meta_weight_decay, meta_outer_weight=tp.meta_outer_weight,
        meta_outer_schedule=tp.meta_outer_schedule, **PROTOCOLS[tp.protocol],
    )
    data = DataConfig(preset=ds.name, root=root, diagnosis_map=ds.diagnosis_map, quality_map=ds.quality_map)
    config = RunConfig(model=model, train=train, data=data)
    protocol = overrides.pop("protocol", None)
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
        apply_overrides(config, PROTOCOLS[protocol])
    return apply_method(apply_overrides(config, overrides))


def apply_overrides(config: RunConfig, overrides: dict) -> RunConfig:
    for key, value in overrides.items():
        if value is None:
            continue
        for part in (config.model, config.train, config.data):
            if key in {f.name for f in dataclasses.fields(part)}:
                setattr(part, key, value)
                break
        else:
            raise ValueError(f"unknown setting {key!r}")
    return config
