"""Checkpoints: safetensors weights + a JSON description, never pickle.

`NAME.safetensors` holds the Task Net (`task.*`) and, for meta methods, the Meta Learner
(`meta.*`) and, once `mkcnet calibrate` has run, the out-of-distribution guard's reference
(`guard.*`); its header metadata carries the same JSON as the file beside it (config, info,
and the "calibration", "guard" and "prediction_sets" sections), so either file alone rebuilds the
model. That side file is `NAME.json` for a run's `best`/`last`, and `config.json` for a model
folder's `model.safetensors` (Hugging Face's layout: the bundles, `save_pretrained`); see
`side_json`. A checkpoint from before a section existed loads without it (the feature is then
absent). Every write goes to a temporary file and is renamed into place, so a killed run never
leaves a truncated checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from mkcnet.config import RunConfig
from mkcnet.errors import UserError
from mkcnet.files import atomic_write
from mkcnet.models import TaskNet, build_networks
from mkcnet.models.meta_learner import MetaLearner
from mkcnet.project import find_project_home
from mkcnet.trust.calibration import Calibration
from mkcnet.trust.conformal import PredictionSets
from mkcnet.trust.guard import Guard

FORMAT = "mkcnet-checkpoint/1"
# A model folder in Hugging Face's layout: these two, and a README.md card (mkcnet.hub).
MODEL_WEIGHTS, MODEL_CONFIG = "model.safetensors", "config.json"
OLD_MODEL_CONFIG = "model.json"  # a model folder's side file before it took Hugging Face's names


def side_json(weights: Path) -> Path:
    """The JSON written beside a checkpoint's weights: `config.json` for a model folder's
    `model.safetensors` (Hugging Face's name), `NAME.json` for any other `NAME.safetensors` (a
    run's best.json and last.json; a run's own config.json is its RunConfig, never this).

    Example:
        >>> side_json(Path("checkpoints/x/model.safetensors")).name, side_json(Path("runs/a/best.safetensors")).name
        ('config.json', 'best.json')
    """
    weights = Path(weights)
    return weights.with_name(MODEL_CONFIG) if weights.name == MODEL_WEIGHTS else weights.with_suffix(".json")


def _state(prefix: str, module: nn.Module | None, half: bool) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        out[f"{prefix}.{k}"] = v.contiguous()
    return out


def save_checkpoint(path: str | Path, task_net: TaskNet, meta: MetaLearner | None, config: RunConfig,
                    info: dict[str, Any] | None = None, half: bool = False, include_meta: bool = True,
                    calibration: Calibration | None = None, guard: Guard | None = None,
                    prediction_sets: PredictionSets | None = None) -> Path:
    """Write PATH.safetensors and its JSON (`side_json`: PATH.json, or config.json beside a
    model.safetensors); PATH without suffix. `half` stores fp16 weights."""
    tensors = _state("task", task_net, half) | (_state("meta", meta, half) if include_meta else {})
    return _write(Path(path).with_suffix(""), tensors, config.to_dict(), info or {}, calibration, guard,
                  prediction_sets)


def _write(stem: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], info: dict[str, Any],
           calibration: Calibration | None, guard: Guard | None, prediction_sets: PredictionSets | None = None) -> Path:
    header = {"format": FORMAT, "config": config, "info": info}
    if calibration is not None:
        header["calibration"] = calibration.to_dict()
    if prediction_sets is not None:
        header["prediction_sets"] = prediction_sets.to_dict()
    if guard is not None:
        header["guard"] = guard.to_header()
        tensors = tensors | {f"guard.{k}": torch.from_numpy(v).contiguous() for k, v in guard.tensors().items()}
    text = json.dumps(header, indent=2, default=float)
    weights = stem.with_suffix(".safetensors")
    write_safetensors(weights, tensors, {"mkcnet": text})
    atomic_write(side_json(weights), lambda p: p.write_text(text))
    if weights.name == MODEL_WEIGHTS:  # an older folder's model.json would now say something stale
        weights.with_name(OLD_MODEL_CONFIG).unlink(missing_ok=True)
    return weights


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file written through `atomic_write` (fsync, rename). Serialised in memory
    first: safetensors' own save_file writes a temporary `.tmpXXXXXX` of its own, which a kill
    would leave behind, and does not fsync."""
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda p: p.write_bytes(data))


def update_trust(path: str | Path, calibration: Calibration, guard: Guard | None,
                 info: dict[str, Any] | None = None, prediction_sets: PredictionSets | None = None,
                 config: dict[str, Any] | None = None) -> Path:
    """Store a calibration, a guard and prediction sets (and, if given, a new `info` or `config`) in
    an existing checkpoint; its weight tensors unchanged, byte for byte."""
    weights = resolve_checkpoint(path)
    header = read_header(weights)
    tensors = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("guard.")}
    info = header.get("info", {}) if info is None else info
    return _write(weights.with_suffix(""), tensors, config or header["config"], info, calibration, guard,
                  prediction_sets)


