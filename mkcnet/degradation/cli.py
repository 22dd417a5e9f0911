"""`mkcnet degrade` and `mkcnet make-iqad`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mkcnet.errors import UserError

EPILOG_DEGRADE = """examples:
  mkcnet degrade --list --modality fundus
  mkcnet degrade eye.png eye_blur3.png --family fundus.blur --severity 3 --seed 0 --record eye_blur3.json
  mkcnet degrade eye.png again.png --replay eye_blur3.json      # bit-identical to eye_blur3.png
"""
EPILOG_IQAD = """examples:
  mkcnet make-iqad ../shared/data/cxr-kermany data/cxr-iqad --modality xray
  mkcnet make-iqad labels.csv out --modality fundus --scheme binary --ratios 0.5,0.5
  mkcnet make-iqad class_folders/ out --modality ct --families ct.streak,ct.ring --severities 3-5,1-2,0

The input is a CSV with columns image,diagnosis (paths relative to the CSV), a folder with
such a labels.csv, or a folder of class sub-folders. Output: images/, train.csv, val.csv,
test.csv (image,diagnosis,quality), degradations.jsonl (one record per image), meta.json.
"""
def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("degrade", help="degrade an image with a simulated quality defect",
                              description="Apply one degradation family at a severity 1-5 (or replay a record).",
                              epilog=EPILOG_DEGRADE, formatter_class=fmt)
    p.add_argument("input", nargs="?", type=Path, help="image to degrade (PNG, JPEG, ...)")
    p.add_argument("output", nargs="?", type=Path, help="where to write the degraded image")
    p.add_argument("--family", help="family name, e.g. fundus.blur, xray.gaussian_noise (see --list)")
    p.add_argument("--severity", type=int, choices=range(1, 6), metavar="1-5", help="1 = mild ... 5 = severe")
    p.add_argument("--seed", type=int, help="random seed (default: fresh; it is recorded either way)")
    p.add_argument("--record", type=Path, help="write the JSON record here (default: print it)")
    p.add_argument("--replay", type=Path, metavar="RECORD", help="re-apply a recorded degradation exactly")
    p.add_argument("--list", action="store_true", help="list the families and exit")
    p.add_argument("--modality", choices=("fundus", "xray", "ct", "oct"), help="with --list: only this modality")
    p.set_defaults(func=run_degrade)

    p = subparsers.add_parser("make-iqad", help="build a diagnosis + quality data set by degrading good images",
                              description="Build an IQAD-style data set: quality labels from simulated degradations.",
                              epilog=EPILOG_IQAD, formatter_class=fmt)
    p.add_argument("source", type=Path, help="labels CSV (image,diagnosis), or a folder")
    p.add_argument("out", type=Path, help="output data-set folder")
    p.add_argument("--modality", required=True, choices=("fundus", "xray", "ct", "oct"))
    p.add_argument("--families", help="comma-separated families to draw from (default: all of the modality)")
    p.add_argument("--scheme", default="three", choices=("three", "binary"),
                   help="three: 0 reject / 1 usable / 2 good; binary: 0 LQ / 1 HQ (default: three)")
    p.add_argument("--ratios", help="fraction per quality level, worst first (default 0.25,0.25,0.5 or 0.5,0.5)")
    p.add_argument("--severities", help="severity range per level, worst first, 0 = clean (default 3-5,1-2,0 or 2-5,0)")
    p.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions (default 0.7,0.15,0.15)")
    p.add_argument("--size", type=int, default=256, help="resize so the longer side is at most this (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, help="use a stratified subset of this many source images")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.set_defaults(func=run_make_iqad)


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def _save_image(img: Image.Image, path: Path) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg") and img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot write {path}: {err}") from None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not JSON: {err}") from None


def run_degrade(args: argparse.Namespace) -> int:
    from mkcnet.degradation import degrade, get_family, list_families, replay

    if args.list:
        for name in list_families(args.modality):
            fam = get_family(name)
            print(f"{name:26s} {fam.summary}")
        return 0
    if args.input is None or args.output is None:
        raise UserError("give INPUT and OUTPUT images (or --list)")
    image = _open_image(args.input)
    if args.replay:
        if args.family or args.severity or args.seed is not None:
            raise UserError("--replay takes its family, severity and seed from the record; drop the others")
        record = _read_record(args.replay)
        out = replay(image, record)
    else:
        if not args.family or not args.severity:
            raise UserError("give --family and --severity (or --replay RECORD)")
        out, record = degrade(image, args.family, args.severity, seed=args.seed)
    _save_image(out, args.output)
    what = f"{record['family']}, severity {record['severity']}, seed {record['seed']}"
    if args.record:
        args.record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output} and {args.record} ({what})")
    else:  # the seed is what a replay needs; the whole record only on request
        print(f"wrote {args.output} ({'replayed: ' if args.replay else ''}{what})"
              + ("" if args.replay else "; --record FILE keeps the full record for --replay"))
    return 0


def _severity_ranges(text: str) -> list[tuple[int, int] | None]:
    """"3-5,1-2,0" -> [(3, 5), (1, 2), None]."""
    out: list[tuple[int, int] | None] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError:
            raise UserError(f"--severities: bad range {part!r} (use e.g. 3-5,1-2,0)") from None
        if lo_i == 0 and hi_i == 0:
            out.append(None)
        elif not 1 <= lo_i <= hi_i <= 5:
            raise UserError(f"--severities: {part!r} is not a range within 1-5 (or 0 for clean)")
        else:
            out.append((lo_i, hi_i))
    return out


def run_make_iqad(args: argparse.Namespace) -> int:
    from mkcnet.degradation.dataset import parse_fractions
    from mkcnet.degradation.iqad import SCHEMES, make_iqad

    n_levels = len(SCHEMES[args.scheme])
    summary = make_iqad(
        args.source, args.out, args.modality,
        families=[f.strip() for f in args.families.split(",")] if args.families else None,
        scheme=args.scheme,
        ratios=parse_fractions(args.ratios, n_levels, "--ratios") if args.ratios else None,
        severities=_severity_ranges(args.severities) if args.severities else None,
        split=parse_fractions(args.split, 3, "--split"), size=args.size, seed=args.seed,
        workers=args.workers, limit=args.limit, overwrite=args.overwrite,
    )
    print(f"wrote {summary['n']} images to {args.out} in {summary['seconds']} s: {summary['splits']}")
    return 0
