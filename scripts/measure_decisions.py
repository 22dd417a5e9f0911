"""The numbers docs/workbench.md quotes for prediction sets, referral operating points and robustness
margins of the bundled models. Reads the bundled results packs (image paths and predictions only)
and the bundled example images; needs no data set.

    python scripts/measure_decisions.py              # sets (cross-fitted halves) and margins
    python scripts/measure_decisions.py --halves 200

Prediction sets, held out: fitted on a random half of a model's validation pack, coverage and mean
set size counted on the other half by labelled quality, over many random halves (mean and
10th-90th percentile), as the guard's table does. The margins: every bundled example through each
model of its modality, one batched pass each, seed 0, the model's own default window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mkcnet.checkpoint import load_checkpoint
from mkcnet.data.images import model_window, read_image
from mkcnet.inference.results import load_pack
from mkcnet.inference.robustness import family_label, robustness_margin
from mkcnet.trust.conformal import fit_prediction_sets, set_metrics

REPO = Path(__file__).resolve().parents[1]


def held_out_sets(name: str, halves: int, coverage: float = 0.9) -> dict[str, tuple[float, float, float]]:
    pack = load_pack(REPO / "checkpoints" / name)
    table = pack.predictions
    probs, labels, quality = pack.probabilities("diagnosis"), table["diagnosis"].to_numpy(), table["quality"].to_numpy()
    predicted = table["pred_quality"].to_numpy() if "pred_quality" in table else None
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(halves):
        order = rng.permutation(len(table))
        fit, held = order[: len(order) // 2], order[len(order) // 2:]
        sets = fit_prediction_sets(probs[fit], labels[fit], None if predicted is None else predicted[fit], coverage)
        member = sets.sets(probs[held], None if predicted is None else predicted[held])
        rows.append(set_metrics(member, labels[held], quality[held], pack.num_classes("quality")))
    keys = [k for k in rows[0] if not k.endswith("n")]
    return {k: (float(np.mean([r[k] for r in rows])), *np.percentile([r[k] for r in rows], [10, 90]))
            for k in keys}


def margins(name: str, modality: str) -> list[tuple[str, str, str, float]]:
    model = load_checkpoint(REPO / "checkpoints" / name)
    names = model.config.model.diagnosis_names
    examples = json.loads((REPO / "assets" / "examples" / "examples.json").read_text())
    out = []
    for e in (e for e in examples if e["modality"] == modality):
        image = read_image(REPO / "assets" / "examples" / e["file"], window=model_window(model.config.model.input))
        start = time.perf_counter()
        m = robustness_margin(model, image, modality)
        seconds = time.perf_counter() - start
        weakest = sorted((s, family_label(f)) for f, s in m.flips.items() if s is not None)[:3]
        out.append((e["file"], names[m.diagnosis], ", ".join(f"{f} {s}" for s, f in weakest) or "holds through 5",
                    sum(s is None for s in m.flips.values()), len(m.flips), seconds))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--halves", type=int, default=200)
    p.add_argument("--no-margins", action="store_true")
    args = p.parse_args()
    for name in ("ct-iqad-mkcnet", "ct-iqad-vanilla"):
        s = held_out_sets(name, args.halves)
        cells = [f"{s[f'{g}coverage'][0]:.1%} ({s[f'{g}coverage'][1]:.1%}-{s[f'{g}coverage'][2]:.1%}), "
                 f"{s[f'{g}size'][0]:.2f}" for g in ("", "HQ.", "LQ.")]
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    if args.no_margins:
        return
    for name, modality in (("ct-iqad-mkcnet", "ct"), ("ct-iqad-vanilla", "ct"), ("synth-fundus-mkcnet", "fundus"),
                           ("synth-fundus-vanilla", "fundus")):
        for file, diagnosis, weakest, held, total, seconds in margins(name, modality):
            print(f"| `{name}` | `{file}` | {diagnosis} | {weakest} | {held} of {total} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
