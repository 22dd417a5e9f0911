"""Turn training run directories into the workbench's bundled models: checkpoints/<name>/.

Each bundle is a model folder in Hugging Face's layout: the best checkpoint's Task Net as fp16
`model.safetensors` (no meta learner) with `config.json` (the checkpoint's JSON: config, info,
calibration, guard, sets), a model card `README.md` (hub metadata in YAML from
`mkcnet.hub.model_card` — license, library_name, tags, data set, a model-index with the AUCs and
ECE — over the Markdown written here; the same facts are in config.json's `info`), and a
results pack evaluated with the bundled fp16 weights on the validation split (predictions.csv,
features.npz, pack.json) plus what makes the workbench pages instant: t-SNE and UMAP
coordinates of every branch (embeddings.npz), the LQ-ratio curves (ood.csv), and for synthetic
data the generator arguments of each image (synth.csv), from which the app regenerates it.
Images themselves are never copied: a pack lists image paths only.

    python scripts/bundle_models.py --standard          # the four bundled models, from runs/
    python scripts/bundle_models.py RUN NAME [--root DATA] [--split val.csv] [--title T]
    python scripts/bundle_models.py --refresh NAME...   # calibration, guard, sets, pack, card only
    python scripts/bundle_models.py --sets NAME...      # prediction sets and default window only
    python scripts/bundle_models.py --convert NAME...   # a bundle saved before the hub layout: model.json,
                                                        # MODEL.md → config.json, README.md (weights untouched)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.analysis.embedding import embed
from mkcnet.analysis.ood import lq_ratio_curves
from mkcnet.analysis.reliability import reliability_tables
from mkcnet.checkpoint import (
    MODEL_WEIGHTS,
    OLD_MODEL_CONFIG,
    load_checkpoint,
    read_header,
    save_checkpoint,
    side_json,
    update_trust,
)
from mkcnet.config import RunConfig
from mkcnet.files import atomic_write
from mkcnet.hub import CARD, OLD_CARD, folder_card
from mkcnet.hub import model_card as hub_card
from mkcnet.inference.evaluate import calibrate_checkpoint, evaluate_split
from mkcnet.inference.results import ResultsPack
from mkcnet.presets import DATASETS, TRAINING
from mkcnet.workbench.packs import EMBEDDINGS_FILE, OOD_FILE, OOD_REPEATS, SYNTH_SOURCES
from mkcnet.workbench.zoo import MODALITY_OF_PRESET

REPO = Path(__file__).resolve().parents[1]
EMBEDDING_METHODS = ("tsne", "umap")
METHOD_TITLES = {"mkcnet": "MKCNet", "mkcnet-fo": "MKCNet (first-order)", "vanilla": "Vanilla",
                 "multitask": "Multi-task"}
DATASET_TITLES = {"synth-fundus": "synthetic fundus", "ct-iqad": "CT-IQAD chest CT"}


@dataclass(frozen=True)
class Bundle:
    run: str
    name: str
    script: str  # the project script that trains and evaluates the run


STANDARD = (Bundle("runs/synth-fundus/mkcnet", "synth-fundus-mkcnet", "scripts/train_synth_fundus.sh"),
            Bundle("runs/synth-fundus/vanilla", "synth-fundus-vanilla", "scripts/train_synth_fundus.sh"),
            Bundle("runs/ct-iqad/mkcnet", "ct-iqad-mkcnet", "scripts/train_ct_iqad.sh"),
            Bundle("runs/ct-iqad/vanilla", "ct-iqad-vanilla", "scripts/train_ct_iqad.sh"))


def training_preset(config) -> str:
    m = config.model
    for preset in TRAINING.values():
        if preset.backbone == m.backbone and preset.image_size == m.image_size:
            return preset.name
    return "custom"


def train_command(config, run: str) -> str:
    """The `mkcnet train` call that reproduces the run (preset flags, plus what differs)."""
    c = config
    parts = ["mkcnet", "train", "--dataset", c.data.preset, "--root", c.data.root, "--method", c.model.method,
             "--preset", training_preset(c), "--out", run]
    preset = TRAINING.get(training_preset(c))
    if preset is not None and (preset.epochs or DATASETS[c.data.preset].epochs) != c.train.epochs:
        parts += ["--epochs", str(c.train.epochs)]
    if preset is not None and preset.meta_every != c.train.meta_every:
        parts += ["--meta-every", str(c.train.meta_every)]
    return shlex.join(parts)


def epochs_done(run: Path, planned: int) -> int:
    """Epochs the run has finished (its history), so a card can say when a run was cut short."""
    history = run / "history.csv"
    return int(pd.read_csv(history)["epoch"].max()) if history.is_file() else planned


def synth_sources(root: Path, images: list[str]) -> pd.DataFrame | None:
    """Generator arguments of a synthetic data set's images (from its generation.jsonl)."""
    log = root / "generation.jsonl"
    if not log.is_file():
        return None
    wanted, rows = set(images), []
    with open(log) as f:
        for line in f:
            r = json.loads(line)
            if r["image"] in wanted:
                rows.append({k: r[k] for k in ("image", "seed", "size", "diagnosis", "quality")})
    return pd.DataFrame(rows) if len(rows) == len(wanted) else None


