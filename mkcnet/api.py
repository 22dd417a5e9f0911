"""The Python front door: `mkcnet.load(name_or_path)` and the `Model` it returns.

    import mkcnet
    model = mkcnet.load("synth-fundus-mkcnet")                 # a bundled name, a folder, a file or a hub id
    print(model.predict(["scan.png"])[0].diagnosis)

`Model` follows Hugging Face conventions through huggingface_hub's `ModelHubMixin`:
`save_pretrained(dir)` writes `model.safetensors` (weights, with the checkpoint's JSON in its
header), `config.json` (the same JSON) and `README.md` (a card with hub metadata);
`from_pretrained(dir_or_repo_id)` reads them back, from a local folder without touching the
network; `push_to_hub(repo_id)` uploads them. The package sets HF_HUB_OFFLINE=1 unless it is
already set: to download or push, set HF_HUB_OFFLINE=0 before importing mkcnet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled

from mkcnet.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    LoadedModel,
    bundled_models,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from mkcnet.config import ModelConfig
from mkcnet.data.dataset import normalise
from mkcnet.data.images import Window, fit_to_model, model_window, read_image
from mkcnet.errors import UserError
from mkcnet.hub import BASE_TAGS, LIBRARY, LICENSE, folder_card, model_card
from mkcnet.inference.assessment import Assessment, TrustData, assess_outputs, class_names
from mkcnet.trust.guard import input_statistics

ImageInput = str | Path | bytes | np.ndarray  # a file, its bytes, or a decoded H×W(×C) uint8 array
WEIGHTS, CONFIG = MODEL_WEIGHTS, MODEL_CONFIG  # Hugging Face's model folder, with a README.md card


class Model(ModelHubMixin, library_name=LIBRARY, license=LICENSE, tags=list(BASE_TAGS),
            pipeline_tag="image-classification"):
    """A loaded MKCNet checkpoint: predict, explain (CAMs), embed (features), save and publish.

    Build one with `mkcnet.load`, `Model.from_pretrained` or `Model(load_checkpoint(path))`.

    Example:
        >>> import mkcnet
        >>> model = mkcnet.load("synth-fundus-mkcnet")
        >>> model.diagnosis_names
        ('NoDR', 'NPDR', 'PDR')
    """

    def __init__(self, loaded: LoadedModel, name: str | None = None):
        self.loaded = loaded
        self.name = name or (loaded.path.parent.name if loaded.path is not None else "mkcnet-model")

    # ---- what the model is ------------------------------------------------------------------------

    @property
    def config(self) -> ModelConfig:
        return self.loaded.config.model

    @property
    def diagnosis_names(self) -> tuple[str, ...]:
        return class_names(self.config.diagnosis_names, self.config.num_diagnosis)

    @property
    def quality_names(self) -> tuple[str, ...] | None:
        return class_names(self.config.quality_names, self.config.num_quality) if self.config.use_quality else None

    @property
    def trust(self) -> TrustData:
        """Class names, temperatures, guard and prediction sets: what turns logits into an Assessment."""
        temperatures = dict(self.loaded.calibration.temperatures) if self.loaded.calibration else {}
        return TrustData(self.diagnosis_names, self.quality_names, temperatures, self.loaded.guard,
                         self.loaded.prediction_sets)

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.name!r}: {c.method}, {c.backbone} at {c.image_size} px, diagnosis "
                f"{'/'.join(self.diagnosis_names)}, calibrated={self.loaded.calibration is not None}, "
                f"guard={self.loaded.guard is not None})")

    # ---- inputs -----------------------------------------------------------------------------------

    def _read(self, images: ImageInput | Sequence[ImageInput], slice: int | None = None,
              window: Window | None = None) -> tuple[list[str], list[Any], list[str]]:
        """(source names, decoded images or None, errors) for one input or a list of them; DICOM and
        NIfTI rendered with `window`, else the model's default window (as `mkcnet predict` does)."""
        window = window or model_window(self.config.input)
        if isinstance(images, (str, Path, bytes, np.ndarray)):
            images = [images]
        sources, decoded, errors = [], [], []
        for k, item in enumerate(images):
            sources.append(str(item) if isinstance(item, (str, Path)) else f"<image {k}>")
            try:
                decoded.append(read_image(item, slice=slice, window=window))
                errors.append("")
            except UserError as err:
                decoded.append(None)
                errors.append(str(err))
        return sources, decoded, errors

    def tensor(self, image: np.ndarray) -> torch.Tensor:
        """A decoded uint8 H×W×C image as the network's normalised 1×C×S×S input (as `mkcnet predict` feeds it)."""
        chw = fit_to_model(image, self.config.input)
        return normalise(torch.from_numpy(np.array(chw, copy=True))[None], self.config.input)

    # ---- predictions ------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32, slice: int | None = None,
                window: Window | None = None) -> list[Assessment]:
        """Assess images: diagnosis and quality (raw and calibrated), out-of-distribution verdict,
        and where the checkpoint has them the prediction set and referral advice.

        Args:
            images: a path, bytes, a decoded uint8 array, or a list of them.
            batch_size: images per forward pass.
            slice: the slice of a multi-frame DICOM, series folder or NIfTI volume (default: the middle).
            window: how DICOM/NIfTI values become grey levels (`mkcnet.data.images.parse_window("lung")`;
                default: the model's window, else the file's own).

        Returns:
            One `Assessment` per input, in order; an unreadable input gives one with `error` set.

        Example:
            >>> import mkcnet
            >>> a = mkcnet.load("synth-fundus-mkcnet").predict("assets/examples/synth_PDR_good.png")[0]
            >>> a.diagnosis in ("NoDR", "NPDR", "PDR"), 0 < a.confidence <= 1
            (True, True)
        """
        sources, decoded, errors = self._read(images, slice, window)
        ok = [k for k, image in enumerate(decoded) if image is not None]
        out: list[Assessment] = [Assessment(source=s, error=e) for s, e in zip(sources, errors)]
        net = self.loaded.task_net.eval()
        device = next(net.parameters()).device
        guard = self.loaded.guard
        for start in range(0, len(ok), batch_size):
            rows = ok[start:start + batch_size]
            x = torch.cat([self.tensor(decoded[k]) for k in rows]).to(device)
            result = net(x)
            logits = {h: result.logits(h).float().cpu().numpy() for h in ("diagnosis", "quality")
                      if result.logits(h) is not None}
            feature = result.features[guard.feature].float().cpu().numpy() if guard is not None else None
            stats = [input_statistics(decoded[k]) for k in rows]
            for k, a in zip(rows, assess_outputs([sources[k] for k in rows], logits, feature, stats, self.trust)):
                out[k] = a
        return out

    @torch.no_grad()
    def features(self, images: ImageInput | Sequence[ImageInput]) -> dict[str, np.ndarray]:
        """Per-branch feature vectors (N×D each): "diagnosis", "quality", "auxiliary", "fused"
        (the diagnosis head's input) and "backbone" (the shared map, averaged; the guard's).

        Example:
            >>> import mkcnet
            >>> f = mkcnet.load("synth-fundus-mkcnet").features("assets/examples/synth_PDR_good.png")
            >>> f["fused"].shape[0], sorted(f)[:2]
            (1, ['auxiliary', 'backbone'])
        """
        sources, decoded, errors = self._read(images)
        if any(errors):
            raise UserError(next(e for e in errors if e))
        net = self.loaded.task_net.eval()
        x = torch.cat([self.tensor(image) for image in decoded]).to(next(net.parameters()).device)
        return {k: v.float().cpu().numpy() for k, v in net(x).features.items()}

    def cams(self, image: ImageInput, method: str = "Grad-CAM") -> dict[str, np.ndarray]:
        """Every branch's class activation map (H×W in [0, 1] at the model's input size), from one
        forward pass; each explains its head's top class. Keys: "diagnosis", "quality",
        "auxiliary" (the branches the method has) and "fused". Needs grad-cam (the `app` extra).

        Args:
            image: a path, bytes or a decoded uint8 array.
            method: one of `mkcnet.analysis.cam.CAM_METHODS` ("Grad-CAM", "HiResCAM", ...).

        Example:
            >>> import mkcnet
            >>> maps = mkcnet.load("synth-fundus-mkcnet").cams("assets/examples/synth_PDR_good.png")
            >>> sorted(maps), maps["fused"].shape
            (['auxiliary', 'diagnosis', 'fused', 'quality'], (128, 128))
        """
        from mkcnet.analysis.cam import compute_cams

        _, decoded, errors = self._read(image)
        if errors[0]:
            raise UserError(errors[0])
        found = compute_cams(self.loaded.task_net.eval(), self.tensor(decoded[0]), method)
        return {key: m[0] for key, m in found.maps.items()}

    # ---- Hugging Face conventions (ModelHubMixin) ---------------------------------------------------

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors + config.json (the checkpoint's JSON); the mixin adds README.md."""
        loaded, save_directory = self.loaded, Path(save_directory)
        # Keep the stored precision: fp16 bundles stay fp16 (and fp16 → fp32 → fp16 is exact).
        half = loaded.path is not None and _stored_half(loaded.path)
        save_checkpoint(save_directory / WEIGHTS, loaded.task_net, None, loaded.config, loaded.info, half=half,
                        include_meta=False, calibration=loaded.calibration, guard=loaded.guard,
                        prediction_sets=loaded.prediction_sets)  # every trust datum travels with the weights

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The card: hub metadata (license, library_name, tags, datasets, model-index) over this
        model's own card text when it has one (a bundled model's README.md), else a short one."""
        folder = self.loaded.path.parent if self.loaded.path is not None else None
        body = folder_card(folder) if folder is not None else None
        return model_card(read_header(self.loaded.path) if self.loaded.path else {}, self.name, body)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **model_kwargs) -> Model:
        if os.path.isdir(model_id):  # a local folder: read as is, never the network
            return cls(load_checkpoint(model_id), name=model_kwargs.get("name") or Path(model_id).resolve().name)
        with hub_errors(model_id):
            weights = hf_hub_download(model_id, WEIGHTS, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, local_files_only=local_files_only, token=token)
        return cls(load_checkpoint(weights), name=model_kwargs.get("name") or model_id.split("/")[-1])


@contextmanager
def hub_errors(model_id: str) -> Iterator[None]:
    """The hub's "offline / not cached / no such file" as one line a user can act on."""
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as err:
        raise UserError(f"{model_id!r} is neither a bundled model, a folder nor a cached hub model, and the hub "
                        f"is offline or unreachable (mkcnet sets HF_HUB_OFFLINE=1 unless it is set to 0 before "
                        f"importing mkcnet): {type(err).__name__}") from None
    except EntryNotFoundError:
        raise UserError(f"{model_id!r} has no {WEIGHTS}: not an MKCNet model") from None


