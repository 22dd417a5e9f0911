"""Typed configuration: what a model is (ModelConfig), how it is trained (TrainConfig), and
what data it reads (DataConfig). A run stores all three as one JSON file (RunConfig)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkcnet.errors import UserError
from mkcnet.files import atomic_write


@dataclass(frozen=True)
class InputSpec:
    """What a network reads: `channels`×`size`×`size` images, (x/255 − mean)/std per channel, DICOM/NIfTI through `window`.

    >>> InputSpec(1, 128, [0.5], [0.25])
    InputSpec(channels=1, size=128, mean=(0.5,), std=(0.25,), window=None)
    """

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    window: tuple[float, float] | None = None

    def __post_init__(self):
        # Tuples of floats whatever they came as (JSON lists, ints), so that equal specs compare and hash equal.
        window = None if self.window is None else tuple(float(v) for v in self.window)
        for name, value in (("channels", int(self.channels)), ("size", int(self.size)), ("window", window),
                            ("mean", tuple(float(v) for v in self.mean)), ("std", tuple(float(v) for v in self.std))):
            object.__setattr__(self, name, value)  # frozen: set once, here
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(f"the input's mean and std need {self.channels} value(s), one per channel; got "
                            f"{len(self.mean)} and {len(self.std)}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and feed it an image."""

    method: str = "mkcnet"
    backbone: str = "resnet18"
    meta_backbone: str | None = None  # None: same as `backbone`
    meta_image_size: int | None = None  # the Meta Learner reads the image resized to this (None: image_size)
    output_stride: int | None = None  # e.g. 16: a finer last feature map (sharper CAMs), more compute
    backbone_args: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments
    in_chans: int = 3
    image_size: int = 128
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    num_diagnosis: int = 2
    num_quality: int = 2
    diagnosis_names: tuple[str, ...] = ()
    quality_names: tuple[str, ...] = ()  # index order: higher is better
    feature_dim: int = 256
    meta_length: int = 5
    mask: str = "joint"  # joint (JEM) | diagnosis (MAXL) | quality | none
    use_quality: bool = True  # quality head
    use_auxiliary: bool = True  # auxiliary branch + Meta-knowledge Assistance Block
    use_attention: bool = True  # Global Attention Blocks
    use_assistance: bool = True  # Meta-knowledge Assistance Block: the diagnosis head also reads the auxiliary feature
    head_act: str = "relu"  # the heads' hidden activation: ReLU as the official code ("gelu": runs made before)
    window: tuple[float, float] | None = None  # (centre, width) for DICOM/NIfTI in their units (CT: HU); None: the file's
    revision: int = 2  # 1: saved when "vanilla" named the Global-Attention-Block baseline (now "vanilla-gab")

    def same_network(self, other: ModelConfig) -> bool:
        """Whether `other` builds the same network; how raw files are read (the window) does not change it."""
        return dataclasses.replace(self, window=None) == dataclasses.replace(other, window=None)

    @property
    def input(self) -> InputSpec:
        """What the network reads, as one value for the loaders and resizers (the JSON keeps the fields)."""
        return InputSpec(self.in_chans, self.image_size, self.mean, self.std, self.window)

    @property
    def num_auxiliary(self) -> int:
        """Σψ: every (diagnosis, quality) pair owns `meta_length` auxiliary classes."""
        return self.num_diagnosis * self.num_quality * self.meta_length


