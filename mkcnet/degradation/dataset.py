"""Writing data sets in the project's split format, shared by `make-iqad` and `synth`.

Format: train.csv / val.csv / test.csv in the data-set root with header
`image,diagnosis,quality` (paths relative to the root; quality: higher is better), plus a
JSONL file with one record per image (how it was made) and a meta.json.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mkcnet.errors import UserError

SPLITS = ("train", "val", "test")


def parse_fractions(text: str | Sequence[float], n: int, what: str) -> tuple[float, ...]:
    """"0.7,0.15,0.15" -> normalised fractions; a clear error for the wrong count or negatives."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise UserError(f"{what}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n or any(v < 0 for v in values) or sum(values) <= 0:
        raise UserError(f"{what}: expected {n} non-negative numbers with a positive sum, got {text!r}")
    total = sum(values)
    return tuple(v / total for v in values)


def quota(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Counts per class summing to n, by largest remainder (exact ratios, no sampling noise)."""
    raw = np.asarray(fractions) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def assign_by_quota(rng: np.random.Generator, groups: Sequence[Any], fractions: Sequence[float]) -> np.ndarray:
    """A label index per item: within each group, labels in the given ratios, shuffled."""
    groups = np.asarray(groups)
    out = np.zeros(len(groups), dtype=int)
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        labels = np.repeat(np.arange(len(fractions)), quota(len(idx), fractions))
        out[idx] = rng.permutation(labels)
    return out


def stratified_splits(rng: np.random.Generator, strata: Sequence[Any], fractions: Sequence[float]) -> list[str]:
    """train/val/test name per item, each stratum split in the given ratios."""
    return [SPLITS[i] for i in assign_by_quota(rng, strata, fractions)]


def write_splits(root: Path, rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """train.csv / val.csv / test.csv from rows with keys image, diagnosis, quality, split."""
    frame = pd.DataFrame(list(rows))
    counts = {}
    for split in SPLITS:
        part = frame[frame["split"] == split][["image", "diagnosis", "quality"]]
        part.to_csv(root / f"{split}.csv", index=False)
        counts[split] = len(part)
    return counts


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def parallel_map(func: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> list[Any]:
    """func over jobs in order; worker processes when workers > 1 (results do not depend on it)."""
    if workers <= 1 or len(jobs) < 8:
        return [func(job) for job in jobs]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        return pool.map(func, jobs, chunksize=max(1, len(jobs) // (workers * 16)))


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new data set into an old one unless asked to."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty (use --overwrite to replace its contents)")
    (out / "images").mkdir(parents=True, exist_ok=True)