def metric_rows(m: dict) -> str:
    def get(key: str) -> str:
        v = m.get(key)
        return "–" if v is None or v != v else f"{v:.3f}"

    lines = ["| images | n | AUC | ACC | F1 |", "|---|---:|---:|---:|---:|"]
    for label, prefix in (("all", ""), ("good quality (HQ)", "HQ."), ("low quality (LQ)", "LQ.")):
        if f"diagnosis.{prefix}n" in m:
            lines.append(f"| {label} | {int(m[f'diagnosis.{prefix}n'])} | {get(f'diagnosis.{prefix}auc')} | "
                         f"{get(f'diagnosis.{prefix}acc')} | {get(f'diagnosis.{prefix}f1')} |")
    if "quality.acc" in m:
        lines.append(f"\nQuality head on the same images: AUC {get('quality.auc')}, ACC {get('quality.acc')}, "
                     f"F1 {get('quality.f1')}.")
    return "\n".join(lines)


def trust_rows(info: dict) -> str:
    """The card's calibration table (ECE/Brier before → after temperature scaling) and guard line."""
    c, g = info.get("calibration"), info.get("guard")
    if not c:
        return "Not calibrated: probabilities are raw softmax outputs."
    s = c["scores"]
    lines = ["| head | T | ECE raw → calibrated | Brier raw → calibrated | NLL raw → calibrated |",
             "|---|---:|---:|---:|---:|"]
    for head, t in c["temperatures"].items():
        lines.append(f"| {head} | {t:.3f} | {s[f'{head}.before.ECE']:.3f} → {s[f'{head}.after.ECE']:.3f} | "
                     f"{s[f'{head}.before.Brier']:.3f} → {s[f'{head}.after.Brier']:.3f} | "
                     f"{s[f'{head}.before.NLL']:.3f} → {s[f'{head}.after.NLL']:.3f} |")
    lines.append(f"\nTemperatures fitted on `{c['split']}` (NLL); the workbench and `mkcnet predict` show the "
                 "calibrated probabilities.")
    if g:
        coverage = g.get("coverage", g.get("quantile", 0.95))
        lines.append(f"Out-of-distribution guard: {g['method']} distance on the {g['feature']} feature, threshold "
                     f"{g['threshold']:.2f} (split-conformal on the validation images: an unseen image like them "
                     f"is flagged with probability at most {1 - coverage:.0%}), plus input checks (colourfulness, "
                     f"aspect ratio); flags {g['measured'].get('val', 0):.1%} of the validation and "
                     f"{g['measured'].get('train', 0):.1%} of the training images.")
    ps = info.get("prediction_sets")
    if ps:
        m = ps["measured"]
        groups = ", ".join(f"{label} {m[f'{p}coverage']:.1%} / {m[f'{p}size']:.2f}" for label, p in
                           (("all", ""), ("HQ", "HQ."), ("LQ", "LQ.")) if f"{p}coverage" in m)
        per_group = ps.get("groups") != [-1]
        how = ("split-conformal per predicted quality class" if per_group else
               "split-conformal over all images (no quality head: the guarantee is not per quality group)")
        within = " within its predicted quality class" if per_group else ""
        lines.append(f"Diagnosis sets at {ps['coverage']:.0%} confidence: {how}, fitted on `{ps['split']}` (an unseen "
                     f"image like them has its true class in its set with probability ≥ {ps['coverage']:.0%}{within}); "
                     f"coverage / mean set size on those images, by their labelled quality: {groups}.")
    return "\n".join(lines)