# The TrainConfig settings spelled as words, and the words each takes: the CLI's choices and the
# check before a run starts both read this table.
TRAIN_WORDS: dict[str, tuple[str, ...]] = {
    "augment": ("none", "flip-shift"),
    "select": ("auc", "auc_hard"),
    "meta_step": ("pseudo", "aligned"),
    "meta_scope": ("network", "top", "heads"),
    "meta_optimizer": ("sgd", "adam"),
    "meta_outer_schedule": ("fixed", "lr"),
}


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.01
    meta_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    meta_weight_decay: float = 5e-4
    step_size: int = 20  # StepLR period (epochs); the rate halves each period
    lr_gamma: float = 0.5
    focal_gamma: float = 2.0
    entropy_weight: float = 0.2
    second_order: bool = True
    meta_outer: bool = True  # Stage II minimises L_d + L_q at θ̃ (+ w·R); False: w·R alone (a control)
    meta_outer_weight: float = 1.0  # the outer loss's weight in Stage II's objective (1: the paper)
    # "lr": the weight grows as θ's rate decays (× lr / current lr), so the meta term, which reaches φ
    # scaled by θ's rate, keeps its size against the regulariser; "fixed": as given throughout
    meta_outer_schedule: str = "fixed"
    meta_optimizer: str = "sgd"  # φ's optimiser: "sgd" (the official code, momentum as θ's) or "adam"
    meta_every: int = 1  # Stage II runs on every k-th batch (1 = the paper: one φ update per θ update)
    meta_step: str = "pseudo"  # "pseudo": through θ̃ (order, scope below); "aligned": first order around θ
    meta_scope: str = "network"  # the pseudo step covers the whole Task Net, or "heads" over held backbone features
    augment: str = "flip-shift"  # "flip-shift" (random flips, ±8 % shifts) or "none" (the official code)
    val_every: int = 1  # validate (and choose the best epoch) every N epochs; the last epoch always
    select: str = "auc"  # the best epoch's validation metric: "auc" (probabilities) or "auc_hard" (the paper's)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool | None = None  # None: on for CUDA (faster convs with AMP), off on CPU
    train_lq_ratio: float | None = None  # subsample the training split to this share of LQ images
    grad_probe: bool = True  # log task-gradient cosines on the shared backbone, one batch per epoch
    sync_bn: bool = False  # data-parallel runs on CUDA: Stage I BatchNorm over the global batch


@dataclass
class DataConfig:
    preset: str = "custom"
    root: str = ""
    train_split: str = "train.csv"
    val_split: str | None = "val.csv"
    diagnosis_map: dict[int, int] | None = None  # raw label -> class index
    quality_map: dict[int, int] | None = None  # raw quality label -> index ("higher is better")
    allow_outside_root: bool = False  # split rows may name files outside `root` (trusted local data only)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        return cls(
            model=model_config_from_dict(raw.get("model", {})),
            train=_train_config_from_dict(raw.get("train", {})),
            data=_data_config_from_dict(raw.get("data", {})),
        )

    def save(self, path: str | Path) -> None:
        """Written atomically: a kill leaves the old file or the new one."""
        atomic_write(Path(path), lambda p: p.write_text(json.dumps(self.to_dict(), indent=2)))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(kind, raw: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    return kind(**raw)


def model_config_from_dict(raw: dict[str, Any]) -> ModelConfig:
    raw = dict(raw)
    raw.setdefault("head_act", "gelu")  # configs saved before the field existed had GELU heads
    if raw.setdefault("revision", 1) == 1 and raw.get("method") == "vanilla":
        raw["method"] = "vanilla-gab"
    for key in ("mean", "std", "diagnosis_names", "quality_names", "window"):
        if key in raw:
            raw[key] = None if raw[key] is None else tuple(raw[key])
    return _from_dict(ModelConfig, raw)


def _train_config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    raw = dict(raw)
    if isinstance(raw.get("augment"), bool):  # configs saved before augment named its kind
        raw["augment"] = "flip-shift" if raw["augment"] else "none"
    return _from_dict(TrainConfig, raw)


def _data_config_from_dict(raw: dict[str, Any]) -> DataConfig:
    raw = dict(raw)
    for key in ("diagnosis_map", "quality_map"):  # JSON keys are strings
        if raw.get(key):
            raw[key] = {int(k): int(v) for k, v in raw[key].items()}
    return _from_dict(DataConfig, raw)
