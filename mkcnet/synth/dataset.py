"""The synthetic fundus data set: labels by exact quotas, images in parallel, split format.

Every image has its own seed (spawned from the data-set seed), so the set is identical
whatever the number of workers, and any single image can be regenerated from its record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mkcnet.degradation import replay
from mkcnet.degradation.dataset import (
    assign_by_quota,
    parallel_map,
    prepare_out_dir,
    stratified_splits,
    write_json,
    write_jsonl,
    write_splits,
)
from mkcnet.errors import UserError
from mkcnet.synth.fundus import DIAGNOSES, generate_fundus
from mkcnet.synth.quality import QUALITIES, hard_case, plan_degradation

DEFAULT_DIAGNOSIS_RATIOS = (0.4, 0.35, 0.25)  # NoDR, NPDR, PDR
DEFAULT_QUALITY_RATIOS = (0.25, 0.25, 0.5)  # reject, usable, good (index = quality label)
DEFAULT_SPLIT = (0.7, 0.15, 0.15)


def synth_sample(seed: int, size: int, diagnosis: int, quality: int) -> tuple[np.ndarray, dict[str, Any]]:
    """One labelled image: uint8 (size, size, 3) and its full generation + degradation record."""
    clean, record = generate_fundus(seed, size, diagnosis)
    clean_u8 = np.rint(clean * 255).astype(np.uint8)  # degrade the 8-bit image, so that
    plan = plan_degradation(np.random.default_rng((seed, 1)), quality, diagnosis, clean.shape)
    img = clean_u8 if plan is None else replay(clean_u8, plan)  # replay(clean_u8, plan) is exact
    record.update(quality=quality, quality_name=QUALITIES[quality], degradation=plan,
                  hard_case=hard_case(plan, diagnosis, quality))
    return img, record


def _make_one(job: tuple[Path, str, int, int, int, int]) -> dict[str, Any]:
    root, rel, seed, size, diagnosis, quality = job
    img, record = synth_sample(seed, size, diagnosis, quality)
    Image.fromarray(img).save(root / rel, compress_level=3)
    return {"image": rel, **record}


def make_synth_dataset(out: Path, n: int = 2000, size: int = 256, seed: int = 0, workers: int = 2,
                       diagnosis_ratios: Sequence[float] = DEFAULT_DIAGNOSIS_RATIOS,
                       quality_ratios: Sequence[float] = DEFAULT_QUALITY_RATIOS,
                       split: Sequence[float] = DEFAULT_SPLIT, overwrite: bool = False) -> dict[str, Any]:
    """Write the data set to `out` and return a summary (counts, seconds)."""
    if n < 1 or not 32 <= size <= 2048:
        raise UserError(f"need n >= 1 and 32 <= size <= 2048, got n={n}, size={size}")
    out = Path(out)
    prepare_out_dir(out, overwrite)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    diagnosis = assign_by_quota(rng, np.zeros(n), diagnosis_ratios)
    quality = assign_by_quota(rng, diagnosis, quality_ratios)
    splits = stratified_splits(rng, [f"{d}/{q}" for d, q in zip(diagnosis, quality)], split)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]
    jobs = [(out, f"images/synth_{i:05d}.png", seeds[i], size, int(diagnosis[i]), int(quality[i])) for i in range(n)]
    records = parallel_map(_make_one, jobs, workers)
    for rec, s in zip(records, splits):
        rec["split"] = s
    counts = write_splits(out, records)
    write_jsonl(out / "generation.jsonl", records)
    seconds = time.perf_counter() - start
    summary = {
        "name": "synth-fundus", "modality": "fundus", "n": n, "size": size, "seed": seed,
        "classes": {"diagnosis": list(DIAGNOSES), "quality": list(QUALITIES)},
        "splits": counts,
        "diagnosis_counts": np.bincount(diagnosis, minlength=3).tolist(),
        "quality_counts": np.bincount(quality, minlength=3).tolist(),
        "hard_cases": sum(r["hard_case"] is not None for r in records),
        "records": "generation.jsonl", "seconds": round(seconds, 1), "workers": workers,
    }
    write_json(out / "meta.json", summary)
    return summary