def reliability_rows(info: dict) -> str:
    """The card's reliability diagram as a table: per band of diagnosis confidence, how often the
    validation diagnosis was right, raw softmax against calibrated."""
    curves = info.get("reliability")
    if not curves:
        return ""
    bands = sorted({(r["low"], r["high"]) for rows in curves.values() for r in rows})
    kinds = list(curves)
    lines = ["| confidence | " + " | ".join(f"{k}: images, mean confidence, right" for k in kinds) + " |",
             "|---|" + "---:|" * len(kinds)]
    for low, high in bands:
        cells = []
        for kind in kinds:
            row = next((r for r in curves[kind] if (r["low"], r["high"]) == (low, high)), None)
            cells.append("–" if row is None else f"{row['n']}, {row['confidence']:.0%}, {row['accuracy']:.0%}")
        lines.append(f"| {low:.0%}-{high:.0%} | " + " | ".join(cells) + " |")
    return ("\n\n### Reliability (diagnosis, validation images)\n\nA calibrated model is right about as often as it "
            "is confident; the workbench draws this as a diagram under the card.\n\n" + "\n".join(lines))


def meta_learner_statistics(run: Path, epoch: int) -> dict | None:
    """What the Meta Learner's labels carried at the bundled epoch, from the run's history (None for
    methods without one, or runs logged before these statistics existed)."""
    history = run / "history.csv"
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    row = frame[frame["epoch"] == epoch]
    if row.empty or "val.aux_mi" not in row or pd.isna(row["val.aux_mi"].iloc[0]):
        return None
    keys = {"aux_mi": "val.aux_mi", "aux_entropy": "val.aux_entropy", "aux_head_mi": "val.aux_head_mi",
            "meta_updates": "meta_updates", "meta_outer_share": "meta_outer_share"}
    return {name: float(row[key].iloc[0]) for name, key in keys.items() if key in row}


def meta_learner_rows(info: dict) -> str:
    stats = info.get("meta_learner")
    if not stats:
        return ""
    return f"""

### What the Meta Learner's labels carried (epoch {info['best_epoch']}, validation images)

| | |
|---|---|
| aux_mi: image ↔ auxiliary sub-class in its (diagnosis, quality) block | {stats['aux_mi']:.4f} nats (0: none; log ψ at most) |
| the ω head's own (aux_head_mi) | {stats.get('aux_head_mi', float('nan')):.4f} nats |
| Meta Learner updates by then | {stats.get('meta_updates', float('nan')):.0f} |
"""


def model_card(info: dict, config) -> str:
    m, t = config.model, config.train
    done = info.get("epochs_done", t.epochs)
    trained = f"{t.epochs} epochs" if done >= t.epochs else \
        f"**{done} of {t.epochs} epochs** (bundled from an unfinished run)"
    classes = ", ".join(m.diagnosis_names)
    quality = ", ".join(m.quality_names)
    data_set = (f"`{info['dataset']}` ({DATASETS[info['dataset']].description}); trained on "
                f"`{config.data.train_split}`, validated on `{info['split']}`")
    return f"""# {info['title']}

| | |
|---|---|
| data set | {data_set} |
| method | `{m.method}` |
| preset | `{info['preset']}`: {m.backbone} at {m.image_size} px, {m.in_chans} channel(s), stride {m.output_stride or 'native'} |
| training | {trained}, batch {t.batch_size}, lr {t.lr}; best epoch {info['best_epoch']} (validation AUC) |
| classes | diagnosis: {classes}; quality (worst → best): {quality} |
| weights | Task Net only, fp16 safetensors ({info['size_mb']:.1f} MB); no meta learner (not needed to predict) |

## Validation metrics (these fp16 weights)

{metric_rows(info['metrics'])}

## Calibrated confidence and the out-of-distribution guard

{trust_rows(info)}{reliability_rows(info)}{meta_learner_rows(info)}

## How it was made

```bash
{info['train_command']}{f"    # as {info['script']} runs it" if info.get('script') else ""}
{info['bundle_command']}
```

## Use and limits

A research model for the MKCNet workbench and the paper reproduction, trained on CPU with a small
backbone. It is not a medical device and must not be used for clinical decisions. It has only seen
`{info['dataset']}` images: anything else (other scanners, other modalities) is out of distribution,
and its probabilities are then not to be trusted.
"""


def write_card(target: Path, body: str) -> Path:
    """The bundle's README.md: hub metadata from its checkpoint's header (the model-index: the
    AUCs in `info.metrics`, the calibrated ECE) over `body`; a MODEL.md of the older layout goes."""
    card = hub_card(read_header(target / MODEL_WEIGHTS), target.name, body)
    atomic_write(target / CARD, lambda p: p.write_text(str(card), encoding="utf-8"))
    (target / OLD_CARD).unlink(missing_ok=True)
    return target / CARD


