"""Build an IQAD-style data set (diagnosis + quality labels) from good images with diagnoses.

Each source image is taken as good quality; a quality level is assigned by exact ratios
within each diagnosis, and images of the lower levels are degraded with a family of the
modality at a severity from that level's range. Splits are stratified by diagnosis and
quality; every output image's degradation is recorded in degradations.jsonl.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from mkcnet.degradation import apply_record_float01, from_float01, get_family, list_families, make_record, to_float01
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

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}

# quality index -> (name, severity range or None for clean); index 0 is the worst
SCHEMES: dict[str, tuple[tuple[str, tuple[int, int] | None], ...]] = {
    "three": (("reject", (3, 5)), ("usable", (1, 2)), ("good", None)),
    "binary": (("LQ", (2, 5)), ("HQ", None)),
}
DEFAULT_RATIOS = {"three": (0.25, 0.25, 0.5), "binary": (0.5, 0.5)}


def read_sources(source: Path) -> tuple[pd.DataFrame, dict[str, int] | None]:
    """Columns `path` (absolute), `rel` (as listed) and `diagnosis` (int), plus a name->index
    map when diagnoses were given as names or class folders."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"input {source} does not exist")
    if source.is_dir() and (source / "labels.csv").is_file():
        source = source / "labels.csv"
    if source.is_file():
        try:
            frame = pd.read_csv(source, dtype={"image": str})
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise UserError(f"cannot read {source} as CSV: {str(err).splitlines()[0]}") from None
        missing = {"image", "diagnosis"} - set(frame.columns)
        if missing:
            raise UserError(f"{source} needs columns image,diagnosis; missing {', '.join(sorted(missing))} "
                            f"(has {', '.join(map(str, frame.columns))})")
        root = source.parent
        frame = frame[["image", "diagnosis"]].rename(columns={"image": "rel"})
    else:  # class folders: root/<class name>/<image>
        root = source
        rows = [(str(p.relative_to(root)), p.parent.name) for p in sorted(root.glob("*/*"))
                if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not rows:
            raise UserError(f"{source} has no labels.csv and no class sub-folders with images")
        frame = pd.DataFrame(rows, columns=["rel", "diagnosis"])
    if frame.empty:
        raise UserError(f"{source} lists no images")
    names = None
    if not pd.api.types.is_integer_dtype(frame["diagnosis"]):
        names = {name: i for i, name in enumerate(sorted(frame["diagnosis"].astype(str).unique()))}
        frame["diagnosis"] = frame["diagnosis"].astype(str).map(names)
    frame["path"] = [str(root / rel) for rel in frame["rel"]]
    absent = [rel for rel, p in zip(frame["rel"], frame["path"]) if not os.path.isfile(p)]
    if absent:
        raise UserError(f"{len(absent)} listed image(s) not found, e.g. {absent[0]!r} (paths are relative to {root})")
    return frame.reset_index(drop=True), names


def output_names(rels: Sequence[str]) -> list[str]:
    """images/<relative path>.png, dropping a folder every input shares; unique names."""
    parents = [os.path.dirname(r) for r in rels]
    common = os.path.commonpath(parents) if all(parents) else ""
    seen: set[str] = set()
    out = []
    for rel in rels:
        stem = os.path.splitext(os.path.relpath(rel, common) if common else rel)[0]
        name, k = f"images/{stem}.png", 2
        while name in seen:
            name, k = f"images/{stem}__{k}.png", k + 1
        seen.add(name)
        out.append(name)
    return out


GREY_MODALITIES = ("xray", "ct", "oct")


def load_image(path: str, max_side: int, grey: bool = False) -> Image.Image:
    """8-bit grey ("L") when `grey` or already grey, else RGB; shrunk to at most `max_side`.
    Grey modalities are stored grey even when a source copy was saved as RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            is_grey = grey or im.mode in ("L", "I;16", "I", "F", "LA", "1")
            img = im.convert("L") if is_grey else im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    return img


def _make_one(job: dict[str, Any]) -> dict[str, Any]:
    img = load_image(job["path"], job["size"], job["grey"])
    record = None
    if job["severity"] is not None:
        arr, kind = to_float01(img)
        record = make_record(job["family"], job["severity"], arr.shape, seed=job["seed"])
        img = from_float01(apply_record_float01(arr, record), kind)
    dest = Path(job["root"]) / job["image"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, compress_level=3)
    return {"image": job["image"], "source": job["rel"], "diagnosis": job["diagnosis"],
            "quality": job["quality"], "quality_name": job["quality_name"], "split": job["split"],
            "size": [img.height, img.width], "degradation": record}


def make_iqad(source: Path, out: Path, modality: str, families: Sequence[str] | None = None,
              scheme: str = "three", ratios: Sequence[float] | None = None,
              severities: Sequence[tuple[int, int] | None] | None = None,
              split: Sequence[float] = (0.7, 0.15, 0.15), size: int = 256, seed: int = 0, workers: int = 2,
              limit: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the data set to `out`; returns a summary. See the module docstring."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown quality scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    levels = SCHEMES[scheme]
    ratios = tuple(ratios or DEFAULT_RATIOS[scheme])
    severities = list(severities) if severities is not None else [rng for _, rng in levels]
    if len(ratios) != len(levels) or len(severities) != len(levels):
        raise UserError(f"scheme {scheme!r} has {len(levels)} levels ({', '.join(n for n, _ in levels)}); "
                        f"give that many ratios and severity ranges")
    families = list(families or list_families(modality))
    for fam in families:
        get_family(fam)
    frame, names = read_sources(Path(source))
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(frame):  # a stratified subset, for quick builds
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(frame["diagnosis"] == d))[: max(1, round(limit * np.mean(frame["diagnosis"] == d)))]
            for d in sorted(frame["diagnosis"].unique())]))
        frame = frame.iloc[keep].reset_index(drop=True)
    out = Path(out)
    prepare_out_dir(out, overwrite)
    start = time.perf_counter()
    quality = assign_by_quota(rng, frame["diagnosis"].to_numpy(), ratios)
    splits = stratified_splits(rng, [f"{d}/{q}" for d, q in zip(frame["diagnosis"], quality)], split)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(frame))]
    names_out = output_names(list(frame["rel"]))
    jobs = []
    for i, row in frame.iterrows():
        sev_range = severities[quality[i]]
        job_rng = np.random.default_rng(seeds[i])
        jobs.append({
            "root": str(out), "path": row["path"], "rel": row["rel"], "image": names_out[i],
            "diagnosis": int(row["diagnosis"]), "quality": int(quality[i]), "quality_name": levels[quality[i]][0],
            "split": splits[i], "size": size, "seed": seeds[i], "grey": modality in GREY_MODALITIES,
            "family": str(job_rng.choice(families)) if sev_range else None,
            "severity": int(job_rng.integers(sev_range[0], sev_range[1] + 1)) if sev_range else None,
        })
    records = parallel_map(_make_one, jobs, workers)
    counts = write_splits(out, records)
    write_jsonl(out / "degradations.jsonl", records)
    summary = {
        "name": out.name, "modality": modality, "source": str(source), "n": len(records), "max_side": size,
        "seed": seed, "scheme": scheme, "classes": {"quality": [n for n, _ in levels]},
        "diagnosis_names": names, "quality_ratios": list(ratios),
        "severity_ranges": [list(r) if r else None for r in severities], "families": families,
        "splits": counts, "records": "degradations.jsonl", "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / "meta.json", summary)
    return summary