@dataclass
class LoadedModel:
    task_net: TaskNet
    meta: MetaLearner | None
    config: RunConfig
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    calibration: Calibration | None = None  # None: not calibrated (raw softmax probabilities)
    guard: Guard | None = None  # None: no out-of-distribution reference
    prediction_sets: PredictionSets | None = None  # None: fitted before sets existed (no `diagnosis_set`)


CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors", MODEL_WEIGHTS)  # a run's, then a model folder's


def find_checkpoint(directory: Path) -> Path | None:
    """The weights a run directory (best, else last) or a bundled model folder holds; None if none."""
    return next((directory / n for n in CHECKPOINT_NAMES if (directory / n).is_file()), None)


def run_folder(weights: Path) -> Path | None:
    """The training run a checkpoint belongs to (its folder holds the run's config.json), None for
    a model folder's model.safetensors (whose config.json is the checkpoint's JSON) or a loose file."""
    folder = Path(weights).parent
    return folder if Path(weights).name != MODEL_WEIGHTS and (folder / "config.json").is_file() else None


def bundled_models() -> dict[str, Path]:
    """The bundled models by name → folder: MKCNET_CHECKPOINTS (os.pathsep-separated) or the
    project's checkpoints/, found from the package's own location, so from any working directory.

    Example:
        >>> "synth-fundus-mkcnet" in bundled_models()
        True
    """
    env = os.environ.get("MKCNET_CHECKPOINTS")
    home = find_project_home()
    roots = [Path(p) for p in env.split(os.pathsep) if p] if env else [home / "checkpoints"] if home else []
    found: dict[str, Path] = {}
    for root in roots:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            if find_checkpoint(folder) is not None:
                found.setdefault(folder.name, folder)
    return found


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (→ its best checkpoint), a model folder, a bundled model's name, a stem, or a
    .safetensors / .json file (a model folder's config.json → its model.safetensors)."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1 and not path.with_suffix(".safetensors").is_file():
        bundled = bundled_models()
        if str(path) not in bundled:
            names = ", ".join(bundled) or "none here"
            raise UserError(f"checkpoint not found: {path} is neither a file, a folder nor a bundled model "
                            f"(bundled: {names})")
        path = bundled[str(path)]
    if path.is_dir():
        found = find_checkpoint(path)
        others = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith("state"))
        if found is None and len(others) == 1:
            found = others[0]
        if found is None:
            raise UserError(f"no checkpoint (*.safetensors) in {path}")
        return found
    weights = path.with_name(MODEL_WEIGHTS) if path.name == MODEL_CONFIG else path.with_suffix(".safetensors")
    if not weights.is_file():
        raise UserError(f"checkpoint not found: {weights}")
    return weights


def read_header(weights: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UserError(f"{weights} is not a valid safetensors file: {err}") from None
    if "mkcnet" in meta:
        return json.loads(meta["mkcnet"])
    side = side_json(weights)
    older = (weights.with_name(OLD_MODEL_CONFIG),) if weights.name == MODEL_WEIGHTS else ()  # folders saved before
    for candidate in (side, *older):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise UserError(f"{weights} carries no MKCNet config (expected {side.name} beside it)")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", with_meta: bool = False) -> LoadedModel:
    weights = resolve_checkpoint(path)
    header = read_header(weights)
    if header.get("format") != FORMAT:
        raise UserError(f"{weights} is not an MKCNet checkpoint (format {header.get('format')!r})")
    config = RunConfig.from_dict(header["config"])
    task_net, meta = build_networks(config.model)
    tensors = load_file(str(weights))
    load_into(task_net, tensors, "task", weights)
    if with_meta and meta is not None and any(k.startswith("meta.") for k in tensors):
        load_into(meta, tensors, "meta", weights)
    else:
        meta = None
    task_net.to(device).eval()
    calibration = Calibration.from_dict(header["calibration"]) if "calibration" in header else None
    guard = None
    if "guard" in header:
        guard = Guard.from_header(header["guard"], {k[6:]: v.numpy() for k, v in tensors.items()
                                                     if k.startswith("guard.")})
    sets = PredictionSets.from_dict(header["prediction_sets"]) if "prediction_sets" in header else None
    return LoadedModel(task_net, meta, config, header.get("info", {}), weights, calibration, guard, sets)


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path) -> None:
    """Load `prefix.*` tensors; a mismatch means the weights belong to another architecture."""
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected
                  else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise UserError(f"{source}: weights do not fit this architecture ({detail})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