def trust_pack_and_card(target: Path, info: dict, config, root: Path, split: str) -> ResultsPack:
    """Fit temperatures and the guard on the bundled fp16 weights, evaluate them into the results
    pack, and write what was measured into config.json's `info` and the card."""
    weights = target / "model"
    bundled = calibrate_checkpoint(weights, root / split, root / config.data.train_split, root,
                                   device="cpu", progress=False)
    pack = evaluate_split(bundled, root / split, root, device="cpu", progress=False)
    pack.header["checkpoint"] = f"checkpoints/{target.name}/model.safetensors"
    pack.header["root"] = str(root)
    pack.save(target / "results")
    info["metrics"] = pack.header["metrics"]
    info["calibration"] = bundled.calibration.to_dict()
    info["guard"] = bundled.guard.to_header()
    info["prediction_sets"] = sets_card(bundled.prediction_sets)
    info["reliability"] = {kind: curve.to_dict("records") for kind, curve in reliability_tables(pack).items()}
    update_trust(weights, bundled.calibration, bundled.guard, info, bundled.prediction_sets)
    write_card(target, model_card(info, config))
    return pack


def sets_card(sets) -> dict:
    """What the card says of the prediction sets (the scores themselves stay in the header)."""
    return {"coverage": sets.coverage, "split": sets.split, "groups": sorted(sets.scores), "measured": sets.measured}


def with_default_window(config):
    """The data set's default DICOM/NIfTI window for a model saved before models had one."""
    preset = DATASETS.get(config.data.preset)
    if config.model.window is None and preset is not None and preset.window is not None:
        config.model.window = preset.window
    return config


def fit_sets(name: str, out: Path, root: str | None = None, split: str | None = None) -> dict:
    """Fit a bundled model's prediction sets on its validation split and give it its data set's
    default window, keeping everything else (weights byte for byte, temperatures, guard, pack)."""
    target = out / name
    model = load_checkpoint(target)
    info, config = dict(model.info), with_default_window(model.config)
    root = Path(root or config.data.root)
    model = calibrate_checkpoint(target, root / (split or info["split"]), root=root, device="cpu", progress=False,
                                 sets_only=True)
    info["prediction_sets"] = sets_card(model.prediction_sets)
    raw = read_header(model.path)["config"]  # as stored: only the window is added
    raw["model"].setdefault("window", None if config.model.window is None else list(config.model.window))
    update_trust(target, model.calibration, model.guard, info, model.prediction_sets, raw)
    write_card(target, model_card(info, config))
    m = model.prediction_sets.measured
    print(f"{name}: sets at {model.prediction_sets.coverage:.0%}: coverage {m['coverage']:.3f}, size {m['size']:.2f}; "
          f"window {config.model.window}")
    return info


def refresh(name: str, out: Path, root: str | None = None, split: str | None = None) -> dict:
    """Refit a bundled model's calibration and guard, re-evaluate its pack and rewrite its card,
    from its own weights (after a change to that code; the training run is not needed)."""
    start = time.perf_counter()
    target = out / name
    model = load_checkpoint(target)
    info = dict(model.info)
    trust_pack_and_card(target, info, model.config, Path(root or model.config.data.root), split or info["split"])
    print(f"{name}: refreshed calibration, guard, pack and card, {time.perf_counter() - start:.0f} s")
    return info


def convert(name: str, out: Path, root: str | None = None, split: str | None = None) -> dict:
    """Bring a bundle saved before the hub layout to it: model.json becomes config.json (the same
    bytes), MODEL.md becomes README.md under hub metadata (the same Markdown). The weights and the
    results pack are not touched. Run again, it only rewrites README.md's metadata from the header."""
    target = out / name
    weights = target / MODEL_WEIGHTS
    if (target / OLD_MODEL_CONFIG).is_file():
        os.replace(target / OLD_MODEL_CONFIG, side_json(weights))
    header = read_header(weights)
    body = folder_card(target)  # README.md without its metadata, else MODEL.md
    if body is None:  # no card at all: the one `--refresh` would write, from the header alone
        body = model_card(header["info"], RunConfig.from_dict(header["config"]))
    write_card(target, body)
    print(f"{name}: {side_json(weights).name}, {CARD}")
    return header["info"]