def _stored_half(weights: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys() if k.startswith("task."))


def load(name_or_path: str | Path, device: str = "cpu") -> Model:
    """Load a model by bundled name, folder, checkpoint file or Hugging Face repo id.

    Args:
        name_or_path: a bundled model's name ("ct-iqad-mkcnet"; see `bundled_models()`), a model
            folder (save_pretrained's, a bundle's, a training run's: its best checkpoint), a
            `.safetensors` file, or a hub repo id ("user/model"; needs HF_HUB_OFFLINE=0 or a cached copy).
        device: where the network runs ("cpu", "cuda", ...).

    Returns:
        A `Model`: `predict(images)`, `cams(image)`, `features(images)`, `save_pretrained(dir)`.

    Example:
        >>> import mkcnet
        >>> model = mkcnet.load("synth-fundus-mkcnet")
        >>> [a.diagnosis for a in model.predict(["assets/examples/synth_PDR_good.png"])]  # doctest: +SKIP
        ['PDR']
    """
    text = str(name_or_path)
    bundled = bundled_models()
    folder = bundled.get(text) or (Path(text) if Path(text).is_dir() else None)
    if folder is not None and (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file():  # Hugging Face's layout
        model = Model.from_pretrained(folder, name=folder.resolve().name)
    elif folder is not None:  # a run directory (its config.json is a RunConfig), or a model folder saved before
        model = Model(load_checkpoint(folder), name=folder.resolve().name)
    elif Path(text).suffix in (".safetensors", ".json") or Path(text).with_suffix(".safetensors").is_file():
        model = Model(load_checkpoint(text))
    elif text.count("/") == 1 and not Path(text).exists():
        with hub_errors(text):
            model = Model.from_pretrained(text)
    else:
        known = ", ".join(bundled) or "none"
        raise UserError(f"no model {text!r}: not a bundled model ({known}), a folder, a checkpoint or a hub id")
    model.loaded.task_net.to(device)
    return model


__all__ = ["Assessment", "Model", "bundled_models", "load"]
