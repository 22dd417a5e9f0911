"""Measure the out-of-distribution guard of the bundled models on real images of other kinds.

For each model: the share of images flagged among its own validation split (in distribution:
should be ≤ 5 %) and among pediatric chest X-rays (cxr-kermany), fundus photographs
(fundus-drimdb), synthetic fundus and CT-IQAD validation images (should be ≥ 95 %), for both
feature scores (Mahalanobis, k-NN) on two features (backbone, fused): the input checks alone,
the feature score alone and both (the guard) with the threshold as bundled (on the whole
validation split), and the guard with the threshold set on a random half of the validation
split, 200 times: mean and 10th-90th percentile, the model's own validation images counted on
the half the threshold did not see (`guard, half-val threshold` is the honest in-distribution
rate; the as-bundled one is ≤ 5 % by construction).

    python scripts/measure_ood.py [--limit 500] [--out docs/ood_guard.csv]

Needs ../shared/data (the project's machines); says so and stops when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mkcnet.checkpoint import load_checkpoint
from mkcnet.data.dataset import UNKNOWN, ImageSet, SplitTable, read_split
from mkcnet.data.images import IMAGE_SUFFIXES, fit_to_model, read_image
from mkcnet.inference.predict import predict_batches
from mkcnet.trust.guard import conformal_threshold, fit_guard, input_statistics

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FEATURES = ("backbone", "fused")
MODELS = ("ct-iqad-mkcnet", "ct-iqad-vanilla", "synth-fundus-mkcnet", "synth-fundus-vanilla")


def image_files(folder: Path, limit: int, seed: int = 0) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) > limit:
        files = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), limit, replace=False))]
    return files


def split_files(root: Path, split: str, limit: int | None = None) -> tuple[list[Path], np.ndarray]:
    table = read_split(root / split, root)
    files, labels = table.files(), table.diagnosis
    return (files, labels) if limit is None or len(files) <= limit else (files[:limit], labels[:limit])


def features(model, files: list[Path]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The guard's candidate features and the input statistics of each file (each read once)."""
    mc = model.config.model
    feats, stats = [], []
    for start in range(0, len(files), 64):
        images = [read_image(f) for f in files[start:start + 64]]
        stats += [input_statistics(im) for im in images]
        x = torch.from_numpy(np.stack([fit_to_model(im, mc.input) for im in images]))
        unknown = np.full(len(images), UNKNOWN)
        chunk = ImageSet(SplitTable(Path("."), [str(f) for f in files[start:start + 64]], unknown, unknown), x,
                         mc.input)
        feats.append(predict_batches(model.task_net, chunk.batches(64), extra_features=FEATURES).features)
    return {k: np.concatenate([f[k] for f in feats]) for k in FEATURES}, np.array(stats)


def measure(train_x: np.ndarray, train_labels: np.ndarray, train_stats: np.ndarray,
            seen: dict[str, tuple[np.ndarray, np.ndarray]], own: str, method: str, halves: int,
            key: dict) -> list[dict]:
    """Share flagged per image set: with the threshold on the whole validation split (as bundled),
    and over `halves` random halves of it (mean, 10th and 90th percentile), the model's own
    validation images then counted on the other half only: images the threshold never saw."""
    guard = fit_guard(train_x, train_labels, seen[own][0], train_stats, method)
    distance = {s: guard.distance(x) for s, (x, _) in seen.items()}
    failed = {s: np.array([bool(guard.inputs.problem(*v)) for v in st]) for s, (_, st) in seen.items()}
    rng = np.random.default_rng(0)
    n = len(distance[own])
    drawn = {s: [] for s in seen}
    for _ in range(halves):
        order = rng.permutation(n)
        fit_on, held_out = order[: n // 2], order[n // 2:]
        threshold = conformal_threshold(distance[own][fit_on], guard.coverage)
        for s in seen:  # Guard.verdicts' decision, vectorised over the 200 thresholds
            rows = held_out if s == own else slice(None)
            drawn[s].append(np.mean(failed[s][rows] | (distance[s][rows] > threshold)))
    out = []
    for s in seen:
        shares = np.array(drawn[s])
        out.append({**key, "images": s, "n": len(distance[s]),
                    "in distribution": s == own, "input checks": failed[s].mean(),
                    "feature score": np.mean(distance[s] > guard.threshold),
                    "guard": np.mean([v.ood for v in guard.verdicts(seen[s][0], [tuple(v) for v in seen[s][1]])]),
                    "guard, half-val threshold": shares.mean(), "p10": np.quantile(shares, 0.1),
                    "p90": np.quantile(shares, 0.9)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=500, help="images per foreign set (a seeded sample)")
    p.add_argument("--halves", type=int, default=200, help="random halves of the validation split to set the "
                   "threshold on (the other half measures it)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "ood_guard.csv")
    args = p.parse_args(argv)
    if not (SHARED / "ct-iqad" / "train.csv").is_file():
        print(f"this script needs the project's real data at {SHARED} (absent on users' machines)", file=sys.stderr)
        return 1
    synth = REPO / "data" / "synth-fundus"
    if not (synth / "val.csv").is_file():
        print("synthetic fundus set missing: run scripts/train_synth_fundus.sh (or mkcnet synth data/synth-fundus)",
              file=sys.stderr)
        return 1
    sets = {"CT-IQAD val": split_files(SHARED / "ct-iqad", "val.csv")[0],
            "synthetic fundus val": split_files(synth, "val.csv")[0],
            "chest X-ray (cxr-kermany)": image_files(SHARED / "cxr-kermany", args.limit),
            "fundus photo (fundus-drimdb)": image_files(SHARED / "fundus-drimdb", args.limit)}
    rows = []
    for name in MODELS:
        model = load_checkpoint(REPO / "checkpoints" / name)
        root = SHARED / "ct-iqad" if name.startswith("ct-iqad") else synth
        train_files, train_labels = split_files(root, "train.csv")
        train_x, train_s = features(model, train_files)
        own = "CT-IQAD val" if name.startswith("ct-iqad") else "synthetic fundus val"
        seen = {s: features(model, files) for s, files in sets.items()}
        for feature, method in [(f, m) for f in FEATURES for m in ("mahalanobis", "knn")]:
            rows += measure(train_x[feature], train_labels, train_s, {s: (x[feature], st) for s, (x, st) in seen.items()},
                            own, method, args.halves, {"model": name, "feature": feature, "score": method})
        print(pd.DataFrame([r for r in rows if r["model"] == name]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