def bundle(run: Path, name: str, out: Path, root: str | None = None, split: str | None = None,
           title: str | None = None, command: str | None = None,
           embeddings: tuple[str, ...] = EMBEDDING_METHODS, repeats: int = OOD_REPEATS, rank: int = 100,
           script: str | None = None) -> dict:
    start = time.perf_counter()
    source = load_checkpoint(run)
    config = with_default_window(source.config)
    root = root or config.data.root
    split = split or config.data.val_split or "val.csv"
    target = out / name
    weights = target / "model"
    dataset = config.data.preset
    info = {
        "title": title or f"{METHOD_TITLES.get(config.model.method, config.model.method)} · "
                          f"{DATASET_TITLES.get(dataset, dataset)}",
        "dataset": dataset, "modality": MODALITY_OF_PRESET.get(dataset, "fundus"),
        "method": config.model.method, "preset": training_preset(config), "split": split,
        "best_epoch": source.info.get("epoch", source.info.get("best_epoch")),
        "epochs_done": epochs_done(run, config.train.epochs),
        "train_command": command or train_command(config, str(run)),
        "bundle_command": shlex.join(["python", "scripts/bundle_models.py", str(run), name]),
        "source_run": str(run), "rank": rank, "script": script,  # the workbench lists models by rank (0 = default)
    }
    meta = meta_learner_statistics(run, info["best_epoch"])
    if meta is not None:
        info["meta_learner"] = meta
    # Weights first (the pack is evaluated with exactly these fp16 weights), then the card.
    save_checkpoint(weights, source.task_net, None, config, info, half=True, include_meta=False)
    info["size_mb"] = weights.with_suffix(".safetensors").stat().st_size / 1e6
    pack = trust_pack_and_card(target, info, config, Path(root), split)
    coords = {f"{method}/{branch}": embed(features, method, seed=0).astype(np.float32)
              for branch, features in pack.features.items() for method in embeddings}
    np.savez_compressed(target / "results" / EMBEDDINGS_FILE, **coords)
    lq_ratio_curves(pack, repeats=repeats).to_csv(target / "results" / OOD_FILE, index=False)
    sources = synth_sources(Path(root), list(pack.predictions["image"]))
    if sources is not None:
        sources.to_csv(target / "results" / SYNTH_SOURCES, index=False)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{name}: {info['title']}, AUC {info['metrics'].get('diagnosis.auc', float('nan')):.3f}, "
          f"{size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="training run directory (its best checkpoint is bundled)")
    p.add_argument("name", nargs="?", help="bundle name: checkpoints/NAME/")
    p.add_argument("--standard", action="store_true", help="bundle " + ", ".join(b.name for b in STANDARD))
    p.add_argument("--out", type=Path, default=REPO / "checkpoints")
    p.add_argument("--root", help="data-set root for the validation pack (default: the run's)")
    p.add_argument("--split", help="validation split file, relative to the root (default: the run's)")
    p.add_argument("--refresh", nargs="+", metavar="NAME", help="refit the calibration and guard of bundled "
                   "models, re-evaluate their packs and rewrite their cards (no training run needed)")
    p.add_argument("--sets", nargs="+", metavar="NAME", help="fit the prediction sets of bundled models on their "
                   "validation split and give them their data set's default window; nothing else changes")
    p.add_argument("--convert", nargs="+", metavar="NAME", help="move bundles of the older layout (model.json, "
                   "MODEL.md) to Hugging Face's (config.json, README.md with hub metadata); weights untouched")
    p.add_argument("--title")
    p.add_argument("--command", help="the training command to print on the card (default: reconstructed)")
    args = p.parse_args(argv)
    for names, update in ((args.sets, fit_sets), (args.refresh, refresh), (args.convert, convert)):  # existing bundles
        if names:
            for name in names:
                if not (args.out / name / MODEL_WEIGHTS).is_file():
                    p.error(f"no bundled model {name!r} in {args.out}")
                update(name, args.out, args.root, args.split)
            return 0
    if not args.standard and not (args.run and args.name):
        p.error("give RUN and NAME, --standard, or --refresh / --sets / --convert NAME...")
    if args.standard:
        jobs = [(Path(b.run), b.name, rank, b.script) for rank, b in enumerate(STANDARD)]
    else:  # a standard bundle's name keeps its rank and script
        known = {b.name: (rank, b.script) for rank, b in enumerate(STANDARD)}
        jobs = [(Path(args.run), args.name, *known.get(args.name, (100, None)))]
    for run, name, rank, script in jobs:
        bundle(run, name, args.out, args.root, args.split, args.title, args.command, rank=rank, script=script)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {total / 1e6:.1f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
